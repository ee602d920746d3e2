"""Cutting expired devices off at a (simulated) MikroTik over the real RouterOS API."""
import pytest
from pyrad import packet

from hotspotd import clock, disconnects
from hotspotd.storage.models import AcctSession, Disconnect, Entitlement, Event
from hotspotd.testing.routeros import RouterOSSimulator

from tests.helpers import give_time, start_mikrotik, wait_for

#: run again on PostgreSQL by scripts/test (-m postgres)
pytestmark = pytest.mark.postgres

MAC = "AA:BB:CC:DD:EE:10"
MAC2 = "AA:BB:CC:DD:EE:11"


@pytest.fixture
def sim():
    with RouterOSSimulator(username="hotspotd", password="pw") as s:
        yield s


def router_entry(sim, **overrides):
    address, port = sim.address
    return {"name": "gate", "kind": "mikrotik", "address": address, "api_port": port, "user": "hotspotd",
            "password": "pw", **overrides}


@pytest.fixture
def venue(make_hotspot, sim):
    return make_hotspot(routers=[router_entry(sim)], scheduler={"enabled": False})


def end_now(ent):
    Entitlement.update(expires_at=clock.now() - 1).where(Entitlement.id == ent.id).execute()


def test_expired_session_is_removed_with_its_cookie_and_verified_gone(venue, sim):
    ent = give_time(MAC)
    sim.login(MAC, "10.5.50.10", "hs1", cookie=True)
    assert sim.active_macs() == [MAC] and sim.cookies_for(MAC)
    assert venue.expire_sessions() == 0          # still paid: nothing happens
    assert sim.active_macs() == [MAC]
    end_now(ent)
    assert venue.expire_sessions() == 1
    assert sim.active_macs() == [] and sim.cookies_for(MAC) == []
    row = Disconnect.get()
    assert (row.status, row.router, row.mac, row.attempts) == ("done", "gate", MAC, 1)
    removed = [c for c in sim.commands if c.command.endswith("/remove")]
    assert {c.command for c in removed} == {"/ip/hotspot/active/remove", "/ip/hotspot/cookie/remove"}
    assert Event.select().where(Event.kind == "disconnected", Event.mac == MAC).count() == 1
    assert Entitlement.get_by_id(ent.id).status == "expired"
    # the next run has nothing to do
    venue.expire_sessions()
    assert Disconnect.select().count() == 1


def test_unreachable_router_is_retried_with_backoff_then_completes(venue, sim):
    ents = [give_time(MAC), give_time(MAC2)]
    sim.login(MAC, "10.5.50.10", "hs1")
    sim.login(MAC2, "10.5.50.11", "hs2")
    sim.set_unreachable(True)
    for ent in ents:
        end_now(ent)
    t0 = clock.now()
    disconnects.expire_and_queue(venue.cutters, now=t0)
    out = disconnects.run_due(venue.cutters, now=t0)
    # one attempt reaches the dead router; the second device is deferred, not another timeout
    assert out == {"failed": 1, "deferred": 1}
    assert disconnects.run_due(venue.cutters, now=t0 + 1) == {}   # backoff: nothing due yet
    t = t0
    for _ in range(4):
        t += disconnects.MAX_RETRY_SECONDS
        disconnects.run_due(venue.cutters, now=t)
    # five runs, one attempt each, shared by the two rows (the deferred one goes first next time)
    rows = list(Disconnect.select().order_by(Disconnect.attempts.desc()))
    assert [(r.status, r.attempts) for r in rows] == [("failing", 3), ("pending", 2)]
    assert disconnects.problems() == rows[:1], "the owner must see the failing cut"
    assert "cannot connect" in (disconnects.problems()[0].last_error or "")
    assert Event.select().where(Event.kind == "disconnect_failed").count() >= 4
    assert sorted(sim.active_macs()) == [MAC, MAC2]       # nothing was cut while unreachable
    sim.set_unreachable(False)
    out = disconnects.run_due(venue.cutters, now=t + disconnects.MAX_RETRY_SECONDS)
    assert out == {"done": 2}
    assert sim.active_macs() == [] and disconnects.problems() == []


