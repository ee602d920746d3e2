"""A MikroTik hotspot's RADIUS side, for tests and the demo: the Access-Requests and accounting a
RouterOS hotspot sends, and its ``/radius incoming`` (RFC 5176) end.

:class:`HotspotRadius` plugs into a :class:`hotspotd.testing.routeros.RouterOSSimulator` through its
:class:`~hotspotd.testing.routeros.RadiusSide` calls (a device is seen, logs in over the API, its
session ends) and reads the router's own configuration each time, as RouterOS does: the hotspot
server and its profile (``login-by``, ``use-radius``, ``mac-auth-mode``, ``radius-mac-format``,
``radius-accounting``, ``radius-interim-update``), the ``/radius`` entry of service hotspot
(``address``, ``secret``, ports, ``require-message-auth``), ``/radius incoming``, the identity and
the version. The router enforces the limits itself (``Limits``, ``RouterOSSimulator.send_traffic``).

What is modelled, from shared/reference/routers.md, sections "MikroTik hotspot" [H] and "MikroTik as
public evidence shows it" [E]:

- MAC login [H, E]: a new host with ``login-by`` containing ``mac`` and ``use-radius=yes`` is asked
  for at once. User-Name is the MAC in ``radius-mac-format``; User-Password is the profile's
  ``mac-auth-password`` (empty by default) for ``mac-as-username``, the formatted MAC for
  ``mac-as-username-and-password``.
- The Access-Request carries [E] User-Name, Calling-Station-Id (the MAC in capitals with colons),
  Called-Station-Id (the hotspot server's name), NAS-Identifier (the identity), NAS-IP-Address,
  NAS-Port, NAS-Port-Type, NAS-Port-Id (the interface), Service-Type Login-User, Framed-IP-Address,
  Mikrotik-Host-IP, Acct-Session-Id (8 hex digits, ``80f00003``), WISPr-Logoff-URL; for http-chap
  CHAP-Challenge + CHAP-Password, for http-pap User-Password [H].
- Message-Authenticator [E]: RouterOS before 7.15 sends none (and has no ``require-message-auth``);
  from 7.15 one is sent, and required in the reply, when the ``/radius`` entry has
  ``require-message-auth=yes``.
- The Accept's Session-Timeout, Idle-Timeout, Mikrotik-Total-Limit(+Gigawords),
  Mikrotik-Recv/Xmit-Limit(+Gigawords), WISPr-Session-Terminate-Time, Acct-Interim-Interval,
  Mikrotik-Rate-Limit and Class are kept [H]; the router ends the session itself at its limits [E].
- Accounting with ``radius-accounting=yes`` [H]: Start on activation, Interim-Update every
  Acct-Interim-Interval (``radius-interim-update=received``; a duration there overrides it), Stop
  with Acct-Terminate-Cause; Class echoed, Acct-Delay-Time; Acct-Session-Time and
  Acct-Input/Output-Octets/-Gigawords/-Packets, Input = received from the client = upload [H, E].
- ``/radius incoming accept=yes`` answers Disconnect-Request and CoA-Request (RFC 5176) [E].

Choices where the reference says nothing (each is the simulator's, not RouterOS's documented way):

- NAS-Port-Type 19 (Wireless-802.11) when the hotspot server's interface is a ``wlan``/``wifi``
  one, else 15 (Ethernet): the default server sits on ``bridge-hotspot``, so 15. NAS-IP-Address is
  the address the packets come from. NAS-Port counts sessions.
- ``/radius`` timeout 300 ms and three sends per request (``timeout``/``tries``); an accounting
  request unanswered after its sends is dropped and counted (``stats["acct_lost"]``).
- 7.15 or later with ``require-message-auth=no``: no Message-Authenticator is sent.
- A byte limit ends the session with Acct-Terminate-Cause Session-Timeout (routeros.LIMIT_CAUSE);
  the API's ``/ip/hotspot/active/remove``, a removed host and a Disconnect-Request with Admin-Reset;
  the device's own logout with User-Request. :meth:`HotspotRadius.reboot` sends NAS-Reboot Stops.
- The API login (``/ip/hotspot/active/login``) asks with CHAP when the profile's ``login-by`` has
  http-chap, else PAP.
- **Disconnect/CoA matching is undocumented** [E: "Which attributes RouterOS matches a
  Disconnect/CoA on, and the Error-Cause of its NAK for an unknown session, are not documented
  anywhere found"]. So this stand-in is as strict as anything we can justify: a session matches
  only when the request carries all three identifiers the reference says a Disconnect-Request
  should carry [H], User-Name, Acct-Session-Id and Framed-IP-Address, and each equals the
  session's exactly; a Calling-Station-Id, when sent, must equal the router's own form (capitals
  with colons). Anything else is a NAK with Error-Cause 503 (Session-Context-Not-Found), even
  while the device is online: hotspotd must not read that NAK as "gone" (it verifies over the
  API, or by accounting). Requests are taken only from a ``/radius`` entry's address with its
  secret (else dropped silently); a Message-Authenticator, when present, must be valid; replies
  carry none. A CoA applies Session-Timeout counted from the session's start (as CoovaChilli does),
  Idle-Timeout and the byte limits; a limit it leaves out stays as it was.
"""
from __future__ import annotations

