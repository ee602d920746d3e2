"""After payment the device logs in at the router: the browser form (MikroTik CHAP/PAP, CoovaChilli
UAM) checked by playing the router's part against our RADIUS server, and the server-side API login."""
import hashlib
import html
import re
import threading

import pytest
from hypothesis import given, strategies as st
from pyrad import packet

from hotspotd import router_login
from hotspotd.storage.models import Event, Payment

from tests.helpers import chap_login, client, RADIUS, send, wait_for

#: run again on PostgreSQL by scripts/test (-m postgres)
pytestmark = pytest.mark.postgres

MAC = "AA:BB:CC:DD:EE:20"
CHAP_ID = "\\371"
CHAP_CHALLENGE = "\\123\\006\\250\\377\\000abc\\011\\176\\200\\201\\202\\203\\204\\205"


def test_unescape_octal_and_chap_match_mikrotik_login_page():
    assert router_login.unescape_octal("\\371") == b"\xf9"
    assert router_login.unescape_octal("a\\000b\\101") == b"a\x00bA"
    raw_challenge = router_login.unescape_octal(CHAP_CHALLENGE)
    assert len(raw_challenge) == 16
    expected = hashlib.md5(b"\xf9" + b"secret" + raw_challenge).hexdigest()
    assert router_login.mikrotik_chap_password(CHAP_ID, "secret", CHAP_CHALLENGE) == expected


@given(st.text(alphabet="0123456789abcdef", min_size=1, max_size=16),
       st.binary(min_size=16, max_size=16), st.text(max_size=20))
def test_coova_password_decodes_back(password, challenge, uamsecret):
    encoded = bytes.fromhex(router_login.coova_password(password, challenge.hex(), uamsecret))
    key = hashlib.md5(challenge + uamsecret.encode()).digest() if uamsecret else challenge
    assert bytes(a ^ b for a, b in zip(encoded, key)).rstrip(b"\0").decode() == password


@pytest.mark.parametrize("url, ok", [
    ("http://10.5.50.1/login", True), ("http://wifi.cafe/login", True), ("https://192.168.88.1/login", True),
    ("http://8.8.8.8/login", False), ("javascript:alert(1)", False), ("ftp://10.0.0.1/", False), ("", False)])
def test_credentials_only_go_to_a_local_router(url, ok):
    form = router_login.login_form({"link-login-only": url}, "hs1", "pw")
    assert (form is not None) == ok


def test_no_router_context_no_form():
    assert router_login.login_form(None, "u", "p") is None
    assert router_login.login_form({"uamip": "10.1.0.1", "challenge": "zz"}, "u", "p") is None


def hidden_fields(page: str) -> tuple[str, str, dict]:
    form = re.search(r'<form id="router-login" method="(\w+)" action="([^"]+)"', page)
    assert form, page
    fields = {m[0]: html.unescape(m[1]) for m in re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)"', page)}
    return form[1], html.unescape(form[2]), fields


def pay_on_splash(hs, http, ctx, phone="0708374149"):
    base = hs.portal_url
    r = http.post(f"{base}/pay", data={"phone": phone, "package": "2", **ctx})
    assert r.status_code == 200 and "/wait/" in r.url
    return wait_for(lambda: (lambda page: page if 'data-status="success"' in page else None)(http.get(r.url).text))


def test_mikrotik_chap_login_after_payment_is_accepted_by_radius(make_hotspot, http):
    hs = make_hotspot(radius=RADIUS)
    ctx = {"mac": MAC, "ip": "10.5.50.20", "link-login-only": "http://10.5.50.1/login",
           "link-orig": "http://example.com/", "chap-id": CHAP_ID, "chap-challenge": CHAP_CHALLENGE}
    page = pay_on_splash(hs, http, ctx)
    method, action, fields = hidden_fields(page)
    assert (method, action) == ("POST", "http://10.5.50.1/login")
    assert fields["dst"] == "http://example.com/" and len(fields["password"]) == 32
    payment = Payment.get()
    assert fields["password"] != payment.entitlements.get().login_password   # never the plain password
    # the router turns the form into a CHAP Access-Request
    reply = chap_login(hs, fields["username"], fields["password"], MAC, CHAP_ID, CHAP_CHALLENGE)
    assert reply.code == packet.AccessAccept
    assert 0 < reply["Session-Timeout"][0] <= 3600
    # a wrong CHAP answer is refused
    assert chap_login(hs, fields["username"], bytes(16).hex(), MAC, CHAP_ID, CHAP_CHALLENGE).code == packet.AccessReject


