"""The database's lifecycle. SQLite's own plumbing (pragmas, BEGIN IMMEDIATE) is tested on SQLite;
the rest on the database of the run (PostgreSQL in scripts/test's second pass)."""
import pytest

from hotspotd.storage import db
from hotspotd.storage.models import Package, Setting

from tests.helpers import sqlite_only

#: run again on PostgreSQL by scripts/test (-m postgres)
pytestmark = pytest.mark.postgres


@sqlite_only("SQLite's pragmas")
def test_migrate_seed_and_pragmas(tmp_path):
    database = db.prepare(f"sqlite:///{tmp_path}/a.db")
    assert db.schema_version(database) == db.LATEST
    assert database.execute_sql("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert database.execute_sql("PRAGMA foreign_keys").fetchone()[0] == 1
    assert database.execute_sql("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    assert Package.select().count() == 3
    token = db.get_setting("callback_token")
    assert token and len(token) >= 24
    database.close()


def test_restart_keeps_data_and_seeds_once(tmp_path, database_url):
    url = database_url or f"sqlite:///{tmp_path}/a.db"
    database = db.prepare(url)
    Package.update(active=False).where(Package.name == "30 minutes").execute()
    Package.delete().where(Package.name == "24 hours").execute()
    token = db.get_setting("callback_token")
    database.close()
    database = db.prepare(url)
    assert db.migrate(database) == []
    assert Package.select().count() == 2
    assert not Package.get(Package.name == "30 minutes").active
    assert db.get_setting("callback_token") == token
    database.close()


def test_newer_schema_is_refused(tmp_path, database_url):
    database = db.prepare(database_url or f"sqlite:///{tmp_path}/a.db")
    Setting.put("schema_version", str(db.LATEST + 1))
    with pytest.raises(RuntimeError, match="newer than this hotspotd"):
        db.migrate(database)
    database.close()


@sqlite_only("SQLite's BEGIN IMMEDIATE (PostgreSQL's row locks are tested by test_faults and test_postgres)")
def test_read_then_write_transactions_wait_instead_of_failing(tmp_path):
    """Threads that read, then write, inside one transaction (as redeeming a voucher does) while
    others commit: with a plain BEGIN some fail with "database is locked" (snapshot conflict)."""
    import threading

    from hotspotd import clock, vouchers
    from hotspotd.storage.models import Event, Voucher

    database = db.prepare(f"sqlite:///{tmp_path}/a.db")
    codes = [v.code for v in vouchers.generate(Package.get().id, 40)]
    errors, stop = [], threading.Event()

    def redeem(chunk):
        try:
            for i, code in enumerate(chunk):
                vouchers.redeem(code, f"AA:BB:CC:00:{len(chunk):02X}:{i:02X}")
        except Exception as exc:  # noqa: BLE001 - collected for the assertion
            errors.append(exc)
        finally:
            database.close()

    def writer():
        while not stop.is_set():
            Event.create(at=clock.now(), kind="noise", message="x")
        database.close()

    noise = threading.Thread(target=writer)
    noise.start()
    workers = [threading.Thread(target=redeem, args=(codes[i::4],)) for i in range(4)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    stop.set()
    noise.join()
    assert errors == []
    assert Voucher.select().where(Voucher.redeemed_at.is_null(False)).count() == 40
    database.close()


def test_v4_releases_the_bindings_of_sessions_ended_before_it(tmp_path, database_url):
    """A database from before v4 kept an ended session's devices active; the upgrade releases
    them and leaves live sessions' bindings (and RADIUS's answers) as they were."""
    from hotspotd import access
    from hotspotd.storage.models import Device, Entitlement

    database = db.prepare(database_url or f"sqlite:///{tmp_path}/a.db")
    package = Package.get(Package.name == "1 hour")
    now = 1_800_000_000.0
    live = access.grant(package, "AA:00:00:00:00:01", now, phone=None, payment=None)
    ended = access.grant(package, "AA:00:00:00:00:02", now - 7200, phone=None, payment=None)
    Entitlement.update(status="expired", ended_at=now - 3600).where(Entitlement.id == ended.id).execute()
    Setting.put("schema_version", "3")        # as v3 left it: still active
    database.execute_sql('DROP INDEX "device_mac_active_entitlement_id"')
    database.execute_sql('CREATE INDEX "device_mac_active" ON "device" ("mac", "active")')   # v3's index

    assert db.migrate(database)[0] == 4
    indexes = {i.name for i in database.get_indexes("device")}
    assert "device_mac_active_entitlement_id" in indexes and "device_mac_active" not in indexes
    assert Device.get(Device.entitlement == live.id).active
    released = Device.get(Device.entitlement == ended.id)
    assert not released.active and released.unbound_at is None
    assert access.authorize("AA:00:00:00:00:01", now + 60).entitlement_id == live.id
    database.close()


def test_ending_a_session_releases_its_bindings(tmp_path, database_url):
    from hotspotd import access
    from hotspotd.storage.models import Device

    database = db.prepare(database_url or f"sqlite:///{tmp_path}/a.db")
    package = Package.get(Package.name == "1 hour")
    now = 1_800_000_000.0
    expiring = access.grant(package, "AA:00:00:00:00:03", now - 3600, phone=None, payment=None)
    revoked = access.grant(package, "AA:00:00:00:00:04", now, phone=None, payment=None)
    assert [e for e, _ in access.expire_due(now + 1)] == [expiring.id]
    assert access.revoke(revoked.id, "test", now + 2) == ["AA:00:00:00:00:04"]
    assert Device.select().where(Device.active).count() == 0
    assert Device.select().where(Device.unbound_at.is_null()).count() == 2    # they held it to the end
    database.close()


def test_v9_gives_the_seeded_packages_their_kiswahili_names(tmp_path, database_url):
    """An install from before v9 has its three default packages (maybe renamed or repriced by the
    owner) and its own: the defaults it still has get their Kiswahili name, the others none."""
    database = db.prepare(database_url or f"sqlite:///{tmp_path}/a.db")
    Package.update(name_sw=None).execute()
    Package.update(name="Lunch hour").where(Package.name == "1 hour").execute()      # the owner renamed it
    Package.create(name="Week", price=250, duration_seconds=7 * 86400, created_at=1.0)
    database.execute_sql('ALTER TABLE "package" DROP COLUMN "name_sw"')      # as v8 left it: no such column
    Setting.put("schema_version", "8")
    assert db.migrate(database) == [9, 10, 11]
    assert {p.name: p.name_sw for p in Package.select()} == {
        "30 minutes": "Dakika 30", "Lunch hour": None, "24 hours": "Saa 24", "Week": None}
    database.close()


def test_v10_adds_the_sms_queue_and_a_payments_language_keeping_every_payment(tmp_path, database_url):
    from hotspotd.sms import outbox
    from hotspotd.storage.models import Payment, SmsMessage
    from tests.helpers import give_time
    database = db.prepare(database_url or f"sqlite:///{tmp_path}/a.db")
    ent = give_time("AA:00:00:00:00:10")
    database.execute_sql('DROP TABLE "sms_message"')
    database.execute_sql('ALTER TABLE "payment" DROP COLUMN "lang"')      # as v9 left it
    Setting.put("schema_version", "9")
    assert db.migrate(database) == [10, 11]
    payment = Payment.get_by_id(ent.payment_id)
    assert payment.status == "success" and payment.lang is None
    assert outbox.queue_receipt(payment) and SmsMessage.get().lang == "en"     # no language: English
    assert db.migrate(database) == []
    database.close()


def test_a_callback_token_never_holds_a_word_daraja_refuses_in_a_callback_url(monkeypatch):
    import secrets as secrets_mod
    from hotspotd.config import CALLBACK_FORBIDDEN_WORDS
    tokens = iter(["abcSQLdef" * 4, "xxEXExx" * 5, "safe-token-" * 3])
    monkeypatch.setattr(secrets_mod, "token_urlsafe", lambda n: next(tokens))
    token = db.new_callback_token()
    assert token == "safe-token-" * 3 and not any(w in token.lower() for w in CALLBACK_FORBIDDEN_WORDS)
