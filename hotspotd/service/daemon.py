"""The running daemon: storage, Daraja (or its simulator), the portal, RADIUS and the jobs.

:class:`Hotspot` is both what ``hotspotd run`` starts and what the tests start on port 0.
``start()`` brings the parts up in order, ``stop()`` takes them down in reverse; a signal
only sets the stop event, and :func:`run` does the rest on the main thread.
"""
from __future__ import annotations

import errno
import logging
import secrets
import signal
import ssl
import threading
import time

from .. import access, config as config_mod, disconnects, systemd
from ..c2b import C2BService
from ..daraja.credentials import load_certificate, security_credential
from ..lookups import Initiator, LookupService
from ..statement import StatementService
from ..config import Config, Router, parse_listen
from ..daraja.client import BASE_URLS, DarajaClient, DarajaError
from ..daraja.tokens import DatabaseTokens
from ..errors import PortInUse
from ..payments import PaymentService, Policy
from ..readback import Readback
from ..routers.logins import ApiLogins
from ..routers.mikrotik import MikroTikRouter
from ..routers.opennds import Gateway, Gateways
from ..scheduler import Scheduler
from ..sms import gateways as sms_gateways, outbox as sms_outbox
from ..storage import db as db_mod, paths
from ..storage.models import Payment, database as models_database
from ..timekeeping import Timekeeper
from ..venues import Venues

log = logging.getLogger(__name__)

#: how often the SMS job sends what waits and queues the reminders that are due (a receipt wakes it)
SMS_EVERY_SECONDS = 15


