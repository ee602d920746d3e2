"""The owner's figures (hotspotd.reports) on a real SQLite database with a fixed clock."""
import csv
import io
from datetime import date

import pytest

from hotspotd import access, clock, reports, vouchers
from hotspotd.storage import db as db_mod
from hotspotd.storage.models import AcctSession, Device, Entitlement, Event, Package, Payment

#: run again on PostgreSQL by scripts/test (-m postgres)
pytestmark = pytest.mark.postgres

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
