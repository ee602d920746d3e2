"""The RADIUS server routers ask: Access-Request → :func:`hotspotd.access.authorize`, accounting →
:func:`hotspotd.access.record_usage`. A thin pyrad subclass with a stoppable serve loop.

- NAS clients come from ``[[radius.clients]]`` by address or network; anyone else is dropped and counted.
- Access-Requests need a valid Message-Authenticator unless the client's switch relaxes it;
  every Access reply is signed (pyrad 2.6 does it in ``CreateReply``).
- A retransmitted request (same client, Identifier and authenticator) gets the cached reply and is
  never processed twice: accounting is counted once.
"""
from __future__ import annotations

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
from pyrad.server import CheckMessageAuthenticator, Server, ServerPacketError

from hotspotd import access
from hotspotd.access import Usage
from hotspotd.config import Config, RadiusClient
from hotspotd.identifiers import InvalidMac, normalize_mac

from .replies import accept_attributes

log = logging.getLogger(__name__)

DICTIONARY_PATH = os.path.join(os.path.dirname(__file__), "dictionary", "dictionary")
STATUS = {1: "start", 2: "stop", 3: "interim", "Start": "start", "Stop": "stop", "Interim-Update": "interim"}
REJECT_NO_TIME = "No Wi-Fi time on this device. Open the portal to buy a package."
_DEDUPE_SIZE = 4096


def load_dictionary() -> Dictionary:
    return Dictionary(DICTIONARY_PATH)


def _first(pkt: packet.Packet, name: str):
    try:
        values = pkt[name]
    except KeyError:
        return None
    return values[0] if values else None


