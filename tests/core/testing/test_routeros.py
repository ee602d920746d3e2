"""The RouterOS API simulator, driven by librouteros (the real client) over real sockets."""
from __future__ import annotations

import io
import re
import socket
import subprocess
import sys
import time

import librouteros
import pytest
from hypothesis import given
from hypothesis import strategies as st
from librouteros.connections import SocketTransport
from librouteros.exceptions import ConnectionClosed, FatalError, TrapError
from librouteros.protocol import ApiProtocol
from librouteros.protocol import decode_length as lr_decode_length
from librouteros.protocol import encode_length as lr_encode_length
from librouteros.query import And, Key, Or

from hotspotd.testing import routeros
from hotspotd.testing.routeros import RouterOSSimulator, decode_length, encode_length, prefix_size

MAC1, MAC2, MAC3 = "AA:BB:CC:DD:EE:01", "AA:BB:CC:DD:EE:02", "AA:BB:CC:DD:EE:03"


@pytest.fixture
def sim():
    with RouterOSSimulator(password="secret") as s:
        yield s


def connect(sim, password="secret", **kw):
    host, port = sim.address
    return librouteros.connect(host, "admin", password, port=port, timeout=2, **kw)


@pytest.fixture
def api(sim):
    a = connect(sim)
    yield a
    a.close()


class Raw:
    """librouteros's own wire layer, for what its high-level API hides (tags, !empty, traps before login)."""

    def __init__(self, sim):
        self.sock = socket.create_connection(sim.address, timeout=2)
        self.protocol = ApiProtocol(SocketTransport(self.sock), encoding="utf-8")

    def send(self, *words: str) -> list[tuple[str, tuple[str, ...]]]:
        """Send one sentence, return the reply sentences up to and including !done."""
        self.protocol.writeSentence(*words)
        replies = []
        while not replies or replies[-1][0] != "!done":
            replies.append(self.protocol.readSentence())
        return replies

    def close(self):
        self.sock.close()


@pytest.fixture
def raw(sim):
    r = Raw(sim)
    yield r
    r.close()


# ---- wire format

@given(st.integers(min_value=0, max_value=0xFFFFFFFF))
def test_length_prefix_round_trip(length):
    prefix = encode_length(length)
    assert prefix_size(prefix[0]) == len(prefix)
    assert decode_length(prefix) == length
    if length < 0x10000000:  # the forms librouteros knows: byte for byte the same
        assert prefix == lr_encode_length(length)
        assert lr_decode_length(prefix) == length


@given(st.lists(st.text(min_size=1, max_size=300), max_size=8))
def test_sentence_round_trip(words):
    stream = io.BytesIO(routeros.encode_sentence(words))
    assert routeros.read_sentence(stream.read) == words
    with pytest.raises(EOFError):
        routeros.read_sentence(stream.read)


@pytest.mark.parametrize("length, size", [(0x7F, 1), (0x80, 2), (0x3FFF, 2), (0x4000, 3), (0x1FFFFF, 3),
                                          (0x200000, 4), (0x0FFFFFFF, 4), (0x10000000, 5), (0xFFFFFFFF, 5)])
def test_length_prefix_sizes_at_the_boundaries(length, size):
    assert len(encode_length(length)) == size


def test_reserved_control_byte_is_refused():
    with pytest.raises(routeros.WireError):
        prefix_size(0xF8)


