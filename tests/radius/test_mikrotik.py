"""hotspotd's RADIUS server against a MikroTik hotspot as it behaves (hotspotd/testing/routeros.py
with its RADIUS side, radius/testing/mikrotik.py): its MAC and CHAP logins, its accounting, the
sessions it ends itself, and RouterOS before 7.15 without Message-Authenticator."""
from __future__ import annotations

import logging

import pytest
from pyrad import packet

from hotspotd import router_login
from hotspotd.config import from_dict
from hotspotd.routers.mikrotik import MikroTikRouter
from hotspotd.storage.models import AcctSession, Entitlement
from hotspotd.testing.routeros import routeros_version
from radius.testing.mikrotik import chap_variables, mac_format

from tests.helpers import DICT, MIKROTIK_SECRET, RADIUS, give_time, start_mikrotik, wait_for

#: run again on PostgreSQL by scripts/test (-m postgres)
pytestmark = pytest.mark.postgres

MAC = "AA:BB:CC:DD:EE:31"
IP = "10.5.50.31"


@pytest.fixture
def mikrotik(make_hotspot):
    venue = start_mikrotik(make_hotspot)
    yield venue
    venue.stop()


def row():
    rows = list(AcctSession.select().where(AcctSession.mac == MAC).order_by(AcctSession.id))
    return rows[-1] if rows else None


def stopped(cause):
    """The accounting row once its Stop with ``cause`` is recorded."""
    return wait_for(lambda: (r := row()) is not None and not r.online and r.terminate_cause == cause and r, timeout=10)


def test_mac_login_is_asked_as_routeros_asks_and_the_accept_becomes_its_session(mikrotik):
    ent = give_time(MAC, seconds=3600, data_cap=5 * 2**32 + 1000, rate="2M/5M")
    mikrotik.router.add_host(MAC, IP)                     # the device's first packet through the hotspot
    assert mikrotik.router.active_macs() == [MAC]
    ask = mikrotik.radius.requests("auth")[0]
    a = ask.attributes
    assert a["User-Name"] == [MAC] and a["Calling-Station-Id"] == [MAC] and a["Called-Station-Id"] == ["hotspot1"]
    assert a["NAS-Identifier"] == ["hotspotd-sim"] and a["NAS-Port-Type"] == ["Ethernet"]
    assert a["NAS-Port-Id"] == ["bridge-hotspot"] and a["Service-Type"] == ["Login-User"]
    assert a["Framed-IP-Address"] == [IP] and a["Mikrotik-Host-IP"] == [IP] and a["NAS-IP-Address"] == ["127.0.0.1"]
    assert a["Acct-Session-Id"] == ["80f00001"] and "CHAP-Password" not in a
    req = packet.AuthPacket(packet=ask.raw, secret=MIKROTIK_SECRET.encode(), dict=DICT)
    assert req.PwDecrypt(req["User-Password"][0]) == ""  # mac-as-username: the empty mac-auth-password
    assert ask.message_authenticator and ask.reply_code == packet.AccessAccept   # 7.18 with require-message-auth=yes
    active = mikrotik.router.sessions()
    (item,) = active.values()
    limits = item["_limits"]
    assert 3590 <= limits.session_timeout <= 3600 and limits.idle_timeout == 600
    assert limits.total == 5 * 2**32 + 1000 and item["radius"] == "true" and item["login-by"] == "mac"
    session = mikrotik.radius.session(MAC)
    assert session.cls == f"hotspotd:{ent.id}".encode() and session.rate_limit == "2M/5M" and session.interim == 120
    # the Start reaches hotspotd: the device is online by accounting, under the router's own identifiers
    r = wait_for(row)
    assert r.online and r.acct_session_id == "80f00001" and r.ip == IP and r.entitlement_id == ent.id
    assert r.username == MAC


def test_an_unpaid_device_is_refused_and_stays_off(mikrotik):
    mikrotik.router.add_host(MAC, IP)
    assert mikrotik.router.active_macs() == []
    ask = mikrotik.radius.requests("auth")[0]
    assert ask.reply_code == packet.AccessReject and "portal" in ask.reply_attributes["Reply-Message"][0]
    assert mikrotik.radius.requests("acct") == [] and row() is None


