"""openNDS gateways with hotspotd as their Forwarding Authentication Service (FAS), openNDS 9.10.

What openNDS sends and expects (reference/opennds.md §4):

* The redirect: ``GET {faspath}?fas=…`` (``fas_secure_enabled`` 1: base64 of the client's fields) or
  ``?fas=…&iv=…`` (level 3: AES-256-CBC as PHP's ``openssl_encrypt(plain, "aes-256-cbc", faskey, 0, iv)``
  does it: the key is the faskey NUL-padded to 32 bytes, the IV is 16 ASCII characters used as raw
  bytes, PKCS#7, base64 twice). :func:`parse_redirect` gives a :class:`Visit`.
* Level 3, authmon: ``POST {faspath}`` with ``auth_get``, ``gatewayhash`` and a base64 ``payload``.
  ``view``/``none`` is answered ``*`` plus one percent-encoded entry per client to authorise; authmon
  then runs ``eval ndsctl auth <entry>`` **as root**, so :func:`auth_entry` builds entries from
  checked MACs and integers only, and :meth:`Gateway.authlist` re-checks each against
  :data:`ENTRY_RE` before it leaves. ``view`` with ``* mac …`` acknowledges them.
* Level 1: the browser itself calls the gateway's ``/opennds_auth/?tok=<rhid>`` (:meth:`Gateway.auth_url`).
* Remote deauth (9.10 has none): the small agent ``hotspotd router-config opennds --format agent``
  prints runs on the gateway and asks over openNDS's own level-3 channel (``auth_get=custom``,
  payload ``deauth_poll``) which MACs to ``ndsctl deauth``; it answers ``deauth_done mac …``. A cut
  (:meth:`Gateway.cut`) waits for that answer.
* The client list, for the read-back (:meth:`Gateway.clients`): the poll is answered ``list <nonce>``
  and the agent posts ``clients <nonce> <sig> auth <mac> … pre <mac> …`` (the Authenticated and
  Preauthenticated clients of ``ndsctl json``), ``sig`` = sha256hex of ``"<nonce> auth … pre … <faskey>"``.
  gatewayhash is no secret (sha256 of the name), so the nonce and the faskey are what make a list
  hotspotd acts on one the gateway sent, for the question just asked. Every word is checked.

State (what is pending for each gateway) is in memory: a restart forgets it, and returning devices
are let in again when they come back to the splash page.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import ipaddress
import logging
import math
import re
import secrets
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import quote, unquote

from cryptography.hazmat.primitives import padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from .. import access
from ..formatting import parse_rate
from . import RouterUnavailable

log = logging.getLogger(__name__)

MAC_RE = re.compile(r"[0-9a-f]{2}(?::[0-9a-f]{2}){5}")
HID_RE = re.compile(r"[0-9a-f]{64}")
IV_RE = re.compile(r"[0-9A-Za-z]{16}")
#: An authmon entry: ``mac minutes uprate downrate upquota downquota``, nothing else ever passes.
ENTRY_RE = re.compile(r"[0-9a-f]{2}(?::[0-9a-f]{2}){5}(?: (?:0|[1-9][0-9]{0,9})){5}")
#: openNDS's gatewayname as hotspotd accepts it: url-encoding leaves it unchanged, so gatewayhash is stable.
GATEWAY_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}")
MAX_FIELD = 10 ** 10 - 1          # ten digits: far beyond any session, rate or quota, and short
AUTHLIST_BYTES = 1000             # authmon reads at most 1024 characters of the answer
ENTRY_TTL_SECONDS = 180           # an entry the gateway never acks (device gone) is dropped
NONCE_RE = re.compile(r"[0-9a-f]{16}")
SIG_RE = re.compile(r"[0-9a-f]{64}")
MAX_LISTED = 1500                 # MACs in one client list: far beyond a venue, and under the 64 KiB form limit


class InvalidRedirect(ValueError):
    """The ``fas``/``iv`` query does not decode to the fields openNDS sends."""


@dataclass(frozen=True)
class Visit:
    """A client as openNDS sent it to the splash page."""
    hid: str
    clientip: str
    clientmac: str
    gatewayname: str
    gatewayaddress: str
    originurl: str
    authdir: str = "opennds_auth"


def aes_encrypt(plain: str, faskey: str, iv: str) -> str:
    """What openNDS puts in ``fas=`` at level 3 (also for tests and the simulator-free check)."""
    padder = padding.PKCS7(128).padder()
    data = padder.update(plain.encode()) + padder.finalize()
    enc = _cipher(faskey, iv).encryptor()
    inner = base64.b64encode(enc.update(data) + enc.finalize())
    return base64.b64encode(inner).decode()


def aes_decrypt(fas: str, faskey: str, iv: str) -> str:
    """The plain text of a level-3 ``fas=`` value; :class:`InvalidRedirect` when it is not one."""
    if not IV_RE.fullmatch(iv):
        raise InvalidRedirect("iv")
    try:
        raw = base64.b64decode(base64.b64decode(fas, validate=True), validate=True)
        dec = _cipher(faskey, iv).decryptor()
        unpadder = padding.PKCS7(128).unpadder()
        data = unpadder.update(dec.update(raw) + dec.finalize()) + unpadder.finalize()
        return data.decode()
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise InvalidRedirect("fas") from None


def _cipher(faskey: str, iv: str) -> Cipher:
    key = faskey.encode()[:32].ljust(32, b"\0")     # PHP/OpenSSL NUL-pad a short key
    return Cipher(algorithms.AES(key), modes.CBC(iv.encode()))


def rhid(hid: str, faskey: str) -> str:
    """sha256hex(hid + faskey): what the gateway's authdir takes as ``tok`` from a remote FAS."""
    return hashlib.sha256((hid + faskey).encode()).hexdigest()


