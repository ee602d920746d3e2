"""The router read-back (hotspotd.readback) against the RouterOS simulator over its real API:
what the router says is online is corrected against what was sold."""
import pytest

from hotspotd.health import live
from hotspotd.storage.models import AcctSession, Disconnect, Event

from tests.helpers import FakeNdsAgent, give_time

#: run again on PostgreSQL by scripts/test (-m postgres)
pytestmark = pytest.mark.postgres

UNPAID, PAID, GONE, STAFF = "AA:BB:CC:00:71:01", "AA:BB:CC:00:71:02", "AA:BB:CC:00:71:03", "AA:BB:CC:00:71:04"


@pytest.fixture
def hs(make_hotspot):
    # the job is run by hand here: the scheduler would race the test's own reads
    return make_hotspot(scheduler={"enabled": False})


def test_a_device_online_without_time_is_cut_and_a_users_own_login_is_left(hs):
    sim = hs.routeros_sim
    sim.login(UNPAID, "10.5.50.71", UNPAID)          # a MAC login hotspotd never paid for
    sim.login(STAFF, "10.5.50.74", "staff")          # a user the owner made on the router
    assert hs.read_back() == 1
    drift = hs.readback.last["simulated-mikrotik"]
    assert drift.cut == [UNPAID] and drift.foreign == [f"{STAFF} (staff)"] and drift.online == 2
    assert sim.active_macs() == [STAFF]                                 # cut at the router, over the API
    assert Disconnect.get(Disconnect.mac == UNPAID).status == "done"


def test_a_paid_device_the_router_logged_out_is_logged_back_in(hs):
    ent = give_time(PAID, seconds=3600)
    hs.routeros_sim.add_host(PAID, "10.5.50.72")                 # seen by the hotspot, not logged in
    assert hs.read_back() == 1
    assert hs.readback.last["simulated-mikrotik"].logged_in == [PAID]
    row = next(r for r in hs.routeros_sim.rows("/ip/hotspot/active") if r["mac-address"] == PAID)
    assert row["user"] == ent.login_user and row["address"] == "10.5.50.72"
    assert Event.select().where(Event.kind == "router_login", Event.mac == PAID).count() == 1
    assert hs.read_back() == 0                                   # now the router agrees: nothing to do


def test_accounting_the_router_no_longer_has_is_ended(hs):
    address = hs.api_routers[0].router.address
    give_time(GONE)
    AcctSession.create(nas=address, acct_session_id="80f00071", mac=GONE, started_at=0, updated_at=0)
    AcctSession.create(nas="10.9.9.9", acct_session_id="80f00072", mac=GONE, started_at=0, updated_at=0)
    assert hs.read_back() == 1
    assert [(a.nas, a.online) for a in AcctSession.select().order_by(AcctSession.id)] == [(address, False),
                                                                                           ("10.9.9.9", True)]
    assert AcctSession.get(AcctSession.nas == address).terminate_cause == "Lost-Service"


def test_the_health_page_and_metrics_show_the_drift(make_hotspot, http):
    hs = make_hotspot(scheduler={"enabled": False}, metrics={"enabled": True})
    checks = {c.key: c for c in live.run(hs)}
    assert checks["readback"].state == "info"                            # not run yet
    hs.routeros_sim.login(UNPAID, "10.5.50.71", UNPAID)
    hs.read_back()
    check = {c.key: c for c in live.run(hs)}["readback"]
    assert check.state == "warn" and "1 cut (no time): " + UNPAID in check.items[0]
    scrape = http.get(f"{hs.portal_url}/metrics").text
    assert 'hotspotd_router_drift{kind="cut",router="simulated-mikrotik"} 1.0' in scrape
    hs.read_back()
    assert {c.key: c for c in live.run(hs)}["readback"].state == "ok"


def test_a_router_that_cannot_be_read_is_reported_and_nothing_is_changed(hs):
    give_time(GONE)
    AcctSession.create(nas=hs.api_routers[0].router.address, acct_session_id="80f00073", mac=GONE,
                       started_at=0, updated_at=0)
    hs.routeros_sim.set_unreachable(True)
    assert hs.read_back() == 0
    assert hs.readback.last["simulated-mikrotik"].error
    assert AcctSession.get().online                              # not ended on a router's silence


