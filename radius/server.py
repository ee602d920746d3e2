"""The RADIUS server routers ask: Access-Request → :func:`hotspotd.access.authorize`, accounting →
:func:`hotspotd.access.record_usage`. A thin pyrad subclass with a stoppable serve loop.

- NAS clients come from ``[[radius.clients]]`` by address or network; anyone else is dropped and counted.
- Access-Requests need a valid Message-Authenticator unless the client's switch relaxes it;
  every Access reply is signed (pyrad 2.6 does it in ``CreateReply``).
- A retransmitted request (same client, Identifier and authenticator) gets the cached reply and is
  never processed twice: accounting is counted once.
"""
from __future__ import annotations

import errno
import ipaddress
import logging
import os
import select
import socket
import threading
import time
from collections import Counter, OrderedDict

from pyrad import packet
from pyrad.dictionary import Dictionary
from pyrad.server import Server, ServerPacketError

from hotspotd import access
from hotspotd.storage import db
from hotspotd.access import Usage
from hotspotd.config import Config, RadiusClient
from hotspotd.errors import PortInUse
from hotspotd.identifiers import InvalidMac, normalize_mac

from . import wire
from .replies import accept_attributes

log = logging.getLogger(__name__)

DICTIONARY_PATH = os.path.join(os.path.dirname(__file__), "dictionary", "dictionary")
STATUS = {1: "start", 2: "stop", 3: "interim"}
#: Accounting-On and -Off: the NAS (re)started or is stopping; none of its sessions lives on
NAS_STATUS = {7: "Accounting-On", 8: "Accounting-Off"}
# attribute numbers the server reads (RFC 2865, 2866, 2869)
USER_NAME, FRAMED_IP_ADDRESS, CLASS, CALLING_STATION_ID, NAS_IDENTIFIER = 1, 8, 25, 31, 32
ACCT_STATUS_TYPE, ACCT_INPUT_OCTETS, ACCT_OUTPUT_OCTETS, ACCT_SESSION_ID, ACCT_SESSION_TIME = 40, 42, 43, 44, 46
ACCT_TERMINATE_CAUSE, ACCT_INPUT_GIGAWORDS, ACCT_OUTPUT_GIGAWORDS = 49, 52, 53
def N_(message: str) -> str:
    """Marks a customer's text for the gettext catalogue (portal_web/translations, with its
    Kiswahili); a Reply-Message carries the English message id (a NAS shows it as it comes)."""
    return message


REJECT_NO_TIME = N_("No Wi-Fi time on this device. Open the portal to buy a package.")
REJECT_OTHER_VENUE = N_("Your Wi-Fi time was bought at another of our venues and works only there.")
_DEDUPE_SIZE = 4096


def load_dictionary() -> Dictionary:
    return Dictionary(DICTIONARY_PATH)


def _first(pkt: packet.Packet, name: str):
    try:
        values = pkt[name]
    except KeyError:
        return None
    return values[0] if values else None


class NoMessageAuthenticator(ServerPacketError):
    """An Access-Request without Message-Authenticator from a client that must send one (BlastRADIUS)."""


