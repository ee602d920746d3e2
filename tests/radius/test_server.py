"""RADIUS with two real peers: pyrad's client and FreeRADIUS radclient."""
import logging
import os
import shutil
import socket
import subprocess
import time

import peewee as pw
import pytest
from pyrad import packet
from pyrad.client import Timeout

from hotspotd.storage.models import AcctSession, Entitlement

from tests.helpers import acct, client, give_time, mac_request, RADIUS, send

#: run again on PostgreSQL by scripts/test (-m postgres)
pytestmark = pytest.mark.postgres

MAC = "AA:BB:CC:DD:EE:01"


@pytest.fixture
def mikrotik(make_hotspot):
    return make_hotspot(radius=RADIUS, scheduler={"enabled": False})


@pytest.fixture
def coova(make_hotspot):
    clients = [{"address": "127.0.0.0/8", "secret": "coovasecret", "kind": "coova"}]
    return make_hotspot(radius={**RADIUS, "clients": clients}, scheduler={"enabled": False})


@pytest.mark.parametrize("user, password, calling", [
    ("AA:BB:CC:DD:EE:01", "", "AA:BB:CC:DD:EE:01"),
    ("aa-bb-cc-dd-ee-01", "aa-bb-cc-dd-ee-01", "AA-BB-CC-DD-EE-01"),
    ("AABBCCDDEE01", "AABBCCDDEE01", None),
])
def test_paid_mac_is_accepted_with_mikrotik_limits(mikrotik, user, password, calling):
    give_time(MAC, seconds=3600, data_cap=5 * 2**32 + 1000, rate="2M/5M")
    reply = send(client(mikrotik), mac_request(client(mikrotik), user, password, calling))
    assert reply.code == packet.AccessAccept
    assert 3590 <= reply["Session-Timeout"][0] <= 3600
    assert reply["Idle-Timeout"][0] == 600 and reply["Acct-Interim-Interval"][0] == 120
    assert reply["Mikrotik-Rate-Limit"][0] == "2M/5M"
    assert reply["Mikrotik-Total-Limit"][0] == 1000 and reply["Mikrotik-Total-Limit-Gigawords"][0] == 5
    ent = Entitlement.get()
    assert reply["Class"][0] == f"hotspotd:{ent.id}".encode()
    assert reply["WISPr-Session-Terminate-Time"][0].endswith("+03:00")
    assert reply.message_authenticator


def test_coova_gets_its_own_words(coova):
    give_time(MAC, seconds=600, data_cap=2**32 * 2, rate="512k/1M")
    c = client(coova, b"coovasecret")
    reply = send(c, mac_request(c, "AA-BB-CC-DD-EE-01", "AA-BB-CC-DD-EE-01", "AA-BB-CC-DD-EE-01"))
    assert reply.code == packet.AccessAccept
    assert reply["Session-Timeout"][0] <= 600
    assert reply["WISPr-Bandwidth-Max-Up"][0] == 512_000 and reply["WISPr-Bandwidth-Max-Down"][0] == 1_000_000
    assert reply["ChilliSpot-Max-Total-Octets"][0] == 0 and reply["ChilliSpot-Max-Total-Gigawords"][0] == 2
    assert reply["Acct-Interim-Interval"][0] >= 60
    assert "Mikrotik-Rate-Limit" not in reply


def test_unknown_and_expired_macs_are_rejected(mikrotik):
    c = client(mikrotik)
    reply = send(c, mac_request(c))
    assert reply.code == packet.AccessReject and "portal" in reply["Reply-Message"][0]
    ent = give_time(MAC, seconds=3600)
    Entitlement.update(expires_at=time.time() - 1).where(Entitlement.id == ent.id).execute()
    c = client(mikrotik)
    assert send(c, mac_request(c)).code == packet.AccessReject


def test_another_devices_mac_as_username_is_rejected(mikrotik):
    give_time(MAC)
    c = client(mikrotik)
    assert send(c, mac_request(c, user=MAC, calling="AA:BB:CC:DD:EE:99")).code == packet.AccessReject