def gatewayhash(gatewayname: str) -> str:
    """sha256hex of the url-encoded gatewayname: how authmon names its gateway."""
    return hashlib.sha256(quote(gatewayname, safe="").encode()).hexdigest()


def raw_query_value(query: str, key: str) -> str | None:
    """A query value as sent: openNDS does not url-encode its base64 (``+`` stays ``+``)."""
    for part in query.split("&"):
        name, _, value = part.partition("=")
        if name == key:
            return value
    return None


def parse_redirect(query: str, faskey: str, level: int) -> Visit:
    """The :class:`Visit` in a redirect's raw query string at ``level`` (1 or 3)."""
    fas = raw_query_value(query, "fas")
    if not fas or len(fas) > 8192:
        raise InvalidRedirect("fas")
    if level == 3:
        plain = aes_decrypt(fas, faskey, raw_query_value(query, "iv") or "")
    else:
        try:
            plain = base64.b64decode(fas, validate=True).decode()
        except (ValueError, binascii.Error, UnicodeDecodeError):
            raise InvalidRedirect("fas") from None
    fields = {}
    for item in plain.split(", "):
        name, sep, value = item.partition("=")
        if sep:
            fields[name.strip()] = value
    try:
        visit = Visit(hid=fields["hid"], clientip=fields["clientip"], clientmac=fields["clientmac"].lower(),
                      gatewayname=fields["gatewayname"], gatewayaddress=fields["gatewayaddress"],
                      originurl=unquote(fields.get("originurl", "")), authdir=fields.get("authdir", "opennds_auth"))
    except KeyError as exc:
        raise InvalidRedirect(str(exc.args[0])) from None
    _check_visit(visit)
    return visit


def _check_visit(v: Visit) -> None:
    if not HID_RE.fullmatch(v.hid):
        raise InvalidRedirect("hid")
    if not MAC_RE.fullmatch(v.clientmac):
        raise InvalidRedirect("clientmac")
    host, _, port = v.gatewayaddress.rpartition(":")
    try:
        ipaddress.IPv4Address(v.clientip), ipaddress.IPv4Address(host)
    except ValueError:
        raise InvalidRedirect("clientip") from None
    if not port.isdigit() or not GATEWAY_NAME_RE.fullmatch(v.gatewayname) or not re.fullmatch(r"[a-z_]{1,32}", v.authdir):
        raise InvalidRedirect("gatewayaddress")


def auth_entry(mac: str, grant: access.Grant) -> str:
    """The authmon entry letting ``mac`` online for what ``grant`` has left: minutes rounded up
    (0 would mean the gateway's default), rates in kbit/s, quotas in kB (per direction: openNDS
    counts up and down apart, so each gets what is left of the whole cap)."""
    minutes = max(1, math.ceil(grant.remaining_seconds / 60))
    up_rate = down_rate = 0
    rate = parse_rate(grant.rate_limit)
    if rate:
        up_rate, down_rate = (max(1, math.ceil(v / 1000)) if v > 0 else 0 for v in rate)
    quota = 0 if grant.bytes_left is None else max(1, math.ceil(grant.bytes_left / 1024))
    values = [min(MAX_FIELD, v) for v in (minutes, up_rate, down_rate, quota, quota)]
    entry = " ".join([mac.lower(), *map(str, values)])
    if not ENTRY_RE.fullmatch(entry):
        raise ValueError(f"not an authmon entry: {entry!r}")
    return entry


@dataclass(frozen=True)
class ClientList:
    """What the gateway's ``ndsctl json`` listed, as its agent reported it."""
    authenticated: frozenset[str]
    preauthenticated: frozenset[str]


