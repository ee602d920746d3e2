"""The owner's side in headless Chromium: sign in, find the payment in the funnel and the chart,
disconnect the session, and the device is gone from the simulated MikroTik."""
from urllib.parse import urlencode

from hotspotd import admins, clock
from hotspotd.storage.models import Disconnect, Entitlement, Payment

from tests.helpers import wait_for

MAC = "AA:BB:CC:DD:EE:70"


def customer_pays(daemon, page):
    page.goto(f"{daemon.portal_url}/?{urlencode({'mac': MAC, 'ip': '10.5.50.70'})}")
    page.get_by_text("1 hour", exact=False).first.click()
    page.fill("#phone", "0708374149")
    page.get_by_role("button", name="Pay with M-Pesa").click()
    page.wait_for_selector('#status[data-status="success"]', timeout=15_000)
    wait_for(lambda: MAC in daemon.routeros_sim.active_macs())


def test_owner_sees_the_payment_and_disconnects_the_device(daemon, phone, desktop, screenshots):
    customer_pays(daemon, phone)
    admins.create("owner", "a long enough secret")
    page = desktop
    page.goto(f"{daemon.portal_url}/admin/")
    assert "/admin/login" in page.url
    page.fill('input[name="username"]', "owner")
    page.fill('input[name="password"]', "wrong password")
    page.click('form#login button[type="submit"]')
    assert page.locator("#login-error").is_visible()
    page.fill('input[name="username"]', "owner")
    page.fill('input[name="password"]', "a long enough secret")
    page.click('form#login button[type="submit"]')
    page.wait_for_selector('body[data-page="overview"]')
    funnel = page.locator("#funnel")
    assert (funnel.get_attribute("data-sent"), funnel.get_attribute("data-paid")) == ("1", "1")
    assert funnel.get_attribute("data-online") == "1"       # logged in at the router after paying
    assert page.get_attribute("#revenue-today", "data-value") == "10"
    today = clock.local(clock.now()).strftime("%Y-%m-%d")
    bar = page.locator(f'#revenue-chart rect[data-day="{today}"]')
    assert bar.get_attribute("data-amount") == "10"
    assert page.locator("#revenue-chart rect[data-day]").count() == 30
    page.screenshot(path=str(screenshots / "dashboard-overview.png"), full_page=True)

    page.goto(f"{daemon.portal_url}/admin/sessions")
    row = page.locator(f'tr[data-mac~="{MAC}"]')
    assert row.count() == 1 and "0708374149" not in row.inner_text()    # phone masked
    page.screenshot(path=str(screenshots / "dashboard-sessions.png"), full_page=True)
    page.on("dialog", lambda dialog: dialog.accept())
    row.locator('button[data-action="disconnect"]').click()
    page.wait_for_selector('.flash[data-flash="ok"]')
    ent = Entitlement.get(Entitlement.payment == Payment.get().id)
    assert ent.status == "revoked"
    wait_for(lambda: MAC not in daemon.routeros_sim.active_macs(), timeout=15)
    wait_for(lambda: Disconnect.get_or_none(Disconnect.mac == MAC, Disconnect.status == "done"))
    assert daemon.routeros_sim.cookies_for(MAC) == []

    page.goto(f"{daemon.portal_url}/admin/payments/{Payment.get().id}")
    kinds = page.locator("#timeline li[data-kind]").evaluate_all("els => els.map(e => e.dataset.kind)")
    for kind in ("created", "pushed", "resolved", "session_created", "router_login", "disconnected"):
        assert kind in kinds, kinds
