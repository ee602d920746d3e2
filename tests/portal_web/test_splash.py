"""The splash page over real HTTP: languages, the screens, returning devices, "Already paid?", vouchers."""
import html
import re

import pytest

from hotspotd import access, clock, vouchers
from hotspotd.storage.models import Disconnect, Entitlement, Package, Payment, ReceiptLookup

from tests.helpers import CALLBACKS_COME, customer_receipt, give_time, patience, wait_for

#: run again on PostgreSQL by scripts/test (-m postgres), and in the simulator's realistic timing (-m daraja_timing)
pytestmark = [pytest.mark.postgres, pytest.mark.daraja_timing]

MAC = "AA:BB:CC:DD:EE:40"
RANDOM_MAC = "DA:BB:CC:DD:EE:41"  # locally administered: a phone's private address
CTX = {"mac": MAC, "ip": "10.5.50.40", "link-login-only": "http://10.5.50.1/login"}


def status_of(page: str) -> str | None:
    m = re.search(r'id="status" data-status="(\w+)"', page)
    return m[1] if m else None


def pay(hotspot, http, phone, ctx=CTX, lang="en"):
    r = http.post(f"{hotspot.portal_url}/pay", params={"lang": lang, **ctx}, data={"phone": phone, "package": "2"})
    assert r.history and r.history[0].status_code == 303, r.text
    return wait_for(lambda: (lambda p: p if status_of(p) not in (None, "pending") else None)(http.get(r.url).text),
                    patience(10))


def test_language_follows_the_browser_and_the_switch(hotspot, http):
    page = http.get(hotspot.portal_url + "/", headers={"Accept-Language": "sw-KE,sw;q=0.9,en;q=0.5"}).text
    assert 'lang="sw"' in page and "Lipa kwa M-Pesa" in page and "saa 1" in page
    page = http.get(hotspot.portal_url + "/", headers={"Accept-Language": "en-US"}).text
    assert 'lang="en"' in page and "Pay with M-Pesa" in page and "1 hour" in page
    r = http.get(hotspot.portal_url + "/", params={"lang": "sw", **CTX})
    assert "Chagua kifurushi" in r.text and r.cookies.get("lang") == "sw"
    # the choice sticks (cookie) and the switch links keep the router's variables
    assert "Chagua kifurushi" in http.get(hotspot.portal_url + "/").text
    assert re.search(r'href="/\?[^"]*lang=en[^"]*link-login-only=http', r.text) or \
        re.search(r'href="/\?[^"]*link-login-only=http[^"]*lang=en', r.text)


def test_first_screen_is_self_contained_and_small(hotspot, http):
    page = http.get(hotspot.portal_url + "/", params=CTX).text
    for url in re.findall(r'(?:src|href|action)="([^"]+)"', page):
        assert url.startswith("/") or url.startswith("#"), f"reference outside the portal: {url}"
    assert "<script" not in page            # the first screen needs no JavaScript at all
    assert "KES 5" in page and "KES 10" in page and "KES 50" in page
    assert len(page.encode()) < 30_000


def test_pay_success_ends_online_and_cancel_says_why(hotspot, http):
    page = pay(hotspot, http, "0708374149")
    assert status_of(page) == "success" and 'id="time-left"' in page and 'id="router-login"' in page
    page = pay(hotspot, http, "254700001032", ctx={**CTX, "mac": "AA:BB:CC:DD:EE:42"})
    assert status_of(page) == "cancelled" and 'data-reason="cancelled"' in page
    assert "You cancelled the M-Pesa prompt." in page and 'id="try-again"' in page
    # another cancelling number: the same one again within 2 minutes would be rule-limited (17)
    hotspot.simulator.set_outcome("254711000032", 1032)
    page = pay(hotspot, http, "0711000032", ctx={**CTX, "mac": "AA:BB:CC:DD:EE:43"}, lang="sw")
    assert "Ulighairi ombi la M-Pesa." in page and "Jaribu tena" in page


@pytest.mark.parametrize("lang, words", [("en", "Wait 2 minutes, or choose another package."),
                                         ("sw", "au chagua kifurushi kingine.")])
def test_the_same_package_again_after_a_cancel_offers_the_other_packages(hotspot, http, lang, words):
    hotspot.simulator.set_outcome("254711000033", 1032)
    page = pay(hotspot, http, "0711000033", lang=lang)
    # within 2 minutes the same amount would be rule-limited: the page says from when, and offers the others
    assert status_of(page) == "cancelled" and 'id="other-packages"' in page and 'id="same-again-from"' in page
    assert 'id="send-again"' not in page
    hotspot.simulator.set_outcome("254711000033", 0)
    page = pay(hotspot, http, "0711000033", lang=lang)          # package 2 again, within 2 minutes
    assert status_of(page) == "failed" and 'data-reason="rule_limited"' in page and words in page
    offered = re.search(r'<form[^>]*id="other-packages".*?</form>', page, re.S)[0]
    assert sorted(re.findall(r'name="package" value="(\d+)"', offered)) == ["1", "3"]   # not KES 10 again
    assert 'value="0711 000 033"' in offered                 # the phone, to the device that paid only
    again = html.unescape(re.search(r'href="([^"]+)" id="try-again"', page)[1])
    assert "package=1" in again                                # "Try again" checks another package
    action = html.unescape(re.search(r'action="([^"]+)"', offered)[1])
    r = http.post(hotspot.portal_url + action, data={"phone": "0711000033", "package": "1"})
    done = wait_for(lambda: (lambda p: p if status_of(p) not in (None, "pending") else None)(http.get(r.url).text))
    assert status_of(done) == "success"
    assert [p.status for p in Payment.select().order_by(Payment.id)] == ["cancelled", "failed", "success"]