def test_coova_logon_after_payment_is_accepted_by_radius(make_hotspot, http):
    clients = [{"address": "127.0.0.0/8", "secret": "coovasecret", "kind": "coova"}]
    routers = [{"name": "coova", "kind": "coova", "address": "10.1.0.1", "uamsecret": "uamsecret1", "secret": "s"}]
    hs = make_hotspot(radius={**RADIUS, "clients": clients}, routers=routers)
    challenge = bytes(range(16)).hex()
    ctx = {"mac": "AA-BB-CC-DD-EE-20", "ip": "10.1.0.20", "uamip": "10.1.0.1", "uamport": "3990",
           "challenge": challenge, "userurl": "http://example.com/"}
    page = pay_on_splash(hs, http, ctx)
    method, action, fields = hidden_fields(page)
    assert (method, action) == ("GET", "http://10.1.0.1:3990/logon")
    key = hashlib.md5(bytes.fromhex(challenge) + b"uamsecret1").digest()
    plain = bytes(a ^ b for a, b in zip(bytes.fromhex(fields["password"]), key)).rstrip(b"\0").decode()
    # what chilli sends after decoding the UAM password
    c = client(hs, secret=b"coovasecret")
    req = c.CreateAuthPacket(code=packet.AccessRequest, User_Name=fields["username"])
    req["User-Password"] = req.PwCrypt(plain)
    req["Calling-Station-Id"] = "AA-BB-CC-DD-EE-20"
    req.add_message_authenticator()
    reply = send(c, req)
    assert reply.code == packet.AccessAccept and "ChilliSpot-Max-Total-Octets" not in reply


def test_login_form_is_only_for_the_device_that_paid(make_hotspot, http):
    hs = make_hotspot()
    ctx = {"mac": MAC, "ip": "10.5.50.20", "link-login-only": "http://10.5.50.1/login"}
    page = pay_on_splash(hs, http, ctx)
    assert 'id="router-login"' in page
    payment = Payment.get()
    body = http.get(f"{hs.portal_url}/api/portal/status/{payment.checkout_request_id}").json()
    assert body["routerLogin"]["action"] == "http://10.5.50.1/login"
    Payment.update(client_ip="10.5.50.99").execute()
    body = http.get(f"{hs.portal_url}/api/portal/status/{payment.checkout_request_id}").json()
    assert body["status"] == "success" and body["routerLogin"] is None


def test_demo_router_logs_the_paid_device_in_through_radius_and_reports_it_online(make_hotspot, http):
    hs = make_hotspot(radius=RADIUS)                    # simulator environment, no [[routers]]
    assert hs.routeros_sim is not None and list(hs.cutters) == ["simulated-mikrotik"]
    r = http.post(f"{hs.portal_url}/api/portal/pay",
                  json={"phone": "0708374149", "packageId": 1, "macAddress": MAC, "login": {"ip": "10.5.50.30"}})
    assert r.status_code == 200, r.text
    wait_for(lambda: hs.routeros_sim.active_macs() == [MAC])
    row = hs.routeros_sim.rows("/ip/hotspot/active")[0]
    # the API login makes the router see the device; its hotspot (login-by=mac) asks RADIUS at once
    assert row["login-by"] == "mac" and row["address"] == "10.5.50.30" and row["radius"] == "true"
    assert hs.radius.stats["access_accept"] == 1
    # and its accounting Start makes "Online now" (the dashboard's figure, /metrics' gauge) count it
    wait_for(lambda: "hotspotd_devices_online 1.0" in http.get(f"{hs.portal_url}/metrics").text)
    # recorded by the login thread once the router answered, a moment after the router shows it
    wait_for(lambda: Event.select().where(Event.kind == "router_login").count() == 1)


