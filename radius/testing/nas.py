"""A NAS for tests and the demo: answers RFC 5176 Disconnect-Requests the way CoovaChilli
(``coaport 3799``) and MikroTik (``/radius incoming accept=yes``) do, with sessions kept in memory.

- A datagram from a source not in ``allowed_sources``, with a wrong Request Authenticator (wrong
  secret) or an invalid Message-Authenticator is dropped without a word and counted in ``stats``.
- A Disconnect-Request needs User-Name (else Disconnect-NAK, Error-Cause 402 Missing-Attribute).
  Every session with that User-Name whose Acct-Session-Id, Calling-Station-Id and Framed-IP-Address
  agree with those the request carries is ended: Disconnect-ACK. None: Disconnect-NAK with 503
  Session-Context-Not-Found. A NAS-Identifier that is not ours (when we have one) gets 403.
- CoA-Request is not supported: CoA-NAK with Error-Cause 405 Unsupported-Service.
- Replies carry a Response Authenticator and a Message-Authenticator. A retransmitted request
  (same source, Identifier and authenticator) gets the same reply again and is not processed twice.
"""
from __future__ import annotations

import ipaddress
import logging
import select
import socket
import threading
from collections import Counter, OrderedDict
from dataclasses import dataclass, field

from pyrad import packet

from radius.server import load_dictionary

log = logging.getLogger(__name__)

MISSING_ATTRIBUTE = 402
NAS_IDENTIFICATION_MISMATCH = 403
INVALID_REQUEST = 404
UNSUPPORTED_SERVICE = 405
SESSION_CONTEXT_NOT_FOUND = 503
_MAX_DATAGRAM = 4096
_DEDUPE_SIZE = 256


@dataclass(frozen=True)
class Session:
    """A session the NAS has up."""
    user_name: str
    mac: str | None = None
    acct_session_id: str | None = None
    ip: str | None = None


@dataclass(frozen=True)
class ReceivedRequest:
    """One CoA-Request or Disconnect-Request as it arrived, and what became of it."""
    source: tuple[str, int]
    code: int                                   #: 40 Disconnect-Request, 43 CoA-Request
    attributes: dict = field(default_factory=dict)  #: decoded values by attribute name (code if unknown)
    valid: bool = False                         #: allowed source, right authenticators
    reply_code: int | None = None               #: None when dropped
    error_cause: int | None = None


class NasSimulator:
    """The NAS end of RFC 5176 on UDP ``host``:``port`` (0: any free port, see :attr:`address`).
    ``start()`` binds and serves in a thread, ``stop()`` ends the loop and closes the socket.
    Usable as a context manager."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, secret: str = "testing123",
                 allowed_sources=("127.0.0.1",), nas_identifier: str | None = None):
        self.host, self.port = host, port
        self.secret = secret.encode()
        self.allowed = tuple(ipaddress.ip_network(s, strict=False) for s in allowed_sources)
        self.nas_identifier = nas_identifier
        self.dict = load_dictionary()
        self.requests: list[ReceivedRequest] = []
        self.stats: Counter = Counter()
        self._sessions: list[Session] = []
        self._lock = threading.Lock()
        self._replies: OrderedDict[tuple, bytes] = OrderedDict()
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

    # --- controls ------------------------------------------------------------------------
    def add_session(self, user_name: str, *, mac: str | None = None, acct_session_id: str | None = None,
                    ip: str | None = None) -> None:
        """Bring a session up, as a login would."""
        with self._lock:
            self._sessions.append(Session(user_name, mac, acct_session_id, ip))

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
        reason = self._authentic(request)
        if reason:
            self.stats[f"dropped_{reason}"] += 1
            self.requests.append(ReceivedRequest(**record))
            log.debug("dropping request from %s: bad %s", source[0], reason.replace("_", " "))
            return None
        reply = self._answer(request)
        cause = reply.get(101)
        error_cause = int.from_bytes(cause[0], "big") if cause else None
        self.requests.append(ReceivedRequest(**record, valid=True, reply_code=reply.code, error_cause=error_cause))
        reply.add_message_authenticator()
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
        if request.code == packet.CoARequest:
            self.stats["coa_nak"] += 1
            return _nak(reply, packet.CoANAK, UNSUPPORTED_SERVICE)
        try:
            wanted = {name: _one(request, name) for name in
                      ("User-Name", "Acct-Session-Id", "Calling-Station-Id", "Framed-IP-Address", "NAS-Identifier")}
        except (ValueError, TypeError, KeyError) as exc:  # pyrad: a value of the wrong length
            log.debug("undecodable attribute: %s", exc)
            wanted = None
        if wanted is None or any(isinstance(v, bytes) for v in wanted.values()):  # bytes: not UTF-8
            self.stats["nak"] += 1
            return _nak(reply, packet.DisconnectNAK, INVALID_REQUEST)
        if not wanted["User-Name"]:
            self.stats["nak"] += 1
            return _nak(reply, packet.DisconnectNAK, MISSING_ATTRIBUTE)
        if self.nas_identifier and wanted["NAS-Identifier"] and wanted["NAS-Identifier"] != self.nas_identifier:
            self.stats["nak"] += 1
            return _nak(reply, packet.DisconnectNAK, NAS_IDENTIFICATION_MISMATCH)
        with self._lock:
            ended = [s for s in self._sessions if _matches(s, wanted)]
            self._sessions = [s for s in self._sessions if s not in ended]
        if not ended:
            self.stats["nak"] += 1
            return _nak(reply, packet.DisconnectNAK, SESSION_CONTEXT_NOT_FOUND)
        self.stats["ack"] += 1
        log.info("NAS simulator ended %d session(s) of %s", len(ended), wanted["User-Name"])
        return reply


def _nak(reply: packet.CoAPacket, code: int, cause: int) -> packet.CoAPacket:
    reply.code = code
    reply["Error-Cause"] = cause
    return reply


def _one(request: packet.CoAPacket, name: str):
    values = request.get(name)
    return values[0] if values else None


def _mac(text: str) -> str:
    return "".join(c for c in text.upper() if c in "0123456789ABCDEF")


def _matches(session: Session, wanted: dict) -> bool:
    if session.user_name != wanted["User-Name"]:
        return False
    if wanted["Acct-Session-Id"] and wanted["Acct-Session-Id"] != session.acct_session_id:
        return False
    if wanted["Calling-Station-Id"] and _mac(wanted["Calling-Station-Id"]) != _mac(session.mac or ""):
        return False
    if wanted["Framed-IP-Address"] and wanted["Framed-IP-Address"] != session.ip:
        return False
    return True


def _attributes(request: packet.Packet) -> dict:
    """Every attribute decoded by name; raw bytes for one that does not decode."""
    out = {}
    for key in request.keys():
        try:
            out[key] = request[key]
        except Exception:  # noqa: BLE001 - a garbled value is recorded raw, never fatal
            out[key] = list(OrderedDict.get(request, request._EncodeKey(key), []))
    return out