def test_session_timeout_never_exceeds_time_left(mikrotik):
    give_time(MAC, seconds=90)
    c = client(mikrotik)
    assert send(c, mac_request(c))["Session-Timeout"][0] <= 90


def test_wrong_secret_and_missing_message_authenticator_get_no_answer(mikrotik):
    give_time(MAC)
    c = client(mikrotik, b"wrong")
    with pytest.raises(Timeout):
        send(c, mac_request(c))
    c = client(mikrotik)
    with pytest.raises(Timeout):
        send(c, mac_request(c, ma=False))
    assert mikrotik.radius.stats["auth_dropped"] == 2


def test_a_router_without_message_authenticator_is_named_once_with_the_fix(mikrotik, caplog):
    # RouterOS before 7.15 sends no Message-Authenticator: its logins are dropped, silently until now
    from hotspotd.health import live
    give_time(MAC)
    with caplog.at_level(logging.WARNING, logger="radius.server"):
        for _ in range(2):
            c = client(mikrotik)
            with pytest.raises(Timeout):
                send(c, mac_request(c, ma=False))
    said = [r.getMessage() for r in caplog.records if "without Message-Authenticator" in r.getMessage()]
    assert len(said) == 1 and "127.0.0.1" in said[0] and "require_message_authenticator = false" in said[0]
    assert mikrotik.radius.no_message_authenticator["127.0.0.1"] >= 2
    check = next(c for c in live.run(mikrotik) if c.key == "radius")
    assert check.state == "warn" and any("RouterOS before 7.15" in i and "7.15 or later" in i for i in check.items)


def test_relaxed_client_answers_without_message_authenticator(make_hotspot):
    clients = [{"address": "127.0.0.1", "secret": "testing123", "require_message_authenticator": False}]
    hs = make_hotspot(radius={**RADIUS, "clients": clients}, scheduler={"enabled": False})
    give_time(MAC)
    c = client(hs)
    c.enforce_ma = True
    reply = send(c, mac_request(c, ma=False))
    assert reply.code == packet.AccessAccept and reply.message_authenticator


def test_unknown_nas_is_dropped_and_counted(make_hotspot):
    clients = [{"address": "10.9.9.9", "secret": "testing123"}]
    hs = make_hotspot(radius={**RADIUS, "clients": clients}, scheduler={"enabled": False})
    c = client(hs)
    with pytest.raises(Timeout):
        send(c, mac_request(c))
    assert hs.radius.stats["dropped_unknown_client"] == 1


def test_pap_and_chap_logins(mikrotik):
    give_time(None, login=("VOUCHER1", "s3cret"), devices=2)
    c = client(mikrotik)
    req = mac_request(c, user="VOUCHER1", password="s3cret", calling="AA:BB:CC:00:00:01")
    assert send(c, req).code == packet.AccessAccept
    c = client(mikrotik)
    req = c.CreateAuthPacket(code=packet.AccessRequest, User_Name="VOUCHER1")
    req["Calling-Station-Id"] = "AA:BB:CC:00:00:02"
    chap_id = b"\x07"
    import hashlib
    challenge = b"0123456789abcdef"
    req["CHAP-Challenge"] = challenge
    req["CHAP-Password"] = chap_id + hashlib.md5(chap_id + b"s3cret" + challenge).digest()
    req.add_message_authenticator()
    assert send(c, req).code == packet.AccessAccept
    # the third device exceeds the package's two
    c = client(mikrotik)
    assert send(c, mac_request(c, user="VOUCHER1", password="s3cret", calling="AA:BB:CC:00:00:03")).code == packet.AccessReject
    c = client(mikrotik)
    assert send(c, mac_request(c, user="VOUCHER1", password="nope", calling="AA:BB:CC:00:00:01")).code == packet.AccessReject