@pytest.mark.parametrize("fmt, mode, user, password", [
    ("XX-XX-XX-XX-XX-XX", "mac-as-username-and-password", "AA-BB-CC-DD-EE-31", "AA-BB-CC-DD-EE-31"),
    ("xxxxxxxxxxxx", "mac-as-username", "aabbccddee31", ""),
])
def test_each_radius_mac_format_is_understood(mikrotik, fmt, mode, user, password):
    mikrotik.router.configure("/ip/hotspot/profile", {"name": "hsprof1"}, radius_mac_format=fmt, mac_auth_mode=mode)
    give_time(MAC)
    mikrotik.router.add_host(MAC, IP)
    assert mikrotik.router.active_macs() == [MAC]
    ask = mikrotik.radius.requests("auth")[0]
    req = packet.AuthPacket(packet=ask.raw, secret=MIKROTIK_SECRET.encode(), dict=DICT)
    assert req["User-Name"] == [user] and req.PwDecrypt(req["User-Password"][0]) == password
    assert req["Calling-Station-Id"] == [MAC]             # always capitals with colons


def test_the_browsers_chap_login_to_link_login_only(mikrotik):
    give_time(None, login=("VOUCHER1", "s3cret"))
    page = mikrotik.radius.login_page(MAC)                # $(chap-id), $(chap-challenge): octal escapes
    assert page["chap-id"].startswith("\\") and len(page["chap-challenge"]) == 64
    answer = router_login.mikrotik_chap_password(page["chap-id"], "s3cret", page["chap-challenge"])
    assert mikrotik.radius.browser_login(MAC, IP, "VOUCHER1", answer)
    ask = mikrotik.radius.requests("auth")[-1]
    assert "User-Password" not in ask.attributes and len(ask.attributes["CHAP-Challenge"][0]) == 16
    assert ask.reply_code == packet.AccessAccept and mikrotik.router.active_macs() == [MAC]
    assert mikrotik.router.sessions().popitem()[1]["login-by"] == "http-chap"
    page = mikrotik.radius.login_page("AA:BB:CC:DD:EE:32")
    wrong = router_login.mikrotik_chap_password(page["chap-id"], "guess", page["chap-challenge"])
    assert not mikrotik.radius.browser_login("AA:BB:CC:DD:EE:32", "10.5.50.32", "VOUCHER1", wrong)


def test_the_api_login_asks_with_chap_after_the_mac_login_was_refused(mikrotik):
    give_time(None, login=("VOUCHER2", "pw2"))
    mikrotik.router.add_host(MAC, IP)                     # MAC login: no time on this MAC
    assert mikrotik.router.active_macs() == []
    entry = mikrotik.router_entry()
    cfg = from_dict({"routers": [entry]}, "test")
    with MikroTikRouter(cfg.routers[0], timeout=5) as api:
        api.login(MAC, IP, "VOUCHER2", "pw2")
    asks = mikrotik.radius.requests("auth")
    assert [a.reply_code for a in asks] == [packet.AccessReject, packet.AccessAccept]
    assert "CHAP-Password" in asks[1].attributes and asks[1].attributes["User-Name"] == ["VOUCHER2"]
    assert mikrotik.router.active_macs() == [MAC]


def test_accounting_start_interim_and_stop_carry_the_routers_counters(make_hotspot):
    venue = start_mikrotik(make_hotspot, radius={**RADIUS, "interim_interval": 1})
    try:
        ent = give_time(MAC)
        venue.router.add_host(MAC, IP)
        venue.router.send_traffic(MAC, up=1000, down=5000)
        # radius-interim-update=received: every Acct-Interim-Interval (1 s here) an Interim-Update
        wait_for(lambda: AcctSession.get_or_none(AcctSession.mac == MAC, AcctSession.output_octets == 5000))
        r = row()
        assert r.online and r.input_octets == 1000 and r.output_octets == 5000   # input: the client's upload
        assert Entitlement.get_by_id(ent.id).bytes_used == 6000
        interim = venue.radius.requests("acct", "Interim-Update")[0].attributes
        assert interim["Class"] == [f"hotspotd:{ent.id}".encode()] and "Acct-Delay-Time" in interim
        assert interim["Acct-Input-Packets"] == [1] and interim["Acct-Session-Id"] == ["80f00001"]
        venue.router.send_traffic(MAC, up=2**32, down=0)
        assert venue.router.logout(MAC)                   # the customer's own logout
        r = stopped("User-Request")
        assert r.input_octets == 2**32 + 1000 and Entitlement.get_by_id(ent.id).bytes_used == 2**32 + 6000
        stop = venue.radius.requests("acct", "Stop")[0].attributes
        assert stop["Acct-Input-Gigawords"] == [1] and stop["Acct-Terminate-Cause"] == ["User-Request"]
    finally:
        venue.stop()