import hashlib
import ipaddress
import logging
import os
import re
import select
import socket
import struct
import threading
import time
from calendar import timegm
from collections import Counter, deque
from dataclasses import dataclass, field

from pyrad import packet

from hotspotd.testing.routeros import Limits, RouterOSSimulator, routeros_version
from radius.server import load_dictionary

log = logging.getLogger(__name__)

FIRST_SESSION_ID = 0x80F00001
SESSION_CONTEXT_NOT_FOUND = 503
_MAX_DATAGRAM = 4096
_TICK = 0.1


def mac_format(mac: str, fmt: str) -> str:
    """``mac`` in a ``radius-mac-format`` such as ``XX:XX:XX:XX:XX:XX`` or ``xxxxxxxxxxxx``: each X
    takes the next hex digit, in capitals for ``X`` and small letters for ``x``."""
    digits = iter(re.sub(r"[^0-9A-Fa-f]", "", mac))
    return "".join(next(digits).upper() if c == "X" else next(digits).lower() if c == "x" else c for c in fmt)


def chap_variables(chap_id: bytes, challenge: bytes) -> dict[str, str]:
    """``$(chap-id)`` and ``$(chap-challenge)`` as the login page shows them: octal escapes [H]."""
    return {"chap-id": "".join(f"\\{b:03o}" for b in chap_id),
            "chap-challenge": "".join(f"\\{b:03o}" for b in challenge)}


@dataclass
class Exchange:
    """One request the router sent and what came back."""
    kind: str                                        #: "auth" or "acct"
    attributes: dict                                 #: decoded by name
    message_authenticator: bool = False
    reply_code: int | None = None                    #: None: no valid answer (yet)
    reply_attributes: dict = field(default_factory=dict)
    raw: bytes = b""                                 #: the request as sent


@dataclass(frozen=True)
class Incoming:
    """A Disconnect- or CoA-Request that reached ``/radius incoming``, and the answer."""
    source: tuple[str, int]
    code: int
    attributes: dict
    reply_code: int | None = None                    #: None: dropped
    error_cause: int | None = None


@dataclass
class Session:
    """What the RADIUS side remembers of an active session."""
    item_id: str
    mac: str
    ip: str
    user: str
    acct_session_id: str
    nas_port: int
    cls: bytes | None = None
    rate_limit: str | None = None
    interim: float | None = None
    next_interim: float | None = None
    started: float = field(default_factory=time.monotonic)