def test_cut_gives_up_after_a_day_and_stays_visible(venue, sim):
    ent = give_time(MAC)
    sim.set_unreachable(True)
    end_now(ent)
    t0 = clock.now()
    disconnects.expire_and_queue(venue.cutters, now=t0)
    disconnects.run_due(venue.cutters, now=t0)
    disconnects.run_due(venue.cutters, now=t0 + disconnects.GIVE_UP_SECONDS + 1)
    row = Disconnect.get()
    assert row.status == "failed" and row.attempts == 2
    assert disconnects.problems() == [row]


def test_device_that_bought_more_time_is_not_cut(venue, sim):
    ent = give_time(MAC)
    sim.login(MAC, "10.5.50.10", "hs1")
    end_now(ent)
    t0 = clock.now()
    disconnects.expire_and_queue(venue.cutters, now=t0)
    give_time(MAC)                                  # paid again before the job reached the router
    assert disconnects.run_due(venue.cutters, now=clock.now()) == {"cancelled": 1}
    assert sim.active_macs() == [MAC]
    assert Disconnect.get().status == "cancelled"


def test_scheduler_cuts_off_on_time(make_hotspot, sim):
    hs = make_hotspot(routers=[router_entry(sim)], scheduler={"expire_every_seconds": 0.2})
    give_time(MAC, seconds=1)
    sim.login(MAC, "10.5.50.10", "hs1")
    wait_for(lambda: sim.active_macs() == [], timeout=10)
    wait_for(lambda: Disconnect.get_or_none(Disconnect.status == "done"), timeout=5)
    assert hs.scheduler.runs.get("expire", 0) >= 1


def test_wrong_api_password_is_a_visible_failure(make_hotspot, sim):
    hs = make_hotspot(routers=[router_entry(sim, password="wrong")], scheduler={"enabled": False})
    ent = give_time(MAC)
    sim.login(MAC, "10.5.50.10", "hs1")
    end_now(ent)
    hs.expire_sessions()
    row = Disconnect.get()
    assert row.status == "pending" and row.attempts == 1 and "refused" in row.last_error
    assert sim.active_macs() == [MAC]


def test_coova_session_is_ended_by_disconnect_request(make_hotspot):
    from radius.testing.nas import NasSimulator
    with NasSimulator(secret="coasecret") as nas:
        address, port = nas.address
        routers = [{"name": "chilli", "kind": "coova", "address": address, "coa_port": port, "secret": "coasecret"}]
        hs = make_hotspot(routers=routers, scheduler={"enabled": False})
        ent = give_time(MAC)
        nas.add_session("AA-BB-CC-DD-EE-10", mac="AA-BB-CC-DD-EE-10")
        nas.add_session("AA-BB-CC-DD-EE-99", mac="AA-BB-CC-DD-EE-99")   # someone else, still paid
        nas.set_unreachable(True)
        end_now(ent)
        hs.cutters["chilli"].timeout = 0.2
        hs.expire_sessions()
        row = Disconnect.get()
        assert row.status == "pending" and "no valid reply" in row.last_error
        nas.set_unreachable(False)
        disconnects.run_due(hs.cutters, now=clock.now() + disconnects.MAX_RETRY_SECONDS)
        assert Disconnect.get().status == "done"
        assert nas.online() == ["AA-BB-CC-DD-EE-99"]
        valid = [r for r in nas.requests if r.valid]
        assert len(valid) == 1 and valid[0].attributes["User-Name"] == ["AA-BB-CC-DD-EE-10"]


def test_data_cap_reached_in_accounting_cuts_the_device_at_once(make_hotspot):
    from pyrad import packet

    from tests.helpers import RADIUS, acct, client, send
    # the expire job's own interval is long: only the accounting report can have woken it
    hs = make_hotspot(radius=RADIUS, scheduler={"expire_every_seconds": 3600})
    ent = give_time("AA:BB:CC:DD:EE:01", data_cap=10_000)
    hs.routeros_sim.login("AA:BB:CC:DD:EE:01", "10.5.50.40", f"hs{ent.id}")
    c = client(hs)
    assert send(c, acct(c, "Interim-Update", in_oct=4000, out_oct=7000, ent=ent)).code == packet.AccountingResponse
    wait_for(lambda: hs.routeros_sim.active_macs() == [], timeout=10)
    assert Entitlement.get_by_id(ent.id).status == "exhausted"
    assert Disconnect.get().status == "done"