def test_accounting_counts_64_bit_usage_once(mikrotik):
    ent = give_time(MAC, data_cap=2 * 2**32)
    c = client(mikrotik)
    assert send(c, acct(c, "Start", ent=ent)).code == packet.AccountingResponse
    c = client(mikrotik)
    req = acct(c, "Interim-Update", in_oct=1000, out_oct=5000, in_giga=1, ent=ent)
    raw = req.RequestPacket()
    # the same datagram three times: a retransmitting NAS
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.settimeout(2)
    try:
        for _ in range(3):
            sock.sendto(raw, mikrotik.radius.acct_address)
            data, _ = sock.recvfrom(4096)
            assert data[0] == packet.AccountingResponse
    finally:
        sock.close()
    assert mikrotik.radius.stats["acct_duplicate"] == 2
    row = AcctSession.get()
    assert row.input_octets == 2**32 + 1000 and row.output_octets == 5000 and row.online
    assert Entitlement.get_by_id(ent.id).bytes_used == 2**32 + 6000
    # a later interim with the same totals (new Identifier) still adds nothing
    c = client(mikrotik)
    send(c, acct(c, "Interim-Update", in_oct=1000, out_oct=5000, in_giga=1, ent=ent))
    assert Entitlement.get_by_id(ent.id).bytes_used == 2**32 + 6000
    c = client(mikrotik)
    send(c, acct(c, "Stop", in_oct=2000, out_oct=5000, in_giga=1, ent=ent))
    row = AcctSession.get()
    assert not row.online and Entitlement.get_by_id(ent.id).bytes_used == 2**32 + 7000


def test_data_cap_reached_ends_access(mikrotik):
    ent = give_time(MAC, data_cap=10_000)
    capped = []
    mikrotik.radius.on_cap_reached = capped.append
    c = client(mikrotik)
    send(c, acct(c, "Interim-Update", in_oct=4000, out_oct=7000, ent=ent))
    assert capped and capped[0].mac == MAC
    c = client(mikrotik)
    assert send(c, mac_request(c)).code == packet.AccessReject
    mikrotik.expire_sessions()
    assert Entitlement.get_by_id(ent.id).status == "exhausted"


radclient = shutil.which("radclient")
# scripts/test installs it; only a developer box without root may lack it, never CI
needs_radclient = pytest.mark.skipif(radclient is None and not os.environ.get("CI"),
                                     reason="radclient (freeradius-utils) is installed by scripts/test")


def run_radclient(hs, text, kind="auth", secret="testing123"):
    port = hs.radius.auth_address[1] if kind == "auth" else hs.radius.acct_address[1]
    out = subprocess.run([radclient, "-x", "-r", "1", "-t", "1", f"127.0.0.1:{port}", kind, secret],
                         input=text, capture_output=True, text=True, timeout=20)
    return out.stdout + out.stderr


@needs_radclient
def test_radclient_mac_auth(mikrotik):
    give_time(MAC, seconds=1800, rate="1M/2M")
    out = run_radclient(mikrotik, f'User-Name = "{MAC}", User-Password = "", Calling-Station-Id = "{MAC}", '
                                  'NAS-Port-Type = Wireless-802.11, Message-Authenticator = 0x00\n')
    assert "Received Access-Accept" in out, out
    timeout = int(out.split("Session-Timeout = ")[1].split()[0])
    assert 1790 <= timeout <= 1800
    assert 'Mikrotik-Rate-Limit = "1M/2M"' in out
    out = run_radclient(mikrotik, 'User-Name = "AA:BB:CC:DD:EE:77", User-Password = "", Message-Authenticator = 0x00\n')
    assert "Received Access-Reject" in out and "portal" in out
    # without Message-Authenticator: no answer at all
    out = run_radclient(mikrotik, f'User-Name = "{MAC}", User-Password = ""\n')
    assert "Received" not in out and "No reply" in out
    out = run_radclient(mikrotik, f'User-Name = "{MAC}", Message-Authenticator = 0x00\n', secret="wrongsecret")
    assert "Received" not in out and "No reply" in out


