"""The owner's dashboard over real HTTP: a started hotspotd, requests.Session as the browser
(cookies, CSRF tokens fetched from the forms), the Daraja and RouterOS simulators behind it."""
import csv
import html
import io
import re

import pytest
import requests

from hotspotd import access, admins, clock, reports
from hotspotd.storage.models import AdminUser, Disconnect, Entitlement, Event, Package, Payment, Voucher

from tests.helpers import attr, flashes, give_time, PASSWORD, post, RADIUS, run_cli, sign_in, token, wait_for

#: run again on PostgreSQL by scripts/test (-m postgres)
pytestmark = pytest.mark.postgres

MAC = "AA:BB:CC:DD:EE:30"
PAGES = ["/admin/", "/admin/sessions", "/admin/payments", "/admin/payments.csv", "/admin/payments/1",
         "/admin/packages", "/admin/packages/new", "/admin/packages/1", "/admin/vouchers",
         "/admin/vouchers/sheet?batch=x", "/admin/health"]


@pytest.fixture
def owner(make_hotspot):
    """Start a hotspot with ``make_hotspot(**tables)`` and an owner account; returns the hotspot."""
    def start(**tables):
        hs = make_hotspot(**tables)
        admins.create("owner", PASSWORD)
        return hs
    return start


@pytest.fixture
def signed_in(owner, http):
    def start(**tables):
        hs = owner(**tables)
        r = sign_in(hs, http)
        assert r.status_code == 200 and 'data-page="overview"' in r.text, r.text[:2000]
        return hs
    return start


# --- signing in -------------------------------------------------------------------------------
@pytest.mark.parametrize("path", PAGES)
def test_every_page_sends_a_stranger_to_the_login(owner, http, path):
    hs = owner()
    r = http.get(f"{hs.portal_url}{path}", allow_redirects=False)
    assert r.status_code in (302, 303)
    assert r.headers["Location"].startswith("/admin/login?next=")
    assert 'data-page="login"' in http.get(f"{hs.portal_url}{path}").text


def test_changes_while_signed_out_are_refused(owner, http):
    hs = owner()
    ent = give_time(MAC)
    packages = Package.select().count()
    for action in (f"/admin/sessions/{ent.id}/disconnect", f"/admin/sessions/{ent.id}/extend",
                   "/admin/packages/new", "/admin/packages/1/active", "/admin/vouchers"):
        r = http.post(f"{hs.portal_url}{action}", data={"minutes": "30", "name": "x", "price": "1", "devices": "1",
                                                       "active": "0", "package": "1", "count": "3"},
                      allow_redirects=False)
        assert r.status_code == 303 and r.headers["Location"].startswith("/admin/login"), action
    assert Entitlement.get_by_id(ent.id).expires_at == ent.expires_at and Entitlement.get_by_id(ent.id).status == "active"
    assert Package.select().count() == packages and Package.get_by_id(1).active and Voucher.select().count() == 0
    assert Disconnect.select().count() == 0


def test_sign_in_lands_on_the_page_asked_for_and_sign_out_ends_it(owner, http):
    hs = owner()
    page = http.get(f"{hs.portal_url}/admin/packages").text           # redirected to the login, next=/admin/packages
    assert 'name="username"' in page and 'name="password"' in page and 'form id="login"' in page
    r = http.post(f"{hs.portal_url}/admin/login", data={"csrf_token": token(page), "username": "owner",
                                                       "password": PASSWORD, "next": "/admin/packages"})
    assert r.url.endswith("/admin/packages") and 'data-page="packages"' in r.text
    cookie = next(c for c in http.cookies if c.name == "hotspotd_session")
    assert cookie.has_nonstandard_attr("HttpOnly") and not cookie.secure
    assert AdminUser.get().last_login_at is not None
    assert http.get(f"{hs.portal_url}/admin/logout").status_code == 405    # signing out is a POST
    r = post(hs, http, "/admin/", "/admin/logout")
    assert 'data-page="login"' in r.text and "Signed out." in flashes(r.text)
    assert http.get(f"{hs.portal_url}/admin/", allow_redirects=False).status_code == 303


