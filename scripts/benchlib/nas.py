"""A venue router's RADIUS packets, as a MikroTik hotspot sends them, built on the wire with the
project's own codec (:mod:`radius.wire`: attribute encoding, HMAC-MD5) so a load generator can
send hundreds a second from one Python thread, and time each answer itself.

- :meth:`Nas.access_request`: MAC authentication (``mac-as-username``, empty password,
  Message-Authenticator), as :func:`benchlib.radius_load.auth_request` words it for radclient.
- :meth:`Nas.accounting`: Start, Interim-Update or Stop with the session's totals and the
  ``Class`` the Access-Accept gave (RFC 2865 §5.25: the router echoes it in accounting).
- :meth:`Nas.answer`: a reply checked against its request (identifier and Response
  Authenticator): the code, and the ``Class`` of an Access-Accept.
"""
from __future__ import annotations

import hashlib
import os
import socket
import struct
import time

from radius import wire

from .common import radius_dictionary

ACCT_STATUS = {"start": 1, "stop": 2, "interim": 3}
_HEADER = struct.Struct("!BBH")
_ZERO16 = bytes(16)


class Nas:
    """Packets of one router (``secret``); not thread-safe only in that callers pick identifiers."""

    def __init__(self, secret: str, nas_ip: str = "127.0.0.1", nas_id: str = "venue"):
        self.secret = secret.encode()
        self.encoder = wire.Encoder(radius_dictionary())
        enc = self.encoder.encode
        self._common = (enc("NAS-IP-Address", nas_ip) + enc("NAS-Identifier", nas_id)
                        + enc("NAS-Port", 2149580801) + enc("NAS-Port-Type", 19)          # Wireless-802.11
                        + enc("NAS-Port-Id", "bridge-hotspot") + enc("Service-Type", 1)    # Login-User
                        + enc("Called-Station-Id", "hotspot1"))

    def access_request(self, ident: int, mac: str, ip: str) -> tuple[bytes, bytes]:
        """(datagram, request authenticator) of a MAC-authentication Access-Request."""
        authenticator = os.urandom(16)
        enc = self.encoder.encode
        # User-Password "" is one block of zeros XOR MD5(secret + authenticator) (RFC 2865 §5.2)
        password = hashlib.md5(self.secret + authenticator).digest()
        attrs = (enc("User-Name", mac) + enc("User-Password", password) + self._common
                 + enc("Calling-Station-Id", mac) + enc("Framed-IP-Address", ip) + enc("Mikrotik-Host-IP", ip)
                 + bytes((wire.MESSAGE_AUTHENTICATOR, 18)) + _ZERO16)
        header = _HEADER.pack(wire.ACCESS_REQUEST, ident, 20 + len(attrs))
        signature = wire.hmac_md5(self.secret, header + authenticator + attrs)
        attrs = attrs[:-16] + signature
        return header + authenticator + attrs, authenticator

    def accounting(self, ident: int, status: str, mac: str, ip: str, session_id: str, seconds: int,
                   octets: int, session_class: bytes | None) -> tuple[bytes, bytes]:
        """(datagram, request authenticator) of an Accounting-Request with the session's totals."""
        enc = self.encoder.encode
        attrs = (enc("Acct-Status-Type", ACCT_STATUS[status]) + enc("User-Name", mac) + self._common
                 + enc("Calling-Station-Id", mac) + enc("Framed-IP-Address", ip) + enc("Acct-Session-Id", session_id)
                 + enc("Acct-Authentic", 1) + enc("Acct-Delay-Time", 0))
        if session_class:
            attrs += enc("Class", session_class)
        if status != "start":
            attrs += (enc("Acct-Session-Time", seconds) + enc("Acct-Input-Octets", (octets // 4) & 0xFFFFFFFF)
                      + enc("Acct-Output-Octets", octets & 0xFFFFFFFF) + enc("Acct-Input-Gigawords", octets // 4 >> 32)
                      + enc("Acct-Output-Gigawords", octets >> 32) + enc("Acct-Input-Packets", octets // 1400 & 0xFFFFFFFF)
                      + enc("Acct-Output-Packets", octets // 700 & 0xFFFFFFFF))
        if status == "stop":
            attrs += enc("Acct-Terminate-Cause", 2)      # Lost-Carrier: the phone walked off or slept
        header = _HEADER.pack(wire.ACCOUNTING_REQUEST, ident, 20 + len(attrs))
        authenticator = hashlib.md5(header + _ZERO16 + attrs + self.secret).digest()
        return header + authenticator + attrs, authenticator

    def answer(self, data: bytes, authenticator: bytes) -> tuple[int, bytes | None] | None:
        """(code, Class or None) of a reply to the request with ``authenticator``; None when the
        reply is malformed or its Response Authenticator is wrong."""
        if len(data) < 20:
            return None
        expected = hashlib.md5(data[:4] + authenticator + data[20:] + self.secret).digest()
        if expected != data[4:20]:
            return None
        try:
            reply = wire.parse(data)
        except wire.WireError:
            return None
        return reply.code, reply.first(25)


def ask(nas: Nas, sock: socket.socket, address: tuple[str, int], build, timeout: float = 3.0):
    """Send one request on a blocking ``sock`` and wait for its answer: (seconds, code, Class) or
    None when nothing came within ``timeout``. ``build(ident)`` makes (datagram, authenticator)."""
    ident = int.from_bytes(os.urandom(1), "big")
    data, authenticator = build(ident)
    started = time.perf_counter()
    deadline = started + timeout
    sock.sendto(data, address)
    while True:
        left = deadline - time.perf_counter()
        if left <= 0:
            return None
        sock.settimeout(left)
        try:
            reply = sock.recv(4096)
        except socket.timeout:
            return None
        if len(reply) >= 20 and reply[1] == ident:
            got = nas.answer(reply, authenticator)
            if got is not None:
                return time.perf_counter() - started, got[0], got[1]
