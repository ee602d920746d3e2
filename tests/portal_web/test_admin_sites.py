"""The dashboard with several venues: the venue filter (``?site=``), accounts limited to some
venues (what they see, what they may change) and ``hotspotd admin create --sites`` / ``set-sites``.

A started hotspotd with two venues besides the default one, payments and sessions at each, and
requests.Session as the browser (see tests/portal_web/test_admin.py)."""
import csv
import html
import io
import re

import pytest

from hotspotd import access, admins, clock, reports, vouchers
from hotspotd.storage.models import AcctSession, AdminUser, Disconnect, Entitlement, Event, Package, Payment, Voucher

from tests.helpers import attr, flashes, PASSWORD, post, run_cli as admin_cli, sign_in, token

#: run again on PostgreSQL by scripts/test (-m postgres)
pytestmark = pytest.mark.postgres

SITES = [{"id": "beach", "name": "Beach Bar Diani"},
         {"id": "town", "name": "Town Cafe Nakuru", "shortcode": "600200"}]          # its own paybill
ROUTERS = [{"name": "beach-door", "kind": "coova", "address": "10.1.0.1", "secret": "beach-secret", "site": "beach"},
           {"name": "town-door", "kind": "coova", "address": "10.2.0.1", "secret": "town-secret", "site": "town"}]


def sale(site, amount, mac, package, status="success", phone="254708374149"):
    """A payment made at ``site`` (and, when it succeeded, the session it bought)."""
    now = clock.now()
    p = Payment.create(phone=phone, amount=amount, package=package.id, mac=mac, status=status, created_at=now,
                       completed_at=now, resolved_by="test", site=site, checkout_request_id=f"ws_CO_{mac}",
                       result_code=None if status == "success" else "1032")
    return p, access.grant_for_payment(p, now) if status == "success" else None


def online(ent, mac, site):
    now = clock.now()
    AcctSession.create(nas="10.0.0.1", acct_session_id=f"s-{mac}", mac=mac, entitlement=ent.id, started_at=now,
                       updated_at=now, online=True, site=site)


@pytest.fixture
def venues(make_hotspot):
    """A hotspotd with the venues beach and town (and default), an owner account, a package of each
    venue, and today's sales: beach 50 + 20, town 30 (and a cancelled prompt), default 10."""
    hs = make_hotspot(sites=SITES, routers=ROUTERS)
    admins.create("owner", PASSWORD)
    now = clock.now()
    hs.pkg = {
        "beach": Package.create(name="Beach hour", price=50, duration_seconds=3600, site="beach", created_at=now,
                                position=10),
        "town": Package.create(name="Town hour", price=30, duration_seconds=3600, site="town", created_at=now,
                               position=11),
        "shared": Package.get(Package.name == "1 hour"),
    }
    hs.sales = {
        "beach": [sale("beach", 50, "AA:BB:CC:00:01:01", hs.pkg["beach"]),
                  sale("beach", 20, "AA:BB:CC:00:01:02", hs.pkg["shared"])],
        "town": [sale("town", 30, "AA:BB:CC:00:02:01", hs.pkg["town"]),
                 sale("town", 30, "AA:BB:CC:00:02:02", hs.pkg["town"], status="cancelled")],
        "default": [sale("default", 10, "AA:BB:CC:00:03:01", hs.pkg["shared"])],
    }
    online(hs.sales["beach"][0][1], "AA:BB:CC:00:01:01", "beach")
    online(hs.sales["beach"][1][1], "AA:BB:CC:00:01:02", "beach")
    online(hs.sales["town"][0][1], "AA:BB:CC:00:02:01", "town")
    return hs


def ids(kind, page):
    return sorted(int(i) for i in re.findall(rf'<tr data-{kind}="(\d+)"', page))


def payment_ids(hs, *sites):
    return sorted(p.id for site in sites for p, _ in hs.sales[site])


def session_ids(hs, *sites):
    return sorted(e.id for site in sites for _, e in hs.sales[site] if e)