def test_wait_page_counts_down_and_refreshes_without_javascript(make_hotspot, http):
    hs = make_hotspot(simulator={"callback_delay_seconds": 30, "final_after_seconds": 30},
                      mpesa={"query_after_seconds": 60})
    r = http.post(f"{hs.portal_url}/pay", params=CTX, data={"phone": "0708374149", "package": "1"})
    assert status_of(r.text) == "pending"
    assert '<noscript><meta http-equiv="refresh" content="3"></noscript>' in r.text
    seconds = int(re.search(r'id="countdown">(\d+)<', r.text)[1])
    assert 170 <= seconds <= 180
    assert "KES 5" in r.text and "Enter your M-Pesa PIN" in r.text


@pytest.mark.parametrize("phone, message", [("0712", "Safaricom"), ("", "phone number"), ("07123abc", "digits")])
def test_phone_errors_are_inline_and_keep_the_input(hotspot, http, phone, message):
    r = http.post(f"{hotspot.portal_url}/pay", params=CTX, data={"phone": phone, "package": "2"})
    assert r.status_code == 400 and status_of(r.text) is None
    assert 'aria-invalid="true"' in r.text and message in r.text
    assert f'value="{phone}"' in r.text and Payment.select().count() == 0


def test_returning_device_with_time_skips_the_payment_screens(hotspot, http):
    give_time(MAC, seconds=1800)
    page = http.get(hotspot.portal_url + "/", params=CTX).text
    assert status_of(page) == "success" and "Welcome back" in page and "Pay with M-Pesa" not in page
    fields = dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)"', page))
    assert fields["username"] == MAC                       # MAC login: the router vouches for the MAC
    assert 29 <= int(re.search(r'data-seconds="(\d+)"', page)[1]) // 60 <= 30


def test_random_mac_is_explained_once_paid_not_before(hotspot, http):
    # not on top of the packages (it worried customers before they paid); on the success page and /me
    assert 'id="random-mac"' not in http.get(hotspot.portal_url + "/", params={**CTX, "mac": RANDOM_MAC}).text
    page = pay(hotspot, http, "0708374149", ctx={**CTX, "mac": RANDOM_MAC})
    assert 'id="random-mac"' in page and 'tap "Already paid?" and enter your M-Pesa code' in html_unescape(page)
    assert 'id="random-mac"' in http.get(f"{hotspot.portal_url}/me", params={**CTX, "mac": RANDOM_MAC}).text
    universal = {**CTX, "mac": "00:1A:2B:3C:4D:41"}      # 0x00: a burned-in, globally unique address
    assert 'id="random-mac"' not in pay(hotspot, http, "0708374150", ctx=universal)


def test_already_paid_moves_the_session_to_the_new_mac(make_hotspot, http):
    hotspot = make_hotspot(simulator=CALLBACKS_COME)      # the receipt comes with the callback only
    assert status_of(pay(hotspot, http, "0708374149", ctx={**CTX, "mac": RANDOM_MAC})) == "success"
    receipt = customer_receipt(hotspot)
    assert access.authorize(RANDOM_MAC) is not None
    new_ctx = {**CTX, "mac": "AA:BB:CC:DD:EE:44"}
    url = f"{hotspot.portal_url}/paid"
    r = http.post(url, params=new_ctx, data={"receipt": receipt.lower(), "phone": "0700 000 000"})
    assert r.status_code == 400 and "no payment with that M-Pesa code" in r.text
    r = http.post(url, params=new_ctx, data={"receipt": f" {receipt.lower()} ", "phone": "+254 708 374 149"})
    assert r.status_code == 200 and status_of(r.text) == "success" and 'id="note"' in r.text
    assert access.authorize("AA:BB:CC:DD:EE:44") is not None
    assert access.authorize(RANDOM_MAC) is None               # one device: the old address lost it
    assert Disconnect.get().mac == RANDOM_MAC                  # and is cut at the router
    assert Entitlement.select().count() == 1                   # time moved, not doubled
    # without the router's MAC we cannot know which device to move to
    r = http.post(url, data={"receipt": receipt, "phone": "0708374149"})
    assert r.status_code == 400 and "cannot tell which device you are using" in r.text


