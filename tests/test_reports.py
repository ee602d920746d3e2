"""The owner's figures (hotspotd.reports) on a real SQLite database with a fixed clock."""
import csv
import io
import threading
from datetime import date
from types import SimpleNamespace

import pytest

from hotspotd import access, clock, health, reports, vouchers
from hotspotd.health import live
from hotspotd.storage import db as db_mod
from hotspotd.daraja.client import DarajaAuthError
from hotspotd.storage.models import AcctSession, Device, Disconnect, Entitlement, Event, Package, Payment
from hotspotd.routers.mikrotik import RouterUnavailable

TODAY = date(2026, 5, 31)
NOW = clock.day_start(TODAY) + 23.5 * 3600          # 23:30 in Nairobi, 20:30 UTC
MIDNIGHT = clock.day_start(TODAY)                    # 00:00 in Nairobi = 21:00 UTC the day before


@pytest.fixture
def db(tmp_path):
    database = db_mod.prepare(f"sqlite:///{tmp_path}/reports.db")
    yield database
    database.close()


def package(name="1 hour", price=10, seconds=3600, **kw) -> Package:
    return Package.create(name=name, price=price, duration_seconds=seconds, created_at=NOW - 86400 * 60, **kw)


_receipts = iter(range(1000, 10_000))


def payment(status, created, completed=None, *, amount=10, code=None, phone="254708374149", pkg=None, mac=None,
            checkout=None) -> Payment:
    pkg = pkg or Package.get(Package.name == "1 hour")
    n = next(_receipts)
    return Payment.create(phone=phone, amount=amount, package=pkg.id, status=status, created_at=created,
                          completed_at=completed, result_code=code, mac=mac,
                          receipt=f"QK{n}XY" if status == "success" else None,
                          checkout_request_id=checkout or (None if status in ("created", "error") else f"ws_CO_{n}"))


# --- days -------------------------------------------------------------------------------------
def test_periods_are_nairobi_days():
    p = reports.period("today", NOW)
    assert (p.start, p.end) == (MIDNIGHT, MIDNIGHT + 86400)
    assert clock.iso(p.start) == "2026-05-30T21:00:00Z"
    assert reports.period("7d", NOW).start == clock.day_start(date(2026, 5, 25))
    assert reports.period("30d", NOW).start == clock.day_start(date(2026, 5, 2))
    assert reports.period("month", NOW).start == clock.day_start(date(2026, 5, 1))
    assert reports.period("nonsense", NOW).name == "today"


def test_revenue_counts_successes_on_the_nairobi_day_they_completed(db):
    payment("success", MIDNIGHT + 1800, MIDNIGHT + 1800, amount=10)        # 00:30 today (21:30 UTC yesterday)
    payment("success", MIDNIGHT - 3600, MIDNIGHT + 60, amount=50)          # asked yesterday, paid late today
    payment("success", MIDNIGHT - 60, MIDNIGHT - 60, amount=5)             # 23:59 yesterday
    payment("failed", MIDNIGHT + 100, MIDNIGHT + 100, amount=10, code="2001")
    payment("timeout", MIDNIGHT + 200, MIDNIGHT + 300, amount=10)
    payment("success", clock.day_start(date(2026, 4, 30)) + 10, clock.day_start(date(2026, 4, 30)) + 10, amount=7)
    assert reports.revenue_today(NOW) == 60
    assert reports.revenue_month(NOW) == 65
    assert reports.revenue(MIDNIGHT - 86400, MIDNIGHT) == 5