def figures(page):
    bars = [int(a) for a in re.findall(r'<rect[^>]*data-amount="(\d+)"', page)]
    return {"today": int(attr(page, "revenue-today", "data-value")),
            "month": int(attr(page, "revenue-month", "data-value")),
            "online": int(attr(page, "online-count", "data-value")),
            "active": int(attr(page, "active-count", "data-value")),
            "sent": int(attr(page, "funnel", "data-sent")), "paid": int(attr(page, "funnel", "data-paid")),
            "chart": sum(bars)}


def select_options(page):
    form = re.search(r'<form id="site-filter".*?</form>', page, re.S)
    return None if form is None else re.findall(r'<option value="([^"]*)"', form[0])


# --- the owner's venue filter ------------------------------------------------------------------
def test_the_overview_shows_one_venues_figures(venues, http):
    base = venues.portal_url
    page = sign_in(venues, http).text
    assert select_options(page) == ["", "default", "beach", "town"]
    assert figures(page) == {"today": 110, "month": 110, "online": 3, "active": 4, "sent": 5, "paid": 4,
                             "chart": 110}
    page = http.get(f"{base}/admin/?site=beach").text
    assert figures(page) == {"today": 70, "month": 70, "online": 2, "active": 2, "sent": 2, "paid": 2, "chart": 70}
    assert 'data-site="beach"' in page and "Beach Bar Diani" in page
    assert re.search(r'<option value="beach" selected>', page)
    # the period tabs and the navigation keep the venue
    assert 'href="/admin/?site=beach&amp;period=7d"' in page or 'href="/admin/?period=7d&amp;site=beach"' in page
    assert 'href="/admin/payments?site=beach"' in page
    page = http.get(f"{base}/admin/?site=town&period=7d").text
    assert figures(page) == {"today": 30, "month": 30, "online": 1, "active": 1, "sent": 2, "paid": 1, "chart": 30}
    assert re.findall(r'<li data-reason="(\w+)" data-count="(\d+)"', page) == [("cancelled", "1")]
    assert figures(http.get(f"{base}/admin/?site=default").text)["today"] == 10
    # the same figures straight from reports
    assert reports.revenue_today(site="beach") == 70 and reports.revenue_today(site=("beach", "town")) == 100
    assert http.get(f"{base}/admin/?site=nowhere").status_code == 404


def test_payments_sessions_and_csv_of_one_venue(venues, http):
    base = venues.portal_url
    sign_in(venues, http)
    page = http.get(f"{base}/admin/payments").text
    assert ids("payment", page) == payment_ids(venues, "beach", "town", "default")
    assert '<th>Venue</th>' in page and '<td data-label="Venue" class="venue" data-site="town">Town Cafe Nakuru' in page
    page = http.get(f"{base}/admin/payments?site=town").text
    assert ids("payment", page) == payment_ids(venues, "town") and attr(page, "payments-total", "data-value") == "2"
    assert '<input type="hidden" name="site" value="town">' in page           # the search keeps the venue
    assert ids("payment", http.get(f"{base}/admin/payments?site=town&status=success").text) == \
        [venues.sales["town"][0][0].id]
    link = html.unescape(re.search(r'<a id="csv-export"[^>]*href="([^"]+)"', page)[1])
    assert link == "/admin/payments.csv?site=town"
    table = list(csv.DictReader(io.StringIO(http.get(f"{base}{link}").content.decode("utf-8-sig"))))
    assert sorted(int(r["payment id"]) for r in table) == payment_ids(venues, "town")
    assert {r["venue"] for r in table} == {"town"} and sum(int(r["amount KES"]) for r in table) == 60

    page = http.get(f"{base}/admin/sessions?site=beach").text
    assert ids("entitlement", page) == session_ids(venues, "beach")
    assert ids("entitlement", http.get(f"{base}/admin/sessions").text) == session_ids(venues, "beach", "town", "default")
    # a change made from a filtered page comes back to it
    ent = venues.sales["beach"][0][1]
    r = post(venues, http, "/admin/sessions?site=beach", f"/admin/sessions/{ent.id}/extend?site=beach", minutes="15")
    assert r.url.endswith("/admin/sessions?site=beach") and "extended by 15 min" in flashes(r.text)[0]
    # the owner acts on any venue's rows
    p = venues.sales["town"][0][0]
    assert http.get(f"{base}/admin/payments/{p.id}").status_code == 200