def test_voucher_gets_a_device_online_once(hotspot, http):
    package = Package.get(Package.name == "1 hour")
    code = vouchers.display(vouchers.generate(package.id, 1)[0].code)
    url = f"{hotspot.portal_url}/voucher"
    r = http.post(url, params=CTX, data={"code": "ZZZZZ-ZZZZZ"})
    assert r.status_code == 400 and "not valid" in r.text
    r = http.post(url, params=CTX, data={"code": code.lower()})
    assert r.status_code == 200 and status_of(r.text) == "success" and "Voucher accepted" in r.text
    assert access.authorize(MAC).package_name == "1 hour"
    r = http.post(url, params={**CTX, "mac": "AA:BB:CC:DD:EE:45"}, data={"code": code}, headers={"Accept-Language": "sw"})
    assert r.status_code == 400 and "Vocha hii imeshatumika." in r.text


def test_json_receipt_and_voucher_endpoints(make_hotspot, http):
    hotspot = make_hotspot(simulator=CALLBACKS_COME)      # the receipt comes with the callback only
    assert status_of(pay(hotspot, http, "0708374149")) == "success"
    receipt = customer_receipt(hotspot)
    api = f"{hotspot.portal_url}/api/portal"
    r = http.post(f"{api}/receipt", json={"receipt": receipt, "phone": "0708374149", "macAddress": "nope"})
    assert r.status_code == 400 and r.json()["field"] == "macAddress"
    r = http.post(f"{api}/receipt", json={"receipt": receipt, "phone": "0708374149", "macAddress": "aa-bb-cc-dd-ee-46"})
    assert r.status_code == 200 and r.json()["session"]["remainingSeconds"] > 3500
    code = vouchers.generate(Package.get(Package.name == "30 minutes").id, 1)[0].code
    r = http.post(f"{api}/voucher", json={"code": code, "macAddress": "AA:BB:CC:DD:EE:47"})
    assert r.status_code == 200 and r.json()["session"]["packageName"] == "30 minutes"
    assert http.post(f"{api}/voucher", json={"code": code, "macAddress": "AA:BB:CC:DD:EE:48"}).status_code == 404


def test_receipt_guessing_is_rate_limited(make_hotspot, http):
    hs = make_hotspot(portal={"redeem_limit_per_client": "3/minute"})
    codes = [http.post(f"{hs.portal_url}/paid", params=CTX, data={"receipt": f"SKL{i}ABCDEF", "phone": "0708374149"})
             for i in range(4)]
    # codes hotspotd never saw are asked of M-Pesa (the "Checking" page): three, then the limit
    assert [r.status_code for r in codes] == [200, 200, 200, 429]
    assert all("Checking with M-Pesa" in r.text or "M-Pesa has no completed payment" in r.text for r in codes[:3])
    assert ReceiptLookup.select().count() == 3
    assert "Too many tries" in codes[-1].text and codes[-1].headers["Content-Type"].startswith("text/html")


def test_package_names_are_escaped(hotspot, http):
    Package.create(name="<script>alert(1)</script>", price=20, duration_seconds=7200, created_at=clock.now())
    page = http.get(hotspot.portal_url + "/").text
    assert "<script>alert(1)</script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page


@pytest.mark.parametrize("path", ["/", "/paid", "/voucher", "/admin/login", "/api/portal/packages", "/nowhere",
                                  "/static/portal.js"])
def test_security_headers_on_every_kind_of_response(hotspot, http, path):
    r = http.get(hotspot.portal_url + path)
    csp = r.headers["Content-Security-Policy"]
    # no script-src of its own: scripts fall back to default-src 'self' (no inline script, no eval)
    assert "default-src 'self'" in csp and "script-src" not in csp and "unsafe-eval" not in csp
    assert "frame-ancestors 'none'" in csp
    assert r.headers["X-Content-Type-Options"] == "nosniff" and r.headers["X-Frame-Options"] == "DENY"
    assert r.headers["Referrer-Policy"] in ("no-referrer", "same-origin")


def test_per_client_limits_count_each_device_behind_chillis_nat(make_hotspot, http):
    # behind CoovaChilli's NAT every device's request comes from one address: the router's mac tells them apart
    chilli = {"name": "chilli", "kind": "coova", "address": "127.0.0.1", "secret": "s"}
    hs = make_hotspot(portal={"redeem_limit_per_client": "1/minute"}, routers=[chilli])
    codes = [http.post(f"{hs.portal_url}/voucher", data={"code": "NOPE-NOPE", "mac": mac}).status_code
             for mac in ("00-16-3E-00-00-01", "00-16-3E-00-00-02", "00-16-3E-00-00-01")]
    assert codes[0] != 429 and codes[1] != 429, codes
    assert codes[2] == 429, "the same device still has its limit"
    # from an address that is no chilli, naming another MAC buys no fresh allowance (tests/portal_web/test_fastlane.py)


# CoovaChilli's redirect back after a logon (../shared/reference/routers.md: res=success|already|failed, reply)
CHILLI = {"mac": "00-16-3E-11-22-44", "ip": "10.1.0.7", "uamip": "10.1.0.1", "uamport": "3990",
          "challenge": "0123456789abcdef0123456789abcdef", "nasid": "chilli"}


