"""hotspotd on PostgreSQL: the suites that run a Hotspot run on it too (scripts/test runs them a
second time with HOTSPOTD_TEST_POSTGRES set); these tests cover what only several processes on
one database can show."""
import os

import peewee as pw

from .conftest import POSTGRES_ENV


def test_the_hotspot_runs_on_the_database_the_run_asked_for(hotspot):
    from hotspotd.models import database
    expected = pw.PostgresqlDatabase if os.environ.get(POSTGRES_ENV) else pw.SqliteDatabase
    assert isinstance(database.obj, expected)
    assert hotspot.config.database.url.startswith("postgresql://" if os.environ.get(POSTGRES_ENV) else "sqlite:///")


ADMIN_URL = os.environ.get(POSTGRES_ENV) or "postgresql://postgres@127.0.0.1:5432/postgres"


def test_db_copy_moves_a_venue_onto_postgresql_with_every_row_and_id(tmp_path, capsys):
    from hotspotd import access, admins, cli, clock, db, vouchers
    from hotspotd.models import AcctSession, Device, Entitlement, Package, Payment, Setting, Voucher, database

    from .conftest import fresh_postgres_database

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
        assert Package.create(name="new", price=1, duration_seconds=60, created_at=now).id > package.id
        database.close()
        # a second copy into a database in use is refused, and changes nothing
        assert cli.main(["db", "copy", "--from", source, "--to", target]) == 1
        assert "already holds data" in capsys.readouterr().err
    finally:
        drop()
