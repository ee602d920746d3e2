"""Faults at the daemon level: Daraja misbehaving, storage refusing, a migration dying halfway,
the database server ending its sessions. Each ends in the right state with a clear record; none
grants access wrongly or crashes a worker.

Storage faults are the database's own: SQLite's are faked on its file (``sqlite_only``), and
each has a PostgreSQL counterpart made on a real server (``postgres_only``: a full tablespace
disk, a table lock held by another session, sessions ended, connections refused), run by the
PostgreSQL pass of scripts/test."""
import errno
import json
import logging
import os
import sqlite3
import subprocess
import tempfile
import threading
import time

import peewee as pw
import pytest
from pyrad import packet

from hotspotd import access
from hotspotd.storage import db
from hotspotd.storage.models import Callback, Entitlement, Event, Package, Payment, Setting

from tests.helpers import (client as radius_client, final_status, forged, give_time, mac_request, pay,
                           PAY_MAC as MAC, POSTGRES_ENV, postgres_only, RADIUS, send, sqlite_only, wait_for)

#: run again on PostgreSQL by scripts/test (-m postgres)
pytestmark = pytest.mark.postgres


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
    # another customer: the same number and package again within 2 minutes would be rule-limited (17)
    r = pay(http, hotspot, "0711000031", mac="AA:BB:CC:00:11:23")
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
    # a number each: one number's second push would meet the subscriber lock (its first is open for 600 s)
    checkouts = [pay(http, hs, f"07110002{i:02d}", mac=m).json()["checkoutRequestId"] for i, m in enumerate(macs)]
    for checkout in checkouts:
        assert final_status(http, hs, checkout)["status"] == "success"
    assert Entitlement.select().count() == 8
    assert {c.state for c in Callback.select()} <= {"applied"}
    assert all(access.authorize(m) for m in macs)


@sqlite_only("max_page_count fakes SQLITE_FULL; test_full_disk_under_postgresql_refuses_payments_"
             "before_any_prompt fills a PostgreSQL tablespace's disk")
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


def _admin():
    """A connection of our own to the PostgreSQL server the pass runs on (autocommit)."""
    import psycopg2
    admin = psycopg2.connect(os.environ[POSTGRES_ENV])
    admin.autocommit = True
    return admin


def _database_name(url: str) -> str:
    return url.rsplit("/", 1)[1]