def test_chillis_answer_to_the_logon_is_read(hotspot, http):
    # res=failed with the Reject's Reply-Message: said, with the next step; the login is offered again
    give_time("00:16:3E:11:22:44")
    page = http.get(f"{hotspot.portal_url}/", params={**CHILLI, "res": "failed", "reason": "reject",
                                                       "reply": "Session limit reached", "lang": "en"}).text
    assert 'id="router-refused"' in page and "it says: Session limit reached" in page
    assert 'id="router-login"' in page and "Connect now" in page
    # res=success / already: chilli has the device online; the page sends no second logon
    for res in ("success", "already"):
        page = http.get(f"{hotspot.portal_url}/", params={**CHILLI, "res": res, "timeleft": "3500"}).text
        assert "You are online" in page and 'id="router-login"' not in page and 'id="router-refused"' not in page


def test_a_refusal_with_no_login_to_offer_again_names_a_step_that_exists(hotspot, http):
    # the router's reason came back, but not its login address: no "Connect now" to press
    give_time("00:16:3E:11:22:45")
    page = http.get(f"{hotspot.portal_url}/", params={"mac": "00:16:3E:11:22:45", "error": "RADIUS server is not "
                                                       "responding", "lang": "en"}).text
    assert 'id="router-refused"' in page and 'id="router-login"' not in page
    assert "Connect now" not in page and "Turn Wi-Fi off and on, then open any website" in page
    page = http.get(f"{hotspot.portal_url}/", params={"mac": "00:16:3E:11:22:45", "error": "x", "lang": "sw"}).text
    assert "Connect now" not in page and 'id="router-refused"' in page


def test_a_refused_logon_without_time_says_so_in_kiswahili(hotspot, http):
    page = http.get(f"{hotspot.portal_url}/", params={**CHILLI, "res": "failed", "lang": "sw"}).text
    assert 'id="pay-error"' in page and "Wi-Fi haikuruhusu kifaa hiki kuingia (inasema: haikutoa sababu)" in page
    assert "Umeshalipa?" in page                                       # the next step is on the page


def test_behind_chillis_nat_only_the_paying_mac_gets_the_router_login(make_hotspot, http):
    # every device behind a CoovaChilli reaches the portal from the router's one address (here 127.0.0.1)
    hs = make_hotspot(routers=[{"name": "chilli", "kind": "coova", "address": "127.0.0.1", "coa_port": 3799,
                                "secret": "testing123", "uamsecret": "u"}])
    login = {k: v for k, v in CHILLI.items() if k != "mac"}
    r = http.post(f"{hs.portal_url}/api/portal/pay", json={"phone": "0708374149", "packageId": 2,
                                                          "macAddress": "00:16:3E:11:22:44", "login": login})
    checkout = r.json()["checkoutRequestId"]
    url = f"{hs.portal_url}/api/portal/status/{checkout}"
    wait_for(lambda: http.get(url).json()["status"] == "success", timeout=patience(15))
    assert http.get(url).json()["routerLogin"] is None                                   # no MAC named
    assert http.get(url, params={"mac": "00-16-3E-99-99-99"}).json()["routerLogin"] is None   # another device
    assert http.get(url, params={"mac": "00-16-3E-11-22-44"}).json()["routerLogin"]["router"] == "coova"
    page = http.get(f"{hs.portal_url}/wait/{checkout}", params={**CHILLI, "mac": "00-16-3E-99-99-99"}).text
    assert 'id="router-login"' not in page
    page = http.get(f"{hs.portal_url}/wait/{checkout}", params=CHILLI).text
    assert 'id="router-login"' in page


def test_rule_limited_payment_sends_the_customer_to_other_packages(hotspot, http):
    # 254700000017: the simulator's ResultCode 17, "Rule limited" (same amount within ~2 minutes)
    r = http.post(f"{hotspot.portal_url}/pay", params={**CTX, "lang": "sw"}, data={"phone": "254700000017", "package": "2"})
    checkout = re.search(r"/wait/(ws_CO_\w+)", r.url or r.text)
    url = r.url if "/wait/" in r.url else f"{hotspot.portal_url}/wait/{checkout.group(1)}"
    page = wait_for(lambda: (lambda t: t if 'data-status="failed"' in t else None)(http.get(url).text),
                    timeout=patience(20))
    assert 'data-reason="rule_limited"' in page and "chagua kifurushi kingine" in page
    assert 'id="try-again"' in page                                    # to the packages, not the same one again


# The router sends the browser back to its login page, which sends it here, when it refused the
# login the success page submitted (MikroTik fills $(error); routers.md, "External splash page").
MIKROTIK = {"mac": "AA:BB:CC:DD:EE:41", "ip": "10.5.50.41", "link-login-only": "http://10.5.50.1/login",
            "link-orig": "http://example.com/"}