def test_api_login_refused_by_radius_is_recorded(make_hotspot, http):
    hs = make_hotspot(radius={**RADIUS, "clients": [{"address": "10.9.9.9", "secret": "x"}]})  # RADIUS ignores us
    # the simulated router's RADIUS request is dropped (unknown NAS): it times out, the login is refused
    r = http.post(f"{hs.portal_url}/api/portal/pay",
                  json={"phone": "0708374149", "packageId": 1, "macAddress": MAC, "login": {"ip": "10.5.50.31"}})
    assert r.status_code == 200
    wait_for(lambda: Event.get_or_none(Event.kind == "router_login_failed"), timeout=20)
    assert hs.routeros_sim.active_macs() == []


def test_the_login_right_after_payment_waits_out_the_routers_host_race(make_hotspot, http):
    # a real MikroTik answers "unknown host IP" until the device has sent traffic through the hotspot
    hs = make_hotspot(radius=RADIUS)
    hs.routeros_sim.host_after = 1.2
    r = http.post(f"{hs.portal_url}/api/portal/pay",
                  json={"phone": "0708374149", "packageId": 1, "macAddress": MAC, "login": {"ip": "10.5.50.32"}})
    assert r.status_code == 200, r.text
    wait_for(lambda: Event.get_or_none(Event.kind == "router_login"), timeout=20)
    logins = [c for c in hs.routeros_sim.commands if c.command == "/ip/hotspot/active/login"]
    assert len(logins) >= 2 and hs.routeros_sim.active_macs() == [MAC]         # refused first, then in
    assert not Event.select().where(Event.kind == "router_login_failed").exists()


def test_a_device_the_browser_logged_in_first_is_no_failure(make_hotspot, http):
    hs = make_hotspot(radius=RADIUS)
    hs.routeros_sim.login(MAC, "10.5.50.33", "hs-browser")                     # the splash page's login won
    r = http.post(f"{hs.portal_url}/api/portal/pay",
                  json={"phone": "0708374149", "packageId": 1, "macAddress": MAC, "login": {"ip": "10.5.50.33"}})
    assert r.status_code == 200, r.text
    event = wait_for(lambda: Event.get_or_none(Event.kind == "router_login"), timeout=20)
    assert "the browser's own login came first" in event.message
    assert not Event.select().where(Event.kind == "router_login_failed").exists()
    assert not [c for c in hs.routeros_sim.commands if c.command == "/ip/hotspot/active/login"]


def test_the_browser_winning_between_the_check_and_the_login_is_no_failure(make_hotspot, http):
    # The device is not online when hotspotd looks, then the splash page's own login lands before
    # hotspotd's: the router refuses the API login, and only its active list tells the truth.
    hs = make_hotspot(radius=RADIUS)
    sim = hs.routeros_sim
    sim.add_host(MAC, "10.5.50.34")
    sim.set_latency(0.4)                    # the window between hotspotd's check and its login
    stop = threading.Event()

    def browser_login_during_the_check():
        while not stop.is_set():
            if any(c.command == "/ip/hotspot/active/print" for c in sim.commands):
                sim.login(MAC, "10.5.50.34", "hs-browser")
                return
            stop.wait(0.005)

    racer = threading.Thread(target=browser_login_during_the_check)
    racer.start()
    try:
        r = http.post(f"{hs.portal_url}/api/portal/pay",
                      json={"phone": "0708374149", "packageId": 1, "macAddress": MAC, "login": {"ip": "10.5.50.34"}})
        assert r.status_code == 200, r.text
        event = wait_for(lambda: Event.get_or_none(Event.kind == "router_login"), timeout=20)
    finally:
        stop.set()
        racer.join(5)
    assert [c for c in sim.commands if c.command == "/ip/hotspot/active/login"]   # it did try, and was refused
    assert "the browser's own login came first" in event.message
    assert not Event.select().where(Event.kind == "router_login_failed").exists()
    assert sim.active_macs() == [MAC]
