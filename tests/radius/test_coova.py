"""hotspotd's RADIUS server against CoovaChilli as it really behaves (radius/testing/nas.py sends
the accounting; FreeRADIUS radclient where an independent NAS-side client helps)."""
from __future__ import annotations

import shutil
import subprocess

import pytest

from hotspotd.storage.models import AcctSession, Entitlement

from tests.helpers import COOVA_SECRET, give_time, start_chilli, wait_for

#: run again on PostgreSQL by scripts/test (-m postgres)
pytestmark = pytest.mark.postgres

MAC = "AA:BB:CC:DD:EE:20"
MAC2 = "AA:BB:CC:DD:EE:21"


@pytest.fixture
def chilli(make_hotspot):
    nas, hs = start_chilli(make_hotspot)
    yield nas, hs
    nas.stop()


def rows(mac=None):
    query = AcctSession.select().order_by(AcctSession.id)
    return list(query.where(AcctSession.mac == mac) if mac else query)


def online():
    return AcctSession.select().where(AcctSession.online).count()


def test_accounting_on_after_a_crash_ends_every_open_session_of_that_nas(chilli):
    nas, hs = chilli
    for mac in (MAC, MAC2):
        nas.login(mac, cls=f"hotspotd:{give_time(mac).id}".encode())
    wait_for(lambda: online() == 2)
    nas.crash()                        # kill -9: no Stop, no Accounting-Off
    assert online() == 2
    assert nas.boot()                  # on start, only Accounting-On comes
    assert online() == 0
    assert {r.terminate_cause for r in rows()} == {"Accounting-On"}
    assert hs.radius.stats["acct_on"] == 1


def test_graceful_stop_sends_nas_reboot_stops_then_accounting_off(chilli):
    nas, hs = chilli
    nas.login(MAC)
    wait_for(lambda: online() == 1)
    nas.shutdown()
    assert online() == 0 and rows(MAC)[0].terminate_cause == "NAS-Reboot"
    assert hs.radius.stats["acct_off"] == 1


def test_a_start_with_a_new_class_under_the_same_session_id_is_a_new_session(chilli):
    nas, hs = chilli
    first, second = give_time(MAC), give_time(MAC, login=("hs-voucher", "pw"))
    for _ in range(5):                 # chilli's ids are per second: both logins within one
        a = nas.login(MAC, cls=f"hotspotd:{first.id}".encode())
        b = nas.login(MAC, cls=f"hotspotd:{second.id}".encode())
        if a.acct_session_id == b.acct_session_id:
            break
        AcctSession.delete().execute()
    assert a.acct_session_id == b.acct_session_id
    got = rows(MAC)
    assert [r.entitlement_id for r in got] == [first.id, second.id]
    assert [r.online for r in got] == [False, True]
    nas.report(b, downloaded=3000, uploaded=1000)
    assert Entitlement.get_by_id(second.id).bytes_used == 4000
    assert Entitlement.get_by_id(first.id).bytes_used == 0


def test_a_start_with_a_new_user_name_under_the_same_session_id_is_a_new_session(chilli):
    nas, hs = chilli
    session = nas.login(MAC)
    again = nas.add_session("hs7", mac=session.mac, acct_session_id=session.acct_session_id)
    nas._accounting(1, again)          # the UAM logon's Start, same second, same id
    assert [r.username for r in rows(MAC)] == ["AA-BB-CC-DD-EE-20", "hs7"]
    assert [r.online for r in rows(MAC)] == [False, True]


def test_octets_are_counted_from_the_clients_side(chilli):
    nas, hs = chilli
    ent = give_time(MAC)
    session = nas.login(MAC, cls=f"hotspotd:{ent.id}".encode())
    nas.report(session, downloaded=50_000, uploaded=2_000)
    row = rows(MAC)[0]
    # stored as RFC 2866 has it: input = from the client (upload), output = to it (download)
    assert (row.input_octets, row.output_octets) == (2_000, 50_000)
    assert Entitlement.get_by_id(ent.id).bytes_used == 52_000


def test_swapoctets_chilli_is_taken_as_it_reports(make_hotspot):
    from radius.testing.nas import NasSimulator

    from tests.helpers import RADIUS
    with NasSimulator(secret=COOVA_SECRET, swapoctets=True) as nas:
        hs = make_hotspot(radius={**RADIUS, "clients": [{"address": "127.0.0.1", "secret": COOVA_SECRET,
                                                        "kind": "coova", "swapoctets": True}]})
        nas.radius_server = hs.radius.acct_address
        session = nas.login(MAC)
        nas.report(session, downloaded=50_000, uploaded=2_000)
        assert (rows(MAC)[0].input_octets, rows(MAC)[0].output_octets) == (2_000, 50_000)


radclient = shutil.which("radclient")


@pytest.mark.skipif(radclient is None, reason="radclient (freeradius-utils) is installed by scripts/bootstrap")
def test_radclient_accounting_off_without_a_session_id_ends_the_nas_sessions(chilli):
    nas, hs = chilli
    nas.login(MAC)
    wait_for(lambda: online() == 1)
    host, port = hs.radius.acct_address
    out = subprocess.run([radclient, "-x", "-r", "1", "-t", "2", f"{host}:{port}", "acct", COOVA_SECRET],
                         input="Acct-Status-Type = Accounting-Off\nNAS-Identifier = nas01\nNAS-IP-Address = 10.1.0.1\n",
                         capture_output=True, text=True, timeout=20)
    assert "Received Accounting-Response" in out.stdout + out.stderr, out.stdout + out.stderr
    assert online() == 0 and rows(MAC)[0].terminate_cause == "Accounting-Off"


def test_extend_on_the_dashboard_reaches_chilli_as_a_coa(chilli, http):
    from hotspotd import admins

    from tests.helpers import PASSWORD, post, sign_in
    nas, hs = chilli
    admins.create("owner", PASSWORD)
    assert sign_in(hs, http).status_code == 200
    ent = give_time(MAC, seconds=600, data_cap=1_000_000, rate="1M/4M")
    session = nas.login(MAC, cls=f"hotspotd:{ent.id}".encode(), limits={"Session-Timeout": 600})
    session.started -= 100              # online for 100 s already
    nas.report(session, downloaded=300_000, uploaded=100_000)
    r = post(hs, http, "/admin/sessions", f"/admin/sessions/{ent.id}/extend", minutes="30")
    assert r.status_code == 200
    wait_for(lambda: nas.requests and nas.requests[-1].code == 43)
    limits = nas.sessions()[0].limits
    # chilli counts Session-Timeout and the octet cap from the session's start, and clears what a CoA omits
    assert 100 + 600 + 1800 - 5 <= limits["Session-Timeout"] <= 100 + 600 + 1800 + 5
    assert limits["ChilliSpot-Max-Total-Octets"] == 1_000_000
    assert limits["Idle-Timeout"] == 600 and limits["WISPr-Bandwidth-Max-Down"] == 4_000_000
    assert nas.requests[-1].reply_code == 44 and nas.online() == ["AA-BB-CC-DD-EE-20"]
