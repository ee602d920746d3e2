"""RFC 5176 Disconnect over real sockets: our sender against the NAS simulator, FreeRADIUS
radclient against the simulator, and our sender against a fake NAS that forges its replies."""
from __future__ import annotations

import hashlib
import os
import shutil
import socket
import struct
import subprocess
import threading
import time

import pytest
from pyrad import packet
from pyrad.client import Client

from hotspotd.routers import RouterUnavailable
from radius.disconnect import DisconnectResult, send_disconnect
from radius.testing.nas import NasSimulator
from radius.server import load_dictionary

SECRET = "testing123"
MAC = "AA-BB-CC-DD-EE-FF"
DICT = load_dictionary()


@pytest.fixture
def nas():
    with NasSimulator(secret=SECRET) as sim:
        yield sim


def disconnect(sim, secret=SECRET, **kw):
    host, port = sim.address
    kw.setdefault("user_name", MAC)
    kw.setdefault("timeout", 1.0)
    kw.setdefault("retries", 1)
    return send_disconnect(host, port, secret, **kw)


def pyrad_send(sim, code=packet.DisconnectRequest, ma=True, **attributes):
    """A request built by hand with pyrad's client, for what send_disconnect will not send."""
    host, port = sim.address
    c = Client(server=host, coaport=port, secret=SECRET.encode(), dict=DICT, retries=1, timeout=1)
    req = c.CreateCoAPacket(code=code, message_authenticator=ma)
    for name, value in attributes.items():
        req[name.replace("_", "-")] = value
    try:
        return c.SendPacket(req)
    finally:
        c._CloseSocket()


def udp_exchange(address, datagram, timeout=1.0) -> bytes | None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout)
        sock.sendto(datagram, address)
        try:
            return sock.recv(4096)
        except TimeoutError:
            return None


def sign_request(code: int, ident: int, attrs: bytes, secret: bytes = SECRET.encode()) -> bytes:
    """An RFC 5176 request from raw attributes: Request Authenticator as for accounting."""
    header = struct.pack("!BBH", code, ident, 20 + len(attrs))
    return header + hashlib.md5(header + 16 * b"\0" + attrs + secret).digest() + attrs


# --- send_disconnect against the simulator ----------------------------------------------

def test_ack_ends_the_session_and_a_second_try_is_a_bare_nak(nas):
    nas.add_session(MAC, mac="aa:bb:cc:dd:ee:ff", acct_session_id="81000001", ip="10.5.0.7")
    nas.add_session("AA-BB-CC-00-00-01", acct_session_id="81000002")
    result = disconnect(nas, calling_station_id="AA:BB:CC:DD:EE:FF", acct_session_id="81000001",
                        framed_ip="10.5.0.7", nas_identifier="venue1")
    assert result == DisconnectResult(acked=True, code=packet.DisconnectACK, error_cause=None) and result.gone
    assert nas.online() == ["AA-BB-CC-00-00-01"]
    seen = nas.requests[-1]
    assert seen.valid and seen.code == packet.DisconnectRequest and seen.reply_code == packet.DisconnectACK
    assert seen.attributes["User-Name"] == [MAC] and seen.attributes["Acct-Session-Id"] == ["81000001"]
    assert seen.attributes["Framed-IP-Address"] == ["10.5.0.7"] and seen.attributes["NAS-Identifier"] == ["venue1"]
    assert len(seen.attributes["Message-Authenticator"][0]) == 16
    assert seen.reply_attributes == ()               # chilli's ACK: no Message-Authenticator

    # chilli: a NAK with no attributes at all (no Error-Cause 503) for a session it does not have
    again = disconnect(nas)
    assert (again.acked, again.code, again.error_cause, again.bare_nak) == (False, packet.DisconnectNAK, None, True)
    assert not again.gone and nas.requests[-1].reply_attributes == ()
    assert nas.stats["ack"] == 1 and nas.stats["nak"] == 1


def test_only_user_name_and_acct_session_id_are_matched(nas):
    # chilli's cb_radius_coa_ind compares User-Name and (when sent) Acct-Session-Id, nothing else
    nas.add_session(MAC, mac=MAC, acct_session_id="80000001aa", ip="10.5.0.7")
    nas.add_session(MAC, mac=MAC, acct_session_id="s2", ip="10.5.0.8")
    assert not disconnect(nas, acct_session_id="s9").acked
    assert not disconnect(nas, user_name=MAC.lower()).acked        # User-Name: exact
    assert len(nas.sessions()) == 2
    assert disconnect(nas, acct_session_id="80000001AA", framed_ip="10.9.9.9").acked   # id: any case
    assert [s.acct_session_id for s in nas.sessions()] == ["s2"]
    assert disconnect(nas).acked          # User-Name alone ends what is left
    assert nas.online() == []


