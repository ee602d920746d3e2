"""A MikroTik router for tests and the demo: the RouterOS API wire protocol over TCP, hotspot menus in memory.

librouteros (or any API client) connects to :class:`RouterOSSimulator` exactly as to a router on
port 8728. It speaks what RouterOS 7 speaks (shared/reference/routers.md, "RouterOS API"):

* words with a 1-4 byte length prefix (and the 5-byte ``0xF0`` form), a sentence ends with an empty word;
* ``/login =name= =password=`` (6.43+ style); a wrong one gets ``!trap =message=invalid user name or
  password (6)`` and ``!done``, as RouterOS answers; any other command before it gets ``!trap not logged in``;
* ``print``/``getall`` with ``=.proplist=`` and ``?`` queries (``?k=v``, ``?=k=v``, ``?<k=v``, ``?>k=v``,
  ``?k``, ``?-k`` and the ``?#`` stack operators ``| & ! .`` and indices), ``=count-only=``;
  ``add`` (``!done =ret=*N``), ``set``, ``remove =.id=*1,*2`` where the menu has them;
* ``.tag=`` echoed on every reply sentence, ``!trap`` followed by ``!done``, ``/quit`` → ``!fatal``;
* ``!empty`` before ``!done`` when a print finds nothing, as RouterOS 7.18+ does (``empty_reply=False``
  for older behaviour). librouteros 4.2.2 reads ``!empty`` fine: it skips sentences without words.

Values are strings on the wire, booleans ``true``/``false`` as RouterOS 7 prints them.
Where RouterOS's behaviour is not documented the simulator makes a plain choice, said where it is made.

The hotspot's RADIUS client is not here: radius/testing/mikrotik.py attaches itself as ``radius``
(:class:`RadiusSide`: a host is seen, an API login, a session ended). The hotspot itself ends each
session at its :class:`Limits` (Session-Timeout, Idle-Timeout without traffic, the byte limits), as
RouterOS does (routers.md, "MikroTik as public evidence shows it"); ``send_traffic`` is the test
control that moves bytes.
"""
from __future__ import annotations

import ipaddress
import logging
import re
import socket
import socketserver
import ssl
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import NamedTuple, Protocol

log = logging.getLogger(__name__)

#: Words longer than this close the connection (a client claiming 4 GB must not make us allocate it).
MAX_WORD = 32 * 1024 * 1024
DEFAULT_VERSION = "7.18.2 (stable)"


# ---------------------------------------------------------------- wire format

class WireError(ValueError):
    """Bytes that are not a RouterOS API word."""


def encode_length(length: int) -> bytes:
    """The length prefix of a word of ``length`` bytes, in the shortest form."""
    if length < 0:
        raise WireError(f"negative length {length}")
    if length < 0x80:
        return bytes([length])
    if length < 0x4000:
        return (length | 0x8000).to_bytes(2, "big")
    if length < 0x200000:
        return (length | 0xC00000).to_bytes(3, "big")
    if length < 0x10000000:
        return (length | 0xE0000000).to_bytes(4, "big")
    if length <= 0xFFFFFFFF:
        return b"\xf0" + length.to_bytes(4, "big")
    raise WireError(f"length {length} does not fit the API's length prefix")


def prefix_size(first: int) -> int:
    """How many bytes the length prefix starting with byte ``first`` has (1-5)."""
    if first < 0x80:
        return 1
    if first < 0xC0:
        return 2
    if first < 0xE0:
        return 3
    if first < 0xF0:
        return 4
    if first == 0xF0:
        return 5
    raise WireError(f"reserved control byte 0x{first:02X}")


def decode_length(prefix: bytes) -> int:
    """The word length a complete prefix (as sized by :func:`prefix_size`) announces."""
    size = prefix_size(prefix[0])
    if len(prefix) != size:
        raise WireError(f"length prefix {prefix!r} should have {size} bytes")
    if size == 5:
        return int.from_bytes(prefix[1:], "big")
    return int.from_bytes(prefix, "big") & (0x7F, 0x3FFF, 0x1FFFFF, 0x0FFFFFFF)[size - 1]


def encode_word(word: str) -> bytes:
    data = word.encode("utf-8", "surrogateescape")
    return encode_length(len(data)) + data


def encode_sentence(words: Iterable[str]) -> bytes:
    return b"".join(encode_word(w) for w in words) + b"\x00"


def read_sentence(read: Callable[[int], bytes]) -> list[str]:
    """Read words until the empty one. ``read(n)`` returns n bytes, fewer only at end of stream (→ EOFError)."""
    words = []
    while True:
        prefix = _read_exact(read, 1)
        prefix += _read_exact(read, prefix_size(prefix[0]) - 1)
        length = decode_length(prefix)
        if length == 0:
            return words
        if length > MAX_WORD:
            raise WireError(f"word of {length} bytes is over the simulator's limit")
        # surrogateescape: any bytes survive the round trip, whatever the client's encoding
        words.append(_read_exact(read, length).decode("utf-8", "surrogateescape"))


def _read_exact(read: Callable[[int], bytes], n: int) -> bytes:
    if n == 0:
        return b""
    data = read(n)
    if len(data) != n:
        raise EOFError("connection closed")
    return data


# ---------------------------------------------------------------- menus

@dataclass(frozen=True)
class Menu:
    """One RouterOS menu: what print shows, what add/set accept, which commands it has."""
    fields: tuple[str, ...]
    writable: frozenset[str]
    verbs: frozenset[str]
    booleans: frozenset[str] = frozenset()
    defaults: dict[str, str] = field(default_factory=dict)
    single: bool = False          # one item without .id (/system/identity)
    countdown: str | None = None  # the field computed from the hidden "_until" deadline
    #: field → the one value it may take from these (``type=bypassed``)
    choices: dict[str, tuple[str, ...]] = field(default_factory=dict)
    #: field → comma-separated words from these (``login-by=mac,cookie``); policy words may carry ``!``
    lists: dict[str, tuple[str, ...]] = field(default_factory=dict)
    #: field → "int", "port", "ports" (``80,8000-8080``), "time" (``300ms``, ``3s``, ``1m30s``,
    #: ``00:00:03``), "received-or-time", "ip" or "prefixes" (``10.0.0.1/32,192.168.88.0/24``)
    kinds: dict[str, str] = field(default_factory=dict)
    unique: str | None = None     # a field no two items may share (a user's name)