def test_packages_vouchers_and_health_of_one_venue(venues, http):
    base = venues.portal_url
    sign_in(venues, http)
    page = http.get(f"{base}/admin/packages?site=beach").text
    shared = [p.id for p in Package.select().where(Package.site.is_null())]
    assert ids("package", page) == sorted(shared + [venues.pkg["beach"].id])
    page = http.get(f"{base}/admin/packages").text
    assert ids("package", page) == sorted(p.id for p in Package.select())
    assert 'data-label="Sold at" class="venue">every venue' in page

    # a package of one venue that roams, from the form
    page = http.get(f"{base}/admin/packages/new?site=town").text
    assert '<option value="town" selected>' in page and 'name="roams"' in page
    r = http.post(f"{base}/admin/packages/new?site=town", data={
        "csrf_token": token(page), "name": "Town day", "price": "80", "minutes": "1440", "devices": "1",
        "site": "town", "roams": "1"})
    assert r.url.endswith("/admin/packages?site=town")
    day = Package.get(Package.name == "Town day")
    assert (day.site, day.roams) == ("town", True)
    r = post(venues, http, "/admin/packages/new", "/admin/packages/new", name="Nowhere", price="5", minutes="5",
             devices="1", site="nowhere")
    assert r.status_code == 400 and 'data-field="site"' in r.text and not Package.get_or_none(Package.name == "Nowhere")
    post(venues, http, f"/admin/packages/{day.id}", f"/admin/packages/{day.id}", name="Town day", price="80",
         minutes="1440", devices="1", site="")                          # every venue, no longer roaming
    day = Package.get_by_id(day.id)
    assert (day.site, day.roams) == (None, False)

    vouchers.generate(venues.pkg["beach"].id, 2, "beach batch")
    vouchers.generate(venues.pkg["town"].id, 3, "town batch")
    page = http.get(f"{base}/admin/vouchers?site=beach").text
    assert re.findall(r'<tr data-batch="([^"]+)"', page) == ["beach batch"]
    options = re.findall(r'<option value="(\d+)"', page)
    assert str(venues.pkg["beach"].id) in options and str(venues.pkg["town"].id) not in options

    def checks(query=""):
        return dict(re.findall(r'<li data-check="([^"]+)" data-state="(\w+)"',
                               http.get(f"{base}/admin/health{query}").text))
    beach, town, every = checks("?site=beach"), checks("?site=town"), checks()
    assert "router:beach-door" in beach and "router:town-door" not in beach
    assert beach["daraja"] == "ok" and "daraja:town" not in beach            # paid through [mpesa]
    assert town["daraja:town"] == "ok" and "daraja" not in town and "router:beach-door" not in town
    assert {"daraja", "daraja:town", "router:beach-door", "router:town-door"} <= set(every)


def test_a_single_venue_install_looks_as_before(make_hotspot, http):
    hs = make_hotspot()
    admins.create("owner", PASSWORD)
    page = sign_in(hs, http).text
    assert 'id="site-filter"' not in page and 'id="site-only"' not in page
    for path in ("/admin/payments", "/admin/sessions", "/admin/packages", "/admin/vouchers", "/admin/packages/new"):
        page = http.get(f"{hs.portal_url}{path}").text
        assert "Venue" not in page and "Sold at" not in page and 'name="roams"' not in page, path


# --- accounts limited to venues -------------------------------------------------------------------
def as_manager(venues, http, sites=("beach",)):
    admins.create("manager", PASSWORD, list(sites))
    page = sign_in(venues, http, username="manager").text
    assert 'data-page="overview"' in page
    return page


