"""The running daemon: storage, Daraja (or its simulator), the portal, RADIUS and the jobs.

:class:`Hotspot` is both what ``hotspotd run`` starts and what the tests start on port 0.
``start()`` brings the parts up in order, ``stop()`` takes them down in reverse; a signal
only sets the stop event, and :func:`run` does the rest on the main thread.
"""
from __future__ import annotations

import logging
import signal
import threading
from urllib.parse import urlsplit, urlunsplit

from . import access, config as config_mod, db as db_mod
from .config import Config, parse_listen
from .daraja.client import BASE_URLS, DarajaClient
from .payments import PaymentService, Policy
from .scheduler import Scheduler

log = logging.getLogger(__name__)


class Hotspot:
    """Everything one hotspotd process runs, with a clean ``start()``/``stop()``."""

    def __init__(self, cfg: Config):
        self.config = cfg
        self.db = None
        self.simulator = None
        self.client: DarajaClient | None = None
        self.payments: PaymentService | None = None
        self.scheduler: Scheduler | None = None
        self.radius = None
        self.callback_token = ""
        self.callback_url = ""
        self._web = None
        self._web_thread: threading.Thread | None = None
        self.stop_event = threading.Event()

    # --- parts -----------------------------------------------------------------------------
    def open_database(self):
        self.db = db_mod.prepare(self.config.database.url, self.config.database.busy_timeout_ms)
        self.callback_token = db_mod.get_setting("callback_token")
        return self.db

    def _daraja(self, portal_url: str) -> DarajaClient:
        m = self.config.mpesa
        if self.config.simulated:
            from .daraja.simulator import DarajaSimulator
            host, port = parse_listen(self.config.simulator.daraja_listen)
            self.simulator = DarajaSimulator(host, port, callback_delay=self.config.simulator.callback_delay_seconds,
                                             final_after=self.config.simulator.final_after_seconds).start()
            base, key, secret = self.simulator.url, "simulator", "simulator"
            passkey = m.passkey or config_mod.SANDBOX_PASSKEY
        else:
            base, key, secret, passkey = m.base_url or BASE_URLS[m.environment], m.consumer_key, m.consumer_secret, m.passkey
        self.callback_url = self._callback_url(portal_url)
        party_b = m.till_number if m.transaction_type == "CustomerBuyGoodsOnline" else None
        return DarajaClient(base, key, secret, m.shortcode, passkey, transaction_type=m.transaction_type,
                            party_b=party_b, timeout=float(m.timeout_seconds))

    def _callback_url(self, portal_url: str) -> str:
        configured = self.config.mpesa.callback_url
        if configured and not self.config.simulated:
            parts = urlsplit(configured)
            if "/cb/" in parts.path:
                return configured
            return urlunsplit(parts._replace(path=parts.path.rstrip("/") + f"/cb/{self.callback_token}"))
        return f"{portal_url}/cb/{self.callback_token}"

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
        from waitress.server import create_server

        from portal_web import create_app

        self.open_database()
        app = create_app(self)
        host, port = parse_listen(self.config.portal.listen)
        self._web = create_server(app, host=host, port=port, threads=self.config.portal.threads,
                                  ident="hotspotd", clear_untrusted_proxy_headers=True)
        self.client = self._daraja(self.portal_url)
        self.payments = PaymentService(self.client, self.callback_url, self._policy())
        self._web_thread = threading.Thread(target=self._web.run, name="portal", daemon=True)
        self._web_thread.start()
        log.info("portal listening on %s (public URL %s)", self.portal_url, self.config.portal.public_url)
        if self.simulator:
            log.info("Daraja simulator at %s; callbacks go to %s/cb/…", self.simulator.url, self.portal_url)
        if self.config.radius.enabled:
            from radius.server import RadiusServer
            self.radius = RadiusServer(self.config).start()
        if self.config.scheduler.enabled:
            self.scheduler = Scheduler()
            s = self.config.scheduler
            self.scheduler.every(s.reconcile_every_seconds, "reconcile", self.payments.reconcile_due)
            self.scheduler.every(s.expire_every_seconds, "expire", self.expire_sessions)
            self.scheduler.start()
        return self

    def expire_sessions(self) -> int:
        ended = access.expire_due()
        return len(ended)

    def stop(self) -> None:
        if self.scheduler:
            self.scheduler.stop()
        if self.radius:
            self.radius.stop()
        if self.simulator:
            self.simulator.stop()
        if self._web is not None:
            self._web.close()
            if self._web_thread:
                self._web_thread.join(timeout=5)
        if self.db is not None:
            self.db.close()
        log.info("stopped")

    def __enter__(self) -> "Hotspot":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def run(cfg: Config) -> int:
    """Start everything, wait for SIGTERM/SIGINT, stop cleanly."""
    hotspot = Hotspot(cfg)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: hotspot.stop_event.set())
    hotspot.start()
    try:
        while not hotspot.stop_event.wait(1.0):
            pass
    finally:
        log.info("shutting down")
        hotspot.stop()
    return 0