_LIST = frozenset({"print", "getall", "remove"})
_EDIT = _LIST | {"add", "set"}
_SETTINGS = frozenset({"print", "getall", "set"})
#: help.mikrotik.com/docs/display/ROS/User, "User Groups" (RouterOS 7's list)
POLICIES = ("local", "telnet", "ssh", "ftp", "reboot", "read", "write", "policy", "test", "winbox", "password",
            "web", "sniff", "sensitive", "api", "romon", "rest-api")
#: shared/reference/routers.md "MikroTik hotspot": login-by, mac-auth-mode, radius-mac-format
#: (https and trial from the hotspot profile's own list, RouterOS 7)
_LOGIN_BY = ("mac", "cookie", "http-chap", "http-pap", "https", "trial", "mac-cookie")
_MAC_FORMATS = ("XX:XX:XX:XX:XX:XX", "XX-XX-XX-XX-XX-XX", "XXXXXXXXXXXX",
                "xx:xx:xx:xx:xx:xx", "xx-xx-xx-xx-xx-xx", "xxxxxxxxxxxx")
#: /radius service: the RouterOS services a RADIUS entry can serve (hotspot is the one hotspotd uses)
_RADIUS_SERVICES = ("ppp", "login", "hotspot", "wireless", "dhcp", "ipsec", "dot1x")
#: /ip service rows as a RouterOS 7 router has them (name, port); a test disables what it needs
IP_SERVICES = (("telnet", 23), ("ftp", 21), ("www", 80), ("ssh", 22), ("www-ssl", 443), ("api", 8728),
               ("winbox", 8291), ("api-ssl", 8729))
MENUS: dict[str, Menu] = {
    "/ip/hotspot/active": Menu(
        ("server", "user", "domain", "address", "mac-address", "login-by", "uptime", "idle-time",
         "session-time-left", "idle-timeout", "keepalive-timeout", "bytes-in", "bytes-out",
         "packets-in", "packets-out", "radius", "blocked"),
        frozenset(), _LIST | {"login"}, frozenset({"radius", "blocked"}), countdown="session-time-left"),
    "/ip/hotspot/host": Menu(
        ("mac-address", "address", "to-address", "server", "uptime", "idle-time", "bytes-in", "bytes-out",
         "found-by", "authorized", "bypassed", "comment"),
        frozenset(), _LIST, frozenset({"authorized", "bypassed"})),
    "/ip/hotspot/cookie": Menu(
        ("user", "domain", "mac-address", "expires-in"), frozenset(), _LIST, countdown="expires-in"),
    "/ip/hotspot/ip-binding": Menu(
        ("mac-address", "address", "to-address", "server", "type", "comment", "disabled"),
        frozenset({"mac-address", "address", "to-address", "server", "type", "comment", "disabled"}),
        _EDIT, frozenset({"disabled"}), {"server": "all", "type": "regular", "disabled": "false"},
        choices={"type": ("regular", "bypassed", "blocked")}, kinds={"address": "ip", "to-address": "ip"}),
    "/ip/hotspot/user": Menu(
        ("server", "name", "password", "address", "mac-address", "profile", "limit-uptime", "comment", "disabled"),
        frozenset({"server", "name", "password", "address", "mac-address", "profile", "limit-uptime",
                   "comment", "disabled"}),
        _EDIT, frozenset({"disabled"}), {"server": "all", "profile": "default", "disabled": "false"}),
    "/system/identity": Menu(("name",), frozenset({"name"}), frozenset({"print", "getall", "set"}), single=True),
    # configuration menus, as a router looks after `hotspotd router-config mikrotik` ran on it; tests
    # change them to what an owner may have (RouterOS's field names; a test sets what it needs)
    "/system/device-mode": Menu(
        ("mode", "hotspot", "container", "proxy"), frozenset({"mode", "hotspot", "container", "proxy"}),
        frozenset({"print", "getall", "set"}), single=True),
    # routers.md "MikroTik hotspot": /radius incoming set accept=yes port=3799
    "/radius/incoming": Menu(("accept", "port", "vrf"), frozenset({"accept", "port"}), _SETTINGS,
                             frozenset({"accept"}), single=True, kinds={"port": "port"}),
    # timeout: how long the router waits for an answer; 300ms is RouterOS's default (its /radius manual
    # page; not in routers.md, and not found in the docs searched for this), router-config sets 3000ms
    "/radius": Menu(
        ("service", "address", "secret", "authentication-port", "accounting-port", "timeout",
         "require-message-auth", "comment", "disabled"),
        frozenset({"service", "address", "secret", "authentication-port", "accounting-port", "timeout",
                   "require-message-auth", "comment", "disabled"}), _EDIT,
        frozenset({"disabled", "require-message-auth"}),
        {"authentication-port": "1812", "accounting-port": "1813", "timeout": "300ms", "disabled": "false"},
        lists={"service": _RADIUS_SERVICES},
        kinds={"address": "ip", "authentication-port": "port", "accounting-port": "port", "timeout": "time"}),
    # the password is written, never printed (as RouterOS: /user print has no password column)
    "/user": Menu(("name", "group", "address", "comment", "disabled"),
                  frozenset({"name", "group", "password", "address", "comment", "disabled"}),
                  _EDIT, frozenset({"disabled"}), {"address": "", "disabled": "false"},
                  kinds={"address": "prefixes"}, unique="name"),
    "/user/group": Menu(("name", "policy", "skin", "comment"), frozenset({"name", "policy", "skin", "comment"}),
                        _EDIT, defaults={"skin": "default"}, lists={"policy": POLICIES}, unique="name"),
    # routers.md "RouterOS API": api on 8728, api-ssl on 8729; items are named, never added
    "/ip/service": Menu(("name", "port", "address", "certificate", "disabled"),
                        frozenset({"port", "address", "certificate", "disabled"}), _SETTINGS,
                        frozenset({"disabled"}), kinds={"port": "port", "address": "prefixes"}),
    "/ip/hotspot": Menu(("name", "interface", "address-pool", "profile", "disabled"),
                        frozenset({"name", "interface", "address-pool", "profile", "disabled"}), _EDIT,
                        frozenset({"disabled"})),
    "/ip/hotspot/profile": Menu(
        ("name", "hotspot-address", "dns-name", "html-directory", "login-by", "use-radius", "radius-accounting",
         "radius-interim-update", "mac-auth-mode", "radius-mac-format"),
        frozenset({"name", "login-by", "use-radius", "radius-accounting", "radius-interim-update",
                   "mac-auth-mode", "radius-mac-format", "html-directory"}), _EDIT,
        frozenset({"use-radius", "radius-accounting"}),
        choices={"mac-auth-mode": ("mac-as-username", "mac-as-username-and-password"),
                 "radius-mac-format": _MAC_FORMATS},
        lists={"login-by": _LOGIN_BY}, kinds={"radius-interim-update": "received-or-time"}),
    # routers.md "MikroTik hotspot": walled-garden add dst-host=..., walled-garden ip add action=accept dst-address=...
    "/ip/hotspot/walled-garden": Menu(
        ("action", "dst-host", "dst-port", "path", "method", "server", "src-address", "comment", "disabled"),
        frozenset({"action", "dst-host", "dst-port", "path", "method", "server", "src-address", "comment",
                   "disabled"}), _EDIT, frozenset({"disabled"}), {"action": "allow", "disabled": "false"},
        choices={"action": ("allow", "deny")}),
    "/ip/hotspot/walled-garden/ip": Menu(
        ("action", "dst-address", "dst-host", "dst-port", "protocol", "server", "src-address", "comment",
         "disabled"),
        frozenset({"action", "dst-address", "dst-host", "dst-port", "protocol", "server", "src-address",
                   "comment", "disabled"}), _EDIT, frozenset({"disabled"}), {"action": "accept", "disabled": "false"},
        choices={"action": ("accept", "drop", "reject"), "protocol": ("tcp", "udp", "icmp")},
        kinds={"dst-address": "prefixes", "src-address": "prefixes", "dst-port": "ports"}),
    "/system/resource": Menu(
        ("uptime", "version", "build-time", "factory-software", "free-memory", "total-memory", "cpu",
         "cpu-count", "cpu-frequency", "cpu-load", "free-hdd-space", "total-hdd-space",
         "architecture-name", "board-name", "platform"),
        frozenset(), frozenset({"print", "getall"}), single=True),
}
_MAC = re.compile(r"[0-9A-Fa-f]{2}(:[0-9A-Fa-f]{2}){5}")
_TIME = re.compile(r"(\d+(ms|s|m|h|d|w)?)+|\d{1,2}:\d\d:\d\d")
_TRUE, _FALSE = ("yes", "true"), ("no", "false")