def test_a_limited_account_sees_only_its_venue(venues, http):
    base = venues.portal_url
    page = as_manager(venues, http)
    assert figures(page) == {"today": 70, "month": 70, "online": 2, "active": 2, "sent": 2, "paid": 2, "chart": 70}
    assert select_options(page) is None and 'id="site-only" data-site="beach"' in page
    assert ids("payment", http.get(f"{base}/admin/payments").text) == payment_ids(venues, "beach")
    assert ids("payment", http.get(f"{base}/admin/payments?q=0708374149").text) == payment_ids(venues, "beach")
    table = list(csv.DictReader(io.StringIO(http.get(f"{base}/admin/payments.csv").content.decode("utf-8-sig"))))
    assert sorted(int(r["payment id"]) for r in table) == payment_ids(venues, "beach")
    assert ids("entitlement", http.get(f"{base}/admin/sessions").text) == session_ids(venues, "beach")
    page = http.get(f"{base}/admin/packages").text
    shared = sorted(p.id for p in Package.select().where(Package.site.is_null()))
    assert ids("package", page) == sorted(shared + [venues.pkg["beach"].id])
    assert len(re.findall(r'data-readonly="yes"', page)) == len(shared)   # seen, not changed
    checks = re.findall(r'<li data-check="([^"]+)"', http.get(f"{base}/admin/health").text)
    assert "router:beach-door" in checks and "router:town-door" not in checks
    for path in ("/admin/?site=town", "/admin/payments?site=town", "/admin/payments.csv?site=default",
                 "/admin/sessions?site=town", "/admin/packages?site=town", "/admin/vouchers?site=town",
                 "/admin/health?site=town"):
        r = http.get(f"{base}{path}")
        assert r.status_code == 404 and "Town Cafe" not in r.text, path
    assert http.get(f"{base}/admin/?site=beach").status_code == 200


def test_a_limited_account_cannot_touch_another_venues_payment_or_session(venues, http):
    base = venues.portal_url
    as_manager(venues, http)
    town, town_ent = venues.sales["town"][0]
    Payment.update(status="pending").where(Payment.id == town.id).execute()
    events = Event.select().count()
    page = http.get(f"{base}/admin/sessions").text                     # a page with a CSRF token
    csrf = token(page)
    assert http.get(f"{base}/admin/payments/{town.id}").status_code == 404
    assert http.post(f"{base}/admin/payments/{town.id}/reconcile", data={"csrf_token": csrf}).status_code == 404
    assert http.post(f"{base}/admin/sessions/{town_ent.id}/disconnect", data={"csrf_token": csrf}).status_code == 404
    assert http.post(f"{base}/admin/sessions/{town_ent.id}/extend",
                     data={"csrf_token": csrf, "minutes": "600"}).status_code == 404
    fresh = Entitlement.get_by_id(town_ent.id)
    assert (fresh.status, fresh.expires_at) == ("active", town_ent.expires_at)
    assert Payment.get_by_id(town.id).status == "pending" and Payment.get_by_id(town.id).query_attempts == 0
    assert Disconnect.select().count() == 0 and Event.select().count() == events
    # its own venue's: as the owner would
    beach, beach_ent = venues.sales["beach"][0]
    assert http.get(f"{base}/admin/payments/{beach.id}").status_code == 200
    r = http.post(f"{base}/admin/sessions/{beach_ent.id}/disconnect", data={"csrf_token": csrf})
    assert r.status_code == 200 and f"Session {beach_ent.id} ended" in flashes(r.text)[0]
    assert Entitlement.get_by_id(beach_ent.id).status == "revoked"