def test_a_foreign_next_is_ignored(owner, http):
    hs = owner()
    r = sign_in(hs, http, next="https://evil.example/admin")
    assert r.url == f"{hs.portal_url}/admin/"


def test_cookie_is_secure_when_the_portal_is_https(owner, http):
    hs = owner(portal={"public_url": "https://wifi.example.co.ke"})
    page = http.get(f"{hs.portal_url}/admin/login")
    assert "Secure" in page.headers["Set-Cookie"] and "SameSite=Lax" in page.headers["Set-Cookie"]
    assert "HttpOnly" in page.headers["Set-Cookie"]


def test_wrong_password_is_refused(owner, http):
    hs = owner()
    r = sign_in(hs, http, password="not the password")
    assert 'data-page="login"' in r.text and "Wrong username or password." in r.text
    assert 'value="owner"' in r.text                                   # the name stays filled in
    r = sign_in(hs, http, username="nobody")
    assert "Wrong username or password." in r.text
    assert http.get(f"{hs.portal_url}/admin/", allow_redirects=False).status_code == 303


def test_five_wrong_passwords_lock_the_account_even_for_the_right_one(owner, http):
    hs = owner()
    for _ in range(admins.MAX_FAILURES - 1):
        assert "Wrong username or password." in sign_in(hs, http, password="guess guess guess").text
    assert "locked for 15 minutes" in sign_in(hs, http, password="guess guess guess").text   # the fifth
    r = sign_in(hs, http)                                              # the right password
    assert 'id="login-error"' in r.text and "locked for 15 minutes" in r.text
    assert admins.is_locked("owner")
    assert http.get(f"{hs.portal_url}/admin/", allow_redirects=False).status_code == 303
    AdminUser.update(locked_until=clock.now() - 1).execute()           # fifteen minutes later
    assert 'data-page="overview"' in sign_in(hs, http).text


def test_login_is_rate_limited(owner, http):
    hs = owner()
    page = http.get(f"{hs.portal_url}/admin/login").text
    codes = [http.post(f"{hs.portal_url}/admin/login", data={"csrf_token": token(page), "username": "nobody",
                                                            "password": "x"}).status_code for _ in range(11)]
    assert codes[:10] == [200] * 10 and codes[10] == 429
    r = http.post(f"{hs.portal_url}/admin/login", data={"csrf_token": token(page), "username": "owner",
                                                       "password": PASSWORD})
    assert r.status_code == 429 and "Too many sign-in attempts" in r.text and "<html" in r.text
    assert http.get(f"{hs.portal_url}/admin/login").status_code == 200  # only the POST is limited


def test_login_without_csrf_token_is_refused(owner, http):
    hs = owner()
    http.get(f"{hs.portal_url}/admin/login")
    r = http.post(f"{hs.portal_url}/admin/login", data={"username": "owner", "password": PASSWORD})
    assert r.status_code == 400 and "form has expired" in r.text
    assert http.get(f"{hs.portal_url}/admin/", allow_redirects=False).status_code == 303


def test_post_without_or_with_a_wrong_csrf_token_changes_nothing(signed_in, http):
    hs = signed_in()
    ent = give_time(MAC)
    base = hs.portal_url
    assert http.post(f"{base}/admin/sessions/{ent.id}/disconnect").status_code == 400
    assert http.post(f"{base}/admin/sessions/{ent.id}/disconnect", data={"csrf_token": "forged"}).status_code == 400
    assert http.post(f"{base}/admin/sessions/{ent.id}/extend", data={"minutes": "60"}).status_code == 400
    assert http.post(f"{base}/admin/packages/1/active", data={"active": "0"}).status_code == 400
    assert http.post(f"{base}/admin/vouchers", data={"package": "1", "count": "5"}).status_code == 400
    fresh = Entitlement.get_by_id(ent.id)
    assert fresh.status == "active" and fresh.expires_at == ent.expires_at
    assert Disconnect.select().count() == 0 and Voucher.select().count() == 0 and Package.get_by_id(1).active


