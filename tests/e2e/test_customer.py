"""A customer's journey in headless Chromium on a 360-px phone, against the running daemon with the
Daraja simulator and the simulated MikroTik; RADIUS is then asked as the router would ask it."""
import hashlib
from urllib.parse import parse_qs, urlencode

from playwright.sync_api import expect
from pyrad import packet

from hotspotd import router_login
from hotspotd.storage.models import Payment

from tests.helpers import buy, chap_login, client, mac_request, send, wait_for

MAC = "AA:BB:CC:DD:EE:60"
ROUTER = "http://10.5.50.1"
CHAP_ID, CHAP_CHALLENGE = "\\245", "\\001\\002\\003\\004\\005\\006\\007\\010\\011\\012\\013\\014\\015\\016\\017\\020"


def splash_url(daemon, mac=MAC, ip="10.5.50.60", **extra):
    ctx = {"mac": mac, "ip": ip, "link-login-only": f"{ROUTER}/login", "link-orig": "http://example.com/",
           "chap-id": CHAP_ID, "chap-challenge": CHAP_CHALLENGE, **extra}
    return f"{daemon.portal_url}/?{urlencode(ctx)}"


def fake_router(page):
    """Stand in for the MikroTik's own login page: record what the browser posts to it."""
    posted = []

    def handle(route):
        posted.append({k: v[0] for k, v in parse_qs(route.request.post_data or "").items()})
        route.fulfill(status=200, content_type="text/html", body="<p id='router'>You are logged in</p>")
    page.route(f"{ROUTER}/**", handle)
    return posted


def test_customer_pays_on_a_phone_and_radius_lets_the_mac_in(daemon, phone, screenshots, record_requests):
    requests = record_requests(phone)
    posted = fake_router(phone)
    phone.goto(splash_url(daemon))
    assert phone.evaluate("document.documentElement.scrollWidth") <= 360     # no sideways scrolling
    phone.screenshot(path=str(screenshots / "splash-phone-en.png"), full_page=True)
    buy(phone, "0708374149")
    phone.wait_for_selector("#router", timeout=15_000)      # success page → the router's login, by itself
    assert requests.outside(daemon.portal_url) == [f"{ROUTER}/login"]
    login = posted[0]
    payment = Payment.get()
    ent = payment.entitlements.get()
    assert login["username"] == ent.login_user and login["dst"] == "http://example.com/"
    assert login["password"] == hashlib.md5(router_login.unescape_octal(CHAP_ID) + ent.login_password.encode()
                                            + router_login.unescape_octal(CHAP_CHALLENGE)).hexdigest()
    # what the router does next: CHAP Access-Request with the browser's answer, then MAC auth later
    reply = chap_login(daemon, login["username"], login["password"], MAC, CHAP_ID, CHAP_CHALLENGE)
    assert reply.code == packet.AccessAccept and 3500 < reply["Session-Timeout"][0] <= 3600
    c = client(daemon)
    assert send(c, mac_request(c, user=MAC, calling=MAC)).code == packet.AccessAccept
    # the server-side login put the device on the (simulated) router as well
    wait_for(lambda: MAC in daemon.routeros_sim.active_macs())


def test_success_screen_without_router_redirect(daemon, phone, screenshots):
    phone.goto(f"{daemon.portal_url}/?{urlencode({'mac': MAC, 'ip': '10.5.50.61'})}")
    buy(phone, "0708374149", "30 minutes")
    phone.wait_for_selector('#status[data-status="success"]', timeout=15_000)
    assert "You are online" in phone.inner_text("#status")
    minutes = int(phone.get_attribute("#time-left", "data-seconds")) // 60
    assert 28 <= minutes <= 30
    phone.screenshot(path=str(screenshots / "success-phone-en.png"), full_page=True)


def test_cancelled_prompt_shows_the_reason_in_kiswahili(daemon, phone, screenshots):
    phone.goto(splash_url(daemon, mac="AA:BB:CC:DD:EE:62", lang="sw"))
    assert phone.locator("html").get_attribute("lang") == "sw"
    phone.screenshot(path=str(screenshots / "splash-phone-sw.png"), full_page=True)
    phone.get_by_text("saa 1", exact=False).first.click()
    phone.fill("#phone", "254700001032")
    phone.get_by_role("button", name="Lipa kwa M-Pesa").click()
    phone.wait_for_selector('#status[data-reason="cancelled"]', timeout=15_000)
    assert "Ulighairi ombi la M-Pesa." in phone.inner_text("#reason")
    phone.screenshot(path=str(screenshots / "cancelled-phone-sw.png"), full_page=True)
    phone.click("#try-again")
    assert phone.locator("#pay-form").is_visible()