@dataclass(frozen=True)
class Limits:
    """What the hotspot enforces on a session by itself, from the Access-Accept (None: no limit).
    RouterOS ends a session at Session-Timeout, Idle-Timeout and Mikrotik-Total-Limit(+Gigawords)
    and sends its Stop (shared/reference/routers.md, "MikroTik as public evidence shows it");
    Mikrotik-Recv-Limit/-Xmit-Limit are honoured too ("MikroTik hotspot", reply attributes)."""
    session_timeout: float | None = None
    idle_timeout: float | None = None
    total: int | None = None    #: bytes in + out
    recv: int | None = None     #: bytes in: received from the client (its upload)
    xmit: int | None = None     #: bytes out: sent to the client (its download)


#: the Acct-Terminate-Cause of a session that reached a byte limit: which one RouterOS sends is not
#: documented (routers.md); Session-Timeout is what CoovaChilli sends for its data cap
LIMIT_CAUSE = "Session-Timeout"


class RadiusSide(Protocol):
    """What the hotspot tells its RADIUS client (radius/testing/mikrotik.py). Each call comes with
    the router's lock held: the client must not wait on anything that needs the router."""

    def host_seen(self, mac: str, ip: str) -> None:
        """A device appeared in ``/ip/hotspot/host`` (its first packet through the hotspot)."""

    def login(self, user: str, password: str, mac: str, ip: str) -> bool:
        """``/ip/hotspot/active/login``: ask RADIUS; on Access-Accept activate the session (True)."""

    def logged_out(self, item_id: str, session: dict, cause: str) -> None:
        """The active session ``item_id`` ended (``cause``: an Acct-Terminate-Cause name)."""


class Trap(Exception):
    """A command failed: becomes ``!trap =message=...`` then ``!done``."""


class Command(NamedTuple):
    """A sentence the simulator received (``password`` attributes masked)."""
    command: str
    attributes: dict[str, str]
    queries: tuple[str, ...]
    tag: str | None