def test_the_api_and_callbacks_need_no_csrf_token(signed_in, http):
    hs = signed_in()
    r = http.post(f"{hs.portal_url}/api/portal/pay", json={"phone": "0708374149", "packageId": 2, "macAddress": MAC})
    assert r.status_code == 200 and r.json()["success"] is True
    r = http.post(f"{hs.portal_url}/cb/{hs.callback_token}", json={"Body": {}})
    assert r.status_code == 200 and r.json()["ResultCode"] == 0


def test_session_ends_after_eight_idle_hours(signed_in, http, monkeypatch):
    hs = signed_in()
    real_now = clock.now
    monkeypatch.setattr(clock, "now", lambda: real_now() + 8 * 3600 + 60)
    r = http.get(f"{hs.portal_url}/admin/sessions")
    assert 'data-page="login"' in r.text and "Signed out after 8 hours without activity." in flashes(r.text)


def test_a_new_password_signs_other_browsers_out(signed_in, http):
    hs = signed_in()
    assert http.get(f"{hs.portal_url}/admin/", allow_redirects=False).status_code == 200
    admins.set_password("owner", "another long password")
    assert http.get(f"{hs.portal_url}/admin/", allow_redirects=False).status_code == 303


# --- overview ---------------------------------------------------------------------------------
def pay_and_wait(hs, http, phone, mac=MAC, ip=None):
    body = {"phone": phone, "packageId": Package.get(Package.name == "1 hour").id, "macAddress": mac}
    if ip:
        body["login"] = {"ip": ip}
    r = http.post(f"{hs.portal_url}/api/portal/pay", json=body)
    assert r.status_code == 200, r.text
    checkout = r.json()["checkoutRequestId"]
    wait_for(lambda: Payment.get(Payment.checkout_request_id == checkout).status not in ("created", "pending"))
    return Payment.get(Payment.checkout_request_id == checkout)


def test_overview_after_a_payment(signed_in, http):
    hs = signed_in(radius=RADIUS)
    paid = pay_and_wait(hs, http, "0708374149", ip="10.5.50.30")
    assert paid.status == "success"
    cancelled = pay_and_wait(hs, http, "254700001032", mac="AA:BB:CC:DD:EE:31")
    assert cancelled.status == "cancelled"
    wait_for(lambda: Event.get_or_none(Event.kind == "router_login"))  # logged in at the simulated router
    # the simulated router's accounting Start says it is online (it comes on its own, a moment later)
    wait_for(lambda: reports.online_now().devices_online == 1)

    page = http.get(f"{hs.portal_url}/admin/").text
    assert attr(page, "revenue-today", "data-value") == "10" and "KES 10" in page
    assert attr(page, "revenue-month", "data-value") == "10"
    assert attr(page, "active-count", "data-value") == "1"
    assert attr(page, "online-count", "data-value") == "1"
    assert (attr(page, "funnel", "data-sent"), attr(page, "funnel", "data-paid"), attr(page, "funnel", "data-online")) \
        == ("2", "1", "1")
    assert re.search(r'data-reason="cancelled" data-count="1"', page)
    bars = re.findall(r'<rect class="bar[^"]*"[^>]*data-day="([\d-]+)" data-amount="(\d+)"', page)
    assert len(bars) == 30
    today = reports.local_day(clock.now()).isoformat()
    assert bars[-1] == (today, "10")
    assert all(amount == "0" for _, amount in bars[:-1])
    assert '<svg id="revenue-chart"' in page and "<script" not in page


def test_overview_period_choice(signed_in, http):
    hs = signed_in()
    page = http.get(f"{hs.portal_url}/admin/?period=month").text
    assert "Payments · This month" in page and attr(page, "funnel", "data-sent") == "0"
    assert 'id="funnel-failures-none"' in page