@dataclass
class _Pending:
    exchange: Exchange
    raw: bytes
    request: packet.Packet
    sends: int = 0
    next_at: float = 0.0


class HotspotRadius:
    """The RADIUS client and ``/radius incoming`` of ``router`` (it attaches itself as
    ``router.radius``). Requests go out from ``source``; ``incoming`` is where the CoA port listens
    (RouterOS: the ``/radius incoming`` port, 3799; tests: port 0; None: not at all). ``start()``
    binds and runs the accounting and enforcement loop in a thread, ``stop()`` ends it."""

    def __init__(self, router: RouterOSSimulator, *, source: str = "127.0.0.1",
                 incoming: tuple[str, int] | None = ("127.0.0.1", 0), timeout: float = 0.3, tries: int = 3):
        self.router, self.source, self.incoming = router, source, incoming
        self.timeout, self.tries = timeout, tries
        self.dict = load_dictionary()
        #: the latest requests sent and received (bounded: the demo runs for days)
        self.exchanges: deque[Exchange] = deque(maxlen=1000)
        self.received: deque[Incoming] = deque(maxlen=1000)
        self.stats: Counter = Counter()
        self._sessions: dict[str, Session] = {}
        self._chap: dict[str, tuple[bytes, bytes]] = {}
        self._next_session = FIRST_SESSION_ID
        self._lock = threading.Lock()            # a leaf lock: never held while calling the router
        self._auth_lock = threading.Lock()
        self._outbox: deque = deque()
        self._pending: dict[int, _Pending] = {}
        self._ids = iter(())
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._auth_sock = self._acct_sock = self._coa_sock = None
        router.radius = self

    # --- lifecycle -----------------------------------------------------------------------
    def start(self) -> "HotspotRadius":
        socks = []
        try:
            for _ in ("auth", "acct"):
                sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                socks.append(sock)
                sock.bind((self.source, 0))
            if self.incoming is not None:
                sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                socks.append(sock)
                sock.bind(self.incoming)
        except OSError:
            for sock in socks:
                sock.close()
            raise
        self._auth_sock, self._acct_sock = socks[:2]
        self._coa_sock = socks[2] if len(socks) > 2 else None
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="mikrotik-radius", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """End the loop and close the sockets (unsent accounting is forgotten); safe twice."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        for sock in (self._auth_sock, self._acct_sock, self._coa_sock):
            if sock is not None:
                sock.close()
        self._auth_sock = self._acct_sock = self._coa_sock = None
        if self.router.radius is self:
            self.router.radius = None

    def __enter__(self) -> "HotspotRadius":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def incoming_address(self) -> tuple[str, int]:
        """(host, port) the CoA port is bound to."""
        if self._coa_sock is None:
            raise RuntimeError("no /radius incoming socket")
        return self._coa_sock.getsockname()[:2]

    def point_at(self, auth: tuple[str, int], acct: tuple[str, int], secret: str) -> "HotspotRadius":
        """Set the router's ``/radius`` entry to this RADIUS server, as its owner would."""
        host = "127.0.0.1" if auth[0] in ("0.0.0.0", "") else auth[0]
        self.router.configure("/radius", {"service": "hotspot"}, address=host, secret=secret,
                              authentication_port=str(auth[1]), accounting_port=str(acct[1]))
        return self

    # --- the router's calls (routeros.RadiusSide), its lock held ------------------------------
    def host_seen(self, mac: str, ip: str) -> None:
        profile = self._profile()
        if "mac" in profile.get("login-by", "").split(",") and profile.get("use-radius") == "true":
            self.mac_login(mac, ip)

    def login(self, user: str, password: str, mac: str, ip: str) -> bool:
        methods = self._profile().get("login-by", "").split(",")
        if "http-chap" in methods:
            chap_id, challenge = os.urandom(1), os.urandom(16)
            answer = hashlib.md5(chap_id + password.encode() + challenge).digest()
            return self._login(user, mac, ip, "http-chap", chap=(chap_id, answer, challenge))
        return self._login(user, mac, ip, "http-pap", password=password)

    def logged_out(self, item_id: str, session: dict, cause: str) -> None:
        with self._lock:
            known = self._sessions.pop(item_id, None)
        if known is not None:
            self._account("Stop", known, session, cause)

    # --- test and demo controls ----------------------------------------------------------
    def mac_login(self, mac: str, ip: str) -> bool:
        """The hotspot's MAC login of the device at ``ip``: True once it is active."""
        profile = self._profile()
        user = mac_format(mac, profile.get("radius-mac-format") or "XX:XX:XX:XX:XX:XX")
        mode = profile.get("mac-auth-mode", "mac-as-username")
        password = user if mode == "mac-as-username-and-password" else profile.get("mac-auth-password", "")
        return self._login(user, mac, ip, "mac", password=password)

    def login_page(self, mac: str) -> dict[str, str]:
        """The login page's ``$(chap-id)`` and ``$(chap-challenge)`` for this device (new each time)."""
        chap = self._chap[mac.upper()] = (os.urandom(1), os.urandom(16))
        return chap_variables(*chap)

    def browser_login(self, mac: str, ip: str, username: str, password: str) -> bool:
        """The customer's browser posts ``username`` and ``password`` to ``link-login-only``: with the
        page's CHAP values (:meth:`login_page`) the password is hex(MD5(chap-id + password +
        chap-challenge)) [H] and goes out as CHAP-Password; without, as User-Password (http-pap)."""
        chap = self._chap.pop(mac.upper(), None)
        if chap is not None:
            chap_id, challenge = chap
            return self._login(username, mac, ip, "http-chap",
                               chap=(chap_id, bytes.fromhex(password), challenge))
        return self._login(username, mac, ip, "http-pap", password=password)

    def session(self, mac: str) -> Session | None:
        """The RADIUS side's record of ``mac``'s active session."""
        with self._lock:
            return next((s for s in self._sessions.values() if s.mac == mac.upper()), None)

    def settle(self, timeout: float = 5.0) -> bool:
        """Wait until every accounting request is answered or given up (bounded)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if not self._outbox and not self._pending:
                    return True
            time.sleep(0.02)
        return False

    def reboot(self) -> None:
        """A graceful reboot: a Stop with NAS-Reboot for every session, then the sessions are gone."""
        with self._lock:
            macs = {s.mac for s in self._sessions.values()}
        for mac in macs:
            self.router.logout(mac, "NAS-Reboot")

    def requests(self, kind: str, status: str | None = None) -> list[Exchange]:
        """The exchanges of ``kind`` (and, for accounting, of Acct-Status-Type ``status``)."""
        return [e for e in list(self.exchanges) if e.kind == kind and
                (status is None or e.attributes.get("Acct-Status-Type", [None])[0] == status)]

    # --- Access-Request ------------------------------------------------------------------
    def _login(self, user: str, mac: str, ip: str, login_by: str, *, password: str | None = None,
               chap: tuple[bytes, bytes, bytes] | None = None) -> bool:
        mac = mac.upper()
        server, radius = self._server(), self._radius()
        if radius is None or self._auth_sock is None:
            self.stats["auth_no_server"] += 1
            return False
        with self._lock:
            session_id, self._next_session = f"{self._next_session:08x}", self._next_session + 1
        nas_port = int(session_id, 16) - FIRST_SESSION_ID + 1
        sign = self._signs(radius)
        req = packet.AuthPacket(code=packet.AccessRequest, secret=radius["secret"].encode(), dict=self.dict,
                                id=int.from_bytes(os.urandom(1), "big"))
        if sign:
            req.add_message_authenticator()
        else:
            req.authenticator = req.CreateAuthenticator()
        req["User-Name"] = user
        if chap is not None:
            chap_id, answer, challenge = chap
            req["CHAP-Password"] = chap_id + answer
            req["CHAP-Challenge"] = challenge
        else:
            req["User-Password"] = req.PwCrypt(password or "")
        self._identify(req, server, mac, ip, session_id, nas_port)
        req["Service-Type"] = "Login-User"
        req["WISPr-Logoff-URL"] = f"http://{self._profile().get('hotspot-address') or '10.5.50.1'}/logout"
        raw = req.RequestPacket()
        exchange = Exchange("auth", _attributes(req), sign, raw=raw)
        self.exchanges.append(exchange)
        reply = self._ask(req, raw, radius, sign)
        if reply is None:
            self.stats["auth_timeout"] += 1
            log.info("simulated MikroTik: no RADIUS answer for %s", user)
            return False
        exchange.reply_code, exchange.reply_attributes = reply.code, _attributes(reply)
        if reply.code != packet.AccessAccept:
            self.stats["auth_reject"] += 1
            return False
        self.stats["auth_accept"] += 1
        limits, extra = _accepted(reply)
        item_id = self.router.activate(mac, ip, user, login_by, limits)
        interim = self._interim(extra["interim"])
        session = Session(item_id, mac, ip, user, session_id, nas_port, extra["class"], extra["rate"], interim,
                          time.monotonic() + interim if interim else None)
        with self._lock:
            if item_id in self._sessions:           # already up: the router kept its session
                return True
            self._sessions[item_id] = session
        self._account("Start", session, None, None)
        return True

    def _identify(self, req: packet.Packet, server: dict, mac: str, ip: str, session_id: str, nas_port: int) -> None:
        interface = server.get("interface", "")
        req["NAS-Identifier"] = self._identity()
        req["NAS-IP-Address"] = self._auth_sock.getsockname()[0]
        req["NAS-Port"] = nas_port
        req["NAS-Port-Type"] = "Wireless-802.11" if interface.startswith(("wlan", "wifi")) else "Ethernet"
        req["NAS-Port-Id"] = interface
        req["Calling-Station-Id"] = mac
        req["Called-Station-Id"] = server.get("name", "hotspot1")
        req["Framed-IP-Address"] = ip
        req["Mikrotik-Host-IP"] = ip
        req["Acct-Session-Id"] = session_id

    def _ask(self, req: packet.AuthPacket, raw: bytes, radius: dict, sign: bool) -> packet.Packet | None:
        where = (radius["address"], int(radius.get("authentication-port") or 1812))
        with self._auth_lock:
            sock = self._auth_sock
            for _ in range(self.tries):
                try:
                    sock.sendto(raw, where)
                except OSError as exc:
                    log.debug("Access-Request to %s not sent: %s", where, exc)
                deadline = time.monotonic() + self.timeout
                while (left := deadline - time.monotonic()) > 0:
                    if not select.select([sock], [], [], left)[0]:
                        break
                    data, source = sock.recvfrom(_MAX_DATAGRAM)
                    reply = self._valid_reply(req, data, sign)
                    if reply is not None:
                        return reply
        return None

    def _valid_reply(self, req: packet.Packet, data: bytes, sign: bool) -> packet.Packet | None:
        try:
            reply = packet.Packet(packet=data, secret=req.secret, dict=self.dict)
        except (packet.PacketError, ValueError, TypeError, IndexError, KeyError, struct.error):
            self.stats["reply_malformed"] += 1
            return None
        if not req.VerifyReply(reply, data, enforce_ma=sign):
            self.stats["reply_invalid"] += 1
            return None
        return reply

    # --- accounting ------------------------------------------------------------------------
    def _account(self, status: str, session: Session, row: dict | None, cause: str | None) -> None:
        if self._profile().get("radius-accounting") != "true":
            return
        with self._lock:
            self._outbox.append((status, session, dict(row) if row else None, cause, time.monotonic()))

    def _acct_packet(self, job, radius: dict, server: dict, ident: int) -> packet.AcctPacket:
        status, session, row, cause, at = job
        req = packet.AcctPacket(secret=radius["secret"].encode(), dict=self.dict, id=ident)
        req["Acct-Status-Type"] = status
        req["User-Name"] = session.user
        self._identify(req, server, session.mac, session.ip, session.acct_session_id, session.nas_port)
        if session.cls is not None:
            req["Class"] = session.cls
        req["Acct-Delay-Time"] = int(time.monotonic() - at)
        if status != "Start":
            row = row or {}
            received, sent = int(row.get("bytes-in", 0)), int(row.get("bytes-out", 0))
            req["Acct-Session-Time"] = int(at - session.started)
            req["Acct-Input-Octets"], req["Acct-Input-Gigawords"] = received & 0xFFFFFFFF, received >> 32
            req["Acct-Output-Octets"], req["Acct-Output-Gigawords"] = sent & 0xFFFFFFFF, sent >> 32
            req["Acct-Input-Packets"] = int(row.get("packets-in", 0))
            req["Acct-Output-Packets"] = int(row.get("packets-out", 0))
        if cause is not None:
            req["Acct-Terminate-Cause"] = cause
        return req

    def _free_id(self) -> int:
        for _ in range(512):
            ident = next(self._ids, None)
            if ident is None:
                self._ids = iter(range(256))
                continue
            if ident not in self._pending:
                return ident
        raise RuntimeError("256 accounting requests in flight")

    def _send_accounting(self, now: float) -> None:
        radius, server = self._radius(), self._server()    # the router's lock, before ours
        while True:
            with self._lock:
                if not self._outbox or len(self._pending) >= 200:
                    break
                job = self._outbox.popleft()
                ident = self._free_id()
            if radius is None:
                self.stats["acct_no_server"] += 1
                continue
            req = self._acct_packet(job, radius, server, ident)
            raw = req.RequestPacket()
            exchange = Exchange("acct", _attributes(req), raw=raw)
            self.exchanges.append(exchange)
            with self._lock:
                self._pending[ident] = _Pending(exchange, raw, req)
        with self._lock:
            due = [p for p in self._pending.values() if p.next_at <= now]
            for p in due:
                if p.sends >= self.tries:
                    del self._pending[p.request.id]
                    self.stats["acct_lost"] += 1
                    continue
                where = (radius["address"], int(radius.get("accounting-port") or 1813)) if radius else None
                if where is not None:
                    try:
                        self._acct_sock.sendto(p.raw, where)
                    except OSError as exc:
                        log.debug("accounting to %s not sent: %s", where, exc)
                p.sends, p.next_at = p.sends + 1, now + self.timeout

    def _accounting_answer(self, data: bytes) -> None:
        with self._lock:
            pending = self._pending.get(data[1]) if len(data) >= 20 else None
        if pending is None:
            return
        reply = self._valid_reply(pending.request, data, False)
        if reply is None or reply.code != packet.AccountingResponse:
            return
        with self._lock:
            self._pending.pop(pending.request.id, None)
        pending.exchange.reply_code = reply.code
        self.stats["acct_answered"] += 1

    def _interims(self, now: float) -> None:
        with self._lock:
            due = [s for s in self._sessions.values() if s.next_interim is not None and s.next_interim <= now]
        if not due:
            return
        rows = self.router.sessions()
        for session in due:
            session.next_interim = now + session.interim
            if session.item_id in rows:
                self._account("Interim-Update", session, rows[session.item_id], None)

    def _interim(self, received: int | None) -> float | None:
        setting = self._profile().get("radius-interim-update", "received")
        if setting == "received":
            return float(received) if received else None
        return _seconds(setting) or None

    # --- the loop: accounting out, answers in, /radius incoming, enforcement -----------------
    def _loop(self) -> None:
        while not self._stop.is_set():
            now = time.monotonic()
            try:
                self._send_accounting(now)
                socks = [s for s in (self._acct_sock, self._coa_sock) if s is not None]
                ready = select.select(socks, [], [], _TICK)[0]
                for sock in ready:
                    data, source = sock.recvfrom(_MAX_DATAGRAM)
                    if sock is self._acct_sock:
                        self._accounting_answer(data)
                    else:
                        reply = self.handle_incoming(data, source[:2])
                        if reply is not None:
                            sock.sendto(reply, source)
                self.router.sessions()          # the router's enforcement runs on time, not only on API calls
                self._interims(time.monotonic())
            except (OSError, ValueError):
                if self._stop.is_set():
                    break
            except Exception:  # noqa: BLE001 - one bad datagram or job must never end the loop
                self.stats["errors"] += 1
                log.exception("simulated MikroTik RADIUS loop")

    def handle_incoming(self, data: bytes, source: tuple[str, int]) -> bytes | None:
        """``/radius incoming``'s answer to ``data`` from ``source``, or None to drop it."""
        incoming = (self.router.menu("/radius/incoming") or [{}])[0]
        if incoming.get("accept") != "true":
            self.stats["incoming_off"] += 1
            return None
        radius = next((r for r in self._entries() if _same_address(r.get("address", ""), source[0])), None)
        if radius is None:
            self.stats["incoming_dropped_source"] += 1
            return None
        try:
            request = packet.CoAPacket(packet=data, secret=radius["secret"].encode(), dict=self.dict)
        except (packet.PacketError, ValueError, TypeError, IndexError, KeyError, struct.error):
            self.stats["incoming_malformed"] += 1
            return None
        if request.code not in (packet.DisconnectRequest, packet.CoARequest) or not request.VerifyCoARequest() \
                or (request.message_authenticator and not request.verify_message_authenticator()):
            self.stats["incoming_dropped"] += 1
            self.received.append(Incoming(source, request.code, _attributes(request)))
            return None
        coa = request.code == packet.CoARequest
        found = self._match(request)
        reply = request.CreateReply()
        reply.code = ((packet.CoAACK if found else packet.CoANAK) if coa
                      else (packet.DisconnectACK if found else packet.DisconnectNAK))
        if not found:
            reply["Error-Cause"] = SESSION_CONTEXT_NOT_FOUND
        elif coa:
            self._change(found, request)
        else:
            self.router.logout(found.mac, "Admin-Reset")
        self.stats[f"{'coa' if coa else 'disconnect'}_{'ack' if found else 'nak'}"] += 1
        self.received.append(Incoming(source, request.code, _attributes(request), reply.code,
                                      None if found else SESSION_CONTEXT_NOT_FOUND))
        return reply.ReplyPacket()

    def _match(self, request: packet.Packet) -> Session | None:
        user, session_id = _first(request, "User-Name"), _first(request, "Acct-Session-Id")
        ip, calling = _first(request, "Framed-IP-Address"), _first(request, "Calling-Station-Id")
        if not (user and session_id and ip):
            return None
        with self._lock:
            return next((s for s in self._sessions.values() if s.user == user and s.acct_session_id == session_id
                         and s.ip == ip and (calling is None or calling == s.mac)), None)

    def _change(self, session: Session, request: packet.Packet) -> None:
        rows = self.router.sessions()
        row = rows.get(session.item_id)
        if row is None:
            return
        old: Limits = row["_limits"]
        new, extra = _accepted(request)
        elapsed = time.monotonic() - row["_since"]
        timeout = new.session_timeout
        self.router.change(session.item_id, Limits(
            session_timeout=old.session_timeout if timeout is None else timeout,
            idle_timeout=old.idle_timeout if new.idle_timeout is None else new.idle_timeout,
            total=old.total if new.total is None else new.total,
            recv=old.recv if new.recv is None else new.recv,
            xmit=old.xmit if new.xmit is None else new.xmit))
        if extra["rate"]:
            session.rate_limit = extra["rate"]
        log.debug("CoA for %s after %.0f s: %s", session.mac, elapsed, new)

    # --- the router's configuration ------------------------------------------------------------
    def _server(self) -> dict:
        servers = [s for s in self.router.menu("/ip/hotspot") if s.get("disabled") != "true"]
        return servers[0] if servers else {"name": "hotspot1", "profile": "default", "interface": ""}

    def _profile(self) -> dict:
        name = self._server().get("profile", "default")
        return next((p for p in self.router.menu("/ip/hotspot/profile") if p.get("name") == name), {})

    def _entries(self) -> list[dict]:
        return [r for r in self.router.menu("/radius")
                if "hotspot" in r.get("service", "").split(",") and r.get("disabled") != "true"]

    def _radius(self) -> dict | None:
        entries = self._entries()
        return entries[0] if entries else None

    def _identity(self) -> str:
        return (self.router.menu("/system/identity") or [{}])[0].get("name", "MikroTik")

    def _signs(self, radius: dict) -> bool:
        return routeros_version(self.router.version) >= (7, 15) and radius.get("require-message-auth") == "yes"