class SmallDisk:
    """A tmpfs mounted for the test, holding a tablespace; ``fill()`` writes a file until the
    disk has not one byte left (as logs or backups filling a disk would), ``free()`` deletes it."""

    def __init__(self, mount: str):
        self.mount = mount
        self.filler = os.path.join(mount, "filler")

    def fill(self) -> None:
        fd = os.open(self.filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            for size in (1 << 20, 4096):            # tmpfs hands out 4 KiB pages
                chunk = b"\0" * size
                while True:
                    try:
                        os.write(fd, chunk)
                    except OSError as exc:
                        if exc.errno != errno.ENOSPC:
                            raise
                        break
        finally:
            os.close(fd)
        assert os.statvfs(self.mount).f_bavail == 0

    def free(self) -> None:
        if os.path.exists(self.filler):
            os.unlink(self.filler)


@pytest.fixture
def small_disk(database_url):
    """The test's PostgreSQL database moved, before anything opens it, onto a 32 MB disk of its
    own: a tmpfs with a tablespace on it. Request it before ``make_hotspot``: the daemon then
    creates its tables there, and is stopped before the disk goes. The write-ahead log stays on
    the server's own disk, as it would in a real install, so a full disk fails statements
    ("could not extend file": an ERROR) and never the server (a PANIC)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small disk for a tablespace needs root")
    admin = _admin()
    cur = admin.cursor()
    cur.execute("SHOW data_directory")
    data_directory = cur.fetchone()[0]
    if not os.path.isfile(os.path.join(data_directory, "postmaster.pid")):
        admin.close()
        pytest.skip(f"the PostgreSQL server is not on this machine (no {data_directory} here): "
                    "a disk mounted here is out of its reach")
    server_user = os.stat(data_directory)
    mount = tempfile.mkdtemp(prefix="hotspotd-small-disk-")
    os.chmod(mount, 0o755)                          # the server's user must reach its tablespace
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=32m,mode=0755", "hotspotd-test", mount],
                             capture_output=True, text=True)
    if mounted.returncode:
        os.rmdir(mount)
        admin.close()
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    name = _database_name(database_url)
    tablespace = f"{name}_disk"
    disk = SmallDisk(mount)
    try:
        location = os.path.join(mount, "tablespace")
        os.mkdir(location, 0o700)
        os.chown(location, server_user.st_uid, server_user.st_gid)
        cur.execute(f'CREATE TABLESPACE "{tablespace}" LOCATION %s', (location,))
        cur.execute(f'ALTER DATABASE "{name}" SET TABLESPACE "{tablespace}"')
        yield disk
    finally:
        disk.free()
        # the database is the test's own (database_url drops it after us anyway): it goes first,
        # then its tablespace, then the disk
        cur.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,))
        cur.execute(f'DROP DATABASE IF EXISTS "{name}"')
        cur.execute(f'DROP TABLESPACE IF EXISTS "{tablespace}"')
        admin.close()
        if subprocess.run(["umount", mount], capture_output=True).returncode:
            subprocess.run(["umount", "--lazy", mount], check=True)
        os.rmdir(mount)


@postgres_only("fills the disk under a PostgreSQL tablespace")
def test_full_disk_under_postgresql_refuses_payments_before_any_prompt(small_disk, make_hotspot, http, caplog):
    hs = make_hotspot()
    small_disk.fill()
    # the server still writes into pages it has; once those are used up, it needs a new one
    with pytest.raises(pw.OperationalError, match="No space left on device"):
        for _ in range(1000):
            Event.create(at=0, kind="filler", message="x" * 4000)
    with caplog.at_level(logging.ERROR):
        r = pay(http, hs, "0708374149")
    assert r.status_code == 503
    assert "cannot take payments" in r.json()["message"]
    assert len(hs.simulator.transactions) == 0                          # nobody was asked for money
    assert Payment.select().count() == 0                                # and nothing half-recorded
    assert any("could not record" in rec.getMessage() and "No space left on device" in rec.getMessage()
               for rec in caplog.records), [rec.getMessage() for rec in caplog.records]
    # space again: the next payment goes all the way, and the packages and settings are as they were
    small_disk.free()
    r = pay(http, hs, "0708374149")
    assert r.status_code == 200, r.text
    assert final_status(http, hs, r.json()["checkoutRequestId"])["status"] == "success"
    assert Payment.select().count() == 1 and Entitlement.select().count() == 1
    assert db.get_setting("callback_token") == hs.callback_token


@sqlite_only("min_free_mb measures the disk under the SQLite file; for a PostgreSQL server see "
             "test_min_free_mb_leaves_a_postgresql_servers_disk_to_the_server")
def test_low_disk_space_refuses_payments(make_hotspot, http):
    hs = make_hotspot(database={"min_free_mb": 10 ** 9})                 # more than any disk here has
    r = pay(http, hs, "0708374149")
    assert r.status_code == 503 and "cannot take payments" in r.json()["message"]
    assert Payment.select().count() == 0 and len(hs.simulator.transactions) == 0


@postgres_only("what min_free_mb does with a database on a server")
def test_min_free_mb_leaves_a_postgresql_servers_disk_to_the_server(make_hotspot, http):
    # The server may be another machine: no disk here says how full its disk is, and PostgreSQL
    # has no SQL to ask. So min_free_mb checks nothing, and a full disk there is refused by the
    # server itself (test_full_disk_under_postgresql_refuses_payments_before_any_prompt).
    hs = make_hotspot(database={"min_free_mb": 10 ** 9})                 # more than any disk has
    assert hs.storage_problem() is None
    r = pay(http, hs, "0708374149")
    assert r.status_code == 200, r.text
    assert final_status(http, hs, r.json()["checkoutRequestId"])["status"] == "success"


@sqlite_only("holds the SQLite file's write lock; test_locked_payment_table_makes_pay_wait_then_refuse_"
             "or_go_through holds a PostgreSQL table lock")
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


def _lock_payment_table(url: str):
    """Another session holding the payment table as an ALTER TABLE, VACUUM FULL or a hand-typed
    LOCK would (ACCESS EXCLUSIVE: not even a read gets past); roll it back to release."""
    import psycopg2
    other = psycopg2.connect(url)
    other.cursor().execute('LOCK TABLE "payment" IN ACCESS EXCLUSIVE MODE')
    return other


def _timed_pay(http, hs, mac: str):
    """/pay for ``mac`` and how long it took; a request left hanging fails the test in 15 s."""
    package = Package.get(Package.name == "1 hour").id
    started = time.monotonic()
    r = http.post(f"{hs.portal_url}/api/portal/pay", json={"phone": "0708374149", "packageId": package,
                                                           "macAddress": mac}, timeout=15)
    return r, time.monotonic() - started


@postgres_only("holds a PostgreSQL table lock")
def test_locked_payment_table_makes_pay_wait_then_refuse_or_go_through(make_hotspot, http, caplog):
    hs = make_hotspot(database={"busy_timeout_ms": 2000})               # PostgreSQL's lock_timeout too
    other = _lock_payment_table(hs.config.database.url)
    try:
        with caplog.at_level(logging.ERROR):
            r, waited = _timed_pay(http, hs, "AA:BB:CC:00:44:01")
    finally:
        other.rollback()
        other.close()
    assert r.status_code == 503, r.text                                 # refused, not hung
    assert 2 <= waited < 10
    assert len(hs.simulator.transactions) == 0 and Payment.select().count() == 0
    assert any("could not record" in rec.getMessage() and "lock timeout" in rec.getMessage()
               for rec in caplog.records), [rec.getMessage() for rec in caplog.records]
    # a lock released within the timeout: the payment waits for it, then goes through
    other = _lock_payment_table(hs.config.database.url)
    releaser = threading.Timer(0.3, other.rollback)
    releaser.start()
    try:
        r, waited = _timed_pay(http, hs, "AA:BB:CC:00:44:02")
    finally:
        releaser.join()
        other.close()
    assert r.status_code == 200, r.text
    assert 0.3 <= waited < 2
    assert final_status(http, hs, r.json()["checkoutRequestId"])["status"] == "success"


@postgres_only("holds a PostgreSQL table lock")
def test_a_lock_timeout_on_postgresql_asks_the_customer_to_try_again(make_hotspot, http):
    hs = make_hotspot(database={"busy_timeout_ms": 300})
    other = _lock_payment_table(hs.config.database.url)
    try:
        r, _ = _timed_pay(http, hs, MAC)
    finally:
        other.rollback()
        other.close()
    assert r.status_code == 503 and "busy" in r.json()["message"]


def test_interrupted_migration_leaves_the_database_as_it_was(database_url, monkeypatch):
    # SQLite, or PostgreSQL in its pass: both roll back DDL with the rest of the transaction
    database = db.prepare(database_url)
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
    # a number each: the second push to one number would meet the subscriber lock (its first is open)
    checkouts = [pay(http, hs, f"07110003{i:02d}", mac=f"AA:BB:CC:00:33:0{i}").json()["checkoutRequestId"]
                 for i in range(2)]
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


def _end_sessions(url: str) -> int:
    """What a PostgreSQL restart does to every session of the database ``url`` (pg_terminate_backend
    sends the signal a fast shutdown sends); returns how many were ended."""
    admin = _admin()
    try:
        with admin.cursor() as cur:
            cur.execute("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                        " WHERE datname = %s AND pid <> pg_backend_pid()", (_database_name(url),))
            return cur.fetchone()[0]
    finally:
        admin.close()


def _radius_accepts(hs, mac: str) -> bool:
    """One Access-Request, not retried: the first answer must be the right one."""
    c = radius_client(hs)
    return send(c, mac_request(c, user=mac, calling=mac)).code == packet.AccessAccept


@postgres_only("PostgreSQL ends the sessions")
def test_sessions_the_server_ended_are_replaced_by_every_part(make_hotspot, http, caplog):
    # callbacks a second after the push, queries far away: only the callback resolves a payment
    hs = make_hotspot(radius=RADIUS, simulator={"callback_delay_seconds": 1.0},
                      mpesa={"query_after_seconds": 60})
    first = pay(http, hs, "0708374149").json()["checkoutRequestId"]
    assert final_status(http, hs, first)["status"] == "success"
    assert _radius_accepts(hs, MAC)                     # every part now holds a connection
    ending = give_time("AA:BB:CC:00:55:03", seconds=3)
    # other customers: the same number and package again within 2 minutes would be rule-limited (17)
    in_flight = pay(http, hs, "0711000801", mac="AA:BB:CC:00:55:02").json()["checkoutRequestId"]
    runs = dict(hs.scheduler.runs)

    with caplog.at_level(logging.WARNING, logger="hotspotd.storage.postgres"):
        ended = _end_sessions(hs.config.database.url)    # web, RADIUS, scheduler and this thread's
        assert ended >= 4
        # the callback on its way is stored and applied on a new connection
        assert final_status(http, hs, in_flight)["status"] == "success"
        assert Payment.get(Payment.checkout_request_id == in_flight).resolved_by == "callback"
        # RADIUS answers its very first request
        assert _radius_accepts(hs, "AA:BB:CC:00:55:02")
        # the next payment goes all the way
        r = pay(http, hs, "0711000802", mac="AA:BB:CC:00:55:04")
        assert r.status_code == 200, r.text
        assert final_status(http, hs, r.json()["checkoutRequestId"])["status"] == "success"
        # the jobs carry on: the expire job ends the session that ran out
        wait_for(lambda: Entitlement.get_by_id(ending.id).status == "expired", timeout=15)
        wait_for(lambda: all(hs.scheduler.runs.get(job, 0) >= runs.get(job, 0) + 3
                             for job in ("reconcile", "expire")))
    assert Entitlement.select().count() == 4 and Payment.select().count() == 4
    replaced = [rec.getMessage() for rec in caplog.records if rec.name == "hotspotd.storage.postgres"]
    # one line per thread whose connection was replaced (a statement cut mid-run says "connection lost")
    assert len(replaced) >= 3, replaced
    assert any("terminating connection due to administrator command" in m for m in replaced), replaced


@postgres_only("PostgreSQL refuses connections")
def test_a_callback_sent_while_the_database_is_unreachable_is_recovered_by_query(make_hotspot, http):
    hs = make_hotspot(simulator={"callback_delay_seconds": 1.0, "final_after_seconds": 0},
                      mpesa={"query_after_seconds": 3})
    checkout = pay(http, hs, "0708374149").json()["checkoutRequestId"]
    package = Package.get(Package.name == "1 hour").id
    name = _database_name(hs.config.database.url)
    admin = _admin()
    try:
        # what clients see of a server restarting: sessions ended, connections refused a while
        admin.cursor().execute(f'ALTER DATABASE "{name}" WITH ALLOW_CONNECTIONS false')
        assert _end_sessions(hs.config.database.url) >= 1
        tx = hs.simulator.wait_for_callback(checkout)
        assert tx is not None and tx.callback_status == 503             # not taken: Daraja does not retry
        r = http.post(f"{hs.portal_url}/api/portal/pay", json={"phone": "0708374149", "packageId": package,
                                                               "macAddress": "AA:BB:CC:00:66:01"})
        assert r.status_code == 503 and "cannot take payments" in r.json()["message"]
        assert len(hs.simulator.transactions) == 1                      # and no new prompt
    finally:
        admin.cursor().execute(f'ALTER DATABASE "{name}" WITH ALLOW_CONNECTIONS true')
        admin.close()
    # the server is back: the reconcile job asks Daraja, and the payment gets its session
    assert final_status(http, hs, checkout, timeout=20)["status"] == "success"
    payment = Payment.get(Payment.checkout_request_id == checkout)
    assert payment.resolved_by == "query" and Callback.select().count() == 0
    assert Entitlement.select().where(Entitlement.payment == payment.id).count() == 1


@postgres_only("PostgreSQL ends a session inside a transaction")
def test_a_transaction_whose_session_was_ended_fails_with_its_own_error(hotspot):
    # a transaction cannot move to a new connection: it fails, with the server's reason, and the
    # next statement outside it runs on a new connection
    with pytest.raises(pw.OperationalError, match="server closed the connection"):
        with hotspot.db.atomic():
            Event.create(at=0, kind="before", message="written, then lost with the session")
            _end_sessions(hotspot.config.database.url)
            Event.create(at=0, kind="after", message="never written")
    assert Event.select().where(Event.kind.in_(["before", "after"])).count() == 0