# --- sessions ---------------------------------------------------------------------------------
def test_disconnect_now_ends_the_session_and_cuts_the_device_off_at_the_router(signed_in, http):
    hs = signed_in(radius=RADIUS)
    paid = pay_and_wait(hs, http, "0708374149", ip="10.5.50.30")
    wait_for(lambda: hs.routeros_sim.active_macs() == [MAC])
    ent = access.entitlement_of(paid)
    page = http.get(f"{hs.portal_url}/admin/sessions").text
    row = re.search(rf'<tr data-entitlement="{ent.id}" data-mac="([^"]*)" data-online="\w+">(.*?)</tr>', page, re.S)
    assert row and row[1] == MAC and "2547****4149" in row[2] and "254708374149" not in page
    assert 'data-action="disconnect"' in row[2] and "1 hour" in row[2]

    r = http.post(f"{hs.portal_url}/admin/sessions/{ent.id}/disconnect", data={"csrf_token": token(page)})
    assert r.status_code == 200 and f"Session {ent.id} ended" in flashes(r.text)[0]
    assert Entitlement.get_by_id(ent.id).status == "revoked" and access.authorize(MAC) is None
    cut = Disconnect.get(Disconnect.entitlement == ent.id)
    assert (cut.mac, cut.router, cut.reason) == (MAC, "simulated-mikrotik", "owner")
    wait_for(lambda: hs.routeros_sim.active_macs() == [])
    wait_for(lambda: Disconnect.get_by_id(cut.id).status == "done")
    assert f'data-entitlement="{ent.id}"' not in http.get(f"{hs.portal_url}/admin/sessions").text
    # a second click changes nothing
    r = post(hs, http, "/admin/sessions", f"/admin/sessions/{ent.id}/disconnect")
    assert "had already ended" in flashes(r.text)[0] and Disconnect.select().count() == 1


def test_extend_adds_minutes(signed_in, http):
    hs = signed_in()
    ent = give_time(MAC, seconds=600)
    r = post(hs, http, "/admin/sessions", f"/admin/sessions/{ent.id}/extend", minutes="45")
    assert f"Session {ent.id} extended by 45 min" in flashes(r.text)[0]
    assert Entitlement.get_by_id(ent.id).expires_at == ent.expires_at + 45 * 60
    for bad in ("0", "-5", "ten", ""):
        r = post(hs, http, "/admin/sessions", f"/admin/sessions/{ent.id}/extend", minutes=bad)
        assert "whole number of minutes" in flashes(r.text)[0]
    assert Entitlement.get_by_id(ent.id).expires_at == ent.expires_at + 45 * 60
    access.revoke(ent.id, "test")
    r = post(hs, http, "/admin/sessions", f"/admin/sessions/{ent.id}/extend", minutes="10")
    assert "only a live session can be extended" in flashes(r.text)[0]


# --- payments ---------------------------------------------------------------------------------
def test_payments_search_filter_and_csv(signed_in, http):
    hs = signed_in()
    a = give_time("AA:BB:CC:DD:EE:01", phone="254708374149", price=10).payment
    b = give_time("AA:BB:CC:DD:EE:02", phone="254712345678", price=50).payment
    Payment.update(receipt="QKA1B2C3D4").where(Payment.id == a.id).execute()
    failed = Payment.create(phone="254722000000", amount=10, package=1, status="cancelled", result_code="1032",
                            created_at=clock.now(), completed_at=clock.now())
    base = hs.portal_url

    def rows(query=""):
        page = http.get(f"{base}/admin/payments{query}").text
        return [int(i) for i in re.findall(r'<tr data-payment="(\d+)"', page)], page

    ids, page = rows()
    assert sorted(ids) == sorted([a.id, b.id, failed.id]) and attr(page, "payments-total", "data-value") == "3"
    assert "2547****4149" in page and "254708374149" not in page and "Cancelled on the phone" in page
    assert rows("?q=0708374149")[0] == [a.id]
    assert rows("?q=qka1b2")[0] == [a.id]
    assert rows("?status=cancelled")[0] == [failed.id]
    today = reports.local_day(clock.now()).isoformat()
    assert len(rows(f"?from={today}&to={today}")[0]) == 3
    assert rows("?to=2020-01-01")[0] == []
    ids, page = rows("?from=yesterday")
    assert 'data-field="from"' in page

    _, page = rows("?status=success")
    link = html.unescape(re.search(r'<a id="csv-export"[^>]*href="([^"]+)"', page)[1])
    assert link == "/admin/payments.csv?status=success"
    r = http.get(f"{base}{link}")
    assert r.status_code == 200 and r.headers["Content-Type"].startswith("text/csv")
    assert re.fullmatch(r'attachment; filename="payments-\d{4}-\d\d-\d\d\.csv"', r.headers["Content-Disposition"])
    table = list(csv.DictReader(io.StringIO(r.content.decode("utf-8-sig"))))
    assert sorted(row["phone"] for row in table) == ["254708374149", "254712345678"]   # in full: the owner's record
    assert {row["receipt"] for row in table} >= {"QKA1B2C3D4"} and {row["status"] for row in table} == {"success"}