def test_unknown_user_is_a_bare_nak(nas):
    nas.add_session("someone-else")
    result = disconnect(nas, user_name="AA-BB-CC-00-00-99")
    assert not result.acked and result.code == packet.DisconnectNAK and result.error_cause is None
    assert nas.online() == ["someone-else"]


def test_missing_user_name_gets_no_answer(nas):
    nas.add_session(MAC, acct_session_id="s1")
    with pytest.raises(Exception):
        pyrad_send(nas, Acct_Session_Id="s1")
    assert nas.stats["dropped_no_user_name"] >= 1 and nas.online() == [MAC]
    with pytest.raises(ValueError):
        disconnect(nas, user_name="")


def test_nas_identifier_is_not_compared():
    with NasSimulator(secret=SECRET, nas_identifier="nas01") as sim:
        sim.add_session(MAC)
        assert disconnect(sim, nas_identifier="venue7").acked
        assert sim.online() == []


def test_wrong_secret_is_dropped_silently_and_counted(nas):
    nas.add_session(MAC)
    with pytest.raises(RouterUnavailable, match=rf"127\.0\.0\.1:{nas.address[1]}"):
        disconnect(nas, secret="not-the-secret", timeout=0.3, retries=1)
    assert nas.stats["dropped_authenticator"] == 2
    assert [r.valid for r in nas.requests] == [False, False] and nas.requests[0].reply_code is None
    assert nas.online() == [MAC]


def test_source_not_allowed_is_dropped():
    with NasSimulator(secret=SECRET, allowed_sources=("10.20.30.40", "192.168.88.0/24")) as sim:
        sim.add_session(MAC)
        with pytest.raises(RouterUnavailable):
            disconnect(sim, timeout=0.2, retries=0)
        assert sim.stats["dropped_source"] == 1 and sim.online() == [MAC] and sim.requests == []


def test_unreachable_nas_fails_within_timeout_times_tries(nas):
    nas.add_session(MAC)
    nas.set_unreachable()
    started = time.monotonic()
    with pytest.raises(RouterUnavailable) as caught:
        disconnect(nas, timeout=0.3, retries=2)
    elapsed = time.monotonic() - started
    assert 0.85 <= elapsed <= 0.3 * 3 + 0.5
    assert nas.stats["dropped_unreachable"] == 3           # sent retries + 1 times
    assert f"127.0.0.1:{nas.address[1]}" in str(caught.value) and "3 Disconnect-Request" in str(caught.value)
    nas.set_unreachable(False)
    assert disconnect(nas).acked


def test_socket_errors_and_closed_ports_are_unreachable():
    with pytest.raises(RouterUnavailable, match="127.0.0.1:0"):
        send_disconnect("127.0.0.1", 0, SECRET, user_name=MAC, timeout=0.2, retries=0)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    with pytest.raises(RouterUnavailable):
        send_disconnect("127.0.0.1", closed_port, SECRET, user_name=MAC, timeout=0.2, retries=1)


def test_no_socket_is_left_open(nas):
    def open_fds():
        return len(os.listdir("/proc/self/fd"))

    for i in range(3):
        nas.add_session(f"user{i}")
    before = open_fds()
    for i in range(3):
        assert disconnect(nas, user_name=f"user{i}").acked
        assert disconnect(nas, user_name=f"user{i}").bare_nak
        with pytest.raises(RouterUnavailable):
            disconnect(nas, secret="wrong", timeout=0.05, retries=0)
    assert open_fds() == before


def test_concurrent_disconnects_each_get_their_own_answer(nas):
    users = [f"AA-BB-CC-00-00-{i:02X}" for i in range(16)]
    for user in users:
        nas.add_session(user)
    results: dict[str, DisconnectResult] = {}

    def cut(user):
        results[user] = disconnect(nas, user_name=user, timeout=2.0)

    threads = [threading.Thread(target=cut, args=(u,)) for u in users]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert all(results[u].acked for u in users) and nas.online() == []


# --- the simulator's own checks -----------------------------------------------------------

def test_request_without_message_authenticator_is_accepted(nas):
    nas.add_session(MAC)
    reply = pyrad_send(nas, ma=False, User_Name=MAC)
    assert reply.code == packet.DisconnectACK and not reply.message_authenticator   # chilli never adds one


