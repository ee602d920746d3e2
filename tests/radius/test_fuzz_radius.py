"""RADIUS fuzzing: random, truncated, oversized and mis-built datagrams from a configured NAS do not
stop the server or its honest answers; structurally valid requests with random attribute values
always get an Accept or a Reject, and an Accept only for a device that has time."""
from __future__ import annotations

import hashlib
import hmac
import socket
import struct

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st
from pyrad import packet

from hotspotd.identifiers import InvalidMac, normalize_mac
from radius.server import load_dictionary

from tests.helpers import give_time, wait_for

#: run again on PostgreSQL by scripts/test (-m postgres)
pytestmark = pytest.mark.postgres

SECRET = b"testing123"      # the default [[radius.clients]] entry: 127.0.0.1, the NAS we send from
RADIUS = {"enabled": True, "listen": "127.0.0.1", "auth_port": 0, "acct_port": 0}
PAID = "AA:BB:CC:DD:EE:01"
DICT = load_dictionary()
BARRAGES = 25                # hypothesis examples; each one a barrage of up to 40 datagrams
VALID_REQUESTS = 60
FUZZ = settings(deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                     HealthCheck.too_slow, HealthCheck.data_too_large])


@pytest.fixture
def nas(make_hotspot):
    hs = make_hotspot(radius=RADIUS, scheduler={"enabled": False})
    give_time(PAID)
    return hs


def udp(timeout: float = 0.0) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    sock.settimeout(timeout or None)
    return sock


def access_request(user: str | bytes = PAID, calling: str | bytes | None = PAID, extra=(), *,
                   id: int | None = None, authenticator: bytes | None = None) -> bytes:
    """A signed Access-Request (Message-Authenticator included), as a NAS sends it."""
    req = packet.AuthPacket(code=packet.AccessRequest, secret=SECRET, dict=DICT, message_authenticator=True,
                            id=id, authenticator=authenticator)
    req["User-Name"] = user
    req["User-Password"] = req.PwCrypt("")
    if calling is not None:
        req["Calling-Station-Id"] = calling
    for name, value in extra:
        req.AddAttribute(name, value)
    return req.RequestPacket()


def accounting_request(status: str = "Interim-Update", session: str = "fuzz-1", *, id: int | None = None) -> bytes:
    req = packet.AcctPacket(code=packet.AccountingRequest, secret=SECRET, dict=DICT, id=id)
    req["Acct-Status-Type"] = status
    req["Acct-Session-Id"] = session
    req["Calling-Station-Id"] = PAID
    req["Acct-Input-Octets"] = 1000
    return req.RequestPacket()


def sign(raw: bytes) -> bytes:
    """Sign damaged bytes again as the NAS would have (Message-Authenticator of an Access-Request,
    Request Authenticator of an Accounting-Request): the damage reaches the attribute parser
    instead of stopping at the signature check."""
    data = bytearray(raw)
    if len(data) < 20:
        return raw
    if data[0] == packet.AccountingRequest:
        data[4:20] = hashlib.md5(bytes(data[:4]) + bytes(16) + bytes(data[20:]) + SECRET).digest()
        return bytes(data)
    pos = 20
    while pos + 2 <= len(data):
        code, length = data[pos], data[pos + 1]
        if length < 2:
            break
        if code == 80 and length == 18 and pos + 18 <= len(data):
            data[pos + 2:pos + 18] = bytes(16)
            data[pos + 2:pos + 18] = hmac.new(SECRET, bytes(data), hashlib.md5).digest()
            break
        pos += length
    return bytes(data)


def attribute(code: int, value: bytes, length: int | None = None) -> bytes:
    return struct.pack("!BB", code, len(value) + 2 if length is None else length) + value


# --- malformed datagrams -------------------------------------------------------------------------
# valid requests to damage; each has its own Identifier and authenticator, so that the server's
# duplicate cache (keyed by them) does not answer a damaged copy before the parser sees it
ids, authenticators = st.integers(0, 255), st.binary(min_size=16, max_size=16)
honest = st.one_of(
    st.builds(lambda user, i, a: access_request(user, None, id=i, authenticator=a),
              st.sampled_from([PAID, "aa-bb-cc-dd-ee-02"]), ids, authenticators),
    st.builds(lambda status, session, i: accounting_request(status, session, id=i),
              st.sampled_from(["Start", "Interim-Update", "Stop"]), st.text("0123456789abcdef", min_size=8, max_size=8),
              ids))