def test_payment_page_timeline_and_reconcile_now(signed_in, http):
    hs = signed_in(simulator={"callback_delay_seconds": 60, "final_after_seconds": 0}, scheduler={"enabled": False})
    r = http.post(f"{hs.portal_url}/api/portal/pay",
                  json={"phone": "0708374149", "packageId": 2, "macAddress": MAC})
    p = Payment.get(Payment.checkout_request_id == r.json()["checkoutRequestId"])
    assert p.status == "pending"
    page = http.get(f"{hs.portal_url}/admin/payments/{p.id}").text
    assert 'data-action="reconcile"' in page and attr(page, "payment-status", "data-status") == "pending"
    assert re.findall(r'<li data-kind="(\w+)"', page) == ["created", "pushed"]

    r = http.post(f"{hs.portal_url}/admin/payments/{p.id}/reconcile", data={"csrf_token": token(page)})
    # Daraja's query says "being processed" once after its final state (daraja.md, "STK push query"):
    # the owner is told so, and asks again
    assert "no change, the payment is still pending" in flashes(r.text)[0]
    r = post(hs, http, f"/admin/payments/{p.id}", f"/admin/payments/{p.id}/reconcile")
    assert "the payment is now success" in flashes(r.text)[0]
    p = Payment.get_by_id(p.id)
    assert p.status == "success" and p.resolved_by == "query"
    kinds = re.findall(r'<li data-kind="(\w+)"', r.text)
    assert kinds[:2] == ["created", "pushed"] and {"query", "resolved", "session_created"} <= set(kinds)
    assert 'data-action="reconcile"' not in r.text and access.authorize(MAC) is not None

    queries = Event.select().where(Event.kind == "query").count()
    r = post(hs, http, f"/admin/payments/{p.id}", f"/admin/payments/{p.id}/reconcile")
    assert "already success" in flashes(r.text)[0]
    assert Event.select().where(Event.kind == "query").count() == queries
    assert http.get(f"{hs.portal_url}/admin/payments/999").status_code == 404


# --- packages ---------------------------------------------------------------------------------
def api_packages(hs, http):
    return [p["name"] for p in http.get(f"{hs.portal_url}/api/portal/packages").json()["packages"]]