def test_the_job_is_scheduled_with_its_interval(make_hotspot):
    assert make_hotspot().scheduler.has("readback")
    assert not make_hotspot(scheduler={"readback_every_seconds": 0}).scheduler.has("readback")


COOVA = {"name": "coova-1", "kind": "coova", "address": "127.0.0.9", "coa_port": 3799, "secret": "testing123",
         "uamsecret": "u"}


def test_a_coovachilli_is_read_back_from_its_accounting(make_hotspot):
    from hotspotd import clock
    hs = make_hotspot(scheduler={"enabled": False}, routers=[COOVA])
    assert "coova-1" in hs.readback.names()
    now = clock.now()
    give_time(PAID)
    for n, (mac, updated) in enumerate(((UNPAID, now - 30), (PAID, now - 30), (GONE, now - 3600))):
        AcctSession.create(nas="127.0.0.9", acct_session_id=f"1796{n:014d}", mac=mac, started_at=updated,
                           updated_at=updated)
    drift = next(d for d in hs.readback.run() if d.router == "coova-1")
    assert drift.cut == [UNPAID] and drift.ended == 1 and drift.online == 2
    assert Disconnect.get(Disconnect.mac == UNPAID).router == "coova-1"           # a Disconnect-Request queued
    assert not Disconnect.select().where(Disconnect.mac == PAID).exists()         # paid: left alone
    assert AcctSession.get(AcctSession.mac == GONE).terminate_cause == "Lost-Service"   # no Interim for an hour
    assert make_hotspot(routers=[COOVA]).scheduler.has("readback")               # scheduled for a chilli alone


NDS = {"name": "nds-1", "kind": "opennds", "address": "10.231.1.1", "faskey": "0123456789abcdef0123456789abcdef",
       "poll_seconds": 1, "timeout_seconds": 3}
NDS_UNPAID, NDS_PAID, NDS_BACK, NDS_STRANGER = (m.lower() for m in (UNPAID, PAID, GONE, STAFF))


def test_an_opennds_gateway_is_read_back_through_its_agent(make_hotspot, http):
    hs = make_hotspot(scheduler={"enabled": False}, metrics={"enabled": True}, routers=[NDS])
    assert "nds-1" in hs.readback.names()
    give_time(NDS_PAID)
    back = give_time(NDS_BACK)
    listed = f"auth {NDS_UNPAID} {NDS_PAID} pre {NDS_BACK} {NDS_STRANGER}"
    with FakeNdsAgent(hs, "nds-1", NDS["faskey"], listed) as agent:
        hs.read_back()
        drift = hs.readback.last["nds-1"]
        assert drift.online == 2 and drift.cut == [NDS_UNPAID] and not drift.error
        assert agent.cut == [NDS_UNPAID]                               # the agent's ndsctl deauth
        assert Disconnect.get(Disconnect.mac == NDS_UNPAID).status == "done"
        # openNDS dropped it (Preauthenticated again) though it has time: queued for authmon, by MAC
        assert drift.logged_in == [NDS_BACK]
        gateway = hs.opennds.by_name["nds-1"]
        assert gateway.pending() == [NDS_BACK]
        assert Event.get(Event.kind == "router_login", Event.mac == NDS_BACK).entitlement_id == back.id
        check = {c.key: c for c in live.run(hs)}["readback"]
        assert check.state == "warn" and f"1 cut (no time): {NDS_UNPAID}" in check.items[0]
        scrape = http.get(f"{hs.portal_url}/metrics").text
        assert 'hotspotd_router_drift{kind="cut",router="nds-1"} 1.0' in scrape
        assert 'hotspotd_router_drift{kind="logged_in",router="nds-1"} 1.0' in scrape
        agent.listed = f"auth {NDS_PAID} pre {NDS_BACK}"
        hs.read_back()                                                 # authmon has not come yet: not twice
        assert hs.readback.last["nds-1"].corrections == 0


def test_an_opennds_gateway_without_its_agent_is_reported_and_nothing_changed(make_hotspot):
    hs = make_hotspot(scheduler={"enabled": False}, routers=[NDS])
    assert hs.read_back() == 0
    assert "no client list" in hs.readback.last["nds-1"].error
    assert not Disconnect.select().exists()
    assert make_hotspot(routers=[NDS]).scheduler.has("readback")        # scheduled for a gateway alone