@pytest.mark.parametrize("size", [200, 20_000, 3_000_000])
def test_long_values_round_trip(api, size):
    comment = ("hotspot-" * (size // 8 + 1))[:size]
    bindings = api.path("ip", "hotspot", "ip-binding")
    item = bindings.add(**{"mac-address": MAC1, "comment": comment})
    rows = list(bindings.select(Key("comment")).where(Key(".id") == item))
    assert rows == [{"comment": comment}]


def test_five_byte_length_form_is_decoded(sim, raw):
    raw.send("/login", "=name=admin", "=password=secret")
    word = b"/system/identity/print"
    raw.sock.sendall(b"\xf0" + len(word).to_bytes(4, "big") + word + b"\x00")
    assert raw.protocol.readSentence() == ("!re", ("=name=hotspotd-sim",))
    assert raw.protocol.readSentence() == ("!done", ())


# ---- login

def test_login_and_identity(sim, api):
    assert list(api.path("system", "identity")) == [{"name": "hotspotd-sim"}]
    resource = next(iter(api.path("system", "resource")))
    assert resource["version"] == routeros.DEFAULT_VERSION and resource["board-name"]
    assert sim.commands[0].command == "/login"
    assert sim.commands[0].attributes["password"] == "***"  # never kept


def test_wrong_password_traps_like_routeros(sim, raw):
    with pytest.raises(TrapError) as exc:
        connect(sim, password="wrong")
    assert exc.value.message == "invalid user name or password (6)"
    assert raw.send("/login", "=name=admin", "=password=nope") == [
        ("!trap", ("=message=invalid user name or password (6)",)), ("!done", ())]


def test_commands_before_login_are_refused(raw):
    assert raw.send("/ip/hotspot/active/print") == [("!trap", ("=message=not logged in",)), ("!done", ())]
    raw.send("/login", "=name=admin", "=password=secret")
    assert raw.send("/system/identity/print")[-1] == ("!done", ())


# ---- print, queries, add/set/remove

def test_print_with_proplist_and_queries(sim, api):
    sim.login(MAC1, "10.5.50.11", "alice")
    sim.login(MAC2, "10.5.50.12", "bob", session_time=600)
    sim.add_host(MAC3, "10.5.50.13")
    active = api.path("ip", "hotspot", "active")
    hosts = api.path("ip", "hotspot", "host")

    rows = list(active.select(Key(".id"), Key("user")).where(Key("mac-address") == MAC2.lower()))
    assert rows == [{".id": "*2", "user": "bob"}]
    assert [r["user"] for r in active.select(Key("user")).where(
        Or(Key("user") == "alice", Key("user") == "bob"))] == ["alice", "bob"]
    assert list(active.select(Key("user")).where(Key("user") != "alice")) == [{"user": "bob"}]
    assert list(active.select(Key("user")).where(
        And(Key("address") == "10.5.50.12", Key("login-by") == "http-chap"))) == [{"user": "bob"}]
    assert [r["mac-address"] for r in hosts.select(Key("mac-address")).where(Key("authorized") == False)] == [MAC3]  # noqa: E712
    # ?key exists, ?-key absent: only bob's session has a time limit
    assert [r["user"] for r in api.rawCmd("/ip/hotspot/active/print", "?session-time-left")] == ["bob"]
    assert [r["user"] for r in api.rawCmd("/ip/hotspot/active/print", "?-session-time-left")] == ["alice"]
    assert [r["user"] for r in api.rawCmd("/ip/hotspot/active/print", "?user=carol", "?user=bob", "?#|")] == ["bob"]
    assert list(api.rawCmd("/ip/hotspot/active/print", "=count-only=")) == [{"ret": 2}]
    row = next(iter(active.select(Key("session-time-left")).where(Key("user") == "bob")))
    assert row["session-time-left"] in ("10m", "9m59s")


def test_add_set_remove_and_ids(api):
    bindings = api.path("ip", "hotspot", "ip-binding")
    first = bindings.add(**{"mac-address": MAC1.lower(), "type": "bypassed"})
    second = bindings.add(**{"mac-address": MAC2, "type": "blocked", "comment": "abuse"})
    assert (first, second) == ("*1", "*2")
    assert list(bindings.select(Key("mac-address"), Key("type"), Key("disabled"))) == [
        {"mac-address": MAC1, "type": "bypassed", "disabled": False},
        {"mac-address": MAC2, "type": "blocked", "disabled": False}]
    bindings.update(**{".id": first, "disabled": True, "comment": "vip"})
    assert list(bindings.select(Key("comment")).where(Key("disabled") == True)) == [{"comment": "vip"}]  # noqa: E712

    with pytest.raises(TrapError, match="no such item"):
        bindings.remove(first, "*9")
    assert len(list(bindings)) == 2  # all or nothing
    bindings.remove(first, second)
    assert list(bindings) == []
    assert bindings.add(**{"mac-address": MAC3}) == "*3"  # ids are not reused


def test_bad_arguments_trap(api):
    bindings = api.path("ip", "hotspot", "ip-binding")
    with pytest.raises(TrapError, match="unknown parameter colour"):
        bindings.add(colour="red")
    with pytest.raises(TrapError, match="invalid value for argument type"):
        bindings.add(type="friendly")
    with pytest.raises(TrapError, match="invalid value for argument mac-address"):
        bindings.add(**{"mac-address": "not-a-mac"})
    with pytest.raises(TrapError, match="invalid query"):
        list(api.rawCmd("/ip/hotspot/active/print", "?#|"))


def test_unknown_commands(api):
    with pytest.raises(TrapError, match="^no such command prefix$"):
        list(api("/ip/nothing/print"))
    with pytest.raises(TrapError, match="^no such command$"):
        list(api("/ip/hotspot/active/add", user="x"))  # sessions come from logins, not add


def test_tag_is_echoed_on_every_reply(sim, raw):
    sim.login(MAC1, "10.5.50.11", "alice")
    sim.login(MAC2, "10.5.50.12", "bob")
    raw.send("/login", "=name=admin", "=password=secret", ".tag=a")
    replies = raw.send("/ip/hotspot/active/print", "=.proplist=user", ".tag=7")
    assert replies == [("!re", ("=user=alice", ".tag=7")), ("!re", ("=user=bob", ".tag=7")), ("!done", (".tag=7",))]
    assert raw.send("/ip/hotspot/active/remove", "=.id=*9", ".tag=x") == [
        ("!trap", ("=message=no such item", ".tag=x")), ("!done", (".tag=x",))]
    assert sim.commands[-1].tag == "x"


def test_empty_reply_like_routeros_7_18(sim, raw, api):
    raw.send("/login", "=name=admin", "=password=secret")
    assert raw.send("/ip/hotspot/cookie/print", ".tag=e") == [("!empty", (".tag=e",)), ("!done", (".tag=e",))]
    assert list(api.path("ip", "hotspot", "cookie")) == []  # librouteros 4.2.2 skips !empty


def test_no_empty_reply_like_older_routeros():
    with RouterOSSimulator(empty_reply=False) as old:
        r = Raw(old)
        try:
            r.send("/login", "=name=admin", "=password=")
            assert r.send("/ip/hotspot/cookie/print") == [("!done", ())]
        finally:
            r.close()


def test_quit_is_fatal(api):
    with pytest.raises(FatalError, match="session terminated on request"):
        list(api("/quit"))


# ---- hotspot behaviour

def test_api_hotspot_login_authorizes_a_known_host(sim, api):
    sim.add_host(MAC1, "10.5.50.11")
    active = api.path("ip", "hotspot", "active")
    with pytest.raises(TrapError, match=r"^unknown host IP 10\.5\.50\.99$"):    # as real routers answer
        tuple(active("login", user="alice", password="pw", **{"mac-address": MAC2, "ip": "10.5.50.99"}))
    with pytest.raises(TrapError, match=r"^wrong MAC provided$"):          # the host at that IP is another
        tuple(active("login", user="alice", password="pw", **{"mac-address": MAC2, "ip": "10.5.50.11"}))
    tuple(active("login", user="alice", password="pw", **{"mac-address": MAC1, "ip": "10.5.50.11"}))
    assert list(active.select(Key("user"), Key("login-by"), Key("mac-address"))) == [
        {"user": "alice", "login-by": "api", "mac-address": MAC1}]
    assert sim.rows("/ip/hotspot/host")[0]["authorized"] == "true"
    # a second login for a device already online is refused, and the session is left alone
    with pytest.raises(TrapError, match=r"^already logged in$"):
        tuple(active("login", user="bob", password="pw", **{"mac-address": MAC1, "ip": "10.5.50.11"}))
    assert [row["user"] for row in sim.rows("/ip/hotspot/active")] == ["alice"]


def test_hotspot_users_are_checked_when_there_are_some(sim, api):
    sim.add_host(MAC1, "10.5.50.11")
    api.path("ip", "hotspot", "user").add(name="alice", password="right")
    active = api.path("ip", "hotspot", "active")
    with pytest.raises(TrapError, match="invalid username or password"):
        tuple(active("login", user="alice", password="wrong", ip="10.5.50.11"))
    tuple(active("login", user="alice", password="right", ip="10.5.50.11"))
    assert sim.active_macs() == [MAC1]


def test_removing_a_session_keeps_its_cookie(sim, api):
    sim.login(MAC1, "10.5.50.11", "alice")
    active = api.path("ip", "hotspot", "active")
    active.remove(*[r[".id"] for r in active.select(Key(".id"))])
    assert sim.active_macs() == []
    assert sim.rows("/ip/hotspot/host")[0]["authorized"] == "false"
    assert [c["user"] for c in sim.cookies_for(MAC1.lower())] == ["alice"]


class Told:
    """A RADIUS side (routeros.RadiusSide) that accepts every login and writes down what it is told."""

    def __init__(self, sim):
        self.sim, self.seen, self.ended = sim, [], []
        self.limits = routeros.Limits(total=1000, recv=600)

    def host_seen(self, mac, ip):
        self.seen.append(mac)

    def login(self, user, password, mac, ip):
        self.sim.activate(mac, ip, user, "http-chap", self.limits)
        return True

    def logged_out(self, item_id, session, cause):
        self.ended.append((session["mac-address"], cause, session["bytes-in"], session["bytes-out"]))


def test_the_hotspot_enforces_its_session_limits_and_says_why_each_ended(sim, api):
    told = sim.radius = Told(sim)
    active = api.path("ip", "hotspot", "active")
    for mac, ip in ((MAC1, "10.5.50.11"), (MAC2, "10.5.50.12"), (MAC3, "10.5.50.13")):
        sim.add_host(mac, ip)
        tuple(active("login", user="u", password="p", **{"mac-address": mac, "ip": ip}))
    assert told.seen == [MAC1, MAC2, MAC3] and sim.active_macs() == [MAC1, MAC2, MAC3]
    assert sim.send_traffic(MAC1, up=600)                 # Mikrotik-Recv-Limit: bytes in, from the client
    assert sim.send_traffic(MAC2, up=100, down=899) and MAC2 in sim.active_macs()
    sim.send_traffic(MAC2, down=1)                        # in + out reach Mikrotik-Total-Limit
    active.remove(*[r[".id"] for r in active.select(Key(".id"))])     # the API's remove: Admin-Reset
    assert told.ended == [(MAC1, routeros.LIMIT_CAUSE, "600", "0"), (MAC2, routeros.LIMIT_CAUSE, "100", "900"),
                          (MAC3, "Admin-Reset", "0", "0")]
    sim.add_host(MAC1, "10.5.50.11")
    told.limits = routeros.Limits(idle_timeout=0.3)
    tuple(active("login", user="u", password="p", **{"mac-address": MAC1, "ip": "10.5.50.11"}))
    time.sleep(0.35)                                      # no traffic for the Idle-Timeout
    assert sim.active_macs() == [] and told.ended[-1][:2] == (MAC1, "Idle-Timeout")
    told.limits = routeros.Limits()
    tuple(active("login", user="u", password="p", **{"mac-address": MAC1, "ip": "10.5.50.11"}))
    assert sim.logout(MAC1) and told.ended[-1][:2] == (MAC1, "User-Request") and not sim.logout(MAC1)


def test_a_session_timeout_ends_the_session_with_its_cause(sim):
    told = sim.radius = Told(sim)
    sim.add_host(MAC1, "10.5.50.11")
    item = sim.activate(MAC1, "10.5.50.11", "u", "mac", routeros.Limits(session_timeout=5))
    assert sim.change(item, routeros.Limits(session_timeout=0.1))   # a CoA: counted from the start
    time.sleep(0.15)
    assert sim.sessions() == {} and told.ended == [(MAC1, "Session-Timeout", "0", "0")]


# ---- controls and lifecycle

def test_clear_forgets_state(sim):
    sim.login(MAC1, "10.5.50.11", "alice")
    sim.clear()
    assert sim.active_macs() == [] and sim.cookies_for(MAC1) == [] and sim.commands == []


def test_unreachable_and_back(sim):
    sim.set_unreachable(True)
    with pytest.raises((ConnectionClosed, OSError)):
        connect(sim)
    sim.set_unreachable(False)
    connect(sim).close()


def test_latency_delays_every_reply(sim, api):
    sim.set_latency(0.2)
    started = time.monotonic()
    list(api.path("system", "identity"))
    assert time.monotonic() - started >= 0.2


def test_stop_closes_client_connections():
    sim = RouterOSSimulator().start()
    api = connect(sim, password="")
    try:
        sim.stop()
        assert sim.connection_count == 0
        with pytest.raises((ConnectionClosed, OSError)):
            list(api.path("system", "identity"))
    finally:
        api.close()
    with pytest.raises(OSError):
        socket.create_connection(sim.address, timeout=1).close()


def test_hotspotd_simulate_routeros_serves_until_terminated():
    proc = subprocess.Popen([sys.executable, "-m", "hotspotd.service.cli", "simulate", "routeros", "--listen", "127.0.0.1:0",
                             "--password", "x", "--host", f"{MAC1}=10.5.50.11"],
                            stdout=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        host, port = re.search(r"listening on (\S+):(\d+)", line).groups()
        api = librouteros.connect(host, "admin", "x", port=int(port), timeout=2)
        try:
            assert [r["mac-address"] for r in api.path("ip", "hotspot", "host")] == [MAC1]
        finally:
            api.close()
    finally:
        proc.terminate()
        code = proc.wait(5)
        proc.stdout.close()                    # closed whatever the code, or a later test meets its ResourceWarning
        assert code == 0


def test_hotspotd_simulate_routeros_with_radius_asks_for_its_hosts_by_mac():
    from pyrad import packet

    from tests.helpers import DICT
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as server:
        server.bind(("127.0.0.1", 0))
        server.settimeout(10)
        port = server.getsockname()[1]
        with subprocess.Popen([sys.executable, "-m", "hotspotd.service.cli", "simulate", "routeros", "--listen",
                               "127.0.0.1:0", "--host", f"{MAC1}=10.5.50.11", "--radius", f"127.0.0.1:{port}",
                               "--secret", "s3", "--incoming", "127.0.0.1:0"], stdout=subprocess.PIPE,
                              text=True) as proc:
            try:
                data, _ = server.recvfrom(4096)           # the MAC login of the host it was started with
                req = packet.AuthPacket(packet=data, secret=b"s3", dict=DICT)
                assert req.code == packet.AccessRequest and req["User-Name"] == [MAC1] and req.message_authenticator
                assert "listening on" in proc.stdout.readline()
            finally:
                proc.terminate()
            assert proc.wait(5) == 0


def test_hotspotd_simulate_stops_cleanly_on_a_sigterm_sent_before_it_listens(tmp_path):
    # a SIGTERM sent the moment the first line is read (here: while a script's output is still printing,
    # before anything listens) ends the simulator with 0, not -15 (a clean-clone CI run met -15)
    (tmp_path / "puts.rsc").write_text(':put "line"\n' * 20000)
    with subprocess.Popen([sys.executable, "-m", "hotspotd.service.cli", "simulate", "routeros", "--listen",
                           "127.0.0.1:0", "--script", str(tmp_path / "puts.rsc")], stdout=subprocess.PIPE,
                          text=True) as proc:
        try:
            assert proc.stdout.readline() == "line\n"
        finally:
            proc.terminate()
        rest, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0 and "listening on" in rest


@pytest.mark.parametrize("version, has_it", [("7.9 (stable)", False), ("7.14.3 (stable)", False),
                                             ("7.15 (stable)", True), ("7.18.2 (stable)", True)])
def test_require_message_auth_exists_from_7_15_compared_as_numbers(version, has_it):
    # "7.9" >= "7.15" as text: RouterOS 7.9 had it, until versions were compared as numbers
    sim = RouterOSSimulator(version=version)
    try:
        assert ("require-message-auth" in sim.menu("/radius")[0]) == has_it
    finally:
        sim.stop()


def test_hotspotd_simulate_routeros_runs_a_script_first(tmp_path):
    (tmp_path / "ok.rsc").write_text('/user group add name=hs policy=read,write,api\n'
                                     '/user add name=hs group=hs password="pw"\n:put "configured"\n')
    (tmp_path / "bad.rsc").write_text("/radius add colour=blue\n")
    cmd = [sys.executable, "-m", "hotspotd.service.cli", "simulate", "routeros", "--listen", "127.0.0.1:0"]
    refused = subprocess.run(cmd + ["--script", str(tmp_path / "bad.rsc")], capture_output=True, text=True, timeout=30)
    assert refused.returncode == 1 and "bad.rsc: expected end of command (line 1 column 13)" in refused.stderr
    proc = subprocess.Popen(cmd + ["--script", str(tmp_path / "ok.rsc")], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline() == "configured\n"
        host, port = re.search(r"listening on (\S+):(\d+)", proc.stdout.readline()).groups()
        librouteros.connect(host, "hs", "pw", port=int(port), timeout=2).close()
    finally:
        proc.terminate()
        code = proc.wait(5)
        proc.stdout.close()                    # closed whatever the code, or a later test meets its ResourceWarning
        assert code == 0