def client_report(words: list[str], nonce: str, faskey: str) -> ClientList | None:
    """The agent's ``clients`` words (after ``clients``: nonce, sig, ``auth`` MACs…, ``pre`` MACs…)
    as a :class:`ClientList`, or None unless every word is what the agent sends, the nonce is the
    one asked with and the signature is the faskey's."""
    if len(words) < 4 or len(words) > MAX_LISTED + 4 or words[2] != "auth" or words.count("pre") != 1:
        return None
    given, sig, body = words[0], words[1], words[2:]
    if not (NONCE_RE.fullmatch(given) and SIG_RE.fullmatch(sig) and nonce and secrets.compare_digest(given, nonce)):
        return None
    split = body.index("pre")
    auth, pre = body[1:split], body[split + 1:]
    if not all(MAC_RE.fullmatch(w) for w in auth + pre):
        return None
    expected = hashlib.sha256(" ".join([given, *body, faskey]).encode()).hexdigest()
    if not secrets.compare_digest(sig, expected):
        return None
    return ClientList(frozenset(auth), frozenset(pre) - frozenset(auth))


class Gateway:
    """One openNDS router: its pending authorisations (for authmon) and deauths (for the agent).
    Also the router's :class:`hotspotd.disconnects.Cutter`."""

    def __init__(self, name: str, faskey: str, level: int, site: str, timeout: float = 10.0):
        self.name, self.faskey, self.level, self.site, self.timeout = name, faskey, level, site, timeout
        self.hash = gatewayhash(name)
        self._lock = threading.Condition()
        self._auths: dict[str, tuple[str, float]] = {}      # mac → (entry, monotonic expiry)
        self._deauths: dict[str, float] = {}                # mac → monotonic time queued
        self._deauthed: dict[str, float] = {}               # mac → monotonic time the agent confirmed
        self._nonce: str | None = None                      # the client list asked for, not yet given
        self._listed: ClientList | None = None              # the answer to it

    # --- authorisations (authmon) -------------------------------------------------------
    def authorise(self, mac: str, grant: access.Grant) -> None:
        """Queue ``mac`` for authmon's next poll with what ``grant`` has left."""
        entry = auth_entry(mac, grant)
        with self._lock:
            self._deauths.pop(entry.split(" ", 1)[0], None)
            self._auths[entry.split(" ", 1)[0]] = (entry, time.monotonic() + ENTRY_TTL_SECONDS)

    def pending(self) -> list[str]:
        """The MACs waiting for authmon (for tests and the health page)."""
        with self._lock:
            return list(self._auths)

    def authlist(self) -> str:
        """authmon's ``view``: ``*`` and the pending entries, percent-encoded; each entry checked
        against :data:`ENTRY_RE` once more, since authmon ``eval``s it as root."""
        now, out, size = time.monotonic(), ["*"], 1
        with self._lock:
            for mac, (entry, expires) in list(self._auths.items()):
                if expires < now:
                    del self._auths[mac]
                    continue
                if not ENTRY_RE.fullmatch(entry):
                    log.error("opennds %s: refusing to send a malformed entry", self.name)
                    del self._auths[mac]
                    continue
                encoded = entry.replace(" ", "%20")
                if size + 1 + len(encoded) > AUTHLIST_BYTES:
                    break
                out.append(encoded)
                size += 1 + len(encoded)
        return " ".join(out)

    def acknowledge(self, words: Iterable[str]) -> None:
        """authmon's ack list: those MACs are authenticated at the gateway."""
        with self._lock:
            for word in words:
                if self._auths.pop(word, None) is not None:
                    log.info("opennds %s: %s authenticated by authmon", self.name, word)

    def clear(self) -> None:
        """authmon's ``clear`` at its start: nothing is dropped (entries carry their own expiry),
        since a payment made while the gateway restarted must still reach it."""

    # --- deauths (the agent) ------------------------------------------------------------
    def deauth_list(self) -> str:
        """The agent's poll: ``deauth mac …`` (MACs only); else ``list <nonce>`` when the read-back
        waits for the client list; else ``none``."""
        with self._lock:
            macs = [m for m in self._deauths if MAC_RE.fullmatch(m)][:40]
            nonce = self._nonce
        if macs:
            return "deauth " + " ".join(macs)
        return f"list {nonce}" if nonce else "none"

    # --- the client list (the agent, for the read-back) ----------------------------------
    def clients(self) -> ClientList:
        """What the gateway lists now: asked at the agent's next poll, waited for up to ``timeout``
        (the scheduler's thread); :class:`RouterUnavailable` when no valid list comes."""
        deadline = time.monotonic() + self.timeout
        with self._lock:
            self._nonce, self._listed = secrets.token_hex(8), None
            try:
                while self._listed is None:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        raise RouterUnavailable(f"openNDS {self.name}: its agent sent no client list in "
                                                f"{self.timeout:g} s")
                    self._lock.wait(left)
                return self._listed
            finally:
                self._nonce = None

    def listed(self, words: list[str]) -> bool:
        """The agent's ``clients`` report (the words after ``clients``); False when refused."""
        with self._lock:
            report = client_report(words, self._nonce or "", self.faskey)
            if report is None:
                log.warning("opennds %s: refused a client list (%d words): not the agent's answer to "
                            "the question asked", self.name, len(words))
                return False
            self._listed, self._nonce = report, None
            self._lock.notify_all()
        return True

    def deauthed(self, words: Iterable[str]) -> None:
        """The agent ran ``ndsctl deauth`` for these MACs."""
        with self._lock:
            for word in words:
                if self._deauths.pop(word, None) is not None:
                    self._deauthed[word] = time.monotonic()
            self._lock.notify_all()

    def cut(self, target) -> bool:
        """Queue ``target.mac`` for the agent and wait up to ``timeout`` for its answer (the
        :class:`hotspotd.disconnects.Cutter` contract); :class:`RouterUnavailable` when it does
        not come (the agent polls every few seconds, so the gateway or agent is down)."""
        mac = target.mac.lower()
        if not MAC_RE.fullmatch(mac):
            return True
        deadline = time.monotonic() + self.timeout
        with self._lock:
            self._auths.pop(mac, None)
            self._deauthed.pop(mac, None)
            self._deauths.setdefault(mac, time.monotonic())
            while mac not in self._deauthed:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise RouterUnavailable(f"openNDS {self.name}: its deauth agent did not answer in "
                                            f"{self.timeout:g} s")
                self._lock.wait(left)
            del self._deauthed[mac]
        return True

    def close(self) -> None:
        pass

    # --- level 1 ------------------------------------------------------------------------
    def auth_url(self, visit: Visit, redirect_to: str) -> str:
        """Where the browser authorises itself at level 1 (``tok`` = rhid)."""
        return (f"http://{visit.gatewayaddress}/{visit.authdir}/?tok={rhid(visit.hid, self.faskey)}"
                f"&redir={quote(redirect_to, safe='')}")


