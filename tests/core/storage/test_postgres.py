"""hotspotd on PostgreSQL: the suites that run a Hotspot run on it too (scripts/test runs them a
second time with HOTSPOTD_TEST_POSTGRES set); these tests cover what only several processes on
one database can show."""
import os

import peewee as pw
import pytest

from tests.helpers import POSTGRES_ENV

#: run again on PostgreSQL by scripts/test (-m postgres)
pytestmark = pytest.mark.postgres


def test_the_hotspot_runs_on_the_database_the_run_asked_for(hotspot):
    from hotspotd.storage.models import database
    expected = pw.PostgresqlDatabase if os.environ.get(POSTGRES_ENV) else pw.SqliteDatabase
    assert isinstance(database.obj, expected)
    assert hotspot.config.database.url.startswith("postgresql://" if os.environ.get(POSTGRES_ENV) else "sqlite:///")


ADMIN_URL = os.environ.get(POSTGRES_ENV) or "postgresql://postgres@127.0.0.1:5432/postgres"


def test_db_copy_moves_a_venue_onto_postgresql_with_every_row_and_id(tmp_path, capsys):
    from hotspotd import access, admins, clock, vouchers
    from hotspotd.service import cli
    from hotspotd.storage import db
    from hotspotd.storage.models import AcctSession, Device, Entitlement, Package, Payment, Setting, Voucher, database

    from tests.helpers import fresh_postgres_database

    source = f"sqlite:///{tmp_path}/venue.db"
    db.prepare(source)
    now = clock.now()
    package = Package.get(Package.name == "1 hour")
    pay = Payment.create(phone="254708374149", amount=10, package=package.id, mac="AA:00:00:00:00:01",
                         status="success", receipt="SKL1ABC2DE", created_at=now)
    ent = access.grant(package, "AA:00:00:00:00:01", now, phone=pay.phone, payment=pay)
    AcctSession.create(nas="10.5.50.1", acct_session_id="81000001", mac="AA:00:00:00:00:01", entitlement=ent.id,
                       started_at=now, updated_at=now, online=True)
    codes = [v.code for v in vouchers.generate(package.id, 3)]
    admins.create("owner", "a long enough passphrase")
    token = db.get_setting("callback_token")
    database.close()

    target, drop = fresh_postgres_database(ADMIN_URL)
    try:
        assert cli.main(["db", "copy", "--from", source, "--to", target]) == 0
        assert "payment" in capsys.readouterr().out
        db.prepare(target)
        assert isinstance(database.obj, __import__("peewee").PostgresqlDatabase)
        assert Payment.get().receipt == "SKL1ABC2DE" and Entitlement.get().id == ent.id
        assert Device.get().active is True and AcctSession.get().online is True
        assert access.authorize("AA:00:00:00:00:01", now + 60).entitlement_id == ent.id
        assert sorted(v.code for v in Voucher.select()) == sorted(codes)
        assert db.get_setting("callback_token") == token
        assert Setting.get(Setting.key == "schema_version").value == str(db.LATEST)
        # analysed: the planner knows the tables' sizes (never analysed: reltuples = -1)
        assert database.execute_sql("SELECT reltuples FROM pg_class WHERE relname = 'payment'").fetchone()[0] == 1
        assert Package.create(name="new", price=1, duration_seconds=60, created_at=now).id > package.id
        database.close()
        # a second copy into a database in use is refused, and changes nothing
        assert cli.main(["db", "copy", "--from", source, "--to", target]) == 1
        assert "already holds data" in capsys.readouterr().err
    finally:
        drop()


def _daemon(folder, database_url: str, daraja_url: str, env: dict | None = None):
    """``hotspotd run`` in a process of its own on ``database_url`` (``env``: extra environment);
    returns (process, portal URL)."""
    import socket
    import subprocess
    import sys
    import time

    import requests

    from hotspotd.config import SANDBOX_PASSKEY
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config = folder / "hotspotd.toml"
    config.write_text(f"""
[portal]
listen = "127.0.0.1:{port}"
public_url = "http://127.0.0.1:{port}"
pay_limit_per_client = "10000/minute"
pay_limit_per_phone = "10000/minute"
pay_limit_per_device = "10000/minute"
[database]
url = "{database_url}"
[mpesa]
environment = "sandbox"
base_url = "{daraja_url}"
consumer_key = "simulator"
consumer_secret = "simulator"
passkey = "{SANDBOX_PASSKEY}"
query_after_seconds = 1
query_interval_seconds = 1
query_max_interval_seconds = 1
[radius]
enabled = false
[scheduler]
reconcile_every_seconds = 0.2
expire_every_seconds = 0.2
[backup]
enabled = false
""")
    config.chmod(0o600)
    with open(folder / "hotspotd.log", "ab") as log:
        proc = subprocess.Popen([sys.executable, "-m", "hotspotd.service.cli", "--config", str(config), "run"],
                                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env={**os.environ, **(env or {})})
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert proc.poll() is None, (folder / "hotspotd.log").read_text()
        try:
            if requests.get(f"{url}/api/portal/packages", timeout=1).status_code == 200:
                return proc, url
        except requests.RequestException:
            time.sleep(0.05)
    raise AssertionError("hotspotd did not start")