def test_packages_create_with_validation_edit_disable_and_order(signed_in, http):
    hs = signed_in()
    r = post(hs, http, "/admin/packages/new", "/admin/packages/new", name="  ", price="abc", minutes="0",
             data_mb="-1", rate="fast", devices="99")
    assert r.status_code == 400
    errors = dict(re.findall(r'data-field="(\w+)">([^<]+)<', r.text))
    assert set(errors) == {"name", "price", "minutes", "data_mb", "rate", "devices"}
    assert 'value="abc"' in r.text                                     # what was typed stays
    assert Package.select().count() == 3

    r = post(hs, http, "/admin/packages/new", "/admin/packages/new", name="Week pass", name_sw="Pasi ya wiki",
             price="250", minutes="10080", data_mb="2048", rate="2M/5M", devices="2")
    assert r.status_code == 200 and 'data-page="packages"' in r.text
    week = Package.get(Package.name == "Week pass")
    assert week.name_sw == "Pasi ya wiki"
    assert (week.price, week.duration_seconds, week.data_cap_bytes, week.rate_limit, week.devices, week.active) == \
        (250, 604800, 2048 * 1024 * 1024, "2M/5M", 2, True)
    assert api_packages(hs, http) == ["30 minutes", "1 hour", "24 hours", "Week pass"]

    page = http.get(f"{hs.portal_url}/admin/packages/{week.id}").text
    assert 'value="Week pass"' in page and 'value="2048"' in page and 'value="10080"' in page
    assert 'value="Pasi ya wiki"' in page
    r = http.post(f"{hs.portal_url}/admin/packages/{week.id}",
                  data={"csrf_token": token(page), "name": "Week", "price": "200", "minutes": "10080", "data_mb": "",
                        "rate": "", "devices": "1"})
    week = Package.get_by_id(week.id)
    assert (week.name, week.price, week.data_cap_bytes, week.rate_limit, week.devices) == ("Week", 200, None, None, 1)
    r = post(hs, http, f"/admin/packages/{week.id}", f"/admin/packages/{week.id}", name="Week", price="0",
             minutes="10080", devices="1")
    assert r.status_code == 400 and Package.get_by_id(week.id).price == 200

    r = post(hs, http, "/admin/packages", "/admin/packages/1/active", active="0")
    assert re.search(r'<tr data-package="1" data-active="no"', r.text)
    assert api_packages(hs, http) == ["1 hour", "24 hours", "Week"]
    post(hs, http, "/admin/packages", f"/admin/packages/{week.id}/move", direction="up")
    assert api_packages(hs, http) == ["1 hour", "Week", "24 hours"]
    post(hs, http, "/admin/packages", "/admin/packages/2/move", direction="down")
    assert api_packages(hs, http) == ["Week", "1 hour", "24 hours"]
    post(hs, http, "/admin/packages", "/admin/packages/1/active", active="1")
    assert api_packages(hs, http) == ["30 minutes", "Week", "1 hour", "24 hours"]
    page = http.get(f"{hs.portal_url}/admin/packages").text
    assert re.findall(r'<tr data-package="(\d+)"', page) == ["1", str(week.id), "2", "3"]


def test_package_names_are_escaped_everywhere(signed_in, http):
    hs = signed_in()
    evil = "<script>alert(1)</script>"
    post(hs, http, "/admin/packages/new", "/admin/packages/new", name=evil, price="20", minutes="60", devices="1")
    pkg = Package.get(Package.name == evil)
    give_time(MAC)                                                     # a live session …
    Entitlement.update(package=pkg.id).execute()                       # … of the evil package
    Payment.update(package=pkg.id).execute()
    post(hs, http, "/admin/vouchers", "/admin/vouchers", package=str(pkg.id), count="1", batch="<b>batch</b>")
    pages = ["/admin/packages", f"/admin/packages/{pkg.id}", "/admin/sessions", "/admin/payments",
             f"/admin/payments/{Payment.get().id}", "/admin/vouchers", "/admin/vouchers/sheet?batch=%3Cb%3Ebatch%3C/b%3E"]
    for path in pages:
        page = http.get(f"{hs.portal_url}{path}").text
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page, path
        assert "<script" not in page and "<b>batch" not in page, path