def format_duration(seconds: float) -> str:
    """RouterOS's way: ``1w2d3h4m5s``, zero parts left out, ``0s`` for nothing."""
    left = max(int(seconds), 0)
    parts = []
    for unit, size in (("w", 604800), ("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        count, left = divmod(left, size)
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts) or "0s"


def _words_from(value: str, allowed: tuple[str, ...], negated: bool) -> bool:
    words = value.split(",")
    return all(w.removeprefix("!") in allowed if negated else w in allowed for w in words)


def _of_kind(value: str, kind: str) -> bool:
    """A value RouterOS would take for a field of this kind (empty clears a field)."""
    if kind in ("int", "port"):
        return value.isdigit() and (kind == "int" or 0 < int(value) < 65536)
    if not value:
        return True
    if kind == "ports":
        return all(re.fullmatch(r"\d{1,5}(-\d{1,5})?", part) for part in value.split(","))
    if kind == "time":
        return bool(_TIME.fullmatch(value))
    if kind == "received-or-time":
        return value == "received" or bool(_TIME.fullmatch(value))
    try:
        if kind == "ip":
            ipaddress.ip_address(value)
        elif kind == "prefixes" and value:
            for part in value.split(","):
                ipaddress.ip_network(part, strict=False)
    except ValueError:
        return False
    return True


def _same(actual: str, wanted: str) -> bool:
    """Typed equality as RouterOS does it: yes == true, MACs in any case."""
    if actual in ("true", "false") and wanted in _TRUE + _FALSE:
        return (actual == "true") == (wanted in _TRUE)
    if _MAC.fullmatch(actual) and _MAC.fullmatch(wanted):
        return actual.upper() == wanted.upper()
    return actual == wanted


def _less(actual: str, wanted: str) -> bool:
    if actual.isdigit() and wanted.isdigit():
        return int(actual) < int(wanted)
    return actual < wanted


def matches(row: dict[str, str], queries: Iterable[str]) -> bool:
    """Evaluate RouterOS query words (without the leading ``?``) on one printed row.

    Each word pushes a result; ``#`` words combine them; the stack left at the end is ANDed.
    """
    stack: list[bool] = []
    for query in queries:
        if query.startswith("#"):
            for op in re.findall(r"\d+|.", query[1:]):
                if op.isdigit() and int(op) < len(stack):
                    stack.append(stack[int(op)])  # a copy of the value at that index, counted from the bottom
                elif op == "!" and stack:
                    stack.append(not stack.pop())
                elif op == "." and stack:
                    stack.append(stack[-1])
                elif op in "|&" and len(stack) >= 2:
                    right, left = stack.pop(), stack.pop()
                    stack.append(left or right if op == "|" else left and right)
                else:
                    raise Trap(f"invalid query ?{query}")
        elif query[:1] in ("=", "<", ">") and "=" in query[1:]:
            key, value = query[1:].split("=", 1)
            actual = row.get(key)
            test = {"=": _same, "<": _less, ">": lambda a, w: _less(w, a)}[query[0]]
            stack.append(actual is not None and test(actual, value))
        elif query.startswith("-"):
            stack.append(query[1:] not in row)
        elif "=" in query:
            key, value = query.split("=", 1)
            stack.append(key in row and _same(row[key], value))
        else:
            stack.append(query in row)
    return all(stack)


# ---------------------------------------------------------------- the server

class _Conn:
    """One client connection and its login state."""

    def __init__(self, sock: socket.socket, peer):
        self.sock, self.peer = sock, peer
        self.logged_in = False
        self.closed = threading.Event()
        self.thread: threading.Thread | None = None

    def drop(self) -> None:
        self.closed.set()
        try:
            # the plain socket's shutdown, also under TLS: wakes the reader without touching the SSL object
            socket.socket.shutdown(self.sock, socket.SHUT_RDWR)
        except OSError:
            pass


class _Listener(socketserver.TCPServer):
    allow_reuse_address = True

    def __init__(self, sim: "RouterOSSimulator", address):
        self.sim = sim
        super().__init__(address, socketserver.BaseRequestHandler)

    def verify_request(self, request, client_address) -> bool:
        return not self.sim._unreachable  # refused: TCPServer closes it at once

    def process_request(self, request, client_address) -> None:
        self.sim._accept(request, client_address)


class RouterOSSimulator:
    """A RouterOS API server on ``host:port`` (0 = any free port) with hotspot menus in memory.

    ``start()`` serves in daemon threads; ``stop()`` closes the listener and every client connection
    and joins the threads. The test controls (``add_host``, ``login``, ``set_latency``, ...) are thread-safe.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, username: str = "admin", password: str = "",
                 identity: str = "hotspotd-sim", version: str = DEFAULT_VERSION, empty_reply: bool = True,
                 ssl_context: ssl.SSLContext | None = None, auto_hosts: bool = False, host_after: float = 0.3):
        self.username, self.password = username, password
        #: ``/ip/hotspot/active/login`` for an unseen device adds its host first (the demo has no real traffic)
        self.auto_hosts = auto_hosts
        #: with ``auto_hosts``: seconds from a device's first login attempt until the hotspot sees it
        self.host_after = host_after
        self._first_attempt: dict[str, float] = {}
        #: the hotspot's RADIUS side (radius/testing/mikrotik.py attaches itself here), told through
        #: :class:`RadiusSide`'s three calls; None: every API login is accepted and nothing is reported
        self.radius: RadiusSide | None = None
        self.version, self.empty_reply = version, empty_reply
        self._identity = identity
        self._ssl = ssl_context
        self._lock = threading.RLock()
        self._latency = 0.0
        self._unreachable = False
        self._conns: set[_Conn] = set()
        self._commands: list[Command] = []
        self._booted = time.monotonic()
        self._reset_tables()
        self._listener = _Listener(self, (host, port))
        self._serving: threading.Thread | None = None

    # ---- lifecycle

    @property
    def address(self) -> tuple[str, int]:
        return self._listener.server_address[:2]

    def start(self) -> "RouterOSSimulator":
        self._serving = threading.Thread(target=self._listener.serve_forever, kwargs={"poll_interval": 0.05},
                                         name=f"routeros-sim:{self.address[1]}", daemon=True)
        self._serving.start()
        log.info("RouterOS API simulator listening on %s:%s", *self.address)
        return self

    def stop(self) -> None:
        if self._serving is not None:
            self._listener.shutdown()
            self._serving.join()
            self._serving = None
        self.drop_connections()
        self._listener.server_close()

    def __enter__(self) -> "RouterOSSimulator":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # ---- test and demo controls

    def add_host(self, mac: str, ip: str, *, server: str = "hotspot1") -> str:
        """A device the hotspot has seen (``/ip/hotspot/host``), not logged in; returns its id."""
        mac = mac.upper()
        with self._lock:
            for item_id, row in self._tables["/ip/hotspot/host"].items():
                if row["mac-address"] == mac:
                    row.update({"address": ip, "to-address": ip})
                    return item_id
            item_id = self._insert("/ip/hotspot/host", {
                "mac-address": mac, "address": ip, "to-address": ip, "server": server, "idle-time": "0s",
                "bytes-in": "0", "bytes-out": "0", "found-by": "", "authorized": "false", "bypassed": "false",
                "_since": time.monotonic()})
            if self.radius is not None:
                self.radius.host_seen(mac, ip)      # login-by=mac: the hotspot asks RADIUS at once
            return item_id

    def login(self, mac: str, ip: str, user: str, *, login_by: str = "http-chap", cookie: bool = True,
              session_time: float | None = None) -> str:
        """Log a device in as the hotspot would after a splash-page login; returns the active id.

        ``cookie`` also leaves an ``/ip/hotspot/cookie`` (as ``login-by=cookie`` does), which brings the
        device straight back unless removed. ``session_time`` shows as ``session-time-left``.
        """
        mac = mac.upper()
        with self._lock:
            self.add_host(mac, ip)
            for item_id, row in self._tables["/ip/hotspot/active"].items():
                if row["mac-address"] == mac:
                    return item_id
            if cookie:
                self._insert("/ip/hotspot/cookie", {"user": user, "mac-address": mac,
                                                    "_until": time.monotonic() + 3 * 86400})
            return self._activate(mac, ip, user, login_by, session_time)

    def activate(self, mac: str, ip: str, user: str, login_by: str, limits: Limits) -> str:
        """A session the RADIUS side got an Access-Accept for (``radius`` shows true); returns its id,
        or the id of the device's session already up."""
        with self._lock:
            for item_id, row in self._tables["/ip/hotspot/active"].items():
                if row["mac-address"] == mac.upper():
                    return item_id
            item_id = self._activate(mac.upper(), ip, user, login_by, None, limits)
            self._tables["/ip/hotspot/active"][item_id]["radius"] = "true"
            return item_id

    def change(self, item_id: str, limits: Limits) -> bool:
        """New limits for an active session (a CoA-Request); Session-Timeout counts from its start."""
        with self._lock:
            row = self._tables["/ip/hotspot/active"].get(item_id)
            if row is None:
                return False
            row["_limits"] = limits
            row.pop("_until", None)
            if limits.session_timeout is not None:
                row["_until"] = row["_since"] + limits.session_timeout
            self._end_timed_out()
            return True

    def send_traffic(self, mac: str, *, up: int = 0, down: int = 0) -> bool:
        """The device sends ``up`` bytes and receives ``down`` (bytes-in and bytes-out, as the router
        counts from its side); its session's limits are enforced at once. False: no session."""
        mac = mac.upper()
        with self._lock:
            now = time.monotonic()
            for menu in ("/ip/hotspot/host", "/ip/hotspot/active"):
                for row in self._tables[menu].values():
                    if row["mac-address"] == mac:
                        row["bytes-in"] = str(int(row["bytes-in"]) + up)
                        row["bytes-out"] = str(int(row["bytes-out"]) + down)
                        if "packets-in" in row:     # a packet per 1500 bytes, at least one
                            row["packets-in"] = str(int(row["packets-in"]) + -(-up // 1500))
                            row["packets-out"] = str(int(row["packets-out"]) + -(-down // 1500))
                        row["_seen"] = now
            online = mac in [r["mac-address"] for r in self._tables["/ip/hotspot/active"].values()]
            self._end_timed_out()
            return online

    def logout(self, mac: str, cause: str = "User-Request") -> bool:
        """End the device's session: its own logout (User-Request), or the router's reason."""
        with self._lock:
            ids = [i for i, r in self._tables["/ip/hotspot/active"].items() if r["mac-address"] == mac.upper()]
            for item_id in ids:
                self._end(item_id, cause)
            return bool(ids)

    def sessions(self) -> dict[str, dict]:
        """The active sessions by id, hidden fields included (copies), after enforcing their limits."""
        with self._lock:
            self._end_timed_out()
            return {item_id: dict(row) for item_id, row in self._tables["/ip/hotspot/active"].items()}

    def menu(self, path: str) -> list[dict]:
        """The rows of a configuration menu as stored (copies), e.g. ``menu("/radius")``."""
        with self._lock:
            return [dict(row) for row in self._tables[path].values()]

    def active_macs(self) -> list[str]:
        with self._lock:
            self._end_timed_out()
            return [row["mac-address"] for row in self._tables["/ip/hotspot/active"].values()]

    def cookies_for(self, mac: str) -> list[dict[str, str]]:
        return [row for row in self.rows("/ip/hotspot/cookie") if _same(row["mac-address"], mac)]

    def rows(self, menu: str) -> list[dict[str, str]]:
        """What ``<menu>/print`` would show now, e.g. ``rows("/ip/hotspot/host")``."""
        with self._lock:
            return [self._render(menu, item_id, row) for item_id, row in self._tables[menu].items()]

    def configure(self, path: str, where: dict[str, str] | None = None, **values: str) -> None:
        """Change the router's configuration as its owner would at the console (``path`` such as
        ``/system/device-mode``; ``where`` picks the rows of a list menu, e.g. ``{"name": "hsprof1"}``);
        field names with dashes are given with underscores."""
        values = {k.replace("_", "-"): v for k, v in values.items()}
        with self._lock:
            for row in self._tables[path].values():
                if all(row.get(k) == v for k, v in (where or {}).items()):
                    row.update(values)

    def set_unreachable(self, flag: bool = True) -> None:
        """While set, new connections are closed at once and the open ones are dropped."""
        self._unreachable = bool(flag)
        if flag:
            self.drop_connections()

    def set_latency(self, seconds: float) -> None:
        """Delay every reply by ``seconds`` (a slow or congested router)."""
        self._latency = max(float(seconds), 0.0)

    def drop_connections(self) -> None:
        """Close every client connection (a router reboot, an idle NAT entry gone) and wait for them to end."""
        with self._lock:
            conns = list(self._conns)
        for conn in conns:
            conn.drop()
        for conn in conns:
            if conn.thread is not None and conn.thread is not threading.current_thread():
                conn.thread.join(5)

    @property
    def commands(self) -> list[Command]:
        """Every sentence received so far, oldest first (a copy)."""
        with self._lock:
            return list(self._commands)

    @property
    def connection_count(self) -> int:
        with self._lock:
            return len(self._conns)

    def clear(self) -> None:
        """Forget hosts, sessions, cookies, bindings, users and the command log; latency and reachability stay."""
        with self._lock:
            self._reset_tables()
            self._commands.clear()

    # ---- connections

    def _accept(self, sock: socket.socket, peer) -> None:
        conn = _Conn(sock, peer)
        conn.thread = threading.Thread(target=self._serve, args=(conn,), daemon=True,
                                       name=f"routeros-sim:{self.address[1]}:{peer[1]}")
        with self._lock:
            self._conns.add(conn)
        conn.thread.start()

    def _serve(self, conn: _Conn) -> None:
        log.debug("API connection from %s:%s", *conn.peer[:2])
        try:
            if self._ssl is not None:
                conn.sock.settimeout(5)
                conn.sock = self._ssl.wrap_socket(conn.sock, server_side=True)
                conn.sock.settimeout(None)
            with conn.sock.makefile("rb") as reader:
                while not conn.closed.is_set():
                    words = read_sentence(reader.read)
                    if not words:
                        continue  # RouterOS ignores empty sentences
                    replies, fatal = self._handle(conn, words)
                    if self._latency and conn.closed.wait(self._latency):
                        break
                    conn.sock.sendall(b"".join(encode_sentence(r) for r in replies))
                    if fatal:
                        break
        except (EOFError, OSError, WireError) as exc:
            log.debug("API connection from %s:%s ends: %s", conn.peer[0], conn.peer[1], exc or "closed")
        finally:
            with self._lock:
                self._conns.discard(conn)
            conn.sock.close()

    def _handle(self, conn: _Conn, words: list[str]) -> tuple[list[list[str]], bool]:
        command, attrs, queries, tag = words[0], {}, [], None
        for word in words[1:]:
            if word.startswith("="):
                key, _, value = word[1:].partition("=")
                attrs[key] = value
            elif word.startswith("?"):
                queries.append(word[1:])
            elif word.startswith(".tag="):
                tag = word[5:]
        masked = {k: ("***" if k == "password" else v) for k, v in attrs.items()}
        with self._lock:
            self._commands.append(Command(command, masked, tuple(queries), tag))
            fatal = False
            try:
                if command == "/quit":
                    replies, fatal = [["!fatal", "session terminated on request"]], True
                elif command == "/login":
                    replies = self._login_api(conn, attrs)
                elif not conn.logged_in:
                    raise Trap("not logged in")
                else:
                    replies = self._run(command, attrs, queries)
            except Trap as exc:
                replies = [["!trap", f"=message={exc}"], ["!done"]]
        if tag is not None:
            replies = [r + [f".tag={tag}"] for r in replies]
        return replies, fatal

    def _login_api(self, conn: _Conn, attrs: dict[str, str]) -> list[list[str]]:
        if attrs.get("name") == self.username and attrs.get("password", "") == self.password:
            conn.logged_in = True
            return [["!done"]]
        if self._local_user(attrs.get("name", ""), attrs.get("password", "")):
            conn.logged_in = True
            return [["!done"]]
        log.info("API login refused for %r from %s", attrs.get("name"), conn.peer[0])
        raise Trap("invalid user name or password (6)")

    def _local_user(self, name: str, password: str) -> bool:
        """A ``/user`` entry (a script or an API ``add`` made it) whose group has the ``api`` policy
        (routers.md, "RouterOS API": the user's group needs the api policy). Its ``address`` and
        ``/ip service`` are stored, not enforced: the simulator listens on loopback."""
        users = [u for u in self._tables["/user"].values() if u.get("name") == name and u.get("disabled") != "true"]
        if not name or not users or "password" not in users[0] or users[0]["password"] != password:
            return False
        group = next((g for g in self._tables["/user/group"].values() if g.get("name") == users[0].get("group")), {})
        return "api" in str(group.get("policy", "")).split(",")

    def run_script(self, text: str) -> list[str]:
        """Run a RouterOS CLI script (what an owner pastes into the terminal) against these menus;
        returns what it printed. See :mod:`hotspotd.testing.routeros_script`."""
        from .routeros_script import run_script
        return run_script(self, text)

    # ---- commands (called with the lock held)

    def _run(self, command: str, attrs: dict[str, str], queries: list[str]) -> list[list[str]]:
        self._end_timed_out()
        path, _, verb = command.rpartition("/")
        menu = MENUS.get(path)
        if menu is None:
            raise Trap("no such command" if command in MENUS else "no such command prefix")
        if verb not in menu.verbs:
            raise Trap("no such command")
        if verb in ("print", "getall"):
            return self._print(path, menu, attrs, queries)
        if verb == "add":
            return [["!done", f"=ret={self._add(path, menu, attrs)}"]]
        if verb == "set":
            self._set(path, menu, attrs)
        elif verb == "remove":
            self._remove(path, attrs.get(".id", ""))
        elif verb == "login":
            self._api_hotspot_login(attrs)
        return [["!done"]]

    def _print(self, path: str, menu: Menu, attrs: dict[str, str], queries: list[str]) -> list[list[str]]:
        rows = [self._render(path, item_id, row) for item_id, row in self._tables[path].items()]
        matches({}, queries)  # a malformed query traps even when there is nothing to match
        rows = [row for row in rows if matches(row, queries)]
        if "count-only" in attrs:
            return [["!done", f"=ret={len(rows)}"]]
        wanted = [k for k in attrs.get(".proplist", "").split(",") if k]
        replies = []
        for row in rows:
            keys = wanted or list(row)
            replies.append(["!re"] + [f"={k}={row[k]}" for k in keys if k in row])
        if not replies and self.empty_reply:
            replies.append(["!empty"])
        return replies + [["!done"]]

    def _add(self, path: str, menu: Menu, attrs: dict[str, str]) -> str:
        values = {**menu.defaults, **self._checked(menu, attrs)}
        if path == "/ip/hotspot/user" or menu.unique:
            key = menu.unique or "name"
            if not values.get(key):
                raise Trap(f"missing value(s) of argument(s) {key}")
            if any(r.get(key) == values[key] for r in self._tables[path].values()):
                # RouterOS's wording for a hotspot user; the simulator's choice for the other menus
                raise Trap("failure: already have user with this name" if path == "/ip/hotspot/user"
                           else f"failure: item with such {key} already exists")
        return self._insert(path, values)

    def _set(self, path: str, menu: Menu, attrs: dict[str, str]) -> None:
        attrs = dict(attrs)
        ids = attrs.pop(".id", "")
        values = self._checked(menu, attrs)
        rows = [self._tables[path][""]] if menu.single else self._lookup(path, ids)
        for row in rows:
            row.update(values)

    def _remove(self, path: str, ids: str) -> None:
        rows = self._lookup(path, ids)  # all or nothing: one unknown id removes none
        if path == "/ip/hotspot/active":
            for item_id in ids.split(","):
                self._end(item_id, "Admin-Reset")
            return
        for item_id in ids.split(","):
            del self._tables[path][item_id]
        for row in rows:
            if path == "/ip/hotspot/host":  # a host that goes away takes its session with it
                active = self._tables["/ip/hotspot/active"]
                for item_id in [i for i, r in active.items() if r["mac-address"] == row["mac-address"]]:
                    self._end(item_id, "Admin-Reset")

    def _api_hotspot_login(self, attrs: dict[str, str]) -> None:
        """``/ip/hotspot/active/login``: the device must be a known host (by ``ip``, and ``mac-address`` if given).

        As real routers answer (shared/reference/routers.md, "MikroTik as public evidence shows it"):
        ``unknown host IP <ip>`` when no host has that address yet (the race right after payment:
        the device has not sent traffic through the hotspot), ``wrong MAC provided`` when the host
        at that address has another MAC, ``invalid value for argument ip``. With ``auto_hosts`` (the
        demo, where no real device sends traffic) a device is seen ``host_after`` seconds after its
        first login attempt, so the first attempt meets the race as at a venue.

        When ``/ip/hotspot/user`` has entries the user and password must match one; when it is empty any
        credentials pass (standing in for a RADIUS server that accepts). A device already online is
        refused with ``already logged in``: what RouterOS answers there is not documented
        (routers.md), the wording is the audit's in issue 16, and hotspotd relies on neither: it reads
        ``/ip/hotspot/active`` back after any refusal.
        """
        user, ip = attrs.get("user", ""), attrs.get("ip", "")
        if not user or not ip:
            raise Trap("missing value(s) of argument(s) " + " ".join(k for k in ("user", "ip") if not attrs.get(k)))
        try:
            ipaddress.ip_address(ip)
        except ValueError:
            raise Trap("invalid value for argument ip") from None
        mac = attrs.get("mac-address", "")
        if mac and not _MAC.fullmatch(mac):
            raise Trap("invalid value for argument mac-address")
        at_ip = [r for r in self._tables["/ip/hotspot/host"].values() if r["address"] == ip]
        if not at_ip and mac and self.auto_hosts:
            first = self._first_attempt.setdefault(mac.upper(), time.monotonic())
            if time.monotonic() - first >= self.host_after:
                self.add_host(mac, ip)
                at_ip = [r for r in self._tables["/ip/hotspot/host"].values() if r["address"] == ip]
        if not at_ip:
            raise Trap(f"unknown host IP {ip}")
        hosts = [r for r in at_ip if not mac or _same(r["mac-address"], mac)]
        if not hosts:
            raise Trap("wrong MAC provided")
        users = self._tables["/ip/hotspot/user"].values()
        if users and not any(u["name"] == user and u.get("password", "") == attrs.get("password", "")
                             and u["disabled"] == "false" for u in users):
            raise Trap("invalid username or password")
        host_mac = hosts[0]["mac-address"]
        if host_mac in self.active_macs():
            raise Trap("already logged in")
        if self.radius is None:
            self._activate(host_mac, ip, user, "api", None)
        elif not self.radius.login(user, attrs.get("password", ""), host_mac, ip):
            raise Trap("RADIUS server rejected the login")

    # ---- state helpers (lock held)

    def _reset_tables(self) -> None:
        self._tables: dict[str, dict[str, dict]] = {path: {} for path in MENUS}
        self._next_id = {path: 1 for path in MENUS}
        self._tables["/system/identity"][""] = {"name": self._identity}
        self._tables["/system/resource"][""] = {
            "version": self.version, "build-time": "2025-03-11 11:59:04", "factory-software": "7.1",
            "free-memory": "97017856", "total-memory": "268435456", "cpu": "ARM", "cpu-count": "4",
            "cpu-frequency": "716", "cpu-load": "1", "free-hdd-space": "100532224",
            "total-hdd-space": "134217728", "architecture-name": "arm", "board-name": "hAP ac^2",
            "platform": "MikroTik", "_since": self._booted}
        self._tables["/system/device-mode"][""] = {"mode": "advanced", "hotspot": "yes", "container": "no",
                                                   "proxy": "yes"}
        self._tables["/radius/incoming"][""] = {"accept": "true", "port": "3799", "vrf": "main"}
        if routeros_version(self.version) >= (7, 15):   # require-message-auth is there from 7.15
            self._insert("/radius", {"service": "hotspot", "address": "10.5.50.2", "secret": "testing123",
                                     "authentication-port": "1812", "accounting-port": "1813", "timeout": "3000ms",
                                     "require-message-auth": "true", "comment": "hotspotd", "disabled": "false"})
        else:
            self._insert("/radius", {"service": "hotspot", "address": "10.5.50.2", "secret": "testing123",
                                     "authentication-port": "1812", "accounting-port": "1813", "timeout": "3000ms",
                                     "comment": "hotspotd", "disabled": "false"})
        self._insert("/user/group", {"name": "full", "policy": "local,telnet,ssh,ftp,reboot,read,write,policy,test,"
                                     "winbox,password,web,sniff,sensitive,api,romon,rest-api", "skin": "default"})
        self._insert("/user/group", {"name": "read", "policy": "local,telnet,ssh,reboot,read,test,winbox,password,"
                                     "web,sniff,sensitive,api,romon,rest-api,!ftp,!write,!policy", "skin": "default"})
        self._insert("/user", {"name": self.username, "group": "full", "address": "", "disabled": "false"})
        for name, port in IP_SERVICES:
            self._insert("/ip/service", {"name": name, "port": str(port), "address": "", "certificate": "none",
                                         "disabled": "true" if name == "www-ssl" else "false"})
        self._insert("/ip/hotspot", {"name": "hotspot1", "interface": "bridge-hotspot", "address-pool": "hs-pool-1",
                                     "profile": "hsprof1", "disabled": "false"})
        self._insert("/ip/hotspot/profile", {"name": "default", "hotspot-address": "", "dns-name": "",
                                             "html-directory": "flash/hotspot", "login-by": "cookie,http-chap",
                                             "use-radius": "false", "radius-accounting": "false",
                                             "radius-interim-update": "received", "mac-auth-mode": "mac-as-username",
                                             "radius-mac-format": "XX:XX:XX:XX:XX:XX"})
        self._insert("/ip/hotspot/profile", {
            "name": "hsprof1", "hotspot-address": "10.5.50.1", "dns-name": "", "html-directory": "flash/hotspot",
            "login-by": "mac,http-chap,http-pap,cookie", "use-radius": "true", "radius-accounting": "true",
            "radius-interim-update": "received", "mac-auth-mode": "mac-as-username",
            "radius-mac-format": "XX:XX:XX:XX:XX:XX"})

    def _insert(self, path: str, values: dict) -> str:
        item_id = f"*{self._next_id[path]:X}"
        self._next_id[path] += 1
        self._tables[path][item_id] = values
        return item_id

    def _activate(self, mac: str, ip: str, user: str, login_by: str, session_time: float | None,
                  limits: Limits | None = None) -> str:
        now = time.monotonic()
        limits = limits or Limits(session_timeout=session_time)
        row = {"server": "hotspot1", "user": user, "address": ip, "mac-address": mac, "login-by": login_by,
               "idle-time": "0s", "idle-timeout": "5m", "keepalive-timeout": "2m", "bytes-in": "0",
               "bytes-out": "0", "packets-in": "0", "packets-out": "0", "radius": "false", "blocked": "false",
               "_since": now, "_seen": now, "_limits": limits}
        if limits.session_timeout is not None:
            row["_until"] = now + limits.session_timeout
        if limits.idle_timeout is not None:
            row["idle-timeout"] = format_duration(limits.idle_timeout) if limits.idle_timeout else "none"
        self._set_authorized(mac, True)
        return self._insert("/ip/hotspot/active", row)

    def _end_timed_out(self) -> None:
        """The hotspot's own enforcement: a session ends at its Session-Timeout, its Idle-Timeout
        without traffic and its byte limits (its cookie stays)."""
        now = time.monotonic()
        for item_id, row in list(self._tables["/ip/hotspot/active"].items()):
            cause = _limit_reached(row, now)
            if cause:
                self._end(item_id, cause)

    def _end(self, item_id: str, cause: str) -> None:
        row = self._tables["/ip/hotspot/active"].pop(item_id)
        self._set_authorized(row["mac-address"], False)
        if self.radius is not None:
            self.radius.logged_out(item_id, row, cause)

    def _set_authorized(self, mac: str, flag: bool) -> None:
        for row in self._tables["/ip/hotspot/host"].values():
            if row["mac-address"] == mac:
                row["authorized"] = "true" if flag else "false"

    def _lookup(self, path: str, ids: str) -> list[dict]:
        table = self._tables[path]
        if not ids or any(i not in table for i in ids.split(",")):
            raise Trap("no such item")
        return [table[i] for i in ids.split(",")]

    def _checked(self, menu: Menu, attrs: dict[str, str]) -> dict[str, str]:
        values = {}
        for key, value in attrs.items():
            if key not in menu.writable or (key == "require-message-auth"
                                            and routeros_version(self.version) < (7, 15)):
                # require-message-auth exists from RouterOS 7.15 (routers.md, "MikroTik as public evidence")
                raise Trap(f"unknown parameter {key}")
            if key in menu.booleans:
                if value not in _TRUE + _FALSE:
                    raise Trap(f"invalid value for argument {key}")
                value = "true" if value in _TRUE else "false"
            elif key == "mac-address" and value:
                if not _MAC.fullmatch(value):
                    raise Trap("invalid value for argument mac-address")
                value = value.upper()
            elif key in menu.choices and value not in menu.choices[key]:
                raise Trap(f"invalid value for argument {key}")
            elif key in menu.lists and not _words_from(value, menu.lists[key], negated=key == "policy"):
                raise Trap(f"invalid value for argument {key}")
            elif key in menu.kinds and not _of_kind(value, menu.kinds[key]):
                raise Trap(f"invalid value for argument {key}")
            values[key] = value
        return values

    def _render(self, path: str, item_id: str, row: dict) -> dict[str, str]:
        menu, now = MENUS[path], time.monotonic()
        shown = {} if menu.single else {".id": item_id}
        for key in menu.fields:
            if key in row:
                shown[key] = row[key]
            elif key == "uptime" and "_since" in row:
                shown[key] = format_duration(now - row["_since"])
            elif key == menu.countdown and "_until" in row:
                shown[key] = format_duration(row["_until"] - now)
        return shown


def routeros_version(text: str) -> tuple[int, ...]:
    """``7.14.3 (stable)`` → (7, 14, 3): versions compare as numbers (7.9 is before 7.15)."""
    return tuple(int(part) for part in re.findall(r"\d+", text.split()[0])[:3])


def _limit_reached(row: dict, now: float) -> str | None:
    """Which of the session's limits it has reached (an Acct-Terminate-Cause name), if any."""
    limits: Limits = row.get("_limits") or Limits()
    if row.get("_until") is not None and row["_until"] <= now:
        return "Session-Timeout"
    if limits.idle_timeout and now - row["_seen"] >= limits.idle_timeout:
        return "Idle-Timeout"
    received, sent = int(row["bytes-in"]), int(row["bytes-out"])
    if any(limit and used >= limit       # 0 is no limit, as RouterOS's limit-bytes-total (a choice: not in routers.md)
           for limit, used in ((limits.total, received + sent), (limits.recv, received), (limits.xmit, sent))):
        return LIMIT_CAUSE
    return None