def test_two_daemons_on_one_database_make_one_session_per_payment(tmp_path):
    """Two hotspotd processes share one PostgreSQL database. Every payment's callback reaches
    both, three times each, from eight threads at once, while both daemons' reconcile jobs query
    Daraja for the same payments: still exactly one session per payment, one "session_created"
    event each, and the jobs ran, each tick claimed by one process."""
    import json
    import time
    from concurrent.futures import ThreadPoolExecutor

    import peewee as pw
    import requests

    from hotspotd.storage import db
    from hotspotd.testing.daraja import DarajaSimulator
    from hotspotd.storage.models import Callback, Entitlement, Event, JobRun, Payment, database

    from tests.helpers import fresh_postgres_database

    url, drop = fresh_postgres_database(ADMIN_URL)
    sim = DarajaSimulator(callback_delay=0, final_after=0.5).start()
    daemons = []
    try:
        db.prepare(url)
        database.close()
        for name in ("a", "b"):
            (tmp_path / name).mkdir()
            daemons.append(_daemon(tmp_path / name, url, sim.url))
        # a number per customer: one number twenty times would meet the subscriber lock and rule 17
        phones = [f"2547110001{i:02d}" for i in range(20)]
        for phone in phones:
            sim.set_outcome(phone, "0", deliver_callback=False)  # the test delivers them, to both daemons
        (_, a_url), (_, b_url) = daemons
        ids = []
        for i, phone in enumerate(phones):
            r = requests.post(f"{(a_url, b_url)[i % 2]}/api/portal/pay", timeout=10,
                              json={"phone": phone, "packageId": 2, "macAddress": f"AA:BB:CC:DD:{i // 256:02X}:{i % 256:02X}"})
            assert r.status_code == 200, r.text
            ids.append(r.json()["checkoutRequestId"])
        db.prepare(url)
        token = db.get_setting("callback_token")

        def deliver(target):
            base, checkout = target
            body = json.dumps(sim.transactions[checkout].callback_body)
            return requests.post(f"{base}/cb/{token}", data=body, timeout=10,
                                 headers={"Content-Type": "application/json"}).status_code

        targets = [(base, cid) for cid in ids for base in (a_url, b_url) for _ in range(3)]
        with ThreadPoolExecutor(8) as pool:
            assert set(pool.map(deliver, targets)) == {200}
        deadline = time.monotonic() + 20
        while Payment.select().where(Payment.status != "success").exists():
            assert time.monotonic() < deadline, "payments not all settled"
            time.sleep(0.1)
        time.sleep(1.5)        # a few more reconcile and expire ticks on both daemons
        assert Payment.select().where(Payment.status == "success").count() == 20
        per_payment = (Entitlement.select(Entitlement.payment, pw.fn.COUNT(Entitlement.id).alias("n"))
                       .group_by(Entitlement.payment).tuples())
        assert sorted(n for _, n in per_payment) == [1] * 20
        assert Event.select().where(Event.kind == "session_created").count() == 20
        # each payment settled once: by one callback, or by an STK query that got there first
        by_callback = Payment.select().where(Payment.resolved_by == "callback").count()
        assert Callback.select().where(Callback.state == "applied").count() == by_callback
        assert by_callback + Payment.select().where(Payment.resolved_by == "query").count() == 20
        assert Callback.select().count() == 120
        assert {j.name for j in JobRun.select()} >= {"reconcile", "expire"}
        for proc, _ in daemons:
            assert proc.poll() is None
    finally:
        for proc, _ in daemons:
            proc.terminate()
            proc.wait(timeout=20)
        sim.stop()
        database.close()
        drop()


