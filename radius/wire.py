"""RADIUS packets on the wire (RFC 2865, 2866, 2869 and 3579), for the server's hot path.

Every router re-authenticates every device after a power cut, so the server reads requests and
writes replies here, in a few dozen lines, rather than through pyrad's general ``Packet`` (which
decodes and re-encodes every attribute through its dictionary: most of the server's time per
request when measured by ``scripts/bench``). pyrad's dictionary still gives the reply attributes'
numbers and types; pyrad still checks PAP and CHAP passwords (the login path, which is rare).

- :func:`parse` splits a datagram into header and attributes, refusing any length that lies.
- :func:`message_authenticator_ok` and :func:`accounting_authenticator_ok` check a request's
  signature; :func:`reply` builds a signed reply (Message-Authenticator on every Access reply,
  BlastRADIUS, then the Response Authenticator).
"""
from __future__ import annotations

import hashlib
import hmac
import ipaddress
import struct
from dataclasses import dataclass

ACCESS_REQUEST, ACCESS_ACCEPT, ACCESS_REJECT = 1, 2, 3
ACCOUNTING_REQUEST, ACCOUNTING_RESPONSE = 4, 5
MESSAGE_AUTHENTICATOR = 80
VENDOR_SPECIFIC = 26
MAX_PACKET = 4096
_HEADER = struct.Struct("!BBH16s")
_INTEGER = struct.Struct("!I")
_ZERO16 = bytes(16)


class WireError(ValueError):
    """A datagram that is not a well-formed RADIUS packet."""


@dataclass
class Request:
    code: int
    identifier: int
    authenticator: bytes
    raw: bytes
    #: attribute number → values in order of arrival (raw bytes); vendor attributes stay inside 26
    attributes: dict[int, list[bytes]]
    #: offset of the Message-Authenticator's value in ``raw``, or None without one
    ma_offset: int | None = None

    def first(self, code: int) -> bytes | None:
        values = self.attributes.get(code)
        return values[0] if values else None

    def text(self, code: int) -> str | None:
        """A string attribute as text; None when absent, not UTF-8 or holding a NUL (no router
        sends one, and PostgreSQL's text columns cannot hold it)."""
        value = self.first(code)
        if value is None or b"\0" in value:
            return None
        try:
            return value.decode()
        except UnicodeDecodeError:
            return None

    def integer(self, code: int) -> int | None:
        """A 32-bit integer attribute; None when absent. A wrong length is malformed."""
        value = self.first(code)
        if value is None:
            return None
        if len(value) != 4:
            raise WireError(f"attribute {code} should be 4 octets, not {len(value)}")
        return int.from_bytes(value, "big")

    def address(self, code: int) -> str | None:
        value = self.first(code)
        if value is None:
            return None
        if len(value) != 4:
            raise WireError(f"attribute {code} should be an IPv4 address")
        return str(ipaddress.IPv4Address(value))


def parse(data: bytes) -> Request:
    """The packet in ``data``. Trailing octets past the header's length are ignored (RFC 2865 §3);
    a packet shorter than its length, or an attribute running past it, is refused."""
    if len(data) < 20:
        raise WireError("shorter than a RADIUS header")
    code, identifier, length, authenticator = _HEADER.unpack_from(data)
    if length < 20 or length > MAX_PACKET or length > len(data):
        raise WireError(f"header says {length} octets, datagram has {len(data)}")
    raw = bytes(data[:length])
    attributes: dict[int, list[bytes]] = {}
    ma_offset = None
    pos = 20
    while pos < length:
        if pos + 2 > length:
            raise WireError("attribute header cut off")
        kind, size = raw[pos], raw[pos + 1]
        if size < 2 or pos + size > length:
            raise WireError(f"attribute {kind} has a bad length {size}")
        if kind == MESSAGE_AUTHENTICATOR:
            if size != 18 or ma_offset is not None:
                raise WireError("Message-Authenticator must be one 16-octet value")
            ma_offset = pos + 2
        attributes.setdefault(kind, []).append(raw[pos + 2:pos + size])
        pos += size
    return Request(code, identifier, authenticator, raw, attributes, ma_offset)


_MD5 = hashlib.md5()
_PADS: dict[bytes, tuple] = {}


def _md5(data: bytes) -> bytes:
    """MD5 from a copy of a ready object: OpenSSL 3 looks the algorithm up on every new one."""
    h = _MD5.copy()
    h.update(data)
    return h.digest()


