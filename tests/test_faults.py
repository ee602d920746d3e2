"""Faults at the daemon level: Daraja misbehaving, storage refusing, a migration dying halfway.
Each ends in the right state with a clear record; none grants access wrongly or crashes a worker."""
import json
import logging
import sqlite3

import peewee as pw
import pytest

from hotspotd import access, db
from hotspotd.models import Callback, Entitlement, Event, Payment, Setting

from .conftest import wait_for
from .test_payment_flow import MAC, final_status, forged, pay


def test_daraja_refusing_the_push_gateway_takes_no_money_and_says_so(hotspot, http):
    hotspot.simulator.fail_next(1, status=503)
    r = pay(http, hotspot, "0708374149")
    assert r.status_code == 502 and "try again" in r.json()["message"].lower()
    payment = Payment.get()
    assert payment.status == "error" and payment.checkout_request_id is None
    assert "ServiceUnavailable" in payment.last_error
    assert Entitlement.select().count() == 0
    assert Event.get(Event.kind == "push_failed").payment_id == payment.id
    # the next try works
    body = final_status(http, hotspot, pay(http, hotspot, "0708374149").json()["checkoutRequestId"])
    assert body["status"] == "success"


def test_query_errors_during_reconciliation_are_retried(make_hotspot, http):
    hs = make_hotspot()
    checkout = pay(http, hs, "254799999999").json()["checkoutRequestId"]     # the callback never comes
    hs.simulator.fail_next(3, status=500)
    assert final_status(http, hs, checkout, timeout=30)["status"] == "success"
    events = [e.message for e in Event.select().where(Event.kind == "query").order_by(Event.id)]
    assert sum("ServerError" in m for m in events) == 3, events
    assert Payment.get().resolved_by == "query" and Entitlement.select().count() == 1


def test_token_revoked_mid_run_is_replaced(hotspot, http):
    assert final_status(http, hotspot, pay(http, hotspot, "0708374149").json()["checkoutRequestId"])["status"] == "success"
    hotspot.simulator.revoke_tokens()
    r = pay(http, hotspot, "0708374149", mac="AA:BB:CC:00:11:23")
    assert r.status_code == 200, r.text
    assert final_status(http, hotspot, r.json()["checkoutRequestId"])["status"] == "success"


def test_callback_from_outside_the_allowlist_is_verified_by_query(make_hotspot, http):
    hs = make_hotspot(mpesa={"callback_allowlist": ["196.201.214.0/24"]})   # loopback is not Safaricom
    checkout = pay(http, hs, "0708374149").json()["checkoutRequestId"]
    assert final_status(http, hs, checkout)["status"] == "success"
    cb = Callback.get()
    assert cb.state == "flagged" and "allowlist" in (cb.note or "")
    assert Payment.get().resolved_by == "query"


def test_forged_success_for_a_cancelled_prompt_grants_nothing(make_hotspot, http):
    hs = make_hotspot(mpesa={"callback_allowlist": ["196.201.214.0/24"]},
                      simulator={"callback_delay_seconds": 60, "final_after_seconds": 60})
    checkout = pay(http, hs, "254700001032").json()["checkoutRequestId"]
    r = http.post(f"{hs.portal_url}/cb/{hs.callback_token}", json=forged(checkout))     # "paid", from the LAN
    assert r.json()["ResultCode"] == 0
    assert access.authorize(MAC) is None and Payment.get().status == "pending"
    hs.simulator.set_delays(final_after=0)
    assert final_status(http, hs, checkout)["status"] == "cancelled"
    assert access.authorize(MAC) is None


def test_callbacks_racing_our_own_commit_are_applied_once(make_hotspot, http):
    # callbacks sent the moment the push is accepted, queries far away: only callbacks can resolve
    hs = make_hotspot(simulator={"callback_delay_seconds": 0, "final_after_seconds": 600},
                      mpesa={"query_after_seconds": 600})
    macs = [f"AA:BB:CC:00:22:{i:02X}" for i in range(8)]
    checkouts = [pay(http, hs, "0708374149", mac=m).json()["checkoutRequestId"] for m in macs]
    for checkout in checkouts:
        assert final_status(http, hs, checkout)["status"] == "success"
    assert Entitlement.select().count() == 8
    assert {c.state for c in Callback.select()} <= {"applied"}
    assert all(access.authorize(m) for m in macs)