def auto_login(page: str) -> str | None:
    form = re.search(r'<form id="router-login"[^>]*data-auto="(\d)"', page)
    return form[1] if form else None


def test_a_login_the_router_refused_is_shown_and_never_submitted_again_by_itself(hotspot, http):
    from hotspotd.storage.models import Event
    give_time("AA:BB:CC:DD:EE:41")
    url = f"{hotspot.portal_url}/"
    refused = {**MIKROTIK, "error": "RADIUS server is not responding", "lang": "en"}
    for _ in range(3):                                   # the router keeps refusing; the customer reloads
        page = http.get(url, params=refused).text
        assert 'id="router-refused"' in page and "it says: RADIUS server is not responding" in page
        assert "Welcome back" not in page and "You have paid time on this device" in page
        assert auto_login(page) == "0" and "Connect now" in page           # the customer's tap, not a loop
    events = list(Event.select().where(Event.kind == "router_login_refused"))
    assert len(events) == 1 and events[0].mac == "AA:BB:CC:DD:EE:41"     # once for the owner, not per reload
    assert "RADIUS server is not responding" in events[0].message and events[0].entitlement_id is not None


def test_the_page_submits_a_devices_login_by_itself_only_once(hotspot, http):
    give_time("AA:BB:CC:DD:EE:41")
    url = f"{hotspot.portal_url}/"
    first = http.get(url, params=MIKROTIK).text
    assert "Welcome back" in first and auto_login(first) == "1"
    # back again at once, no error from the router: it did not keep the device; no second submission
    again = http.get(url, params=MIKROTIK).text
    assert auto_login(again) == "0" and 'Tap "Connect now" to go online.' in html_unescape(again)


def test_a_refusal_reaches_the_owners_health_page(hotspot, http):
    from hotspotd.health import live
    give_time("AA:BB:CC:DD:EE:41")
    http.get(f"{hotspot.portal_url}/", params={**MIKROTIK, "error": "invalid username or password"})
    check = next(c for c in live.run(hotspot) if c.key == "router_logins")
    assert check.state == "warn" and "1 login(s) refused by a router" in check.detail
    assert any("invalid username or password" in item for item in check.items)


def test_a_refusal_for_a_device_without_time_offers_the_packages(hotspot, http):
    page = http.get(f"{hotspot.portal_url}/", params={**MIKROTIK, "error": "no more sessions are allowed"}).text
    assert 'id="pay-error"' in page and "it says: no more sessions are allowed" in page
    assert 'id="router-login"' not in page


def html_unescape(page: str) -> str:
    import html
    return html.unescape(page)


# Opened by its address, a bookmark or a poster's QR code: no router variables, so no device known.
def test_a_purchase_without_a_device_is_held_and_never_called_online(hotspot, http):
    page = pay(hotspot, http, "0708374149", ctx={})
    assert status_of(page) == "held"
    assert "You are online" not in page and "Payment received" in page
    assert "open any website" in page and "Already paid?" in html_unescape(page)
    payment = Payment.get()
    assert payment.receipt and payment.receipt in page                    # the code for "Already paid?"
    ent = Entitlement.get()
    assert ent.status == "held" and access.authorize(MAC) is None       # nobody online on it yet
    # an hour later its time is all there: the clock waits for a device
    later = clock.now() + 3600
    ent, unbound = access.move_to_device(payment.receipt, "254708374149", MAC, now=later)
    assert unbound == [] and ent.status == "active"
    assert ent.started_at == later and ent.expires_at == later + 3600
    assert access.authorize(MAC, now=later + 60) is not None


def test_the_device_that_paid_without_router_variables_is_let_in_when_it_comes_back_through_the_router(hotspot, http):
    pay(hotspot, http, "0708374149", ctx={})                               # from 127.0.0.1, no device named
    # another device behind the router, with another address: nothing to claim
    page = http.get(f"{hotspot.portal_url}/", params={**CTX, "mac": "AA:BB:CC:DD:EE:49", "ip": "10.5.50.49"}).text
    assert status_of(page) is None and Entitlement.get().status == "held"
    # the same device (its own address, which the router names too) opens any website
    page = http.get(f"{hotspot.portal_url}/", params={**CTX, "ip": "127.0.0.1"}).text
    assert status_of(page) == "success" and "Your paid time starts now, on this device." in page
    assert 'id="router-login"' in page
    ent = Entitlement.get()
    assert ent.status == "active" and access.is_bound(ent.id, MAC) and access.authorize(MAC) is not None


def test_a_voucher_entered_without_a_device_is_not_used_up(hotspot, http):
    package = Package.get(Package.name == "1 hour")
    code = vouchers.display(vouchers.generate(package.id, 1)[0].code)
    r = http.post(f"{hotspot.portal_url}/voucher", data={"code": code})
    assert r.status_code == 400 and "Nothing was used up" in r.text and "You are online" not in r.text
    r = http.post(f"{hotspot.portal_url}/voucher", params=CTX, data={"code": code})    # from the login page
    assert r.status_code == 200 and status_of(r.text) == "success" and access.authorize(MAC) is not None