@needs_radclient
def test_radclient_as_coovachilli(coova):
    give_time(MAC, seconds=900, data_cap=3 * 2**32 + 5, rate="512k/1M")
    dashed = MAC.replace(":", "-")
    out = run_radclient(coova, f'User-Name = "{dashed}", User-Password = "{dashed}", Calling-Station-Id = "{dashed}", '
                               'NAS-Identifier = "nas01", Message-Authenticator = 0x00\n', secret="coovasecret")
    assert "Received Access-Accept" in out, out
    assert 890 <= int(out.split("Session-Timeout = ")[1].split()[0]) <= 900
    for line in ("WISPr-Bandwidth-Max-Up = 512000", "WISPr-Bandwidth-Max-Down = 1000000",
                 "ChilliSpot-Max-Total-Octets = 5",
                 # FreeRADIUS 3.2's dictionary.chillispot lacks CoovaChilli's Gigawords (21-23): shown raw
                 "Attr-26.14559.23 = 0x00000003"):
        assert line in out, out
    assert "Mikrotik" not in out


@needs_radclient
def test_radclient_accounting(mikrotik):
    ent = give_time(MAC)
    text = (f'Acct-Status-Type = Interim-Update, Acct-Session-Id = "s1", Calling-Station-Id = "{MAC}", '
            f'Acct-Input-Octets = 100, Acct-Output-Octets = 200, Acct-Output-Gigawords = 1, Class = 0x{f"hotspotd:{ent.id}".encode().hex()}\n')
    out = run_radclient(mikrotik, text, "acct")
    assert "Received Accounting-Response" in out, out
    assert Entitlement.get_by_id(ent.id).bytes_used == 2**32 + 300


def test_wrong_message_authenticator_gets_no_answer(mikrotik):
    give_time(MAC)
    c = client(mikrotik)
    req = mac_request(c)
    raw = bytearray(req.RequestPacket())
    at = raw.find(bytes([80, 18]))                   # Message-Authenticator: type 80, length 18
    assert at >= 20
    raw[at + 2] ^= 0xFF                              # one bit pattern off
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(1)
        sock.sendto(bytes(raw), mikrotik.radius.auth_address)
        with pytest.raises(TimeoutError):
            sock.recvfrom(4096)
    assert mikrotik.radius.stats["auth_dropped"] == 1
    c = client(mikrotik)
    assert send(c, mac_request(c)).code == packet.AccessAccept     # the honest one still works


def test_only_the_radius_thread_commits_without_waiting_for_the_disk(mikrotik):
    """Accounting totals survive a lost commit (the next report carries them), payments would
    not: the RADIUS thread's SQLite connection runs synchronous=NORMAL, everyone else's FULL;
    on PostgreSQL its synchronous_commit is off, everyone else's on."""
    from hotspotd.storage.models import database
    ent = give_time(MAC)
    c = client(mikrotik)
    assert send(c, acct(c, "Start", ent=ent)).code == packet.AccountingResponse
    if isinstance(database.obj, pw.PostgresqlDatabase):
        assert mikrotik.radius.synchronous == "off"
        assert database.execute_sql("SHOW synchronous_commit").fetchone()[0] == "on"
        return
    assert mikrotik.radius.synchronous == 1
    assert database.execute_sql("PRAGMA synchronous").fetchone()[0] == 2


def test_two_processes_share_the_radius_ports_with_reuse_port(make_hotspot):
    """``reuse_port``: a second hotspotd on the same server binds the same RADIUS ports, and the
    kernel spreads the routers (by source address and port) over both; every request is answered
    from the one database. (Two daemons in one test process: the sockets are what matters.)"""
    ports = []
    for _ in range(2):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind(("127.0.0.1", 0))
            ports.append(s.getsockname()[1])
    shared = {**RADIUS, "auth_port": ports[0], "acct_port": ports[1], "reuse_port": True}
    first = make_hotspot(radius=shared, scheduler={"enabled": False})
    second = make_hotspot(radius=shared, scheduler={"enabled": False})
    assert first.radius.auth_address == second.radius.auth_address
    give_time(MAC)
    answers = []
    for _ in range(40):                       # a new client socket each time: another source port
        c = client(first)
        answers.append(send(c, mac_request(c)).code)
    assert answers == [packet.AccessAccept] * 40
    served = [hs.radius.stats["access_accept"] for hs in (first, second)]
    assert sum(served) == 40 and min(served) > 0, served
    with pytest.raises(OSError):              # without it, the port stays one process's
        make_hotspot(radius={**shared, "reuse_port": False}, scheduler={"enabled": False})