def _text(pkt: packet.Packet, name: str) -> str | None:
    """A string attribute as text; None when absent or not UTF-8 (pyrad then hands over bytes)."""
    value = _first(pkt, name)
    return value if isinstance(value, str) else None


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
        self._client_cache: dict[str, RadiusClient | None] = {}
        self._replies: OrderedDict[tuple, bytes] = OrderedDict()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # --- lifecycle -----------------------------------------------------------------------
    def start(self) -> "RadiusServer":
        host = self.cfg.radius.listen
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        for port, fds in ((self.authport, self.authfds), (self.acctport, self.acctfds)):
            fd = socket.socket(family, socket.SOCK_DGRAM)
            fd.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            fd.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * 1024 * 1024)
            fd.bind((host, port))
            fds.append(fd)
        self.auth_address = self.authfds[0].getsockname()[:2]
        self.acct_address = self.acctfds[0].getsockname()[:2]
        self._thread = threading.Thread(target=self.serve, name="radius", daemon=True)
        self._thread.start()
        log.info("RADIUS listening on %s auth %d, acct %d", host, self.auth_address[1], self.acct_address[1])
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=5)
        for fd in self.authfds + self.acctfds:
            fd.close()
        self.authfds, self.acctfds = [], []

    def serve(self) -> None:
        """Receive until :meth:`stop`; a bad packet or a failing handler never ends the loop."""
        auth = {fd.fileno(): fd for fd in self.authfds}
        acct = {fd.fileno(): fd for fd in self.acctfds}
        fds = list(auth.values()) + list(acct.values())
        while not self._stop.is_set():
            try:
                ready, _, _ = select.select(fds, [], [], 0.5)
            except (OSError, ValueError):
                break
            for fd in ready:
                try:
                    data, source = fd.recvfrom(self.MaxPacketSize)
                except OSError:
                    continue
                self.handle_datagram(fd, data, source, fd.fileno() in auth)

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
            fd.sendto(cached, source)
            return
        started = time.perf_counter()
        try:
            if is_auth:
                pkt = self.CreateAuthPacket(packet=data, secret=client.secret.encode())
            else:
                pkt = self.CreateAcctPacket(packet=data, secret=client.secret.encode())
            pkt.source = source
            reply = self._auth(pkt, client) if is_auth else self._acct(pkt, client)
            raw = reply.ReplyPacket()   # inside: nothing a packet causes may end the serve loop
        except ServerPacketError as exc:
            self.stats[f"{kind}_dropped"] += 1
            log.debug("dropping %s packet from %s: %s", kind, source[0], exc)
            return
        except (packet.PacketError, KeyError, ValueError, TypeError, IndexError, UnicodeError) as exc:
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
        fd.sendto(raw, source)
        self.last_request_at = time.time()
        elapsed = time.perf_counter() - started
        self.stats[f"{kind}_seconds"] += elapsed
        if self.metrics is not None:
            self.metrics.radius_request(kind, elapsed)

    def _auth(self, pkt: packet.AuthPacket, client: RadiusClient) -> packet.Packet:
        if pkt.code != packet.AccessRequest:
            raise ServerPacketError("not an Access-Request")
        CheckMessageAuthenticator(pkt, client.require_message_authenticator)
        grant = self._find_grant(pkt)
        if grant is None:
            self.stats["access_reject"] += 1
            reply = pkt.CreateReply()
            reply.code = packet.AccessReject
            reply["Reply-Message"] = REJECT_NO_TIME
            return reply
        self.stats["access_accept"] += 1
        if self.metrics is not None:
            self.metrics.online(grant.entitlement_id)
        reply = pkt.CreateReply()
        for name, value in accept_attributes(grant, client.kind, self.cfg.radius.idle_timeout,
                                             self.cfg.radius.interim_interval).items():
            reply[name] = value
        return reply

    def _find_grant(self, pkt: packet.AuthPacket):
        username = _text(pkt, "User-Name") or ""
        calling = _text(pkt, "Calling-Station-Id")
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
            return access.authorize(user_mac)
        if not username:
            return None
        return access.authorize_login(username, lambda secret: self._password_ok(pkt, secret), calling_mac)

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

    def _acct(self, pkt: packet.AcctPacket, client: RadiusClient) -> packet.Packet:
        if pkt.code != packet.AccountingRequest:
            raise ServerPacketError("not an Accounting-Request")
        if not pkt.VerifyAcctRequest():
            raise ServerPacketError("bad Request Authenticator (wrong secret?)")
        status_value = _first(pkt, "Acct-Status-Type")
        status = STATUS.get(status_value)
        session_id = _first(pkt, "Acct-Session-Id")
        if status and session_id:
            self._record(pkt, status, session_id)
        self.stats[f"acct_{status or 'other'}"] += 1
        reply = pkt.CreateReply()
        return reply

    def _record(self, pkt: packet.AcctPacket, status: str, session_id: str) -> None:
        mac = None
        for name in ("Calling-Station-Id", "User-Name"):
            value = _text(pkt, name)
            if value:
                try:
                    mac = normalize_mac(value)
                    break
                except InvalidMac:
                    continue
        ent_id = None
        cls = _first(pkt, "Class")
        if isinstance(cls, bytes) and cls.startswith(b"hotspotd:"):
            try:
                ent_id = int(cls[9:])
            except ValueError:
                ent_id = None

        def octets(name: str) -> int:
            return (_first(pkt, f"Acct-{name}-Gigawords") or 0) << 32 | (_first(pkt, f"Acct-{name}-Octets") or 0)

        terminate = _first(pkt, "Acct-Terminate-Cause")
        usage = Usage(nas=pkt.source[0], acct_session_id=str(session_id)[:64], status=status, mac=mac,
                      entitlement_id=ent_id, ip=str(_first(pkt, "Framed-IP-Address") or "") or None,
                      username=(_text(pkt, "User-Name") or "")[:64] or None,
                      input_octets=octets("Input"), output_octets=octets("Output"),
                      session_time=_first(pkt, "Acct-Session-Time") or 0,
                      terminate_cause=str(terminate) if terminate is not None else None)
        if status == "start" and ent_id is not None and self.metrics is not None:
            self.metrics.online(ent_id)
        if access.record_usage(usage) and self.on_cap_reached:
            self.on_cap_reached(usage)