def test_daily_revenue_has_one_entry_per_day_ending_today(db):
    payment("success", MIDNIGHT + 10, MIDNIGHT + 10, amount=10)
    payment("success", MIDNIGHT + 20, MIDNIGHT + 20, amount=50)
    payment("success", MIDNIGHT - 10, MIDNIGHT - 10, amount=5)
    first = clock.day_start(date(2026, 5, 2))
    payment("success", first + 1, first + 1, amount=20)                   # the oldest day shown
    payment("success", first - 1, first - 1, amount=999)                  # one day too old
    payment("cancelled", MIDNIGHT + 30, MIDNIGHT + 30, amount=10, code="1032")
    days = reports.daily_revenue(30, NOW)
    assert len(days) == 30
    assert days[-1].day == TODAY and days[0].day == date(2026, 5, 2)
    assert (days[-1].amount, days[-1].payments) == (60, 2)
    assert days[-2].amount == 5 and days[0].amount == 20
    assert sum(d.amount for d in days) == 85
    assert [d.day for d in days] == sorted(d.day for d in days)


# --- funnel -----------------------------------------------------------------------------------
def test_funnel_counts_sent_paid_online_and_reasons(db):
    t = MIDNIGHT + 3600
    payment("created", t)
    payment("error", t)
    payment("pending", t)
    on_router = payment("success", t, t + 5, mac="AA:AA:AA:AA:AA:01")
    logged_in = payment("success", t, t + 5, mac="AA:AA:AA:AA:AA:02")
    payment("success", t, t + 5, mac="AA:AA:AA:AA:AA:03")                # paid, never seen online
    payment("cancelled", t, t + 5, code="1032")
    payment("cancelled", t, t + 5, code="1032")
    payment("failed", t, t + 5, code="2001")
    payment("failed", t, t + 5, code="1")
    payment("timeout", t, t + 200)                                       # no code: no response
    payment("success", MIDNIGHT - 10, MIDNIGHT - 5)                      # yesterday: not in today's funnel
    ents = {p.id: access.grant_for_payment(p, t + 5) for p in Payment.select().where(Payment.status == "success")}
    AcctSession.create(nas="10.5.50.1", acct_session_id="s1", mac=on_router.mac, entitlement=ents[on_router.id],
                       started_at=t + 10, updated_at=t + 10)
    Event.create(at=t + 8, kind="router_login", payment=logged_in.id, entitlement=ents[logged_in.id], mac=logged_in.mac)

    p = reports.period("today", NOW)
    f = reports.funnel(p.start, p.end)
    assert (f.sent, f.paid, f.online, f.waiting, f.push_errors) == (9, 3, 2, 2, 1)
    assert f.failures == [("cancelled", 2), ("insufficient_funds", 1), ("no_response", 1), ("wrong_pin", 1)]
    assert f.rate(f.paid) == 33
    week = reports.period("7d", NOW)
    f7 = reports.funnel(week.start, week.end)
    assert (f7.sent, f7.paid) == (10, 4)


def test_empty_funnel(db):
    f = reports.funnel(MIDNIGHT, MIDNIGHT + 86400)
    assert (f.sent, f.paid, f.online, f.failures, f.rate(0)) == (0, 0, 0, [], 0)