class Hotspot:
    """Everything one hotspotd process runs, with a clean ``start()``/``stop()``."""

    def __init__(self, cfg: Config):
        self.config = cfg
        self.db = None
        self.simulator = None
        self.client: DarajaClient | None = None
        #: the Daraja tokens every client shares (hotspotd.daraja.tokens)
        self.daraja_tokens: DatabaseTokens | None = None
        #: venue → (its Daraja client, its account reference)
        self.site_clients: dict[str, tuple[DarajaClient, str]] = {}
        self.payments: PaymentService | None = None
        #: payments from the M-Pesa menu (:mod:`hotspotd.c2b`)
        self.c2b: C2BService | None = None
        #: the M-Pesa statement, pulled and matched (:mod:`hotspotd.statement`)
        self.statement: StatementService | None = None
        #: M-Pesa codes hotspotd never saw, looked up (:mod:`hotspotd.lookups`)
        self.lookups: LookupService | None = None
        self.scheduler: Scheduler | None = None
        self.radius = None
        #: the figures of /metrics (:class:`hotspotd.metrics.Metrics`), None when [metrics] is off
        self.metrics = None
        self.routeros_sim = None
        #: the simulated router's RADIUS client (radius.testing.mikrotik.HotspotRadius), with RADIUS on
        self.routeros_radius = None
        self.routers: tuple[Router, ...] = ()
        #: the venues and the routers serving them (:mod:`hotspotd.venues`); routers once started
        self.venues = Venues(cfg)
        self.cutters: dict[str, disconnects.Cutter] = {}
        self.api_routers: list[MikroTikRouter] = []
        #: the APIs of MikroTiks cut by Disconnect-Request, asked whether a device is gone afterwards
        self.verifiers: list[MikroTikRouter] = []
        self.api_logins: ApiLogins | None = None
        #: what the routers say is online against what was sold (:mod:`hotspotd.readback`)
        self.readback: Readback | None = None
        #: the openNDS gateways (hotspotd is their FAS): the splash page and authmon reach them here
        self.opennds = Gateways(())
        self.callback_token = ""
        self.callback_url = ""
        self.timekeeper = Timekeeper()
        #: the SMS gateway (:mod:`hotspotd.sms.gateways`), None with [sms] provider = "off"
        self.sms_gateway = None
        self.sms_composer: sms_outbox.Composer | None = None
        self._web = None
        self._web_thread: threading.Thread | None = None
        self.stop_event = threading.Event()

    # --- parts -----------------------------------------------------------------------------
    def open_database(self):
        self.db = db_mod.prepare(self.config.database.url, self.config.database.busy_timeout_ms)
        self.callback_token = db_mod.get_setting("callback_token")
        self.timekeeper.start()
        return self.db

    def storage_problem(self) -> str | None:
        """Why a payment could not be recorded safely now (:func:`hotspotd.storage.paths.disk_problem`)."""
        return paths.disk_problem(self.config.database.url, self.config.database.min_free_mb)

    def _daraja(self, portal_url: str) -> DarajaClient:
        """The ``[mpesa]`` account's client; :attr:`site_clients` gets every venue's."""
        if self.config.simulated:
            from ..testing.daraja import DarajaSimulator
            host, port = parse_listen(self.config.simulator.daraja_listen)
            sim = self.config.simulator
            # realistic: late callbacks come after this install's own payment timeout
            self.simulator = DarajaSimulator(host, port, callback_delay=sim.callback_delay_seconds,
                                             final_after=sim.final_after_seconds, timing=sim.timing,
                                             seed=sim.seed or None, time_scale=sim.time_scale,
                                             lost_callback_rate=sim.lost_callback_rate,
                                             late_callback_rate=sim.late_callback_rate,
                                             late_callback_after=self.config.mpesa.prompt_lifetime_seconds).start()
            for site in self.config.sites.values():    # the payer's SMS names the business, as Safaricom would
                payee = self.config.payee(site.id)
                account = site.account or self.config.default_account
                if payee.business_name:
                    self.simulator.name_business(account.shortcode, payee.business_name)
        self.callback_url = self._callback_url(portal_url)
        default = self._daraja_client(self.config.default_account)
        self.site_clients = {}
        for site in self.config.sites.values():
            account = site.account
            client = default if account is None else self._daraja_client(account)
            self.site_clients[site.id] = (client, (account or self.config.default_account).account_reference)
        return default

    def _daraja_client(self, account: config_mod.MpesaAccount) -> DarajaClient:
        """A client of one M-Pesa account (in the simulator environment, an account of the simulator)."""
        m = self.config.mpesa
        if self.config.simulated:
            base, key, secret = self.simulator.url, "simulator", "simulator"
            passkey = account.passkey or config_mod.SANDBOX_PASSKEY
            self.simulator.add_account(account.shortcode, passkey)
        else:
            base, key, secret, passkey = (m.base_url or BASE_URLS[m.environment], account.consumer_key,
                                          account.consumer_secret, account.passkey)
        party_b = account.till_number if account.transaction_type == "CustomerBuyGoodsOnline" else None
        if self.daraja_tokens is None:
            # one token per consumer key for every client, thread and process on this database
            self.daraja_tokens = DatabaseTokens(models_database)
        return DarajaClient(base, key, secret, account.shortcode, passkey, transaction_type=account.transaction_type,
                            party_b=party_b, timeout=float(m.timeout_seconds), tokens=self.daraja_tokens)

    def _venue_routers(self) -> tuple[Router, ...]:
        """The ``[[routers]]``; in the simulator environment with none set, a simulated MikroTik
        with its RADIUS side (radius/testing/mikrotik.py) pointed at our own RADIUS server: it
        logs devices in by MAC and over the API through RADIUS, sends accounting and ends sessions
        at their limits, as a real one does."""
        if self.config.routers or not self.config.simulated:
            return self.config.routers
        from ..testing.routeros import RouterOSSimulator
        host, port = parse_listen(self.config.simulator.routeros_listen)
        password = secrets.token_urlsafe(12)
        self.routeros_sim = RouterOSSimulator(host, port, username="hotspotd", password=password,
                                              identity="simulated-venue", auto_hosts=True).start()
        if self.radius is not None:
            from radius.testing.mikrotik import HotspotRadius
            secret = self.config.radius_client_secret("127.0.0.1") or ""
            self.routeros_radius = HotspotRadius(self.routeros_sim, incoming=None).start().point_at(
                self.radius.auth_address, self.radius.acct_address, secret)
        address, port = self.routeros_sim.address
        log.info("simulated venue router (RouterOS API) at %s:%d", address, port)
        return (Router(name="simulated-mikrotik", kind="mikrotik", address=address, api_port=port, user="hotspotd",
                       password=password, tls=False, timeout_seconds=5.0, tls_ca="", disconnect="api", coa_port=3799,
                       secret="", uamsecret=""),)

    def _build_cutters(self) -> None:
        gateways = []
        for router in self.routers:
            if router.kind == "opennds":
                gateway = Gateway(router.name, router.faskey, router.fas_secure_enabled, router.site,
                                  timeout=max(float(router.timeout_seconds), 3.0 * router.poll_seconds))
                gateways.append(gateway)
                self.cutters[router.name] = gateway
            elif router.disconnect_method == "api":
                mikrotik = MikroTikRouter(router, timeout=float(router.timeout_seconds), ssl_context=self._ssl(router))
                self.api_routers.append(mikrotik)
                self.cutters[router.name] = mikrotik
            else:
                from radius.disconnect import CoaCutter
                secret = router.secret or self.config.radius_client_secret(router.address) or ""
                is_online = None
                if router.kind == "mikrotik" and router.user:
                    # a MikroTik's Disconnect-NAK says nothing sure: its API says whether the device is gone
                    api = MikroTikRouter(router, timeout=float(router.timeout_seconds), ssl_context=self._ssl(router))
                    self.verifiers.append(api)
                    is_online = api.is_online
                # three tries share the router's time budget
                self.cutters[router.name] = CoaCutter(router.name, router.address, router.coa_port, secret,
                                                      timeout=float(router.timeout_seconds) / 3, retries=2,
                                                      source=config_mod.coa_source(self.config, router),
                                                      kind=router.kind, is_online=is_online)
        self.opennds = Gateways(gateways)

    @staticmethod
    def _ssl(router: Router) -> ssl.SSLContext | None:
        return ssl.create_default_context(cafile=router.tls_ca) if router.tls and router.tls_ca else None

    def after_payment(self, payment: Payment) -> None:
        """After payment (the payment service's ``on_success``): the device's API login, queued;
        at an openNDS gateway, its authorisation for authmon's next poll; the receipt SMS, queued.
        A failure of one never stops the others (the payment and its session are committed)."""
        try:
            if self.api_logins is not None:
                self.api_logins.submit(payment)
            self.opennds.admit_payment(payment)
        finally:
            if self.sms_gateway is not None and self.config.sms.receipts:
                try:
                    if sms_outbox.queue_receipt(payment) and self.scheduler and self.scheduler.has("sms"):
                        self.scheduler.wake("sms")
                except Exception:  # noqa: BLE001 - an SMS never holds up a payment
                    log.exception("could not queue the receipt SMS of %s", payment.checkout_request_id)

    def c2b_urls(self) -> tuple[str, str]:
        """The confirmation and validation URLs of payments from the M-Pesa menu: under the
        callback URL's secret path."""
        base = self.callback_url.rstrip("/")
        return f"{base}/c2b/confirmation", f"{base}/c2b/validation"

    def _initiator(self) -> Initiator | None:
        """The API initiator and its SecurityCredential (``[mpesa] initiator_*``, ``certificate``); on
        the simulator its own initiator and certificate (the configured name and password, if any)."""
        m = self.config.mpesa
        if self.simulator is not None:
            desk = self.simulator.status
            if m.initiator_name:
                desk.initiator_name, desk.initiator_password = m.initiator_name, m.initiator_password
            cert = load_certificate(desk.certificate_pem)
            return Initiator(desk.initiator_name, security_credential(desk.initiator_password, cert))
        if not m.initiator_name:
            return None
        with open(m.certificate, "rb") as fh:
            cert = load_certificate(fh.read())
        return Initiator(m.initiator_name, security_credential(m.initiator_password, cert))

    def _register_pull(self) -> None:
        """On the simulator, what ``hotspotd mpesa register-pull`` does in production, at start."""
        for shortcode, site in self.venues.shortcodes().items():
            client, _ = self.site_clients[site]
            try:
                client.pull_register(shortcode, self.config.mpesa.pull_nominated_number or "254708374149",
                                     self.callback_url + "/pull")
            except DarajaError as exc:
                log.error("Pull register for %s refused: %s", shortcode, exc)

    def _register_c2b_urls(self) -> None:
        """On the simulator, what ``hotspotd mpesa register-urls`` does in production, at start."""
        confirmation, validation = self.c2b_urls()
        for number, (site, _) in self.venues.paid_numbers().items():
            client, _ = self.site_clients[site]
            try:
                client.register_c2b_urls(number, confirmation, validation)
            except DarajaError as exc:   # payments from the menu wait; nothing else does
                log.error("C2B Register URL for %s refused: %s", number, exc)

    def _sms(self) -> None:
        """The SMS gateway ``[sms]`` names (in the simulator environment with no base_url, the
        simulator's, which then takes this install's credentials) and the composer of its texts."""
        sms = self.config.sms
        simulated = self.simulator is not None and not sms.base_url
        self.sms_gateway = sms_gateways.from_config(sms, self.simulator.url if simulated else None)
        if self.sms_gateway is None:
            return
        if simulated and sms.provider == "africastalking":
            self.simulator.sms.credentials(sms.username, sms.api_key or "simulator")
        from portal_web.i18n import t
        self.sms_composer = sms_outbox.Composer(
            t, lambda site: (self.config.site(site) or self.config.site(None)).name,
            self.config.portal.public_url.rstrip("/") + "/me")

    def send_sms(self) -> int:
        """The SMS job: queue the reminders that are due, send what is waiting."""
        if self.config.sms.reminder_minutes:
            sms_outbox.queue_reminders(self.config.sms.reminder_minutes)
        return sms_outbox.send_due(self.sms_gateway, self.sms_composer)

    def _callback_url(self, portal_url: str) -> str:
        return config_mod.callback_url(self.config, self.callback_token, portal_url)

    def _policy(self) -> Policy:
        m = self.config.mpesa
        return Policy(account_reference=m.account_reference, prompt_lifetime=m.prompt_lifetime_seconds,
                      query_after=m.query_after_seconds, query_interval=m.query_interval_seconds,
                      query_max_interval=m.query_max_interval_seconds, give_up=m.query_give_up_seconds,
                      allowlist=config_mod.callback_allowlist(self.config), callback_token=self.callback_token)

    @property
    def portal_url(self) -> str:
        host, port = self._web.effective_host, self._web.effective_port
        host = "127.0.0.1" if host in ("0.0.0.0", "") else host
        return f"http://{host}:{port}"

    # --- lifecycle -----------------------------------------------------------------------
    def start(self) -> "Hotspot":
        """Bring every part up; a part that cannot start (a port in use) takes down those already
        up, so a failed start leaves no thread, socket or connection behind."""
        try:
            return self._start()
        except BaseException:
            self.stop()
            raise

    def _start(self) -> "Hotspot":
        from waitress.server import create_server

        from portal_web import create_app

        # their DEBUG lines carry SQL parameters, URLs and API words: phone numbers, tokens, passwords
        for noisy in ("peewee", "urllib3", "librouteros"):
            logging.getLogger(noisy).setLevel(logging.INFO)
        self.open_database()
        if self.config.metrics.enabled:
            from ..metrics import Metrics
            self.metrics = Metrics(radius_stats=lambda: self.radius.stats if self.radius else None,
                                   readback=lambda: self.readback.last if self.readback else {})
        self.app = app = create_app(self)
        host, port = parse_listen(self.config.portal.listen)
        try:
            self._web = create_server(app, host=host, port=port, threads=self.config.portal.threads,
                                      ident="hotspotd", clear_untrusted_proxy_headers=True)
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE:
                raise
            raise PortInUse("tcp", host, port, "the portal", "[portal] listen in the config file, or "
                            f"HOTSPOTD_PORTAL_LISTEN={host or '0.0.0.0'}:{port + 1}") from exc
        self.client = self._daraja(self.portal_url)
        self._sms()
        self.payments = PaymentService(self.client, self.callback_url, self._policy(), on_success=self.after_payment,
                                       storage_problem=self.storage_problem, metrics=self.metrics,
                                       sites=self.site_clients)
        self.c2b = C2BService(self.payments, self.venues.paid_numbers())
        self.statement = StatementService(self.payments, self.c2b, self.venues.shortcodes())
        self.lookups = LookupService(self.payments, self.c2b, self._initiator(), self.venues.paid_numbers(),
                                     self.callback_url + "/ts/result", self.callback_url + "/ts/timeout",
                                     party_of=self.venues.party_of)
        if self.simulator:
            self._register_c2b_urls()
            if self.config.mpesa.pull_every_seconds:
                self._register_pull()
        if self.config.radius.enabled:
            from radius.server import RadiusServer
            self.radius = RadiusServer(self.config, on_cap_reached=self._cap_reached, metrics=self.metrics).start()
        self.routers = self._venue_routers()
        self.venues = Venues(self.config, self.routers)
        self._build_cutters()
        self.api_logins = ApiLogins(self.api_routers, self.venues.router_sites, metrics=self.metrics)
        # chilli's accounting is quiet when more than two Interim-Updates are missed
        self.readback = Readback(self.api_routers, self.venues.router_sites,
                                 [(r.name, r.address) for r in self.routers if r.kind == "coova"],
                                 quiet_after=2 * max(self.config.radius.interim_interval, 60) + 60,
                                 gateways=[g for g in self.opennds.by_name.values() if g.level == 3])
        # the portal serves last: once it answers, RADIUS, the routers and the login pool are ready
        # (a callback or a status poll never meets a half-started daemon)
        self._web_thread = threading.Thread(target=self._web.run, name="portal", daemon=True)
        self._web_thread.start()
        log.info("portal listening on %s (public URL %s)", self.portal_url, self.config.portal.public_url)
        if self.simulator:
            log.info("Daraja simulator at %s; callbacks go to %s/cb/…; a customer's SMS (M-Pesa's and "
                     "hotspotd's): %s/simulator/phones/<2547…>/messages", self.simulator.url, self.portal_url,
                     self.simulator.url)
        if self.config.scheduler.enabled:
            self.scheduler = Scheduler(claim=db_mod.claim_run)
            s = self.config.scheduler
            self.scheduler.every(s.reconcile_every_seconds, "reconcile", self.payments.reconcile_due)
            self.scheduler.every(s.expire_every_seconds, "expire", self.expire_sessions)
            if s.readback_every_seconds and self.readback.covers():
                self.scheduler.every(s.readback_every_seconds, "readback", self.read_back)
            if self.sms_gateway is not None:
                self.scheduler.every(SMS_EVERY_SECONDS, "sms", self.send_sms)
            if self.config.mpesa.pull_every_seconds:
                self.scheduler.every(self.config.mpesa.pull_every_seconds, "pull", self.statement.pull)
            if self.config.backup.enabled and self.config.backup_folder:
                self.scheduler.every(min(3600.0, self.config.backup.every_hours * 3600), "backup", self.backup_if_due)
            self.scheduler.start()
        return self

    def expire_sessions(self) -> int:
        """End what is due, queue the cuts, and work through the queue."""
        self.timekeeper.keep()
        ended = disconnects.expire_and_queue(self.cutters, sites=self.venues.router_sites)
        disconnects.run_due(self.cutters, metrics=self.metrics, sites=self.venues.router_sites)
        return ended

    def read_back(self) -> int:
        """The read-back job (:mod:`hotspotd.readback`): correct each router, then run the cuts it
        queued; returns the number of corrections."""
        drifts = self.readback.run()
        if any(d.cut for d in drifts):
            disconnects.run_due(self.cutters, metrics=self.metrics, sites=self.venues.router_sites)
        return sum(d.corrections for d in drifts)

    def backup_if_due(self) -> str | None:
        """The backup job (:func:`hotspotd.storage.backup.take_if_due`)."""
        from ..storage import backup
        return backup.take_if_due(self.config)

    def cut_off(self, macs: list[str], entitlement_id: int | None, reason: str) -> None:
        """Queue ``macs`` to be cut at the routers of the session's venue and run the queue soon
        (owner's disconnect, a session moved to another device). Never talks to a router on the
        caller's thread."""
        routers = list(self.cutters)
        if entitlement_id is not None:
            routers = disconnects.routers_for([entitlement_id], routers, self.venues.router_sites)[entitlement_id]
        for mac in macs:
            disconnects.enqueue(mac, routers, entitlement_id=entitlement_id, reason=reason)
        if macs and self.scheduler:
            self.scheduler.wake("expire")

    def extend(self, entitlement_id: int, seconds: int, why: str):
        """The owner's "extend" (:func:`hotspotd.access.extend`), then the new limits to the live
        sessions at routers that take a CoA-Request, on a thread of its own (never the caller's).
        A router left as it was still ends the session at the old Session-Timeout; the device
        then logs in again by MAC and gets the new time: the CoA spares it that gap."""
        ent = access.extend(entitlement_id, seconds, why)
        changers = {name: c for name, c in self.cutters.items() if hasattr(c, "change")}
        if changers:
            where = disconnects.routers_for([entitlement_id], list(changers), self.venues.router_sites)[entitlement_id]
            targets = [(changers[name], mac) for name in where for mac in access.macs_of(entitlement_id)]
            if targets:
                threading.Thread(target=self._push_limits, args=(targets,), name="coa", daemon=True).start()
        return ent

    def _push_limits(self, targets) -> None:
        from radius.replies import change_attributes
        for changer, mac in targets:
            target = disconnects.target(mac, changer.address)
            if target.accounting != "open":
                continue            # no live session there: the next login gets the new time anyway
            grant = access.authorize(mac, site=self.venues.router_sites.get(changer.name))
            if grant is None:
                continue
            kind = next((r.kind for r in self.routers if r.name == changer.name), "coova")
            attributes = change_attributes(grant, kind, self.config.radius.idle_timeout,
                                           self.config.radius.interim_interval, disconnects.session_use(mac, changer.address))
            try:
                acked = changer.change(target, attributes)
            except Exception as exc:  # noqa: BLE001 - the router's own Session-Timeout still bounds the session
                log.warning("CoA to %s for %s failed: %s", changer.name, mac, exc)
                continue
            log.info("CoA to %s for %s: %s (Session-Timeout %s)", changer.name, mac, "ACK" if acked else "NAK",
                     attributes["Session-Timeout"])

    def _cap_reached(self, usage) -> None:
        # called on the RADIUS thread: only wake the job, never talk to a router here
        if self.scheduler:
            self.scheduler.wake("expire")

    # --- supervision (hotspotd.systemd, SIGHUP) ----------------------------------------
    #: What a reload can change in a running daemon: read on every request or log line. The
    #: rest (listen addresses, ports, database, Daraja, routers, jobs) is bound at start.
    LIVE_KEYS = frozenset({("logging", "level"), ("portal", "site_name"), ("portal", "pay_limit_per_client"),
                           ("portal", "pay_limit_per_phone"), ("portal", "pay_limit_per_device"),
                           ("portal", "redeem_limit_per_client")})
    #: tables only other commands read (``hotspotd report``): nothing here to restart
    OTHER_TABLES = frozenset({"report"})

    def reload(self, new: Config) -> tuple[list[str], list[str]]:
        """Take the :data:`LIVE_KEYS` that differ in ``new`` (a validated config); returns the
        ``table.key`` names applied and those that need a restart (kept at their old value)."""
        changed = [(t, k) for t in config_mod.SCHEMA for k in config_mod.SCHEMA[t]
                   if getattr(self.config, t).values[k] != getattr(new, t).values[k]]
        live: dict[str, dict] = {}
        restart = []
        for t, k in changed:
            if (t, k) in self.LIVE_KEYS or t in self.OTHER_TABLES:
                live.setdefault(t, {})[k] = getattr(new, t).values[k]
            else:
                restart.append(f"{t}.{k}")
        restart += [name for name, old, now in (("radius.clients", self.config.radius_clients, new.radius_clients),
                                                ("routers", self.config.routers, new.routers),
                                                ("sites", self.config.raw.get("sites"), new.raw.get("sites")))
                    if old != now]
        if live:
            self.config = self.config.replace(**live)
            self.venues.config = self.config       # a venue's name ([portal] site_name) is read per request
            logging.getLogger().setLevel(self.config.logging.level)
        return [f"{t}.{k}" for t in live for k in live[t]], restart

    def liveness_problem(self) -> str | None:
        """Why this daemon is not doing its job (a dead thread, a database that does not
        answer), or None; the systemd watchdog is fed only while this is None."""
        if self._web_thread is not None and not self._web_thread.is_alive():
            return "the portal's web server has stopped"
        if self.radius is not None and not self.radius._thread.is_alive():
            return "the RADIUS server has stopped"
        if self.scheduler is not None and not self.scheduler.running:
            return "the scheduler has stopped"
        try:
            self.db.execute_sql("SELECT 1").fetchone()
        except Exception as exc:  # noqa: BLE001 - any failure means the same: not healthy
            return f"the database does not answer ({exc})"
        return None

    def summary(self) -> str:
        """One line for ``systemctl status``: where the daemon answers."""
        parts = [f"portal {self._web.effective_host}:{self._web.effective_port}"] if self._web is not None else []
        if self.radius is not None:
            parts.append(f"RADIUS auth {self.radius.auth_address[1]} acct {self.radius.acct_address[1]}")
        return ", ".join(parts) or "running"

    def stop(self) -> None:
        if self.scheduler:
            self.scheduler.stop()
        if self.api_logins:
            self.api_logins.close()
        for router in self.api_routers + self.verifiers:
            router.close()
        if self.routeros_radius:
            self.routeros_radius.stop()
        if self.routeros_sim:
            self.routeros_sim.stop()
        if self.radius:
            self.radius.stop()
        if self.simulator:
            self.simulator.stop()
        if self._web is not None:
            self._stop_web()
        if self.db is not None:
            try:
                self.timekeeper.save()
            except Exception:  # noqa: BLE001 - a full disk must not stop the shutdown
                log.exception("could not save the time on shutdown")
            self.db.close()
        log.info("stopped")

    def _stop_web(self) -> None:
        """Waitress has no stop: its loop runs while any channel is open, and keep-alive
        connections stay open. So the loop's own thread is asked (through its trigger) to close
        every channel, the listener and the trigger included; the loop then ends by itself.

        PRIVATE NAME of waitress: the server's channel map ``_map`` (asyncore's socket map; the
        trigger and the task dispatcher are its documented-by-use attributes).
        tests/test_library_internals.py fails when an upgrade changes them."""
        web = self._web

        def close_all() -> None:
            for channel in list(web._map.values()):
                channel.close()
        if self._web_thread is None:       # a start that failed before the loop ran
            close_all()
            return
        try:
            web.trigger.pull_trigger(close_all)
        except OSError:          # the trigger is already closed: the loop is gone
            pass
        if self._web_thread:
            self._web_thread.join(timeout=5)
            if self._web_thread.is_alive():
                log.warning("the portal's web server did not stop within 5 s")
        web.task_dispatcher.shutdown()

    def __enter__(self) -> "Hotspot":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def run(cfg: Config) -> int:
    """Start everything, tell systemd (ready, watchdog, stopping), reload the config file on
    SIGHUP, stop cleanly on SIGTERM/SIGINT. Signals only set flags; this loop does the work."""
    hotspot = Hotspot(cfg)
    wake, reload_wanted = threading.Event(), threading.Event()

    def on_stop(*_):
        hotspot.stop_event.set()
        wake.set()

    def on_hup(*_):
        reload_wanted.set()
        wake.set()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, on_stop)
    signal.signal(signal.SIGHUP, on_hup)
    try:
        hotspot.start()
    except Exception as exc:
        systemd.status(f"failed to start: {exc}")
        raise
    systemd.ready(hotspot.summary())
    interval = systemd.watchdog_interval()
    next_ping, unwell = 0.0, None
    try:
        while True:
            wake.wait(min(1.0, interval / 2) if interval else 1.0)
            wake.clear()
            if hotspot.stop_event.is_set():
                break
            if reload_wanted.is_set():
                reload_wanted.clear()
                _reload(hotspot)
            if interval and time.monotonic() >= next_ping:
                # no ping while a part is dead: systemd then restarts the whole daemon
                problem = hotspot.liveness_problem()
                if problem is None:
                    systemd.watchdog()
                    next_ping = time.monotonic() + interval / 2
                elif problem != unwell:
                    log.error("%s; not answering the systemd watchdog", problem)
                unwell = problem
    finally:
        systemd.stopping()
        log.info("shutting down")
        hotspot.stop()
    return 0


def _reload(hotspot: Hotspot) -> None:
    """SIGHUP: read the config file again; apply what is safe, keep the rest until a restart."""
    source = hotspot.config.source
    path = None if source == "<defaults>" else source
    systemd.reloading()
    try:
        new = config_mod.load(path)
        errors = config_mod.permission_problems(path, new)[0] if path else []
        if errors:
            raise config_mod.ConfigError(source, "-", None, "; ".join(errors))
    except config_mod.ConfigError as exc:
        log.error("config reload refused, the running configuration stays: %s", exc)
        systemd.ready(f"config reload refused: {exc}")
        return
    applied, restart = hotspot.reload(new)
    if restart:
        log.warning("config: %s changed but needs a restart (systemctl restart hotspotd); "
                    "running with the old value until then", ", ".join(restart))
    log.info("config reloaded from %s: %s", source, ", ".join(applied) if applied else "nothing applied")
    systemd.ready(hotspot.summary())