def test_a_held_purchase_starts_with_the_first_login_of_its_credentials(hotspot):
    give_time(None)
    ent = Entitlement.get()
    assert ent.status == "held"
    later = clock.now() + 600
    grant = access.authorize_login(ent.login_user, lambda secret: secret == ent.login_password, MAC, now=later)
    assert grant is not None and grant.remaining_seconds == 3600
    assert Entitlement.get().status == "active" and access.is_bound(ent.id, MAC)


def checked_package(page: str) -> str | None:
    m = re.search(r'<input type="radio" name="package" value="(\d+)" checked>', page)
    return m[1] if m else None


def test_the_chosen_package_and_the_phone_survive_a_typo(hotspot, http):
    r = http.post(f"{hotspot.portal_url}/pay", params=CTX, data={"phone": "07O8 374 149", "package": "3"})
    assert r.status_code == 400 and 'id="pay-error"' in r.text
    assert checked_package(r.text) == "3" and 'value="07O8 374 149"' in r.text    # not the cheapest, not empty
    assert len(re.findall(r'name="package" value="\d+" checked', r.text)) == 1


def test_try_again_keeps_the_package_and_the_phone_for_the_device_that_paid(hotspot, http):
    page = pay(hotspot, http, "254700001032", ctx=CTX)                 # the customer cancels the prompt
    assert status_of(page) == "cancelled"
    # within Daraja's 2 minutes "Try again" checks another package (the same amount would be rule 17)
    soon = html_unescape(re.search(r'href="([^"]+)" id="try-again"', page)[1])
    r = http.get(hotspot.portal_url + soon)
    assert checked_package(r.text) == "1" and 'value="0700 001 032"' in r.text
    Payment.update(pushed_at=Payment.pushed_at - 130).execute()           # the window is over
    page = http.get(http.get(f"{hotspot.portal_url}/wait/{Payment.get().checkout_request_id}", params=CTX).url).text
    again = re.search(r'href="([^"]+)" id="try-again"', page)[1]
    r = http.get(hotspot.portal_url + html_unescape(again))
    assert checked_package(r.text) == "2" and 'value="0700 001 032"' in r.text
    assert "mac=AA%3ABB%3ACC%3ADD%3AEE%3A40" in again or "mac=AA:BB:CC:DD:EE:40" in html_unescape(again)
    # someone else who learns the link gets the package, never the phone number
    payment = Payment.get()
    Payment.update(client_ip="10.5.50.99").where(Payment.id == payment.id).execute()
    r = http.get(hotspot.portal_url + html_unescape(again))
    assert checked_package(r.text) == "2" and "0700 001 032" not in r.text


def test_whom_the_prompt_pays_is_said_before_and_while_it_comes(make_hotspot, http):
    hs = make_hotspot(mpesa={"business_name": "MAMA MBOGA WIFI"}, portal={"help_phone": "0722 000 111"},
                      simulator={"callback_delay_seconds": 60, "final_after_seconds": 60})   # the prompt stays open
    page = http.get(f"{hs.portal_url}/", params=CTX).text
    assert "The M-Pesa prompt will ask you to pay MAMA MBOGA WIFI, paybill 174379, account WIFI." in page
    assert 'href="tel:0722000111"' in page
    r = http.post(f"{hs.portal_url}/pay", params=CTX, data={"phone": "0708374149", "package": "2"},
                  allow_redirects=False)
    page = http.get(hs.portal_url + r.headers["Location"]).text
    assert status_of(page) == "pending"
    assert "The M-Pesa prompt asks you to pay KES 10 to MAMA MBOGA WIFI (paybill 174379, account WIFI)." in page
    assert "The prompt went to 0708 374 149." in page and 'id="change-number"' in page
    assert re.search(r'<ol id="steps">\s*<li>', page) and 'href="tel:0722000111"' in page
    # the countdown and the words under it say the same thing
    assert re.search(r'id="countdown">(\d+)</span> seconds left to approve it', page)
    # "Wrong number? Change it" goes back to the packages with this one chosen and the number to correct
    change = html_unescape(re.search(r'href="([^"]+)" id="change-number"', page)[1])
    back = http.get(hs.portal_url + change).text
    assert checked_package(back) == "2" and 'value="0708 374 149"' in back


def test_a_till_is_named_as_a_till_and_a_venue_has_its_own(make_hotspot, http):
    hs = make_hotspot(mpesa={"business_name": "HQ LTD"},
                      sites=[{"id": "kisumu", "name": "Kisumu", "shortcode": "600111", "transaction_type":
                              "CustomerBuyGoodsOnline", "till_number": "5123456", "business_name": "LAKESIDE CAFE",
                              "help_phone": "0733 111 222"}])
    page = http.get(f"{hs.portal_url}/", params={**CTX, "site": "kisumu"}).text
    assert "The M-Pesa prompt will ask you to pay LAKESIDE CAFE, till number 5123456." in page
    assert "account" not in re.search(r'id="payee">([^<]+)<', page)[1] and 'href="tel:0733111222"' in page
    page = http.get(f"{hs.portal_url}/", params=CTX).text
    assert "pay HQ LTD, paybill 174379" in page