# --- vouchers ---------------------------------------------------------------------------------
def test_voucher_batch_and_printable_sheet(signed_in, http, monkeypatch):
    hs = signed_in(portal={"site_name": "Mama Njeri Cafe"})
    monkeypatch.setattr(clock, "local_stamp", lambda ts: "2026-05-31 10:00")   # both batches in one minute
    pkg = Package.get(Package.name == "24 hours")
    r = post(hs, http, "/admin/vouchers", "/admin/vouchers", package=str(pkg.id), count="3", batch="")
    assert r.status_code == 200 and 'data-page="sheet"' in r.text
    made = list(Voucher.select().order_by(Voucher.id))
    assert len(made) == 3 and {v.package_id for v in made} == {pkg.id}
    shown = re.findall(r'class="voucher[^"]*" data-code="([A-Z0-9-]+)"', r.text)
    assert shown == [f"{v.code[:5]}-{v.code[5:]}" for v in made]
    assert "Mama Njeri Cafe" in r.text and "KES 50" in r.text and "24 hours" in r.text
    css = http.get(f"{hs.portal_url}/static/admin.css").text
    assert "@media print" in css

    post(hs, http, "/admin/vouchers", "/admin/vouchers", package=str(pkg.id), count="2", batch="")
    page = http.get(f"{hs.portal_url}/admin/vouchers").text
    batches = [html.unescape(b) for b in re.findall(r'<tr data-batch="([^"]+)"', page)]
    assert batches == ["2026-05-31 10:00 #2", "2026-05-31 10:00"]
    assert len(reports.batch_vouchers("2026-05-31 10:00")) == 3

    r = post(hs, http, "/admin/vouchers", "/admin/vouchers", package=str(pkg.id), count="0")
    assert r.status_code == 400 and 'data-field="count"' in r.text
    r = post(hs, http, "/admin/vouchers", "/admin/vouchers", package="999", count="5")
    assert r.status_code == 400 and 'data-field="package"' in r.text
    assert Voucher.select().count() == 5
    assert http.get(f"{hs.portal_url}/admin/vouchers/sheet?batch=nope").status_code == 404


# --- health -----------------------------------------------------------------------------------
def checks(page: str) -> dict[str, str]:
    return dict(re.findall(r'<li data-check="([^"]+)" data-state="(\w+)"', page))


def test_health_with_the_simulators(signed_in, http):
    hs = signed_in(radius=RADIUS)
    hs.timekeeper.synchronized = True          # what the kernel says differs between machines
    page = http.get(f"{hs.portal_url}/admin/health").text
    states = checks(page)
    assert states["daraja"] == "ok" and states["callback"] == "ok" and states["router:simulated-mikrotik"] == "ok"
    assert states["scheduler"] == "ok" and states["disconnects"] == "ok" and states["clock"] == "info"
    assert states["storage"] == "ok"
    assert states["radius"] == "warn" and "no request since start" in page     # nobody asked yet
    assert "simulated-venue" in page and hs.callback_token not in page

    hs.routeros_sim.set_unreachable(True)
    Disconnect.create(mac="AA:BB:CC:DD:EE:99", router="simulated-mikrotik", reason="ended", status="failing",
                      created_at=clock.now(), next_at=clock.now() + 3600, attempts=3, last_error="cannot connect")
    page = http.get(f"{hs.portal_url}/admin/health").text
    states = checks(page)
    assert states["router:simulated-mikrotik"] == "fail" and states["disconnects"] == "fail"
    assert "AA:BB:CC:DD:EE:99" in page and attr(page, "health-summary", "data-state") == "fail"


def test_health_without_radius_or_scheduler(signed_in, http):
    hs = signed_in(scheduler={"enabled": False})
    states = checks(http.get(f"{hs.portal_url}/admin/health").text)
    assert states["radius"] == "warn" and states["scheduler"] == "fail"


def test_admin_create_list_and_set_password(tmp_path, capsys, monkeypatch):
    code, out, _ = run_cli(tmp_path, capsys, monkeypatch, "create", "owner", "--password-stdin", stdin=PASSWORD + "\n")
    assert code == 0 and "account 'owner' created" in out
    assert "sign in at http://192.168.88.2:8080/admin/login" in out          # [portal] public_url, not a placeholder
    user = AdminUser.get(AdminUser.username == "owner")
    assert PASSWORD not in user.password_hash and admins.authenticate("owner", PASSWORD)
    code, out, _ = run_cli(tmp_path, capsys, monkeypatch, "list")
    assert code == 0 and re.search(r"^owner\s", out, re.M)
    code, _, err = run_cli(tmp_path, capsys, monkeypatch, "create", "owner", "--password-stdin", stdin="x" * 12)
    assert code == 1 and "already exists" in err
    code, out, _ = run_cli(tmp_path, capsys, monkeypatch, "set-password", "owner", "--password-stdin",
                           stdin="a new long password\n")
    assert code == 0 and admins.authenticate("owner", "a new long password") and not admins.authenticate("owner", PASSWORD)
    code, _, err = run_cli(tmp_path, capsys, monkeypatch, "set-password", "nobody", "--password-stdin", stdin="x" * 12)
    assert code == 1 and "no account" in err


