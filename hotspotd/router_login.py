"""Logging a paid device in at the router, from the browser: the form the success page submits.

The router's login page sent the device to the splash page with its variables (kept with the
payment as ``login_context``). After payment the browser is sent back to the router with the
entitlement's username and password, encoded the way that router expects:

- MikroTik: a POST to ``link-login-only``; with ``chap-id``/``chap-challenge`` (http-chap) the
  password field carries hex(MD5(chap-id + password + chap-challenge)), so the plain password
  never reaches the page. The router then asks RADIUS with CHAP, which :mod:`radius.server` checks.
- CoovaChilli: a GET to ``http://uamip:uamport/logon`` with the password XORed with
  MD5(challenge + uamsecret) (the UAM "PAP" encoding).
"""
from __future__ import annotations

import hashlib
import ipaddress
import re
import threading
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

_OCTAL = re.compile(r"\\([0-7]{3})")
#: the variables a router's login page hands the splash page (MikroTik and CoovaChilli names)
ROUTER_VARS = ("mac", "ip", "link-login-only", "link-orig", "chap-id", "chap-challenge",
               "uamip", "uamport", "challenge", "userurl", "nasid", "error", "site",
               # CoovaChilli's answer to a logon, on its redirect back: res=success|already|failed|logoff|notyet,
               # reply (the Reject's Reply-Message), timeleft (seconds), uid
               "res", "reply", "timeleft", "uid")


@dataclass(frozen=True)
class LoginForm:
    action: str
    method: str                               # GET | POST
    fields: dict[str, str] = field(default_factory=dict)
    router: str = ""                          # mikrotik | coova

    def as_json(self) -> dict:
        return {"action": self.action, "method": self.method, "fields": dict(self.fields), "router": self.router}


def unescape_octal(value: str) -> bytes:
    """MikroTik's ``$(chap-id)``/``$(chap-challenge)``: octal escapes (``\\371``) and plain characters."""
    out = bytearray()
    pos = 0
    for m in _OCTAL.finditer(value):
        out += value[pos:m.start()].encode("latin-1")
        out.append(int(m.group(1), 8) & 0xFF)
        pos = m.end()
    out += value[pos:].encode("latin-1")
    return bytes(out)


def mikrotik_chap_password(chap_id: str, password: str, chap_challenge: str) -> str:
    """What MikroTik's own login page computes: hex(MD5(chap-id + password + chap-challenge))."""
    return hashlib.md5(unescape_octal(chap_id) + password.encode() + unescape_octal(chap_challenge)).hexdigest()


def coova_password(password: str, challenge_hex: str, uamsecret: str) -> str:
    """CoovaChilli UAM password: hex(password zero-padded to 16 bytes XOR MD5(challenge + uamsecret)).

    Without a uamsecret the challenge itself is the key. Passwords longer than 16 bytes cannot
    be encoded this way (ours are 10)."""
    challenge = bytes.fromhex(challenge_hex)
    key = hashlib.md5(challenge + uamsecret.encode()).digest() if uamsecret else challenge
    raw = password.encode()
    if len(raw) > len(key):
        raise ValueError("password longer than 16 bytes")
    padded = raw.ljust(len(key), b"\0")
    return bytes(a ^ b for a, b in zip(padded, key)).hex()


def _local_url(url: str) -> bool:
    """Only send credentials to the router: an http(s) URL whose host is a private address or a
    name (a hotspot's dns-name). A public IP in a crafted link gets nothing."""
    try:
        parts = urlsplit(url)
        hostname = parts.hostname
    except ValueError:   # "http://[10.0.0.1/": an unclosed bracket
        return False
    if parts.scheme not in ("http", "https") or not hostname:
        return False
    try:
        ip = ipaddress.ip_address(hostname)
    except ValueError:
        return True
    return ip.is_private or ip.is_link_local


def router_context(values: Any) -> dict[str, str]:
    """The router's variables among ``values`` (a form or a JSON object): known names with
    non-empty string values, each cut to 512 characters; anything else is dropped."""
    if not isinstance(values, Mapping):
        return {}
    return {k: values[k][:512] for k in ROUTER_VARS if isinstance(values.get(k), str) and values[k]}


def login_form(ctx: dict | None, username: str, password: str, uamsecret: str = "") -> LoginForm | None:
    """The router login for the context the splash page received, or None when it had none
    (or only values no router sends)."""
    ctx = router_context(ctx)
    if ctx.get("link-login-only") and _local_url(ctx["link-login-only"]):
        fields = {"username": username, "password": password, "popup": "true"}
        if ctx.get("chap-id") and ctx.get("chap-challenge"):
            try:
                fields["password"] = mikrotik_chap_password(ctx["chap-id"], password, ctx["chap-challenge"])
            except UnicodeEncodeError:   # beyond latin-1: not MikroTik's octal escapes
                return None
        if ctx.get("link-orig"):
            fields["dst"] = ctx["link-orig"]
        return LoginForm(ctx["link-login-only"], "POST", fields, "mikrotik")
    if ctx.get("uamip") and ctx.get("challenge"):
        try:
            ip = ipaddress.ip_address(ctx["uamip"])
            port = int(ctx.get("uamport") or 3990)
            encoded = coova_password(password, ctx["challenge"], uamsecret)
        except ValueError:
            return None
        if not (ip.is_private or ip.is_link_local) or not 0 < port < 65536:
            return None
        host = f"[{ip}]" if ip.version == 6 else str(ip)
        fields = {"username": username, "password": encoded}
        if ctx.get("userurl"):
            fields["userurl"] = ctx["userurl"]
        return LoginForm(f"http://{host}:{port}/logon", "GET", fields, "coova")
    return None


def refusal(ctx: Mapping[str, Any] | None) -> str | None:
    """The router's words when it sent the browser back because it refused a login ("" when it
    gave none), else None: MikroTik fills ``$(error)`` on its login page (e.g. "RADIUS server is
    not responding"), CoovaChilli redirects with ``res=failed`` and the Reject's ``reply``."""
    ctx = ctx or {}
    text = (ctx.get("error") or "").strip()
    if ctx.get("res") == "failed":
        return ((ctx.get("reply") or "").strip() or text)[:200]
    return text[:200] or None


class RecentlyTried:
    """Which devices were sent to the router's login in the last ``window`` seconds: the splash
    page submits a login by itself once, never again for the same device within the window, so a
    router that keeps refusing cannot make the page loop (it was counted: 175 page loads in 8 s).
    Bounded to ``size`` devices, the oldest forgotten first. Thread-safe."""

    def __init__(self, window: float = 120.0, size: int = 4096):
        self.window, self.size = window, size
        self._seen: OrderedDict[str, float] = OrderedDict()
        self._lock = threading.Lock()

    def first(self, key: str, now: float) -> bool:
        """True (and remembered) when ``key`` was not tried within the window."""
        with self._lock:
            at = self._seen.get(key)
            if at is not None and now - at < self.window:
                return False
            self._seen[key] = now
            self._seen.move_to_end(key)
            while len(self._seen) > self.size:
                self._seen.popitem(last=False)
            return True