class Gateways:
    """Every openNDS router of the install, by name and by gatewayhash; where a device was last
    seen, so an authorisation goes to the gateway it is behind."""

    def __init__(self, gateways: Iterable[Gateway]):
        self.by_name = {g.name: g for g in gateways}
        self.by_hash = {g.hash: g for g in self.by_name.values()}
        self._seen: dict[str, str] = {}
        self._lock = threading.Lock()

    def __bool__(self) -> bool:
        return bool(self.by_name)

    def seen(self, mac: str, gateway: str) -> None:
        with self._lock:
            self._seen[mac.lower()] = gateway

    def admit(self, mac: str | None, site: str) -> bool:
        """Let ``mac`` online at its openNDS gateway when it has time at ``site``: the gateway it
        was last seen behind, else every openNDS gateway of the venue. True when queued."""
        if not self.by_name or not mac:
            return False
        mac = mac.lower()
        grant = access.authorize(mac, site=site)
        if grant is None:
            return False
        with self._lock:
            seen = self.by_name.get(self._seen.get(mac, ""))
        targets = [seen] if seen is not None and seen.site == site else [
            g for g in self.by_name.values() if g.site == site]
        for gateway in targets:
            gateway.authorise(mac, grant)
        return bool(targets)

    def admit_payment(self, payment) -> None:
        """The payment service's ``on_success``: the paying device, at its venue."""
        if self.by_name and payment.mac:
            self.admit(payment.mac, payment.site)

    def answer(self, form) -> str | None:
        """The answer to a POST from the gateway (authmon or the agent; ``form``: its fields), or
        None when it is from no gateway we know."""
        gateway = self.by_hash.get(str(form.get("gatewayhash", "")))
        if gateway is None or gateway.level != 3:
            return None
        try:
            payload = base64.b64decode(str(form.get("payload", "")), validate=True).decode("ascii")
        except (ValueError, binascii.Error):
            payload = ""
        action = form.get("auth_get")
        if action == "clear":
            gateway.clear()
            return "clear"
        if action == "view":
            if payload.startswith("*"):
                gateway.acknowledge(payload.split()[1:])
                return "ack"
            return gateway.authlist()
        if action == "custom":
            words = payload.split()
            if words[:1] == ["deauth_poll"]:
                return gateway.deauth_list()
            if words[:1] == ["deauth_done"]:
                gateway.deauthed(words[1:])
                return "ok"
            if words[:1] == ["clients"]:
                return "ok" if gateway.listed(words[1:]) else "refused"
        if action == "deauthed":
            log.info("opennds %s: deauthed notice: %s", gateway.name, payload[:200])
            return "ok"
        return "unknown"
