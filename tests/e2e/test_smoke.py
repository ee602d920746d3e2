"""The splash page in a real browser: a 360-px Android phone, with and without JavaScript."""
import re

from playwright.sync_api import expect

from tests.helpers import PHONE


SUCCESS_PHONE = "0708374149"
PAY_TIMEOUT_MS = 20_000   # simulator callback ~0.05 s here, but the wait page refreshes every 3 s


#: the device's variables, as the router's login page sends them (without them a purchase is held)
FROM_ROUTER = "/?mac=AA:BB:CC:DD:EE:70&ip=10.5.50.70"


def pay_on_splash(page, portal_url, entry=FROM_ROUTER, outcome="success"):
    page.goto(portal_url + entry)
    page.locator("input[name=package]").first.check()
    page.locator("#phone").fill(SUCCESS_PHONE)
    page.locator("form button[type=submit]").click()
    expect(page.locator("#status")).to_have_attribute("data-status", outcome, timeout=PAY_TIMEOUT_MS)


def test_splash_renders_on_a_phone(daemon, phone):
    response = phone.goto(daemon.portal_url + "/")
    assert response.status == 200
    packages = phone.locator("input[name=package]")
    expect(packages).to_have_count(3)
    expect(packages.first).to_be_checked()
    for name, price in (("30 minutes", 5), ("1 hour", 10), ("24 hours", 50)):
        expect(phone.get_by_role("radio", name=re.compile(rf"^{name}\b.*KES {price}\b"))).to_have_count(1)
    field = phone.locator("#phone")
    expect(field).to_be_visible()
    expect(field).to_have_attribute("type", "tel")
    # fits the narrow screen: nothing wider than the viewport, so no sideways scrolling
    assert phone.evaluate("document.documentElement.scrollWidth") <= 360


def test_all_requests_stay_on_the_portal(daemon, phone, record_requests):
    log = record_requests(phone)
    pay_on_splash(phone, daemon.portal_url)
    assert log.urls, "no request recorded"
    assert log.outside(daemon.portal_url) == []


def test_paying_ends_on_success(daemon, phone):
    pay_on_splash(phone, daemon.portal_url)
    assert "/wait/" in phone.url
    expect(phone.locator("#status")).to_be_visible()
    expect(phone.locator("#status h2")).to_have_text("You are online")


def test_paying_where_the_device_is_unknown_ends_with_what_to_do(daemon, phone, screenshots):
    pay_on_splash(phone, daemon.portal_url, entry="/", outcome="held")      # a bookmark, a QR poster
    expect(phone.locator("#status h2")).to_have_text("Payment received")
    expect(phone.locator("#held-steps li")).to_have_count(2)
    assert "You are online" not in phone.inner_text("body")
    assert phone.evaluate("document.documentElement.scrollWidth") <= 360
    phone.screenshot(path=str(screenshots / "held-phone-en.png"), full_page=True)


def test_screenshot_of_splash(daemon, phone, screenshots):
    phone.goto(daemon.portal_url + "/?lang=en")
    expect(phone.locator("#phone")).to_be_visible()
    path = screenshots / "splash-en.png"
    phone.screenshot(path=str(path), full_page=True)
    assert path.stat().st_size > 1000
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_works_without_javascript(daemon, new_page, record_requests):
    page = new_page(**PHONE, java_script_enabled=False)
    log = record_requests(page)
    pay_on_splash(page, daemon.portal_url)   # a plain form post, then the wait page's meta refresh
    assert log.outside(daemon.portal_url) == []


def test_desktop_layout_stays_narrow(daemon, desktop):
    desktop.goto(daemon.portal_url + "/")
    box = desktop.locator("form").bounding_box()
    assert box is not None and box["width"] <= 640   # the card column, not the full 1366-px width