def _accepted(reply: packet.Packet) -> tuple[Limits, dict]:
    """The limits an Access-Accept (or a CoA) sets, and what else the session keeps."""
    def big(low: str, high: str) -> int | None:
        if _first(reply, low) is None and _first(reply, high) is None:
            return None
        return (_first(reply, high) or 0) << 32 | (_first(reply, low) or 0)
    timeout = _first(reply, "Session-Timeout")
    until = _first(reply, "WISPr-Session-Terminate-Time")
    if until:
        try:
            left = timegm(time.strptime(until[:19], "%Y-%m-%dT%H:%M:%S")) - _offset(until[19:]) - time.time()
            timeout = left if timeout is None else min(timeout, left)
        except ValueError:
            pass
    limits = Limits(session_timeout=timeout, idle_timeout=_first(reply, "Idle-Timeout"),
                    total=big("Mikrotik-Total-Limit", "Mikrotik-Total-Limit-Gigawords"),
                    recv=big("Mikrotik-Recv-Limit", "Mikrotik-Recv-Limit-Gigawords"),
                    xmit=big("Mikrotik-Xmit-Limit", "Mikrotik-Xmit-Limit-Gigawords"))
    return limits, {"interim": _first(reply, "Acct-Interim-Interval"), "class": _first(reply, "Class"),
                    "rate": _first(reply, "Mikrotik-Rate-Limit")}


