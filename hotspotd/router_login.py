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