def test_slow_router_times_out_and_the_cut_completes_later(make_hotspot, sim):
    hs = make_hotspot(routers=[router_entry(sim, timeout_seconds=0.3)], scheduler={"enabled": False})
    ent = give_time(MAC)
    sim.login(MAC, "10.5.50.10", "hs1")
    sim.set_latency(1.0)                        # every answer later than we wait
    end_now(ent)
    hs.expire_sessions()
    row = Disconnect.get()
    assert row.status == "pending" and row.attempts == 1 and "no answer in time" in row.last_error
    sim.set_latency(0)
    disconnects.run_due(hs.cutters, now=clock.now() + disconnects.MAX_RETRY_SECONDS)
    assert Disconnect.get().status == "done" and sim.active_macs() == []


# --- CoovaChilli as it really behaves (radius/testing/nas.py) ------------------------------------
@pytest.fixture
def chilli(make_hotspot):
    from tests.helpers import start_chilli
    nas, hs = start_chilli(make_hotspot)
    yield nas, hs
    nas.stop()


def acct_rows(mac):
    from hotspotd.storage.models import AcctSession
    return list(AcctSession.select().where(AcctSession.mac == mac).order_by(AcctSession.id))


def test_a_session_chilli_ended_itself_needs_no_cut(chilli):
    nas, hs = chilli
    ent = give_time(MAC)
    session = nas.login(MAC, cls=f"hotspotd:{ent.id}".encode())
    wait_for(lambda: acct_rows(MAC) and acct_rows(MAC)[0].online)
    nas.end(session)                       # chilli's own Session-Timeout: Stop before our expiry runs
    assert not acct_rows(MAC)[0].online
    end_now(ent)
    assert hs.expire_sessions() == 1
    row = Disconnect.get()
    assert (row.status, row.last_error) == ("done", None)
    assert nas.requests == [], "no Disconnect-Request for a session whose Stop is recorded"
    assert disconnects.problems() == []
    assert "accounting Stop" in Event.get(Event.kind == "disconnected").message


def test_a_bare_nak_without_an_open_session_is_gone_with_one_it_is_not(chilli):
    nas, hs = chilli
    other = "AA:BB:CC:DD:EE:12"
    ents = [give_time(MAC), give_time(other)]
    nas.login(other)                       # its Start is recorded: the session is open
    wait_for(lambda: acct_rows(other))
    nas.crash()                            # chilli lost it; no Accounting-On yet
    for ent in ents:
        end_now(ent)
    hs.expire_sessions()
    rows = {r.mac: r for r in Disconnect.select()}
    # no accounting at all for MAC: chilli's NAK without Error-Cause means "no such session"
    assert rows[MAC].status == "done"
    assert rows[other].status == "pending" and rows[other].attempts == 1, "open in accounting: not proven gone"
    assert [r.reply_code for r in nas.requests] == [42, 42]


def test_disconnect_of_a_live_session_is_acked_and_chilli_sends_its_stop(chilli):
    nas, hs = chilli
    ent = give_time(MAC)
    nas.login(MAC, cls=f"hotspotd:{ent.id}".encode())
    wait_for(lambda: acct_rows(MAC))
    end_now(ent)
    hs.expire_sessions()
    assert Disconnect.get().status == "done" and nas.online() == []
    sent = nas.requests[-1]
    assert sent.attributes["User-Name"] == ["AA-BB-CC-DD-EE-10"]
    assert sent.attributes["Acct-Session-Id"] == [acct_rows(MAC)[0].acct_session_id]
    wait_for(lambda: acct_rows(MAC)[0].terminate_cause == "Admin-Reset")