# --- sessions ---------------------------------------------------------------------------------
def test_online_now_and_live_sessions(db):
    pkg = package("Capped", 20, 7200, data_cap_bytes=100 * 1024 * 1024)
    p1 = payment("success", NOW - 600, NOW - 600, pkg=pkg, mac="AA:AA:AA:AA:AA:01", phone="254712345678")
    live = access.grant_for_payment(p1, NOW - 600)
    Entitlement.update(bytes_used=30 * 1024 * 1024).where(Entitlement.id == live.id).execute()
    p2 = payment("success", NOW - 60, NOW - 60, mac="AA:AA:AA:AA:AA:01")
    stacked = access.grant_for_payment(p2, NOW - 60)                     # starts when the first one ends
    p3 = payment("success", NOW - 9000, NOW - 9000, mac="AA:AA:AA:AA:AA:09")
    ended = access.grant_for_payment(p3, NOW - 9000)                     # one hour, long gone
    AcctSession.create(nas="n", acct_session_id="a", mac="AA:AA:AA:AA:AA:01", entitlement=live.id,
                       started_at=NOW - 500, updated_at=NOW - 30)
    AcctSession.create(nas="n", acct_session_id="b", mac="AA:AA:AA:AA:AA:07", started_at=NOW - 500,
                       updated_at=NOW - 30, online=False)

    assert reports.online_now(NOW) == reports.OnlineNow(devices_online=1, active_sessions=1)
    rows = reports.live_sessions(NOW)
    assert [r.entitlement_id for r in rows] == [live.id, stacked.id]
    assert ended.id not in [r.entitlement_id for r in rows]
    first, second = rows
    assert first.phone_masked == "2547****5678" and "254712345678" not in repr(first)
    assert first.macs == ("AA:AA:AA:AA:AA:01",) and first.online_macs == ("AA:AA:AA:AA:AA:01",)
    assert first.package_name == "Capped" and first.source == "M-Pesa" and first.payment_id == p1.id
    assert first.seconds_left == 6600 and first.starts_in == 0
    assert first.bytes_left == 70 * 1024 * 1024
    assert second.starts_in == 6600 and second.seconds_left == 3600 and second.bytes_left is None
    # a voucher's session has no phone
    v = vouchers.generate(pkg.id, 1)[0]
    ent = vouchers.redeem(v.code, "AA:AA:AA:AA:AA:05", now=NOW)
    row = next(r for r in reports.live_sessions(NOW) if r.entitlement_id == ent.id)
    assert (row.source, row.phone_masked, row.payment_id) == ("voucher", "-", None)
    access.revoke(ent.id, "test", now=NOW)
    assert ent.id not in [r.entitlement_id for r in reports.live_sessions(NOW)]
    assert Device.select().count() == 4


# --- payments ---------------------------------------------------------------------------------
def test_payment_filter_reads_params_and_reports_errors():
    f, errors = reports.PaymentFilter.from_params({"q": " 0708 ", "status": "success", "from": "2026-05-01",
                                                   "to": "2026-05-31"})
    assert errors == {} and f == reports.PaymentFilter("0708", "success", date(2026, 5, 1), date(2026, 5, 31))
    assert f.params() == {"q": "0708", "status": "success", "from": "2026-05-01", "to": "2026-05-31"}
    f, errors = reports.PaymentFilter.from_params({"status": "paid", "from": "31/05/2026", "to": ""})
    assert set(errors) == {"status", "from"} and f == reports.PaymentFilter()
    _, errors = reports.PaymentFilter.from_params({"from": "2026-05-31", "to": "2026-05-01"})
    assert set(errors) == {"to"}


def test_payment_search_by_phone_receipt_checkout_status_and_days(db):
    a = payment("success", MIDNIGHT + 100, MIDNIGHT + 110, phone="254708374149", checkout="ws_CO_AAA111")
    b = payment("failed", MIDNIGHT - 100, MIDNIGHT - 90, phone="254712345678", code="1", checkout="ws_CO_BBB222")
    c = payment("success", MIDNIGHT - 86400 * 3, MIDNIGHT - 86400 * 3, phone="254799999999", checkout="ws_CO_CCC333")

    def ids(**params):
        f, errors = reports.PaymentFilter.from_params(params)
        assert not errors
        return [p.id for p in f.query()]

    assert ids() == [a.id, b.id, c.id]                     # newest first
    for q in ("0708374149", "254708374149", "+254 708 374 149", "708374", "0708"):
        assert ids(q=q) == [a.id], q
    assert ids(q=a.receipt.lower()) == [a.id]
    assert ids(q="BBB2") == [b.id]
    assert ids(q="ws_CO_CCC333") == [c.id]
    assert ids(q="%") == [] and ids(q="nothing") == []
    assert ids(status="failed") == [b.id]
    assert ids(**{"from": TODAY.isoformat()}) == [a.id]
    assert ids(**{"to": "2026-05-30"}) == [b.id, c.id]
    assert ids(**{"from": "2026-05-28", "to": "2026-05-28"}) == [c.id]
    page = reports.payments_page(reports.PaymentFilter(), page=2, per_page=2)
    assert (page.total, page.pages, page.page, [p.id for p in page.rows]) == (3, 2, 2, [c.id])
    assert reports.payments_page(reports.PaymentFilter(), page=99, per_page=2).page == 2