def test_a_limited_account_changes_only_its_venues_packages(venues, http):
    base = venues.portal_url
    as_manager(venues, http)
    town, shared, beach = venues.pkg["town"], venues.pkg["shared"], venues.pkg["beach"]
    page = http.get(f"{base}/admin/packages/new").text
    csrf = token(page)
    assert re.findall(r'<select id="site" name="site">\s*(.*?)</select>', page, re.S)[0].count("<option") == 1
    assert 'name="roams"' not in page and '<option value="beach" selected>' in page
    before = {p.id: (p.name, p.price, p.active, p.position, p.site, p.roams) for p in Package.select()}

    assert http.get(f"{base}/admin/packages/{town.id}").status_code == 404
    assert http.get(f"{base}/admin/packages/{shared.id}").status_code == 403
    change = {"csrf_token": csrf, "name": "Mine now", "price": "1", "minutes": "600", "devices": "1", "site": "beach"}
    assert http.post(f"{base}/admin/packages/{town.id}", data=change).status_code == 404
    assert http.post(f"{base}/admin/packages/{shared.id}", data=change).status_code == 403
    for pkg, code in ((town, 404), (shared, 403)):
        assert http.post(f"{base}/admin/packages/{pkg.id}/active", data={"csrf_token": csrf, "active": "0"}).status_code == code
        assert http.post(f"{base}/admin/packages/{pkg.id}/move",
                         data={"csrf_token": csrf, "direction": "up"}).status_code == code
    for site in ("town", "", "nowhere"):
        r = http.post(f"{base}/admin/packages/new", data={**change, "name": "Sneaky", "site": site})
        assert r.status_code == 400 and 'data-field="site"' in r.text, site
    assert {p.id: (p.name, p.price, p.active, p.position, p.site, p.roams) for p in Package.select()} == before

    r = http.post(f"{base}/admin/packages/new", data={**change, "name": "Beach day", "roams": "1"})
    assert r.status_code == 200 and 'data-page="packages"' in r.text
    day = Package.get(Package.name == "Beach day")
    assert (day.site, day.roams) == ("beach", False)                    # roaming is the owner's call
    r = http.post(f"{base}/admin/packages/{beach.id}", data={**change, "name": "Beach hour", "price": "60"})
    assert Package.get_by_id(beach.id).price == 60
    http.post(f"{base}/admin/packages/{beach.id}/active", data={"csrf_token": csrf, "active": "0"})
    assert not Package.get_by_id(beach.id).active
    # "up" swaps it with the package above it in the manager's list, whoever's that is
    page = http.get(f"{base}/admin/packages").text
    shown = [int(i) for i in re.findall(r'<tr data-package="(\d+)"', page)]
    http.post(f"{base}/admin/packages/{day.id}/move", data={"csrf_token": csrf, "direction": "up"})
    after = [int(i) for i in re.findall(r'<tr data-package="(\d+)"', http.get(f"{base}/admin/packages").text)]
    i = shown.index(day.id)
    assert after == shown[:i - 1] + [day.id, shown[i - 1]] + shown[i + 1:]
    assert Package.get_by_id(town.id).site == "town" and Package.get_by_id(shared.id).site is None


def test_a_limited_account_makes_and_sees_only_its_venues_vouchers(venues, http):
    base = venues.portal_url
    vouchers.generate(venues.pkg["town"].id, 3, "town batch")
    vouchers.generate(venues.pkg["shared"].id, 2, "owner batch")
    as_manager(venues, http)
    page = http.get(f"{base}/admin/vouchers").text
    assert re.findall(r'<tr data-batch="([^"]+)"', page) == []
    assert re.findall(r'<option value="(\d+)"', page) == [str(venues.pkg["beach"].id)]
    for batch in ("town batch", "owner batch"):
        assert http.get(f"{base}/admin/vouchers/sheet", params={"batch": batch}).status_code == 404
    made = Voucher.select().count()
    for pkg in ("town", "shared"):
        r = post(venues, http, "/admin/vouchers", "/admin/vouchers", package=str(venues.pkg[pkg].id), count="5")
        assert r.status_code == 400 and 'data-field="package"' in r.text
    assert Voucher.select().count() == made
    r = post(venues, http, "/admin/vouchers", "/admin/vouchers", package=str(venues.pkg["beach"].id), count="4",
             batch="beach batch")
    assert r.status_code == 200 and 'data-page="sheet"' in r.text
    assert len(re.findall(r'class="voucher[^"]*" data-code=', r.text)) == 4 and "Beach Bar Diani" in r.text
    assert re.findall(r'<tr data-batch="([^"]+)"', http.get(f"{base}/admin/vouchers").text) == ["beach batch"]


