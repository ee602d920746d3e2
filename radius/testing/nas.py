"""A CoovaChilli for tests and the demo: its RFC 5176 end (``coaport 3799``) and the accounting it
sends, with sessions kept in memory. Each behaviour is chilli's own, as measured against a real
chilli (docs: ../shared/reference/routers.md, "CoovaChilli as it really behaves") and as its
source does it (``cb_radius_coa_ind`` and ``acct_req`` in coova-chilli's ``src/chilli.c``):

- A datagram from a source not in ``allowed_sources`` (chilli: the addresses of radiusserver1/2),
  with a wrong Request Authenticator (wrong secret) or an invalid Message-Authenticator is dropped
  without a word and counted in ``stats``. So is a request without User-Name.
- A Disconnect-Request ends every session whose User-Name is the request's and, when the request
  carries Acct-Session-Id, whose id matches it (case-insensitive); nothing else is compared. Found:
  each gets an Accounting Stop with Admin-Reset, then the Disconnect-ACK. None: Disconnect-NAK
  **with no attributes at all** (no Error-Cause).
- A CoA-Request matched the same way applies Session-Timeout (counted, as chilli does, from the
  session's start), Idle-Timeout and the bandwidth and octet limits to the live session: CoA-ACK;
  none found: CoA-NAK without attributes. Chilli reconfigures from the whole packet, so a limit the
  CoA leaves out is cleared (``Session.limits`` shows what the session has now).
- Replies carry a Response Authenticator and no Message-Authenticator (chilli's reply packet has none).
  A retransmitted request (same source, Identifier and authenticator) gets the same reply again.
- Accounting goes to ``radius_server`` from the same socket the CoA port listens on (chilli sends
  its RADIUS from source port 3799). :meth:`login` sends Start, :meth:`report` Interim-Update,
  :meth:`end` Stop; :meth:`shutdown` (a graceful stop) a Stop with NAS-Reboot per session, then
  Accounting-Off; :meth:`boot` Accounting-On; :meth:`crash` forgets every session and says nothing.
- ``Acct-Session-Id`` is ``"%.8lld%.8x"`` of (unix second, the device's unit): two sessions of one
  device within the same second share it. Octets are counted from the client's side:
  Acct-Input-Octets is what the client downloaded (unless ``swapoctets``).
"""
from __future__ import annotations

import ipaddress
import logging
import select
import socket
import threading
import time
from collections import Counter, OrderedDict
from dataclasses import dataclass, field

from pyrad import packet

from radius.server import load_dictionary

log = logging.getLogger(__name__)

_MAX_DATAGRAM = 4096
_DEDUPE_SIZE = 256
#: reply attributes a CoA sets on a session (chilli's ``config_radius_session``)
LIMITS = ("Session-Timeout", "Idle-Timeout", "Acct-Interim-Interval", "WISPr-Bandwidth-Max-Up",
          "WISPr-Bandwidth-Max-Down", "ChilliSpot-Bandwidth-Max-Up", "ChilliSpot-Bandwidth-Max-Down",
          "ChilliSpot-Max-Input-Octets", "ChilliSpot-Max-Output-Octets", "ChilliSpot-Max-Total-Octets",
          "ChilliSpot-Max-Input-Gigawords", "ChilliSpot-Max-Output-Gigawords", "ChilliSpot-Max-Total-Gigawords")


@dataclass
class Session:
    """A session the NAS has up."""
    user_name: str
    mac: str | None = None
    acct_session_id: str | None = None
    ip: str | None = None
    cls: bytes | None = None
    started: float = field(default_factory=time.time)
    #: what the client downloaded and uploaded so far
    downloaded: int = 0
    uploaded: int = 0
    #: the limits in force (attribute name → value), from the Accept (:meth:`NasSimulator.login`) or a CoA
    limits: dict = field(default_factory=dict)