@st.composite
def truncated(draw):
    raw = bytearray(draw(honest))
    raw = raw[:draw(st.integers(0, len(raw) - 1))]
    if len(raw) >= 20 and draw(st.booleans()):   # the Length field and the signature made to agree
        raw[2:4] = struct.pack("!H", len(raw))
        return sign(bytes(raw))
    return bytes(raw)


@st.composite
def oversized(draw):
    raw = draw(honest)
    size = draw(st.sampled_from([4097, 8192, 8193, 16384, 65507]) | st.integers(4097, 65507))
    padding = draw(st.sampled_from([b"\0", b"\xff", b"\x1a\xff"]))
    body = raw + padding * ((size - len(raw)) // len(padding) + 1)
    if draw(st.booleans()):   # the Length field claiming it all
        body = body[:2] + struct.pack("!H", min(size, 0xFFFF)) + body[4:]
    return body[:size]


@st.composite
def bogus_attributes(draw):
    """A valid header, then attributes whose lengths lie (0, 1, past the end) or whose values do
    not fit their type (a 3-byte integer, a 5-byte address, broken Vendor-Specific)."""
    raw = bytearray(draw(honest))
    attrs = draw(st.lists(st.one_of(
        st.builds(attribute, st.integers(0, 255), st.binary(max_size=20), st.integers(0, 255)),
        st.builds(attribute, st.sampled_from([5, 6, 27, 28, 40, 41, 42, 43, 46, 52, 53, 61, 85]),
                  st.binary(max_size=9).filter(lambda b: len(b) != 4)),          # integers
        st.builds(attribute, st.sampled_from([4, 8, 14]), st.binary(max_size=9).filter(lambda b: len(b) != 4)),
        st.builds(attribute, st.just(26), st.binary(max_size=30)),             # Vendor-Specific
        st.builds(attribute, st.just(26), st.builds(lambda v, sub: struct.pack("!I", v) + sub,
                                                    st.sampled_from([14988, 14122, 14559]), st.binary(max_size=12))),
        st.builds(attribute, st.just(1), st.binary(min_size=1, max_size=40)),   # User-Name, any bytes
        st.builds(attribute, st.just(80), st.binary(max_size=20)),             # Message-Authenticator
    ), min_size=1, max_size=6))
    position = draw(st.sampled_from(["end", "start"]))
    tail = b"".join(attrs)
    raw = raw[:20] + tail + raw[20:] if position == "start" else raw + tail
    raw[2:4] = struct.pack("!H", min(len(raw), 0xFFFF))
    return sign(bytes(raw))


@st.composite
def wrong_code(draw):
    raw = bytearray(draw(honest))
    raw[0] = draw(st.integers(0, 255).filter(lambda c: c not in (packet.AccessRequest, packet.AccountingRequest)))
    return bytes(raw)


@st.composite
def lying_length(draw):
    raw = bytearray(draw(honest))
    raw[2:4] = struct.pack("!H", draw(st.sampled_from([0, 1, 19, 20, len(raw) + 1, 4096, 8193, 0xFFFF])))
    return bytes(raw)


malformed = st.one_of(st.binary(max_size=64), st.binary(min_size=20, max_size=300), truncated(), oversized(),
                      bogus_attributes(), wrong_code(), lying_length())
#: every datagram ends in exactly one of these counters (plus the answered ones)
OUTCOMES = ("dropped_unknown_client", "auth_malformed", "acct_malformed", "auth_dropped", "acct_dropped",
            "auth_duplicate", "acct_duplicate", "auth_errors", "acct_errors", "access_accept", "access_reject",
            "acct_start", "acct_stop", "acct_interim", "acct_other")


def handled(stats) -> int:
    return sum(stats[k] for k in OUTCOMES)


def test_barrage_of_malformed_packets(nas):
    server = nas.radius
    sent = {"datagrams": 0, "honest": 0}
    with udp() as barrage_sock, udp(timeout=10) as honest_sock:

        @settings(FUZZ, max_examples=BARRAGES)
        @given(st.lists(st.tuples(malformed, st.booleans()), min_size=1, max_size=40))
        def barrage(datagrams):
            for i, (data, to_auth) in enumerate(datagrams):
                barrage_sock.sendto(data, server.auth_address if to_auth else server.acct_address)
                sent["datagrams"] += 1
                if i % 8 == 0:   # honest requests in the thick of it
                    honest_sock.sendto(access_request(), server.auth_address)
                    sent["honest"] += 1

        barrage()
        # a generous timeout per answer, no timing assertion: all honest requests are answered
        answers = [honest_sock.recv(4096)[0] for _ in range(sent["honest"])]
        assert answers == [packet.AccessAccept] * sent["honest"]
        wait_for(lambda: handled(server.stats) >= sent["datagrams"] + sent["honest"])
        assert server._thread.is_alive()
        # every bad datagram was recognised as bad, not an unexpected error (a traceback in the log)
        assert server.stats["auth_errors"] == server.stats["acct_errors"] == 0, dict(server.stats)
        assert server.stats["auth_malformed"] + server.stats["acct_malformed"] > 0
        assert server.stats["auth_dropped"] + server.stats["acct_dropped"] > 0
        assert server.stats["dropped_unknown_client"] == 0    # we were the NAS: the parser saw them all
        # and afterwards, an honest request is still answered correctly
        honest_sock.sendto(access_request("aa-bb-cc-dd-ee-01", "AA-BB-CC-DD-EE-01"), server.auth_address)
        reply = packet.AuthPacket(packet=honest_sock.recv(4096), secret=SECRET, dict=DICT)
        assert reply.code == packet.AccessAccept and reply["Session-Timeout"][0] > 0


# --- valid packets, random values -----------------------------------------------------------------
def _value_strategy(attr):
    if attr.type == "integer":
        return st.integers(0, 2**32 - 1)
    if attr.type == "date":
        return st.integers(0, 2**32 - 1)
    if attr.type == "ipaddr":
        return st.ip_addresses(v=4).map(str)
    if attr.type == "string":
        return st.text(min_size=1, max_size=60).filter(lambda t: len(t.encode()) <= 253) | st.binary(min_size=1, max_size=60)
    return st.binary(min_size=1, max_size=60)


SKIP = {"User-Name", "User-Password", "Calling-Station-Id", "Message-Authenticator", "CHAP-Password"}
random_attributes = st.lists(st.sampled_from(sorted(n for n in DICT.attributes if n not in SKIP)).flatmap(
    lambda name: st.tuples(st.just(name), _value_strategy(DICT.attributes[name]))), max_size=8)
mac_notations = st.sampled_from([PAID, "aa-bb-cc-dd-ee-01", "AABBCCDDEE01", "aabb.ccdd.ee01", "AA:BB:CC:DD:EE:02",
                                 "02-00-00-00-00-09", PAID + "@venue"])
names = mac_notations | st.text(min_size=1, max_size=40) | st.binary(min_size=1, max_size=40)


def _mac(value, realm: bool = False) -> str | None:
    """The MAC the server reads in an attribute (User-Name may carry a realm), or None."""
    if isinstance(value, bytes):
        try:
            value = value.decode()
        except UnicodeDecodeError:
            return None
    try:
        return normalize_mac(value.split("@")[0] if realm else value)
    except InvalidMac:
        return None


def test_valid_requests_with_random_values_get_accept_or_reject(nas):
    with udp(timeout=2) as sock:

        @settings(FUZZ, max_examples=VALID_REQUESTS)
        @given(user=names, calling=st.none() | names, extra=random_attributes)
        def ask(user, calling, extra):
            sock.sendto(access_request(user, calling, extra), nas.radius.auth_address)
            try:
                data = sock.recv(4096)
            except TimeoutError:
                raise AssertionError(f"no answer to User-Name={user!r} Calling-Station-Id={calling!r} "
                                     f"{extra!r}; stats {dict(nas.radius.stats)}") from None
            reply = packet.AuthPacket(packet=data, secret=SECRET, dict=DICT)
            assert reply.code in (packet.AccessAccept, packet.AccessReject)
            paid = _mac(user, realm=True) == PAID and (calling is None or _mac(calling) in (None, PAID))
            assert (reply.code == packet.AccessAccept) == paid, (user, calling)

        ask()
    assert nas.radius._thread.is_alive()


def test_user_name_that_is_not_utf8_gets_a_reject(nas):
    """Was silence (counted as malformed): a signed request from a known NAS deserves an answer."""
    with udp(timeout=5) as sock:
        sock.sendto(access_request(b"J\rZ\x90,\xfe[N", "AA:BB:CC:DD:EE:01"), nas.radius.auth_address)
        assert sock.recv(4096)[0] == packet.AccessReject