def _offset(text: str) -> int:
    match = re.fullmatch(r"([+-])(\d\d):?(\d\d)", text.strip())
    if not match:
        return 0
    seconds = int(match[2]) * 3600 + int(match[3]) * 60
    return seconds if match[1] == "+" else -seconds


def _seconds(duration: str) -> float:
    """RouterOS's ``1h30m``, ``5m``, ``300ms`` as seconds (0 for anything else)."""
    total = 0.0
    for count, unit in re.findall(r"(\d+)(ms|w|d|h|m|s)", duration):
        total += int(count) * {"ms": 0.001, "w": 604800, "d": 86400, "h": 3600, "m": 60, "s": 1}[unit]
    return total


def _same_address(configured: str, source: str) -> bool:
    try:
        return ipaddress.ip_address(configured) == ipaddress.ip_address(source)
    except ValueError:
        return False


def _first(pkt: packet.Packet, name: str):
    try:
        values = pkt.get(name)
    except (KeyError, ValueError, TypeError):
        return None
    return values[0] if values else None


def _attributes(pkt: packet.Packet) -> dict:
    """Every attribute decoded by name (raw bytes for one that does not decode)."""
    out = {}
    for key in pkt.keys():
        try:
            out[key] = pkt[key]
        except Exception:  # noqa: BLE001 - recorded raw, never fatal
            out[key] = pkt.get(key)
    return out