def test_request_with_a_bad_message_authenticator_is_dropped(nas):
    nas.add_session(MAC)
    user = MAC.encode()
    attrs = bytes([80, 18]) + b"\x5a" * 16 + bytes([1, 2 + len(user)]) + user
    assert udp_exchange(nas.address, sign_request(packet.DisconnectRequest, 7, attrs), 0.5) is None
    assert nas.stats["dropped_message_authenticator"] == 1 and nas.online() == [MAC]


def test_retransmission_gets_the_same_reply_and_is_processed_once(nas):
    nas.add_session(MAC)
    user = MAC.encode()
    datagram = sign_request(packet.DisconnectRequest, 42, bytes([1, 2 + len(user)]) + user)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:   # same source port: a retransmission
        sock.settimeout(1)
        replies = []
        for _ in range(2):
            sock.sendto(datagram, nas.address)
            replies.append(sock.recv(4096))
    assert replies[0][0] == packet.DisconnectACK and replies[1] == replies[0]
    assert nas.stats["ack"] == 1 and nas.stats["duplicate"] == 1
    # from another port it is a new request: the session is gone by now
    assert udp_exchange(nas.address, datagram)[0] == packet.DisconnectNAK


def test_malformed_datagrams_never_stop_the_loop(nas):
    nas.add_session(MAC)
    junk = [b"", b"\x28", b"\x28\x01\x00\x14" + b"\0" * 15, b"\x28\x01\x01\xf4" + b"\0" * 16,
            sign_request(packet.DisconnectRequest, 1, b"\x01\x00"), sign_request(packet.DisconnectRequest, 2, b"\x01\x01x"),
            sign_request(packet.AccessRequest, 3, b""), os.urandom(600)]
    for datagram in junk:
        assert udp_exchange(nas.address, datagram, 0.1) is None
    assert nas.stats["malformed"] >= 5 and nas.stats["ignored_code"] >= 1 and nas.stats["errors"] == 0
    # a well-signed request with a value of the wrong length: recorded raw; chilli reads only
    # User-Name (and Acct-Session-Id), so the session still ends
    user = MAC.encode()
    reply = udp_exchange(nas.address, sign_request(packet.DisconnectRequest, 4,
                                                   bytes([1, 2 + len(user)]) + user + b"\x08\x05\x0a\x00\x00"))
    assert reply[0] == packet.DisconnectACK
    assert nas.requests[-1].attributes["Framed-IP-Address"] == [b"\x0a\x00\x00"]
    assert disconnect(nas).bare_nak


def test_coa_request_applies_session_timeout_and_limits_to_the_live_session(nas):
    session = nas.add_session(MAC, acct_session_id="s1")
    session.limits = {"Session-Timeout": 60, "Idle-Timeout": 600}
    reply = pyrad_send(nas, code=packet.CoARequest, User_Name=MAC, Session_Timeout=4000,
                       WISPr_Bandwidth_Max_Down=5_000_000)
    assert reply.code == packet.CoAACK and not reply.keys()
    # chilli reconfigures from the whole packet: what the CoA leaves out is cleared
    assert nas.sessions()[0].limits == {"Session-Timeout": 4000, "WISPr-Bandwidth-Max-Down": 5_000_000}
    assert nas.online() == [MAC] and nas.requests[-1].code == packet.CoARequest
    reply = pyrad_send(nas, code=packet.CoARequest, User_Name="AA-BB-CC-00-00-99", Session_Timeout=1)
    assert reply.code == packet.CoANAK and not reply.keys()


# --- send_disconnect against a NAS that forges its replies -------------------------------

class FakeNas:
    """A bare UDP socket that checks our request and answers it as ``mode`` says."""

    def __init__(self, mode: str):
        self.mode, self.requests = mode, []
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.1)
        self.address = self.sock.getsockname()
        self.done = threading.Event()
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def serve(self):
        while not self.done.is_set():
            try:
                data, source = self.sock.recvfrom(4096)
            except TimeoutError:
                continue
            req = packet.CoAPacket(packet=data, secret=SECRET.encode(), dict=DICT)
            self.requests.append((req.VerifyCoARequest(), req.message_authenticator and req.verify_message_authenticator()))
            self.sock.sendto(self.answer(req), source)

    def answer(self, req: packet.CoAPacket) -> bytes:
        if self.mode == "garbage":
            return bytes([packet.DisconnectACK, req.id]) + b"\x00\x14" + os.urandom(16)
        reply = req.CreateReply()
        if self.mode == "wrong-secret":
            reply.secret = b"not-the-secret"
        reply.add_message_authenticator()
        raw = reply.ReplyPacket()
        if self.mode == "bad-message-authenticator":
            # a good Response Authenticator over a corrupted Message-Authenticator
            raw = raw[:22] + bytes(16) + raw[38:]
            raw = raw[:4] + hashlib.md5(raw[:4] + req.authenticator + raw[20:] + SECRET.encode()).digest() + raw[20:]
        return raw

    def close(self):
        self.done.set()
        self.thread.join(5)
        self.sock.close()