def test_already_paid_takes_the_pasted_sms_and_the_success_page_shows_the_code(make_hotspot, http):
    hotspot = make_hotspot(simulator=CALLBACKS_COME)
    ctx = {**CTX, "mac": RANDOM_MAC}
    pay(hotspot, http, "0708374149", ctx=ctx)
    # in realistic timing the query may settle it first: the code comes with the callback after
    receipt = customer_receipt(hotspot)
    success = f"{hotspot.portal_url}/wait/{Payment.get().checkout_request_id}"
    page = http.get(success, params={"lang": "en", **ctx}).text
    assert re.search(rf'id="receipt">[^<]*<strong>{receipt}</strong>', page)     # the code on the success page
    sms = (f"{receipt} Confirmed. Ksh10.00 sent to MAMA MBOGA WIFI for account WIFI on 3/12/26 at 2:15 PM "
           "New M-PESA balance is Ksh90.00. Transaction cost, Ksh0.00.")
    r = http.post(f"{hotspot.portal_url}/paid", params={**CTX, "mac": "AA:BB:CC:DD:EE:48"},
                  data={"receipt": sms, "phone": "0708374149"})
    assert r.status_code == 200 and status_of(r.text) == "success", r.text[-800:]
    assert access.authorize("AA:BB:CC:DD:EE:48") is not None


@pytest.mark.parametrize("typed, code", [("skl2 abc3de", "SKL2ABC3DE"), ("SKL2ABC3DE", "SKL2ABC3DE"),
                                         ("wf0dmxf93v confirmed. ksh10.00 sent to x", "WF0DMXF93V"),
                                         ("Confirmed. Ksh10.00 sent. Code WF0DMXF93V", "WF0DMXF93V"),
                                         # a code need not hold a digit (the simulator's JHXXQRHXTV did)
                                         ("JHXXQRHXTV Confirmed. Ksh10.00 sent to MAMA MBOGA WIFI", "JHXXQRHXTV")])
def test_receipt_codes_are_read_as_typed_or_pasted(typed, code):
    assert access.normalize_receipt(typed) == code


# "My time" at a fixed address (/me), and a device back after its time ran out
def test_my_time_shows_time_left_the_code_and_buy_more(hotspot, http):
    pay(hotspot, http, "0708374149", ctx=CTX)
    page = http.get(f"{hotspot.portal_url}/me", params=CTX).text
    assert 'data-state="online"' in page and "1 hour" in page and 'id="time-left"' in page
    assert f"<strong>{Payment.get().receipt}</strong>" in page
    buy = html_unescape(re.search(r'href="([^"]+)" id="buy-more"', page)[1])
    more = http.get(hotspot.portal_url + buy).text
    assert 'id="pay-form"' in more and "Welcome back" not in more          # the packages, though time is left


def test_my_time_finds_the_device_by_its_address_without_router_variables(hotspot, http):
    pay(hotspot, http, "0708374149", ctx=CTX)          # paid from 127.0.0.1, the router named the MAC
    page = http.get(f"{hotspot.portal_url}/me").text   # a bookmark: no variables
    assert 'data-state="online"' in page and "1 hour" in page
    Payment.update(client_ip="10.5.50.99").execute()   # an address nothing is known of
    page = http.get(f"{hotspot.portal_url}/me").text
    assert 'data-state="unknown"' in page and "open any website" in page


def test_a_device_back_after_its_time_ended_is_told_when_it_ended(hotspot, http):
    ent = give_time(MAC, seconds=60)
    later = clock.now() + 120
    access.expire_due(now=later)
    Entitlement.update(ended_at=clock.now() - 5).where(Entitlement.id == ent.id).execute()
    page = http.get(f"{hotspot.portal_url}/", params=CTX).text
    ended = re.search(r'id="ended">([^<]+)<', page)
    assert ended and ended[1].startswith("Your test 60s ended at ") and 'id="pay-form"' in page
    assert 'data-state="none"' in http.get(f"{hotspot.portal_url}/me", params=CTX).text