def test_disconnect_now_goes_out_at_once_past_an_older_cut_in_backoff(chilli):
    from hotspotd import access
    nas, hs = chilli
    end_now(give_time(MAC))
    nas.set_unreachable(True)
    hs.cutters["chilli"].timeout = 0.1
    hs.expire_sessions()                                        # an older cut, now in backoff
    assert Disconnect.get().next_at > clock.now() + 1
    nas.set_unreachable(False)
    ent = give_time(MAC)                                        # the customer buys again
    nas.add_session("AA-BB-CC-DD-EE-10")
    hs.cut_off(access.revoke(ent.id, "owner"), ent.id, "owner")  # the owner's "Disconnect now"
    assert disconnects.run_due(hs.cutters) == {"done": 1}, "the owner's cut must not wait for the backoff"
    assert nas.online() == [] and Disconnect.select().count() == 1


def test_disconnect_requests_go_out_from_the_radius_listen_address(make_hotspot):
    from radius.testing.nas import NasSimulator

    from tests.helpers import COOVA_CLIENTS, RADIUS, coova_router
    # chilli takes CoA/Disconnect only from its radiusserver's address; this host has others too
    with NasSimulator(secret="testing123", allowed_sources=("127.0.0.2",)) as nas:
        hs = make_hotspot(radius={**RADIUS, "listen": "127.0.0.2", "clients": COOVA_CLIENTS},
                          routers=[coova_router(nas)], scheduler={"enabled": False})
        ent = give_time(MAC)
        nas.add_session("AA-BB-CC-DD-EE-10")
        end_now(ent)
        hs.cutters["chilli"].timeout = 0.3
        hs.expire_sessions()
        assert Disconnect.get().status == "done" and nas.online() == []
        assert nas.stats["dropped_source"] == 0 and nas.requests[-1].source[0] == "127.0.0.2"


def test_source_address_of_a_router_is_used_for_its_requests(make_hotspot):
    from radius.testing.nas import NasSimulator

    from tests.helpers import coova_router
    with NasSimulator(secret="testing123", allowed_sources=("127.0.0.3",)) as nas:
        hs = make_hotspot(routers=[coova_router(nas, source_address="127.0.0.3")], scheduler={"enabled": False})
        ent = give_time(MAC)
        nas.add_session("AA-BB-CC-DD-EE-10")
        end_now(ent)
        hs.cutters["chilli"].timeout = 0.3
        hs.expire_sessions()
        assert Disconnect.get().status == "done" and nas.requests[-1].source[0] == "127.0.0.3"


# --- a MikroTik cut by Disconnect-Request (disconnect = "coa"), its RADIUS side simulated ------------
MT_IP = "10.5.50.40"


@pytest.fixture
def coa_mikrotik(make_hotspot):
    """hotspotd told of the simulated MikroTik with disconnect = "coa" and API credentials."""
    venue = start_mikrotik(make_hotspot, router={})
    yield venue
    venue.stop()


def mikrotik_session(venue, accounting=True):
    if not accounting:      # hotspotd then knows no Acct-Session-Id for it
        venue.router.configure("/ip/hotspot/profile", {"name": "hsprof1"}, radius_accounting="false")
    ent = give_time(MAC)
    venue.router.add_host(MAC, MT_IP)                  # MAC login
    assert venue.router.active_macs() == [MAC]
    if accounting:
        wait_for(lambda: AcctSession.get_or_none(AcctSession.mac == MAC, AcctSession.online))
    return ent


def test_a_mikrotik_disconnect_names_the_session_as_its_accounting_did_and_is_read_back(coa_mikrotik):
    venue = coa_mikrotik
    end_now(mikrotik_session(venue))
    venue.hs.expire_sessions()
    (seen,) = venue.radius.received
    assert seen.code == packet.DisconnectRequest and seen.reply_code == packet.DisconnectACK
    a = seen.attributes
    assert a["User-Name"] == [MAC] and a["Calling-Station-Id"] == [MAC]       # the router's own MAC form
    assert a["Acct-Session-Id"] == ["80f00001"] and a["Framed-IP-Address"] == [MT_IP]
    assert venue.router.active_macs() == []
    assert Disconnect.get().status == "done"
    # the answer was checked over the API, and the router's Stop says why the session ended
    assert any(c.command == "/ip/hotspot/active/print" for c in venue.router.commands)
    wait_for(lambda: AcctSession.get_or_none(AcctSession.mac == MAC, AcctSession.terminate_cause == "Admin-Reset"))