def test_the_router_ends_a_session_at_its_session_timeout(mikrotik):
    give_time(MAC, seconds=2)
    mikrotik.router.add_host(MAC, IP)
    assert mikrotik.router.active_macs() == [MAC]
    stopped("Session-Timeout")                            # the router's own doing: no API call, no cut
    assert mikrotik.router.active_macs() == []


def test_the_router_ends_a_quiet_session_at_its_idle_timeout(make_hotspot):
    venue = start_mikrotik(make_hotspot, radius={**RADIUS, "idle_timeout": 1})
    try:
        give_time(MAC)
        venue.router.add_host(MAC, IP)
        assert venue.router.active_macs() == [MAC]
        stopped("Idle-Timeout")
        assert venue.router.active_macs() == []
    finally:
        venue.stop()


def test_the_router_ends_a_session_at_its_total_limit_with_gigawords(mikrotik):
    ent = give_time(MAC, data_cap=2**32 + 100)
    mikrotik.router.add_host(MAC, IP)
    assert mikrotik.router.send_traffic(MAC, up=10, down=2**32) and mikrotik.router.active_macs() == [MAC]
    mikrotik.router.send_traffic(MAC, down=100)           # in + out reach Total-Limit + Gigawords << 32
    assert mikrotik.router.active_macs() == []
    r = stopped("Session-Timeout")
    assert r.input_octets + r.output_octets == 2**32 + 110
    mikrotik.hs.expire_sessions()
    assert Entitlement.get_by_id(ent.id).status == "exhausted"


def test_a_graceful_reboot_stops_every_session_with_nas_reboot(mikrotik):
    give_time(MAC)
    mikrotik.router.add_host(MAC, IP)
    wait_for(row)
    mikrotik.radius.reboot()
    assert mikrotik.router.active_macs() == []
    stopped("NAS-Reboot")


def test_routeros_before_7_15_sends_no_message_authenticator_and_is_named(make_hotspot, caplog):
    from hotspotd.health import live
    with caplog.at_level(logging.WARNING, logger="radius.server"):
        venue = start_mikrotik(make_hotspot, version="7.14.3 (stable)", timeout=0.3)
        try:
            assert "require-message-auth" not in venue.router.menu("/radius")[0]
            give_time(MAC)
            venue.router.add_host(MAC, IP)
            assert venue.router.active_macs() == []       # dropped by hotspotd: the device cannot get on
            (ask,) = venue.radius.requests("auth")
            assert not ask.message_authenticator and b"\x50\x12" not in ask.raw[20:22]
            assert "Message-Authenticator" not in ask.attributes and ask.reply_code is None
            check = next(c for c in live.run(venue.hs) if c.key == "radius")
        finally:
            venue.stop()
    said = [r.getMessage() for r in caplog.records if "without Message-Authenticator" in r.getMessage()]
    assert len(said) == 1 and "RouterOS before 7.15" in said[0]
    wait_for(lambda: venue.hs.radius.no_message_authenticator["127.0.0.1"] == 3)   # three sends, one warning
    assert check.state == "warn" and any("RouterOS before 7.15" in i for i in check.items)


def test_routeros_before_7_15_gets_on_when_its_client_entry_is_relaxed(make_hotspot):
    venue = start_mikrotik(make_hotspot, version="7.14.3 (stable)",
                           radius={**RADIUS, "clients": [{"address": "127.0.0.1", "secret": MIKROTIK_SECRET,
                                                          "require_message_authenticator": False}]})
    try:
        give_time(MAC)
        venue.router.add_host(MAC, IP)
        assert venue.router.active_macs() == [MAC]
        assert not venue.radius.requests("auth")[0].message_authenticator
    finally:
        venue.stop()


def test_routeros_7_15_sends_one_only_with_require_message_auth(mikrotik):
    mikrotik.router.configure("/radius", None, require_message_auth="no")
    give_time(MAC)
    mikrotik.router.add_host(MAC, IP)
    assert not mikrotik.radius.requests("auth")[0].message_authenticator   # hotspotd drops it: not online
    assert mikrotik.router.active_macs() == []


def test_versions_compare_as_numbers_and_mac_formats():
    assert routeros_version("7.9 (stable)") < (7, 15) <= routeros_version("7.15") < routeros_version("7.18.2 (stable)")
    assert mac_format("aa:bb:cc:00:11:22", "XXXX.XXXX.XXXX") == "AABB.CC00.1122"
    assert chap_variables(b"\xf9", b"\x00A") == {"chap-id": "\\371", "chap-challenge": "\\000\\101"}
    assert router_login.unescape_octal(chap_variables(b"\xf9", b"")["chap-id"]) == b"\xf9"