def test_a_prompt_that_never_came_can_be_sent_again_once_it_ended(make_hotspot, http):
    hs = make_hotspot(mpesa={"business_name": "MAMA MBOGA WIFI"})
    page = pay(hs, http, "254700001037", ctx=CTX)                     # no response from the phone (1037)
    assert status_of(page) == "timeout"
    # within Daraja's 2 minutes the same amount again is rule-limited (17): the page says from when,
    # and offers the other packages now
    assert 'id="send-again"' not in page and 'id="other-packages"' in page
    assert "M-Pesa takes the same amount from this number again from " in page
    # once the window is over, the same prompt can be sent again at once
    Payment.update(pushed_at=Payment.pushed_at - 130).execute()
    page = http.get(http.get(f"{hs.portal_url}/wait/{Payment.get().checkout_request_id}", params=CTX).url).text
    assert 'id="same-again-from"' not in page
    form = re.search(r'<form method="post" action="([^"]+)" id="send-again">(.*?)</form>', page, re.S)
    assert form and "Send the prompt again to 0700 001 037" in form[2]
    fields = dict(re.findall(r'name="(\w+)" value="([^"]*)"', form[2]))
    assert fields == {"package": "2", "phone": "0700 001 037"}
    r = http.post(hs.portal_url + html_unescape(form[1]), data=fields)
    assert r.history[0].status_code == 303 and "/wait/" in r.url
    assert Payment.select().count() == 2 and {p.package_id for p in Payment.select()} == {2}
    # a stranger with the link sees no button with the number in it
    first = Payment.select().order_by(Payment.id).first()
    Payment.update(client_ip="10.5.50.99").where(Payment.id == first.id).execute()
    page = http.get(f"{hs.portal_url}/wait/{first.checkout_request_id}", params=CTX).text
    assert 'id="send-again"' not in page and "0700 001 037" not in page


def test_the_sms_in_the_simulated_phone_brings_the_time_to_a_new_address(make_hotspot, http):
    # the demo's outside world: the payer's phone shows M-Pesa's SMS, naming the business as configured
    hs = make_hotspot(mpesa={"business_name": "MAMA MBOGA WIFI"})
    pay(hs, http, "0711000104", ctx={**CTX, "mac": RANDOM_MAC})
    inbox = wait_for(lambda: http.get(f"{hs.simulator.url}/simulator/phones/254711000104/messages").json()["messages"])
    (sms,) = inbox
    assert "sent to MAMA MBOGA WIFI for account WIFI" in sms["text"] and sms["receipt"] == Payment.get().receipt
    r = http.post(f"{hs.portal_url}/paid", params={**CTX, "mac": "AA:BB:CC:DD:EE:4A"},
                  data={"receipt": sms["text"], "phone": "0711000104"})
    assert r.status_code == 200 and status_of(r.text) == "success"


def test_packages_have_a_kiswahili_name_on_kiswahili_pages(hotspot, http):
    sw = http.get(f"{hotspot.portal_url}/", params={**CTX, "lang": "sw"}).text
    names = re.findall(r'<span>([^<]+)<small>', sw)
    assert names == ["Dakika 30", "Saa 1", "Saa 24"]                    # the default packages, translated
    en = http.get(f"{hotspot.portal_url}/", params={**CTX, "lang": "en"}).text
    assert re.findall(r'<span>([^<]+)<small>', en) == ["30 minutes", "1 hour", "24 hours"]
    page = pay(hotspot, http, "0711000105", ctx=CTX, lang="sw")
    assert "Saa 1" in page and "1 hour" not in page                       # the success page too
    # a package without one keeps its name in both languages
    Package.update(name_sw=None).where(Package.name == "24 hours").execute()
    sw = http.get(f"{hotspot.portal_url}/", params={**CTX, "mac": "AA:BB:CC:DD:EE:4B", "lang": "sw"}).text
    assert re.findall(r'<span>([^<]+)<small>', sw)[-1] == "24 hours"


def test_the_pages_say_how_to_pay_from_the_m_pesa_menu_when_no_prompt_comes(make_hotspot, http):
    from hotspotd.c2b import account_code
    hs = make_hotspot()
    mac = "AA:BB:CC:00:0D:01"
    page = http.get(f"{hs.portal_url}/", params={"mac": mac, "lang": "en"}).text
    assert 'id="pay-by-menu"' in page and "Pay Bill" in page
    assert f'id="menu-account">{account_code(mac)}<' in page and 'id="menu-number">174379<' in page
    assert "KES 5, KES 10, KES 50" in page
    sw = http.get(f"{hs.portal_url}/", params={"mac": mac, "lang": "sw"}).text
    assert "Lipa kupitia menyu ya M-Pesa" in sw and account_code(mac) in sw
    # no device: a paybill code cannot be given, so no menu instructions
    assert 'id="pay-by-menu"' not in http.get(f"{hs.portal_url}/", params={"lang": "en"}).text
    # a prompt that never came: the failed page opens the instructions
    r = http.post(f"{hs.portal_url}/pay", params={"mac": mac}, data={"phone": "254700001037", "package": "2"})
    wait_for(lambda: 'data-status="failed"' in http.get(r.url).text or "Payment not completed" in http.get(r.url).text,
             patience(15))
    failed = http.get(r.url).text
    assert '<details class="card" id="pay-by-menu" open>' in failed


def test_a_till_venue_gives_its_till_and_the_way_to_claim(make_hotspot, http):
    hs = make_hotspot(mpesa={"transaction_type": "CustomerBuyGoodsOnline", "till_number": "5678901"})
    page = http.get(f"{hs.portal_url}/", params={"lang": "en"}).text
    assert 'id="menu-number">5678901<' in page and "Buy Goods" in page and "Already paid?" in page
    assert 'id="menu-account"' not in page