def hmac_md5(secret: bytes, data: bytes) -> bytes:
    """HMAC-MD5 (RFC 2104) with the secret's inner and outer pads hashed once per secret:
    ``hmac.digest`` does that work, and an OpenSSL lookup, twice per packet."""
    pads = _PADS.get(secret)
    if pads is None:
        key = _md5(secret) if len(secret) > 64 else secret
        key = key.ljust(64, b"\0")
        inner, outer = _MD5.copy(), _MD5.copy()
        inner.update(bytes(b ^ 0x36 for b in key))
        outer.update(bytes(b ^ 0x5C for b in key))
        pads = _PADS[secret] = (inner, outer)
    inner, outer = pads[0].copy(), pads[1].copy()
    inner.update(data)
    outer.update(inner.digest())
    return outer.digest()


def message_authenticator_ok(req: Request, secret: bytes) -> bool:
    """RFC 3579 §3.2: HMAC-MD5 over the request with the Message-Authenticator's value zeroed."""
    if req.ma_offset is None:
        return False
    given = req.raw[req.ma_offset:req.ma_offset + 16]
    zeroed = req.raw[:req.ma_offset] + _ZERO16 + req.raw[req.ma_offset + 16:]
    return hmac.compare_digest(hmac_md5(secret, zeroed), given)


def accounting_authenticator_ok(req: Request, secret: bytes) -> bool:
    """RFC 2866 §3: MD5(Code+Identifier+Length+16 zero octets+Attributes+secret)."""
    expected = _md5(req.raw[:4] + _ZERO16 + req.raw[20:] + secret)
    return hmac.compare_digest(expected, req.authenticator)


class Encoder:
    """Reply attributes by dictionary name (``Session-Timeout``, ``Mikrotik-Rate-Limit``) → octets.
    Names, numbers, vendors and types come from pyrad's :class:`~pyrad.dictionary.Dictionary`;
    each name's attribute header is worked out once."""

    def __init__(self, dictionary):
        self._dictionary = dictionary
        self._known: dict[str, tuple[int, int | None, str]] = {}

    def _lookup(self, name: str) -> tuple[int, int | None, str]:
        found = self._known.get(name)
        if found is None:
            attr = self._dictionary.attributes[name]
            vendor = self._dictionary.vendors.GetForward(attr.vendor) if attr.vendor else None
            found = self._known[name] = (attr.code, vendor, attr.type)
        return found

    def encode(self, name: str, value) -> bytes:
        code, vendor, kind = self._lookup(name)
        if kind in ("integer", "date"):
            data = _INTEGER.pack(value)
        elif kind == "string":
            data = value.encode() if isinstance(value, str) else bytes(value)
        elif kind == "octets":
            data = bytes(value)
        elif kind == "ipaddr":
            data = ipaddress.IPv4Address(value).packed
        else:
            raise ValueError(f"no encoder for {name} of type {kind}")
        if not data or len(data) > 247:
            raise ValueError(f"{name}: {len(data)} octets do not fit one attribute")
        if vendor is None:
            return bytes((code, len(data) + 2)) + data
        return bytes((VENDOR_SPECIFIC, len(data) + 8)) + _INTEGER.pack(vendor) + bytes((code, len(data) + 2)) + data

    def attributes(self, values: dict) -> bytes:
        return b"".join([self.encode(name, value) for name, value in values.items()])


def reply(req: Request, code: int, attributes: bytes, secret: bytes) -> bytes:
    """A reply to ``req``: for Access replies a Message-Authenticator goes first (RFC 3579 §3.2,
    computed with the request's authenticator in place), then the Response Authenticator
    MD5(Code+Identifier+Length+Request Authenticator+Attributes+secret) (RFC 2865 §3)."""
    if code in (ACCESS_ACCEPT, ACCESS_REJECT, 11):
        attributes = bytes((MESSAGE_AUTHENTICATOR, 18)) + _ZERO16 + attributes
    length = 20 + len(attributes)
    if length > MAX_PACKET:
        raise ValueError("reply longer than 4096 octets")
    header = struct.pack("!BBH", code, req.identifier, length)
    if code in (ACCESS_ACCEPT, ACCESS_REJECT, 11):
        signature = hmac_md5(secret, header + req.authenticator + attributes)
        attributes = attributes[:2] + signature + attributes[18:]
    authenticator = _md5(header + req.authenticator + attributes + secret)
    return header + authenticator + attributes