def test_wait_screen_counts_down_with_javascript(make_hotspot, phone):
    from tests.helpers import RADIUS
    hs = make_hotspot(radius=RADIUS, simulator={"callback_delay_seconds": 4, "final_after_seconds": 4})
    phone.goto(f"{hs.portal_url}/?{urlencode({'mac': 'AA:BB:CC:DD:EE:63', 'ip': '10.5.50.63'})}")
    buy(phone, "0708374149", "30 minutes")
    phone.wait_for_selector('#status[data-status="pending"]')
    first = int(phone.inner_text("#countdown"))
    # the page's CSP forbids string eval, so no wait_for_function: expect() polls without it
    expect(phone.locator("#countdown")).not_to_have_text(str(first), timeout=5_000)
    assert int(phone.inner_text("#countdown")) < first
    phone.wait_for_selector('#status[data-status="success"]', timeout=20_000)


def test_already_paid_moves_time_to_the_new_address(daemon, phone, new_page):
    old, new = "DA:BB:CC:DD:EE:64", "DA:BB:CC:DD:EE:65"
    phone.goto(f"{daemon.portal_url}/?{urlencode({'mac': old, 'ip': '10.5.50.64'})}")
    assert phone.locator("#random-mac").is_visible()
    buy(phone, "0708374149")
    phone.wait_for_selector('#status[data-status="success"]', timeout=15_000)
    receipt = Payment.get().receipt
    wait_for(lambda: old in daemon.routeros_sim.active_macs())
    # the phone comes back with another private address: a fresh browser, nothing remembered
    page = new_page(viewport={"width": 360, "height": 740}, is_mobile=True)
    page.goto(f"{daemon.portal_url}/?{urlencode({'mac': new, 'ip': '10.5.50.65'})}")
    page.click("#already-paid")
    page.fill("#receipt", receipt)
    page.fill("#phone", "0708 374 149")
    page.get_by_role("button", name="Get my time back").click()
    page.wait_for_selector('#status[data-status="success"]')
    assert "Your time is now on this device." in page.inner_text("#status")
    c = client(daemon)
    assert send(c, mac_request(c, user=new, calling=new)).code == packet.AccessAccept
    c = client(daemon)
    assert send(c, mac_request(c, user=old, calling=old)).code == packet.AccessReject
    wait_for(lambda: old not in daemon.routeros_sim.active_macs())   # cut at the router too


def test_splash_works_without_javascript(daemon, new_page):
    page = new_page(java_script_enabled=False, viewport={"width": 320, "height": 640})
    page.goto(f"{daemon.portal_url}/?{urlencode({'mac': 'AA:BB:CC:DD:EE:66', 'ip': '10.5.50.66'})}")
    assert page.locator("#pay-form button").bounding_box()["height"] >= 44    # a thumb-sized target
    buy(page, "0708374149", "30 minutes")
    page.wait_for_selector('#status[data-status="success"]', timeout=20_000)   # meta refresh did it


def test_a_router_that_refuses_the_login_does_not_make_the_page_loop(daemon, phone, screenshots):
    # The router answers the success page's login with its login page and an error (a RADIUS secret
    # mismatch, RADIUS down): its login.html sends the browser back here with $(error) filled.
    mac = "AA:BB:CC:DD:EE:67"
    back = splash_url(daemon, mac=mac, ip="10.5.50.67", error="RADIUS server is not responding")
    posts, splash_loads = [], []

    def refuse(route):
        posts.append(route.request.url)
        route.fulfill(status=302, headers={"Location": back})
    phone.route(f"{ROUTER}/**", refuse)
    phone.on("request", lambda request: splash_loads.append(request.url)
             if request.url.startswith(daemon.portal_url + "/?") else None)
    phone.goto(splash_url(daemon, mac=mac, ip="10.5.50.67"))
    buy(phone, "0708374149")
    refused = phone.locator("#router-refused")
    expect(refused).to_be_visible(timeout=15_000)
    assert "RADIUS server is not responding" in refused.inner_text()
    assert "You have paid time on this device" in phone.inner_text("#status")
    phone.wait_for_timeout(3000)                          # long enough for a loop to show (it was 22 loads/s)
    assert len(posts) == 1 and len(splash_loads) == 2, (posts, splash_loads)   # the visit, and the way back
    phone.screenshot(path=str(screenshots / "router-refused-phone-en.png"), full_page=True)
    # the customer's tap tries once more, and the page stays put again
    phone.get_by_role("button", name="Connect now").click()
    expect(refused).to_be_visible()
    phone.wait_for_timeout(2000)
    assert len(posts) == 2 and len(splash_loads) == 3