def test_an_account_of_two_venues_picks_between_them(venues, http):
    base = venues.portal_url
    page = as_manager(venues, http, sites=("beach", "town"))
    assert select_options(page) == ["", "beach", "town"] and "All my venues" in page
    assert figures(page)["today"] == 100                                # not the default venue's 10
    assert ids("payment", http.get(f"{base}/admin/payments").text) == payment_ids(venues, "beach", "town")
    assert ids("payment", http.get(f"{base}/admin/payments?site=town").text) == payment_ids(venues, "town")
    assert http.get(f"{base}/admin/?site=default").status_code == 404
    assert http.get(f"{base}/admin/payments/{venues.sales['default'][0][0].id}").status_code == 404
    page = http.get(f"{base}/admin/packages/new").text
    assert re.findall(r'<select id="site" name="site">\s*(.*?)</select>', page, re.S)[0].count("<option") == 2


def test_a_new_limit_applies_at_the_next_request(venues, http):
    base = venues.portal_url
    as_manager(venues, http)
    town = venues.sales["town"][0][0]
    assert http.get(f"{base}/admin/payments/{town.id}").status_code == 404
    admins.set_sites("manager", None)
    assert http.get(f"{base}/admin/payments/{town.id}").status_code == 200
    admins.set_sites("manager", ["town"])
    assert http.get(f"{base}/admin/payments/{venues.sales['beach'][0][0].id}").status_code == 404
    assert figures(http.get(f"{base}/admin/").text)["today"] == 30


# --- the command line ---------------------------------------------------------------------------
def run_cli(tmp_path, capsys, monkeypatch, *args, stdin=None):
    return admin_cli(tmp_path, capsys, monkeypatch, *args, stdin=stdin, config=(
        '\n[[sites]]\nid = "beach"\nname = "Beach Bar Diani"\n\n[[sites]]\nid = "town"\nname = "Town Cafe Nakuru"\n'))


def test_admin_create_with_sites_set_sites_and_list(tmp_path, capsys, monkeypatch):
    code, out, _ = run_cli(tmp_path, capsys, monkeypatch, "create", "owner", "--password-stdin", stdin=PASSWORD)
    assert code == 0 and AdminUser.get(AdminUser.username == "owner").site_list is None
    code, out, _ = run_cli(tmp_path, capsys, monkeypatch, "create", "wanjiku", "--sites", "beach, town",
                           "--password-stdin", stdin=PASSWORD + "\n")
    assert code == 0 and "venue(s) beach, town" in out
    assert AdminUser.get(AdminUser.username == "wanjiku").site_list == ["beach", "town"]
    code, out, _ = run_cli(tmp_path, capsys, monkeypatch, "list")
    assert code == 0 and re.search(r"^wanjiku\s.*\sbeach,town$", out, re.M) and re.search(r"^owner\s.*\sall$", out, re.M)

    code, _, err = run_cli(tmp_path, capsys, monkeypatch, "create", "otieno", "--sites", "beach,kisumu",
                           "--password-stdin", stdin=PASSWORD)
    assert code == 2 and "no venue 'kisumu'" in err and "known: default, beach, town" in err
    assert AdminUser.get_or_none(AdminUser.username == "otieno") is None
    code, _, err = run_cli(tmp_path, capsys, monkeypatch, "create", "otieno", "--sites", ",",
                           "--password-stdin", stdin=PASSWORD)
    assert code == 2 and "name one or more venues" in err

    code, out, _ = run_cli(tmp_path, capsys, monkeypatch, "set-sites", "wanjiku", "town")
    assert code == 0 and AdminUser.get(AdminUser.username == "wanjiku").site_list == ["town"]
    code, out, _ = run_cli(tmp_path, capsys, monkeypatch, "set-sites", "wanjiku", "all")
    assert code == 0 and "every venue" in out and AdminUser.get(AdminUser.username == "wanjiku").sites is None
    code, _, err = run_cli(tmp_path, capsys, monkeypatch, "set-sites", "wanjiku", "mombasa")
    assert code == 2 and "no venue 'mombasa'" in err and AdminUser.get(AdminUser.username == "wanjiku").sites is None
    code, _, err = run_cli(tmp_path, capsys, monkeypatch, "set-sites", "nobody", "beach")
    assert code == 1 and "no account 'nobody'" in err