@dataclass(frozen=True)
class ReceivedRequest:
    """One CoA-Request or Disconnect-Request as it arrived, and what became of it."""
    source: tuple[str, int]
    code: int                                   #: 40 Disconnect-Request, 43 CoA-Request
    attributes: dict = field(default_factory=dict)  #: decoded values by attribute name (code if unknown)
    valid: bool = False                         #: allowed source, right authenticators, User-Name
    reply_code: int | None = None               #: None when dropped
    reply_attributes: tuple = ()                #: attribute numbers of the reply (chilli: none)


class NasSimulator:
    """Chilli's CoA port on UDP ``host``:``port`` (0: any free port, see :attr:`address`), sending
    accounting to ``radius_server`` ((host, acct port); None: no accounting). ``start()`` binds and
    serves in a thread, ``stop()`` ends the loop and closes the socket. A context manager."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, secret: str = "testing123",
                 allowed_sources=("127.0.0.1",), nas_identifier: str = "nas01", nas_ip: str = "10.1.0.1",
                 radius_server: tuple[str, int] | None = None, swapoctets: bool = False):
        self.host, self.port = host, port
        self.secret = secret.encode()
        self.allowed = tuple(ipaddress.ip_network(s, strict=False) for s in allowed_sources)
        self.nas_identifier, self.nas_ip = nas_identifier, nas_ip   # HS_NASID; uamlisten (sent as NAS-IP-Address)
        self.radius_server = radius_server
        self.swapoctets = swapoctets
        self.dict = load_dictionary()
        self.requests: list[ReceivedRequest] = []
        self.stats: Counter = Counter()
        self._sessions: list[Session] = []
        self._units: dict[str, int] = {}
        self._lock = threading.Lock()
        self._replies: OrderedDict[tuple, bytes] = OrderedDict()
        self._answered: dict[int, threading.Event] = {}
        self._next_id = 0
        self._unreachable = False
        self._stop = threading.Event()
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None

    # --- lifecycle -----------------------------------------------------------------------
    def start(self) -> "NasSimulator":
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        self._sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            self._sock.bind((self.host, self.port))
        except OSError:
            self._sock.close()
            raise
        self._stop.clear()
        self._thread = threading.Thread(target=self._serve, name="nas-sim", daemon=True)
        self._thread.start()
        log.info("NAS simulator answering Disconnect-Requests on %s:%d", *self.address)
        return self

    def stop(self) -> None:
        """End the loop and close the socket; safe to call twice."""
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=5)
            self._thread = None
        if self._sock:
            self._sock.close()
            self._sock = None

    def __enter__(self) -> "NasSimulator":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def address(self) -> tuple[str, int]:
        """(host, port) actually bound."""
        if self._sock is None:
            raise RuntimeError("NasSimulator is not started")
        return self._sock.getsockname()[:2]

    # --- sessions ------------------------------------------------------------------------
    def add_session(self, user_name: str, *, mac: str | None = None, acct_session_id: str | None = None,
                    ip: str | None = None) -> Session:
        """Bring a session up without accounting (as if its Start went elsewhere)."""
        session = Session(user_name, mac, acct_session_id, ip)
        with self._lock:
            self._sessions.append(session)
        return session

    def login(self, mac: str, *, user_name: str | None = None, ip: str | None = None, cls: bytes | None = None,
              limits: dict | None = None) -> Session:
        """A device logs in (MAC auth: User-Name is the MAC with dashes) and its Start goes out."""
        mac = mac.upper().replace(":", "-")
        now = time.time()
        with self._lock:
            unit = self._units.setdefault(mac, len(self._units) + 1)
        session = Session(user_name or mac, mac, f"{int(now):08d}{unit:08x}", ip, cls, now, limits=dict(limits or {}))
        with self._lock:
            self._sessions.append(session)
        self._accounting(1, session)
        return session

    def report(self, session: Session, *, downloaded: int, uploaded: int) -> bool:
        """The counters grew to these totals: an Interim-Update."""
        session.downloaded, session.uploaded = downloaded, uploaded
        return self._accounting(3, session)

    def end(self, session: Session, cause: int = 5) -> bool:
        """Chilli ends the session itself (5 Session-Timeout: its timeout or a data cap) and sends Stop."""
        with self._lock:
            self._sessions = [s for s in self._sessions if s is not session]
        return self._accounting(2, session, cause)

    def shutdown(self) -> None:
        """A graceful stop: Stop with NAS-Reboot (11) per session, then Accounting-Off."""
        for session in self.sessions():
            self.end(session, 11)
        self._accounting(8)

    def boot(self) -> bool:
        """Chilli starts: Accounting-On."""
        return self._accounting(7)

    def crash(self) -> None:
        """kill -9: every session is gone and nothing is said."""
        with self._lock:
            self._sessions = []

    def online(self) -> list[str]:
        """User names of the sessions still up, in the order they came."""
        with self._lock:
            return [s.user_name for s in self._sessions]

    def sessions(self) -> list[Session]:
        """The sessions still up."""
        with self._lock:
            return list(self._sessions)

    def set_unreachable(self, flag: bool = True) -> None:
        """While set, every datagram is dropped silently (counted as ``dropped_unreachable``)."""
        self._unreachable = flag

    # --- accounting out --------------------------------------------------------------------
    def _accounting(self, status: int, session: Session | None = None, cause: int | None = None,
                    wait: bool = True) -> bool:
        """Send an Accounting-Request from the CoA socket; with ``wait``, True once answered."""
        if self.radius_server is None or self._sock is None:
            return False
        req = packet.AcctPacket(secret=self.secret, dict=self.dict)
        with self._lock:
            self._next_id = (self._next_id + 1) % 256
            req.id = self._next_id
        req["Acct-Status-Type"] = status
        req["NAS-IP-Address"] = self.nas_ip
        req["NAS-Identifier"] = self.nas_identifier
        if session is not None:
            inbound, outbound = session.downloaded, session.uploaded
            if self.swapoctets:
                inbound, outbound = outbound, inbound
            req["User-Name"] = session.user_name
            req["Acct-Session-Id"] = session.acct_session_id or ""
            if session.mac:
                req["Calling-Station-Id"] = session.mac
            if session.ip:
                req["Framed-IP-Address"] = session.ip
            if session.cls:
                req["Class"] = session.cls
            req["Acct-Session-Time"] = int(time.time() - session.started)
            req["Acct-Input-Octets"], req["Acct-Input-Gigawords"] = inbound & 0xFFFFFFFF, inbound >> 32
            req["Acct-Output-Octets"], req["Acct-Output-Gigawords"] = outbound & 0xFFFFFFFF, outbound >> 32
            if cause is not None:
                req["Acct-Terminate-Cause"] = cause
        raw = req.RequestPacket()
        answered = self._answered[req.id] = threading.Event()
        for _ in range(3 if wait else 1):
            try:
                self._sock.sendto(raw, self.radius_server)
            except OSError as exc:
                log.debug("accounting to %s not sent: %s", self.radius_server, exc)
            if not wait or answered.wait(1.0):
                break
        self.stats[f"acct_sent_{status}"] += 1
        return answered.is_set()

    # --- packets -------------------------------------------------------------------------
    def _serve(self) -> None:
        sock = self._sock
        while not self._stop.is_set():
            try:
                ready, _, _ = select.select([sock], [], [], 0.2)
                if not ready:
                    continue
                data, source = sock.recvfrom(_MAX_DATAGRAM)
            except (OSError, ValueError):
                if self._stop.is_set():
                    break
                continue
            try:
                reply = self.handle_datagram(data, source[:2])
            except Exception:  # noqa: BLE001 - a bad datagram must never end the loop
                self.stats["errors"] += 1
                log.exception("handling a datagram from %s failed", source[0])
                continue
            if reply is not None:
                try:
                    sock.sendto(reply, source)
                except OSError as exc:
                    log.debug("reply to %s failed: %s", source, exc)

    def handle_datagram(self, data: bytes, source: tuple[str, int]) -> bytes | None:
        """The reply to ``data`` from ``source``, or None to stay silent."""
        if self._unreachable:
            self.stats["dropped_unreachable"] += 1
            return None
        if not self._allowed(source[0]):
            self.stats["dropped_source"] += 1
            log.debug("dropping datagram from %s: not an allowed source", source[0])
            return None
        if len(data) >= 20 and data[0] == packet.AccountingResponse and tuple(source) == tuple(self.radius_server or ()):
            event = self._answered.get(data[1])
            if event is not None:
                event.set()
            self.stats["acct_answered"] += 1
            return None
        try:
            request = packet.CoAPacket(packet=data, secret=self.secret, dict=self.dict)
        except (packet.PacketError, ValueError, TypeError, IndexError, KeyError) as exc:
            self.stats["malformed"] += 1
            log.debug("malformed datagram from %s: %s", source[0], exc)
            return None
        if request.code not in (packet.DisconnectRequest, packet.CoARequest):
            self.stats["ignored_code"] += 1
            return None
        key = (source, request.id, request.authenticator)
        cached = self._replies.get(key)
        if cached is not None:
            self.stats["duplicate"] += 1
            return cached
        record = dict(source=source, code=request.code, attributes=_attributes(request))
        reason = self._authentic(request) or (None if _text(request, "User-Name") else "no_user_name")
        if reason:
            self.stats[f"dropped_{reason}"] += 1
            self.requests.append(ReceivedRequest(**record))
            log.debug("dropping request from %s: %s", source[0], reason.replace("_", " "))
            return None
        reply = self._answer(request)
        self.requests.append(ReceivedRequest(**record, valid=True, reply_code=reply.code,
                                             reply_attributes=tuple(reply.keys())))
        raw = reply.ReplyPacket()
        self._replies[key] = raw
        if len(self._replies) > _DEDUPE_SIZE:
            self._replies.popitem(last=False)
        return raw

    def _allowed(self, address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address.split("%")[0])
        except ValueError:
            return False
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
            ip = ip.ipv4_mapped
        return any(ip in net for net in self.allowed)

    @staticmethod
    def _authentic(request: packet.CoAPacket) -> str | None:
        """None if both authenticators check out, else which one failed."""
        if not request.VerifyCoARequest():
            return "authenticator"
        if request.message_authenticator and not request.verify_message_authenticator():
            return "message_authenticator"
        return None

    def _answer(self, request: packet.CoAPacket) -> packet.CoAPacket:
        reply = request.CreateReply()
        coa = request.code == packet.CoARequest
        user, session_id = _text(request, "User-Name"), _text(request, "Acct-Session-Id")
        with self._lock:
            found = [s for s in self._sessions if s.user_name == user and
                     (session_id is None or (s.acct_session_id or "").lower() == session_id.lower())]
            if not coa:
                self._sessions = [s for s in self._sessions if s not in found]
        for session in found:
            if coa:
                session.limits = {name: _first(request, name) for name in LIMITS if _first(request, name) is not None}
            else:
                self._accounting(2, session, 6, wait=False)     # Admin-Reset
        kind = "coa" if coa else "disconnect"
        self.stats[f"{kind}_{'ack' if found else 'nak'}"] += 1
        self.stats["ack" if found else "nak"] += 1
        reply.code = ((packet.CoAACK if found else packet.CoANAK) if coa
                      else (packet.DisconnectACK if found else packet.DisconnectNAK))
        if found:
            log.info("NAS simulator: %s for %d session(s) of %s", kind, len(found), user)
        return reply


def _first(request: packet.Packet, name: str):
    try:
        values = request.get(name)
    except (KeyError, ValueError, TypeError):
        return None
    return values[0] if values else None


def _text(request: packet.Packet, name: str) -> str | None:
    value = _first(request, name)
    return value if isinstance(value, str) and value else None


def _attributes(request: packet.Packet) -> dict:
    """Every attribute decoded by name; raw bytes for one that does not decode."""
    out = {}
    for key in request.keys():
        try:
            out[key] = request[key]
        except Exception:  # noqa: BLE001 - a garbled value is recorded raw, never fatal
            out[key] = list(OrderedDict.get(request, request._EncodeKey(key), []))
    return out