def test_csv_has_full_phones_and_no_formulas(db):
    evil = package("=HYPERLINK(\"http://x\")", 10, 3600)
    payment("success", MIDNIGHT + 10, MIDNIGHT + 20, phone="254708374149", pkg=evil)
    payment("cancelled", MIDNIGHT + 30, MIDNIGHT + 40, phone="254712345678", code="1032")
    out = io.StringIO()
    assert reports.write_payments_csv(reports.PaymentFilter().query(), out) == 2
    rows = list(csv.DictReader(io.StringIO(out.getvalue())))
    assert list(rows[0]) == list(reports.CSV_COLUMNS)
    cancelled, paid = rows
    assert cancelled["phone"] == "254712345678" and cancelled["reason"] == "cancelled"
    assert paid["phone"] == "254708374149" and paid["status"] == "success" and paid["reason"] == ""
    assert paid["package"] == "'=HYPERLINK(\"http://x\")"
    assert paid["created (Nairobi)"] == clock.local_stamp(MIDNIGHT + 10) and paid["amount KES"] == "10"


def test_timeline_has_the_payment_and_its_session(db):
    p = payment("success", NOW - 100, NOW - 90, mac="AA:AA:AA:AA:AA:01")
    Event.create(at=NOW - 100, kind="created", payment=p.id)
    Event.create(at=NOW - 99, kind="pushed", payment=p.id)
    ent = access.grant_for_payment(p, NOW - 90)                          # session_created
    Event.create(at=NOW - 50, kind="disconnected", entitlement=ent.id, mac=p.mac)
    other = payment("success", NOW - 100, NOW - 90)
    Event.create(at=NOW - 98, kind="pushed", payment=other.id)
    assert [e.kind for e in reports.timeline(p)] == ["created", "pushed", "session_created", "disconnected"]
    assert [e.kind for e in reports.timeline(other)] == ["pushed"]


def test_voucher_batches(db):
    pkg = Package.get(Package.name == "24 hours")
    made = vouchers.generate(pkg.id, 3, "Bar till")
    vouchers.generate(Package.get(Package.name == "1 hour").id, 2, "Door")
    vouchers.redeem(made[0].code, "AA:AA:AA:AA:AA:01")
    batches = {b.name: b for b in reports.voucher_batches()}
    assert set(batches) == {"Bar till", "Door"}
    assert (batches["Bar till"].package_name, batches["Bar till"].count, batches["Bar till"].redeemed) == ("24 hours", 3, 1)
    assert [v.code for v in reports.batch_vouchers("Bar till")] == [v.code for v in made]
    assert reports.batch_vouchers("none") == []


# --- health -----------------------------------------------------------------------------------
def test_bounded_reports_values_errors_and_calls_that_take_too_long():
    release = threading.Event()
    try:
        out = health.bounded({"ok": (lambda: 42, 5), "boom": (lambda: 1 / 0, 5),
                               "stuck": (lambda: release.wait(30), 0.1)})
    finally:
        release.set()
    assert out["ok"] == ("ok", 42)
    assert out["boom"][0] == "error" and isinstance(out["boom"][1], ZeroDivisionError)
    assert out["stuck"] == ("timeout", 0.1)