class RadiusServer(Server):
    """Auth and accounting for the NAS clients of ``cfg``. ``start()`` binds (port 0 allowed),
    ``stop()`` ends the loop and closes the sockets."""

    def __init__(self, cfg: Config, on_cap_reached=None, metrics=None):
        super().__init__(addresses=[], authport=cfg.radius.auth_port, acctport=cfg.radius.acct_port,
                         dict=load_dictionary(), auth_enabled=True, acct_enabled=True, coa_enabled=False,
                         enforce_ma=True)
        self.cfg = cfg
        self.clients: tuple[RadiusClient, ...] = cfg.radius_clients
        self.on_cap_reached = on_cap_reached
        #: a :class:`hotspotd.metrics.Metrics` (or None): latency and first time online; it reads
        #: ``stats`` itself at scrape time
        self.metrics = metrics
        self.stats: Counter = Counter()
        self.last_request_at: float | None = None
        #: NAS address → how many Access-Requests without Message-Authenticator it sent that were
        #: dropped (RouterOS before 7.15 sends none): said once in the log, shown on the health page
        self.no_message_authenticator: Counter = Counter()
        self._client_cache: dict[str, RadiusClient | None] = {}
        self._replies: OrderedDict[tuple, bytes] = OrderedDict()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.synchronous: int | None = None
        self._encoder = wire.Encoder(self.dict)
        self._reject_attributes = self._encoder.attributes({"Reply-Message": REJECT_NO_TIME})
        self._reject_elsewhere = self._encoder.attributes({"Reply-Message": REJECT_OTHER_VENUE})
        causes = self.dict.attributes["Acct-Terminate-Cause"].values
        #: Acct-Terminate-Cause number → its name, as stored (``User-Request``)
        self._terminate_causes = {int.from_bytes(v, "big"): name for name, v in causes.forward.items()}

    # --- lifecycle -----------------------------------------------------------------------
    def start(self) -> "RadiusServer":
        host = self.cfg.radius.listen
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        try:
            self._bind(host, family)
        except OSError:
            for fd in self.authfds + self.acctfds:
                fd.close()
            self.authfds, self.acctfds = [], []
            raise
        self.auth_address = self.authfds[0].getsockname()[:2]
        self.acct_address = self.acctfds[0].getsockname()[:2]
        self._thread = threading.Thread(target=self.serve, name="radius", daemon=True)
        self._thread.start()
        log.info("RADIUS listening on %s auth %d, acct %d", host, self.auth_address[1], self.acct_address[1])
        return self

    def _bind(self, host: str, family: int) -> None:
        for port, fds in ((self.authport, self.authfds), (self.acctport, self.acctfds)):
            fd = socket.socket(family, socket.SOCK_DGRAM)
            fds.append(fd)
            # no SO_REUSEADDR: on UDP it lets a second process bind the same port and silently take
            # the packets; a second hotspotd started by mistake must fail at start instead
            if self.cfg.radius.reuse_port:
                # every process that set it shares the port; the kernel hands each router (by its
                # address and port) to one of them, so a retransmission meets the same duplicate cache
                fd.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            fd.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * 1024 * 1024)
            try:
                fd.bind((host, port))
            except OSError as exc:
                if exc.errno != errno.EADDRINUSE:
                    raise
                key = "auth_port" if port == self.authport else "acct_port"
                raise PortInUse("udp", host, port, "the RADIUS server",
                                f"[radius] {key} in the config file, or HOTSPOTD_RADIUS_{key.upper()}"
                                f"={port + 10000 if port < 50000 else port - 1000}") from exc

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=5)
        for fd in self.authfds + self.acctfds:
            fd.close()
        self.authfds, self.acctfds = [], []

    def serve(self) -> None:
        """Receive until :meth:`stop`; a bad packet or a failing handler never ends the loop.
        A ready socket is drained before the next ``select`` (one system call per burst, not
        per datagram: after a power cut every device asks at once)."""
        auth = {fd.fileno(): fd for fd in self.authfds}
        acct = {fd.fileno(): fd for fd in self.acctfds}
        fds = list(auth.values()) + list(acct.values())
        for fd in fds:
            fd.setblocking(False)
        #: the durability setting of this thread's connection, for tests: SQLite's synchronous
        #: (1 = NORMAL), PostgreSQL's synchronous_commit ("off")
        self.synchronous = db.prepare_radius_thread()
        while not self._stop.is_set():
            try:
                ready, _, _ = select.select(fds, [], [], 0.5)
            except (OSError, ValueError):
                break
            for fd in ready:
                is_auth = fd.fileno() in auth
                for _ in range(256):    # then the other socket gets its turn
                    try:
                        data, source = fd.recvfrom(self.MaxPacketSize)
                    except OSError:     # BlockingIOError: drained
                        break
                    self.handle_datagram(fd, data, source, is_auth)

    # --- packets -------------------------------------------------------------------------
    def client_for(self, address: str) -> RadiusClient | None:
        if address in self._client_cache:
            return self._client_cache[address]
        try:
            ip = ipaddress.ip_address(address)
            ip = ip.ipv4_mapped or ip if isinstance(ip, ipaddress.IPv6Address) else ip
        except ValueError:
            return None
        found = next((c for c in self.clients if ip in c.network), None)
        if len(self._client_cache) < 10000:
            self._client_cache[address] = found
        return found

    def handle_datagram(self, fd: socket.socket, data: bytes, source: tuple, is_auth: bool) -> None:
        kind = "auth" if is_auth else "acct"
        client = self.client_for(source[0])
        if client is None:
            self.stats["dropped_unknown_client"] += 1
            return
        if len(data) < 20:
            self.stats[f"{kind}_malformed"] += 1
            return
        key = (source[0], source[1], data[1], data[4:20])
        cached = self._replies.get(key)
        if cached is not None:
            self.stats[f"{kind}_duplicate"] += 1
            self._send(fd, cached, source)
            return
        started = time.perf_counter()
        try:
            req = wire.parse(data)
            secret = client.secret.encode()
            raw = self._auth(req, client, secret) if is_auth else self._acct(req, source, client, secret)
        except NoMessageAuthenticator:
            self.stats[f"{kind}_dropped"] += 1
            self.stats["auth_dropped_no_message_authenticator"] += 1
            if not self.no_message_authenticator[source[0]]:
                log.warning("RADIUS: the router at %s sends Access-Requests without Message-Authenticator "
                            "(RouterOS before 7.15 does); they are dropped, so its customers cannot log in: "
                            "upgrade it to RouterOS 7.15 or later, or set require_message_authenticator = false "
                            "in its [[radius.clients]] entry", source[0])
            self.no_message_authenticator[source[0]] += 1
            return
        except ServerPacketError as exc:
            self.stats[f"{kind}_dropped"] += 1
            log.debug("dropping %s packet from %s: %s", kind, source[0], exc)
            return
        except (wire.WireError, packet.PacketError, KeyError, ValueError, TypeError, IndexError, UnicodeError) as exc:
            self.stats[f"{kind}_malformed"] += 1
            log.debug("malformed %s packet from %s: %s", kind, source[0], exc)
            return
        except Exception:  # noqa: BLE001 - no reply: the NAS retransmits and we try again
            self.stats[f"{kind}_errors"] += 1
            log.exception("handling %s packet from %s failed", kind, source[0])
            return
        self._replies[key] = raw
        if len(self._replies) > _DEDUPE_SIZE:
            self._replies.popitem(last=False)
        self._send(fd, raw, source)
        self.last_request_at = time.time()
        elapsed = time.perf_counter() - started
        self.stats[f"{kind}_seconds"] += elapsed
        if self.metrics is not None:
            self.metrics.radius_request(kind, elapsed)

    def _send(self, fd: socket.socket, raw: bytes, source: tuple) -> None:
        """Send a reply; a full send buffer loses it (the NAS retransmits, the cache answers)."""
        try:
            fd.sendto(raw, source)
        except OSError as exc:
            self.stats["reply_send_failed"] += 1
            log.debug("reply to %s not sent: %s", source[0], exc)

    def _auth(self, req: wire.Request, client: RadiusClient, secret: bytes) -> bytes:
        if req.code != wire.ACCESS_REQUEST:
            raise ServerPacketError("not an Access-Request")
        if req.ma_offset is None:
            if client.require_message_authenticator:
                raise NoMessageAuthenticator("no Message-Authenticator")
        elif not wire.message_authenticator_ok(req, secret):
            raise ServerPacketError("invalid Message-Authenticator (wrong secret?)")
        grant = self._find_grant(req, secret, client.site)
        if grant is None:
            self.stats["access_reject"] += 1
            return wire.reply(req, wire.ACCESS_REJECT, self._why_rejected(req, client), secret)
        self.stats["access_accept"] += 1
        if self.metrics is not None:
            self.metrics.online(grant.entitlement_id)
        attributes = accept_attributes(grant, client.kind, self.cfg.radius.idle_timeout,
                                       self.cfg.radius.interim_interval)
        return wire.reply(req, wire.ACCESS_ACCEPT, self._encoder.attributes(attributes), secret)

    def _find_grant(self, req: wire.Request, secret: bytes, site: str):
        """The grant for this request at the NAS's venue: time bought at another venue does not
        work here unless its package roams."""
        username = req.text(USER_NAME) or ""
        calling = req.text(CALLING_STATION_ID)
        try:
            calling_mac = normalize_mac(calling) if calling else None
        except InvalidMac:
            calling_mac = None
        try:
            user_mac = normalize_mac(username.split("@")[0])
        except InvalidMac:
            user_mac = None
        if user_mac:
            # MAC authentication: the router vouches for the MAC; the one in User-Name must be the
            # device's own when the router says which device asks (no borrowing another's time).
            if calling_mac and calling_mac != user_mac:
                return None
            return access.authorize(user_mac, site=site)
        if not username:
            return None
        # a login (voucher, post-payment): pyrad checks the PAP or CHAP password
        pkt = self.CreateAuthPacket(packet=req.raw, secret=secret)
        return access.authorize_login(username, lambda password: self._password_ok(pkt, password), calling_mac,
                                      site=site)

    def _why_rejected(self, req: wire.Request, client: RadiusClient) -> bytes:
        """The reject's Reply-Message: with several venues, a device whose time works at another
        venue is told so (the router shows it on its login page), and the owner sees it in the log:
        a router sending its customers to the wrong venue's splash page looks like this."""
        if not self.cfg.multi_site:
            return self._reject_attributes
        try:
            mac = normalize_mac((req.text(USER_NAME) or "").split("@")[0])
        except InvalidMac:
            return self._reject_attributes
        elsewhere = access.authorize(mac)
        if elsewhere is None:
            return self._reject_attributes
        self.stats["access_reject_other_venue"] += 1
        log.info("RADIUS: %s has time (session %s) at another venue, not at %s (NAS %s)", mac,
                 elsewhere.entitlement_id, client.site, req.text(NAS_IDENTIFIER) or "?")
        return self._reject_elsewhere

    @staticmethod
    def _password_ok(pkt: packet.AuthPacket, secret: str) -> bool:
        if _first(pkt, "CHAP-Password") is not None:
            return pkt.VerifyChapPasswd(secret)
        encrypted = _first(pkt, "User-Password")
        if encrypted is None:
            return False
        try:
            return pkt.PwDecrypt(encrypted) == secret
        except (UnicodeError, ValueError):
            return False

    def _acct(self, req: wire.Request, source: tuple, client: RadiusClient, secret: bytes) -> bytes:
        if req.code != wire.ACCOUNTING_REQUEST:
            raise ServerPacketError("not an Accounting-Request")
        if not wire.accounting_authenticator_ok(req, secret):
            raise ServerPacketError("bad Request Authenticator (wrong secret?)")
        status_type = req.integer(ACCT_STATUS_TYPE)
        status = STATUS.get(status_type)
        session_id = req.text(ACCT_SESSION_ID)
        if status and session_id:
            self._record(req, source, status, session_id, client)
        elif status_type in NAS_STATUS:
            # after a crash chilli sends only Accounting-On: every session it had is gone
            ended = access.end_nas_sessions(source[0], NAS_STATUS[status_type])
            log.info("RADIUS: %s from %s: %d open accounting session(s) ended", NAS_STATUS[status_type],
                     source[0], ended)
            status = "on" if status_type == 7 else "off"
        self.stats[f"acct_{status or 'other'}"] += 1
        return wire.reply(req, wire.ACCOUNTING_RESPONSE, b"", secret)

    def _record(self, req: wire.Request, source: tuple, status: str, session_id: str, client: RadiusClient) -> None:
        mac = None
        for code in (CALLING_STATION_ID, USER_NAME):
            value = req.text(code)
            if value:
                try:
                    mac = normalize_mac(value)
                    break
                except InvalidMac:
                    continue
        ent_id = None
        cls = req.first(CLASS)
        if cls is not None and cls.startswith(b"hotspotd:"):
            try:
                ent_id = int(cls[9:])
            except ValueError:
                ent_id = None

        def octets(low: int, high: int) -> int:
            return (req.integer(high) or 0) << 32 | (req.integer(low) or 0)

        terminate = req.integer(ACCT_TERMINATE_CAUSE)
        inbound = octets(ACCT_INPUT_OCTETS, ACCT_INPUT_GIGAWORDS)
        outbound = octets(ACCT_OUTPUT_OCTETS, ACCT_OUTPUT_GIGAWORDS)
        if client.input_is_download:
            inbound, outbound = outbound, inbound     # stored as RFC 2866 has it: input = upload
        usage = Usage(nas=source[0], acct_session_id=session_id[:64], status=status, mac=mac,
                      entitlement_id=ent_id, ip=req.address(FRAMED_IP_ADDRESS),
                      username=(req.text(USER_NAME) or "")[:64] or None, site=client.site,
                      input_octets=inbound, output_octets=outbound,
                      session_time=req.integer(ACCT_SESSION_TIME) or 0,
                      terminate_cause=self._terminate_causes.get(terminate, str(terminate))
                      if terminate is not None else None)
        if status == "start" and ent_id is not None and self.metrics is not None:
            self.metrics.online(ent_id)
        if access.record_usage(usage) and self.on_cap_reached:
            self.on_cap_reached(usage)