def test_full_database_refuses_payments_before_any_prompt(hotspot, http, caplog):
    # what a full disk looks like to SQLite (SQLITE_FULL); the pragma is per connection, so it is
    # set on every connection the web threads open from now on
    pages = hotspot.db.execute_sql("PRAGMA page_count").fetchone()[0] + 8
    hotspot.db._pragmas = list(hotspot.db._pragmas) + [("max_page_count", pages)]
    hotspot.db.execute_sql(f"PRAGMA max_page_count = {pages}")
    with pytest.raises(pw.OperationalError, match="full"):
        for _ in range(1000):                       # use up the last free pages
            Event.create(at=0, kind="filler", message="x" * 4000)
    pushes = len(hotspot.simulator.transactions)
    with caplog.at_level(logging.ERROR):
        r = pay(http, hotspot, "0708374149")
    assert r.status_code == 503
    assert "cannot take payments" in r.json()["message"]
    assert len(hotspot.simulator.transactions) == pushes                 # nobody was asked for money
    assert any("could not record" in rec.getMessage() and "full" in rec.getMessage() for rec in caplog.records), \
        [rec.getMessage() for rec in caplog.records]


def test_low_disk_space_refuses_payments(make_hotspot, http):
    hs = make_hotspot(database={"min_free_mb": 10 ** 9})                 # more than any disk here has
    r = pay(http, hs, "0708374149")
    assert r.status_code == 503 and "cannot take payments" in r.json()["message"]
    assert Payment.select().count() == 0 and len(hs.simulator.transactions) == 0


def test_locked_database_makes_pay_wait_then_refuse(make_hotspot, http, tmp_path):
    hs = make_hotspot(database={"busy_timeout_ms": 300})
    other = sqlite3.connect(tmp_path / "hotspotd.db", isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")                                    # another writer holds the lock
        r = pay(http, hs, "0708374149")
        assert r.status_code == 503 and "busy" in r.json()["message"]
    finally:
        other.execute("ROLLBACK")
        other.close()
    assert len(hs.simulator.transactions) == 0
    assert pay(http, hs, "0708374149").status_code == 200


def test_interrupted_migration_leaves_the_database_as_it_was(tmp_path, monkeypatch):
    url = f"sqlite:///{tmp_path}/m.db"
    database = db.prepare(url)
    version = db.schema_version(database)
    half_meta = {"database": database, "table_name": "half_done"}
    Half = type("Half", (pw.Model,), {"Meta": type("Meta", (), half_meta)})

    def broken(d):
        d.create_tables([Half])
        d.execute_sql("INSERT INTO setting (key, value) VALUES ('half', 'x')")
        raise OSError("power cut")

    def fine(d):
        d.execute_sql("CREATE TABLE step_one (x INTEGER)")

    # an upgrade of two steps whose second fails: the first must not stay either
    monkeypatch.setattr(db, "MIGRATIONS", db.MIGRATIONS + [(version + 1, "fine", fine), (version + 2, "broken", broken)])
    monkeypatch.setattr(db, "LATEST", version + 2)
    with pytest.raises(OSError):
        db.migrate(database)
    assert db.schema_version(database) == version
    assert not database.table_exists("half_done") and not database.table_exists("step_one")
    assert Setting.get_or_none(Setting.key == "half") is None
    assert Setting.get_by_id("schema_version").value == str(version)
    database.close()


def test_a_callback_that_cannot_be_processed_is_set_aside(make_hotspot, http, monkeypatch):
    hs = make_hotspot(simulator={"callback_delay_seconds": 60, "final_after_seconds": 60})
    checkouts = [pay(http, hs, "0708374149", mac=f"AA:BB:CC:00:33:0{i}").json()["checkoutRequestId"] for i in range(2)]
    for checkout in checkouts:
        Callback.create(received_at=0, source_ip="127.0.0.1", path=f"/cb/{hs.callback_token}", state="received",
                        body=json.dumps(forged(checkout)))     # stored, never processed (a crash)
    real = hs.payments._doubt

    def broken(cb, payment, parsed):            # a bug that hits the first callback only
        if parsed["checkout_request_id"] == checkouts[0]:
            raise RuntimeError("boom")
        return real(cb, payment, parsed)
    monkeypatch.setattr(hs.payments, "_doubt", broken)
    hs.payments.reconcile_due()
    states = {json_id(c): c.state for c in Callback.select()}
    assert states[checkouts[0]] == "error" and "boom" in Callback.get(Callback.state == "error").note
    assert states[checkouts[1]] == "applied"            # the other one was not held up
    hs.payments.reconcile_due()                         # and the broken one is not retried
    assert Callback.get(Callback.state == "error").note.startswith("RuntimeError")


def json_id(cb):
    return json.loads(cb.body)["Body"]["stkCallback"]["CheckoutRequestID"]