@pytest.fixture
def fake_nas():
    made = []

    def make(mode):
        made.append(FakeNas(mode))
        return made[-1]

    yield make
    for fake in made:
        fake.close()


@pytest.mark.parametrize("mode", ["garbage", "wrong-secret", "bad-message-authenticator"])
def test_forged_replies_are_not_accepted(fake_nas, mode):
    fake = fake_nas(mode)
    with pytest.raises(RouterUnavailable):
        send_disconnect(*fake.address, SECRET, user_name=MAC, timeout=0.3, retries=1)
    assert fake.requests == [(True, True), (True, True)]     # our requests were signed right, twice


def test_properly_signed_reply_from_the_fake_is_accepted(fake_nas):
    fake = fake_nas("honest")
    assert send_disconnect(*fake.address, SECRET, user_name=MAC, timeout=1, retries=0).acked
    assert fake.requests == [(True, True)]


# --- FreeRADIUS radclient as an independent peer -----------------------------------------

radclient = shutil.which("radclient")
needs_radclient = pytest.mark.skipif(radclient is None, reason="radclient (freeradius-utils) is installed by scripts/test")


def run_radclient(address, text, kind="disconnect", secret=SECRET):
    out = subprocess.run([radclient, "-x", "-r", "1", "-t", "1", f"{address[0]}:{address[1]}", kind, secret],
                         input=text, capture_output=True, text=True, timeout=20)
    return out.stdout + out.stderr


@needs_radclient
def test_radclient_disconnect_ack_then_nak(nas):
    nas.add_session(MAC, acct_session_id="81000001")
    request = f'User-Name = "{MAC}"\nAcct-Session-Id = "81000001"\nMessage-Authenticator = 0x00\n'
    out = run_radclient(nas.address, request)
    assert "Received Disconnect-ACK" in out, out
    assert nas.online() == [] and nas.requests[-1].valid and "Message-Authenticator" in nas.requests[-1].attributes
    out = run_radclient(nas.address, request)
    assert "Received Disconnect-NAK" in out and "Error-Cause" not in out, out


@needs_radclient
def test_radclient_missing_user_name_wrong_secret_and_coa(nas):
    nas.add_session(MAC, acct_session_id="s1")
    out = run_radclient(nas.address, 'Acct-Session-Id = "s1"\n')
    assert "Received" not in out and "No reply" in out, out      # chilli: no User-Name, no answer
    out = run_radclient(nas.address, f'User-Name = "{MAC}"\nMessage-Authenticator = 0x00\n', secret="wrongsecret")
    assert "Received" not in out and "No reply" in out, out
    assert nas.stats["dropped_authenticator"] == 1        # -r 1: one send in all
    out = run_radclient(nas.address, f'User-Name = "{MAC}"\nSession-Timeout = 60\n', kind="coa")
    assert "Received CoA-ACK" in out, out
    assert nas.online() == [MAC] and nas.sessions()[0].limits == {"Session-Timeout": 60}


@needs_radclient
def test_radclient_rejects_a_reply_signed_with_another_secret(fake_nas):
    out = run_radclient(fake_nas("wrong-secret").address, f'User-Name = "{MAC}"\nMessage-Authenticator = 0x00\n')
    assert "Received Disconnect-ACK" not in out, out
    out = run_radclient(fake_nas("honest").address, f'User-Name = "{MAC}"\nMessage-Authenticator = 0x00\n')
    assert "Received Disconnect-ACK" in out, out


@pytest.mark.parametrize("kind, mac", [("mikrotik", "AA:BB:CC:DD:EE:0F"), ("coova", "AA-BB-CC-DD-EE-0F")])
def test_each_router_kind_gets_its_own_mac_notation(nas, kind, mac):
    # MikroTik's Calling-Station-Id is the MAC in capitals with colons, chilli's with dashes
    # (shared/reference/routers.md); a Disconnect in the other form names a device the router does not have
    from hotspotd.disconnects import Target
    from radius.disconnect import CoaCutter
    host, port = nas.address
    cutter = CoaCutter("r", host, port, SECRET, timeout=1, retries=0, kind=kind)
    cutter.cut(Target("aa:bb:cc:dd:ee:0f"))
    got = nas.requests[-1].attributes
    assert got["Calling-Station-Id"] == [mac] and got["User-Name"] == [mac]