def _fake_hotspot(**kw):
    def refuse():
        raise DarajaAuthError("Invalid client id passed", code="400.008.01", http_status=400)

    def down():
        raise RouterUnavailable("router 'bar' (10.0.0.2:8728): cannot connect: no answer in time")

    router = SimpleNamespace(name="bar", kind="mikrotik", address="10.0.0.2", api_port=8728, coa_port=3799, site="main")
    coova = SimpleNamespace(name="door", kind="coova", address="10.1.0.1", api_port=0, coa_port=3799, site="main")
    base = dict(
        config=SimpleNamespace(simulated=False, mpesa=SimpleNamespace(environment="production"), sites={}),
        client=SimpleNamespace(base_url="https://api.example", timeout=5.0, check_credentials=refuse), site_clients={},
        callback_url="http://127.0.0.1:8080/cb/SECRETTOKEN123", callback_token="SECRETTOKEN123",
        routers=(router, coova), api_routers=[SimpleNamespace(name="bar", timeout=0.5, ping=down)],
        radius=None, scheduler=None, timekeeper=SimpleNamespace(synchronized=False),
        storage_problem=lambda: "only 3 MB free on the database's disk (/var/lib/hotspotd); free some space")
    base.update(kw)
    return SimpleNamespace(**base)


def test_health_reports_each_problem(db):
    Disconnect.create(mac="AA:AA:AA:AA:AA:01", router="bar", reason="ended", status="failing", created_at=NOW,
                      next_at=NOW, attempts=4, last_error="cannot connect")
    checks = {c.key: c for c in live.run(_fake_hotspot(), NOW)}
    assert list(checks) == ["daraja", "callback", "router:bar", "router:door", "radius", "scheduler", "disconnects",
                            "clock", "storage"]
    assert checks["daraja"].state == "fail" and "Invalid client id passed" in checks["daraja"].detail
    assert checks["callback"].state == "fail" and "https" in checks["callback"].detail.lower()
    assert "SECRETTOKEN123" not in checks["callback"].detail
    assert checks["router:bar"].state == "fail" and "cannot connect" in checks["router:bar"].detail
    assert checks["router:door"].state == "info" and "configured" in checks["router:door"].detail
    assert checks["radius"].state == "warn" and checks["scheduler"].state == "fail"
    assert checks["disconnects"].state == "fail" and "AA:AA:AA:AA:AA:01" in checks["disconnects"].items[0]
    assert "2026-05-31 23:30" in checks["clock"].detail
    assert checks["clock"].state == "warn" and "not NTP-synchronised" in checks["clock"].detail
    assert checks["storage"].state == "fail" and "payments are refused" in checks["storage"].detail


def test_health_callback_on_loopback_is_refused_even_over_https(db):
    hs = _fake_hotspot(callback_url="https://localhost/cb/SECRETTOKEN123")
    check = next(c for c in live.run(hs, NOW) if c.key == "callback")
    assert check.state == "fail" and "loopback" in check.detail
    hs = _fake_hotspot(callback_url="https://wifi.example.co.ke/cb/SECRETTOKEN123")
    check = next(c for c in live.run(hs, NOW) if c.key == "callback")
    assert check.state == "ok" and check.detail == "https://wifi.example.co.ke/cb/SECR…"


def test_health_radius_and_scheduler_when_running(db):
    radius = SimpleNamespace(stats={"access_accept": 3, "access_reject": 1, "acct_start": 2, "acct_seconds": 0.1},
                             last_request_at=NOW - 30)
    scheduler = SimpleNamespace(running=True, runs={"expire": 5, "reconcile": 4}, failures={"reconcile": 1})
    checks = {c.key: c for c in live.run(_fake_hotspot(radius=radius, scheduler=scheduler), NOW)}
    assert checks["radius"].state == "ok"
    assert "30 s ago" in checks["radius"].detail and "3 accepted, 1 rejected, 2 accounting" in checks["radius"].detail
    assert checks["scheduler"].state == "warn" and "reconcile: 4 run(s), 1 failed" in checks["scheduler"].items
    quiet = SimpleNamespace(stats={"dropped_unknown_client": 2}, last_request_at=NOW - 3600)
    check = next(c for c in live.run(_fake_hotspot(radius=quiet), NOW) if c.key == "radius")
    assert check.state == "warn" and "60 min ago" in check.detail and "unknown routers" in check.items[0]