def test_a_mikrotik_nak_is_not_gone_while_its_api_shows_the_device_online(coa_mikrotik):
    # RouterOS's Disconnect matching and its NAK's Error-Cause are undocumented: the stand-in NAKs
    # what it cannot match with 503 while the device is online; only the API can tell
    venue = coa_mikrotik
    end_now(mikrotik_session(venue, accounting=False))
    venue.hs.expire_sessions()
    (seen,) = venue.radius.received
    assert seen.reply_code == packet.DisconnectNAK and seen.error_cause == 503
    assert "Acct-Session-Id" not in seen.attributes
    assert venue.router.active_macs() == [MAC]
    cut = Disconnect.get()
    assert cut.status == "pending" and cut.last_error == "still online after the cut"
    venue.router.logout(MAC, "Admin-Reset")            # gone at the router: the API read-back says so
    Disconnect.update(next_at=0).execute()
    disconnects.run_due(venue.hs.cutters)
    assert Disconnect.get().status == "done"


def test_without_api_a_mikrotik_nak_is_retried_and_shown_until_accounting_has_the_stop(make_hotspot):
    venue = start_mikrotik(make_hotspot, router={"user": "", "password": ""})
    try:
        end_now(mikrotik_session(venue, accounting=False))
        venue.hs.expire_sessions()
        for _ in range(2):
            Disconnect.update(next_at=0).execute()
            disconnects.run_due(venue.hs.cutters)
        assert [r.reply_code for r in venue.radius.received] == [packet.DisconnectNAK] * 3
        cut = Disconnect.get()
        assert cut.status == "failing" and disconnects.problems() == [cut]   # the owner sees it
        assert venue.router.active_macs() == [MAC]
        # the router ends it (its owner at the console) and says so in accounting: that is proof
        venue.router.configure("/ip/hotspot/profile", {"name": "hsprof1"}, radius_accounting="true")
        venue.router.logout(MAC, "Admin-Reset")
        wait_for(lambda: AcctSession.get_or_none(AcctSession.mac == MAC, AcctSession.online == False))  # noqa: E712
        Disconnect.update(next_at=0).execute()
        disconnects.run_due(venue.hs.cutters)
        assert Disconnect.get().status == "done" and len(venue.radius.received) == 3   # nothing more sent
    finally:
        venue.stop()


def test_a_mikrotik_stand_in_matches_only_on_all_three_identifiers(coa_mikrotik):
    from radius.disconnect import send_disconnect
    venue = coa_mikrotik
    mikrotik_session(venue)
    host, port = venue.radius.incoming_address
    ask = dict(user_name=MAC, acct_session_id="80f00001", framed_ip=MT_IP, timeout=1, retries=1)
    for missing in ("acct_session_id", "framed_ip"):
        result = send_disconnect(host, port, "testing123", **{**ask, missing: None})
        assert not result.acked and result.error_cause == 503
    wrong_form = send_disconnect(host, port, "testing123", calling_station_id=MAC.replace(":", "-"), **ask)
    assert not wrong_form.acked and venue.router.active_macs() == [MAC]
    assert send_disconnect(host, port, "testing123", calling_station_id=MAC, **ask).acked
    assert venue.router.active_macs() == []


def test_extend_reaches_a_live_mikrotik_session_by_coa(coa_mikrotik):
    venue = coa_mikrotik
    ent = mikrotik_session(venue)
    (before,) = venue.router.sessions().values()
    venue.hs.extend(ent.id, 3600, "test")
    wait_for(lambda: venue.radius.received)
    seen = venue.radius.received[0]
    assert seen.code == packet.CoARequest and seen.reply_code == packet.CoAACK
    (after,) = venue.router.sessions().values()
    assert after["_limits"].session_timeout >= before["_limits"].session_timeout + 3590