@pytest.mark.parametrize("password", ["short", "", "password123"])
def test_admin_create_refuses_a_weak_password(tmp_path, capsys, monkeypatch, password):
    code, _, err = run_cli(tmp_path, capsys, monkeypatch, "create", "owner", "--password-stdin", stdin=password + "\n")
    assert code == 2 and "password:" in err
    assert AdminUser.select().count() == 0


def test_admin_create_asks_twice_without_echo(tmp_path, capsys, monkeypatch):
    answers = iter([PASSWORD, "something else"])
    monkeypatch.setattr("getpass.getpass", lambda prompt="": next(answers))
    code, _, err = run_cli(tmp_path, capsys, monkeypatch, "create", "owner")
    assert code == 1 and "differ" in err and AdminUser.select().count() == 0
    answers = iter([PASSWORD, PASSWORD])
    code, _, _ = run_cli(tmp_path, capsys, monkeypatch, "create", "owner")
    assert code == 0 and admins.authenticate("owner", PASSWORD)


def test_the_health_page_reads_the_routers_back_on_request(signed_in, http):
    from tests.helpers import wait_for
    hs = signed_in(scheduler={"readback_every_seconds": 3600})       # the job would not come by itself
    hs.routeros_sim.login("AA:BB:CC:00:71:09", "10.5.50.79", "AA:BB:CC:00:71:09")   # online, never paid
    page = http.get(f"{hs.portal_url}/admin/health").text
    assert 'id="readback-now"' in page and 'data-check="readback" data-state="info"' in page
    r = post(hs, http, "/admin/health", "/admin/health/readback")
    assert r.status_code == 200 and "Reading the routers back now" in " ".join(flashes(r.text))
    wait_for(lambda: hs.routeros_sim.active_macs() == [], timeout=10)    # read back on the scheduler, then cut
    page = http.get(f"{hs.portal_url}/admin/health").text
    assert 'data-check="readback" data-state="warn"' in page and "AA:BB:CC:00:71:09" in page


def test_the_owner_sends_a_voucher_by_sms_and_it_reaches_the_phone(signed_in, http):
    hs = signed_in(sms={"provider": "africastalking"}, portal={"site_name": "Mama Njeri Cafe"})
    pkg = Package.get(Package.name == "1 hour")
    page = http.get(f"{hs.portal_url}/admin/vouchers").text
    assert 'id="voucher-sms"' in page
    r = post(hs, http, "/admin/vouchers", "/admin/vouchers/sms", sms_package=str(pkg.id), phone="0712 3456",
             lang="sw")
    assert r.status_code == 400 and 'data-field="phone"' in r.text and Voucher.select().count() == 0
    r = post(hs, http, "/admin/vouchers", "/admin/vouchers/sms", sms_package=str(pkg.id), phone="0712 345 678",
             lang="sw")
    (voucher,) = Voucher.select()
    code = f"{voucher.code[:5]}-{voucher.code[5:]}"
    assert r.status_code == 200 and f"Voucher {code}" in html.unescape(r.text) and "2547****5678" in r.text
    inbox = f"{hs.simulator.url}/simulator/phones/254712345678/messages"
    [sms] = wait_for(lambda: requests.get(inbox, timeout=5).json()["messages"])
    assert sms["text"].startswith(f"Mama Njeri Cafe: vocha yako ya Wi-Fi ya Saa 1 ni {code}.")


def test_without_sms_there_is_no_send_by_sms(signed_in, http):
    hs = signed_in()
    assert 'id="voucher-sms"' not in http.get(f"{hs.portal_url}/admin/vouchers").text
    pkg = Package.get(Package.name == "1 hour")
    r = post(hs, http, "/admin/vouchers", "/admin/vouchers/sms", sms_package=str(pkg.id), phone="0712345678", lang="en")
    assert r.status_code == 404 and Voucher.select().count() == 0