def test_the_jobs_carry_on_when_one_daemon_dies_in_the_middle_of_one(tmp_path):
    """A hotspotd dies (SIGKILL, from its own crash point) in the middle of the expiry job: its
    transaction open, its advisory lock held. PostgreSQL rolls the one back and drops the other
    with the connection; a second hotspotd on the same database then runs every job: the session
    is ended once, and a payment whose callback never comes is settled by its STK query."""
    import time

    import requests

    from hotspotd import access, clock
    from hotspotd.storage import db
    from hotspotd.testing.daraja import DarajaSimulator
    from hotspotd.storage.models import Entitlement, Event, Package, Payment, database

    from tests.helpers import fresh_postgres_database

    url, drop = fresh_postgres_database(ADMIN_URL)
    sim = DarajaSimulator(callback_delay=0, final_after=0.5).start()
    daemons = []
    try:
        db.prepare(url)
        now = clock.now()
        short = Package.create(name="two seconds", price=1, duration_seconds=2, created_at=now, active=False)
        ending = access.grant(short, "AA:BB:CC:DD:EE:A2", now, phone=None, payment=None)
        (tmp_path / "a").mkdir()
        daemons.append(_daemon(tmp_path / "a", url, sim.url, env={"HOTSPOTD_CRASH_AT": "expire_mid"}))
        doomed = daemons[0][0]
        doomed.wait(timeout=20)                                  # killed in the expiry job
        assert doomed.returncode == -9
        assert Entitlement.get_by_id(ending.id).status == "active"       # its transaction rolled back

        (tmp_path / "b").mkdir()
        daemons.append(_daemon(tmp_path / "b", url, sim.url))
        survivor, b_url = daemons[1]
        phone = "254711000010"
        sim.set_outcome(phone, "0", deliver_callback=False)      # only a query can settle it
        r = requests.post(f"{b_url}/api/portal/pay", timeout=10,
                          json={"phone": phone, "packageId": 2, "macAddress": "AA:BB:CC:DD:EE:A1"})
        assert r.status_code == 200, r.text
        checkout = r.json()["checkoutRequestId"]
        deadline = time.monotonic() + 20
        while True:
            payment = Payment.get(Payment.checkout_request_id == checkout)
            ended = Entitlement.get_by_id(ending.id).status
            if payment.status == "success" and ended == "expired":
                break
            assert time.monotonic() < deadline, (payment.status, ended)
            time.sleep(0.1)
        assert payment.resolved_by == "query"
        assert Entitlement.select().where(Entitlement.payment == payment.id).count() == 1
        assert Event.select().where(Event.kind == "session_ended", Event.entitlement == ending.id).count() == 1
        assert access.authorize("AA:BB:CC:DD:EE:A2") is None
        assert survivor.poll() is None
    finally:
        for proc, _ in daemons:
            if proc.poll() is None:
                proc.terminate()
            proc.wait(timeout=20)
        sim.stop()
        database.close()
        drop()


def test_a_threads_session_settings_outlive_its_connection():
    """The RADIUS thread's synchronous_commit = off (db.prepare_radius_thread) is set again on the
    connection that replaces one the server ended; other threads keep the server's default."""
    import threading
    import time

    import psycopg2

    from hotspotd.storage import db
    from hotspotd.storage.models import database

    from tests.helpers import fresh_postgres_database

    url, drop = fresh_postgres_database(ADMIN_URL)
    seen = {}
    try:
        db.prepare(url)

        def radius_thread():
            seen["first"] = db.prepare_radius_thread()
            pid = database.execute_sql("SELECT pg_backend_pid()").fetchone()[0]
            admin = psycopg2.connect(ADMIN_URL)
            admin.autocommit = True
            admin.cursor().execute("SELECT pg_terminate_backend(%s)", (pid,))
            admin.close()
            time.sleep(0.2)             # the server's farewell reaches the socket
            seen["replaced"] = database.execute_sql("SELECT pg_backend_pid()").fetchone()[0] != pid
            seen["after"] = database.execute_sql("SHOW synchronous_commit").fetchone()[0]
            database.close()
        worker = threading.Thread(target=radius_thread)
        worker.start()
        worker.join(timeout=30)
        assert seen == {"first": "off", "replaced": True, "after": "off"}
        assert database.execute_sql("SHOW synchronous_commit").fetchone()[0] == "on"
    finally:
        database.close()
        drop()
