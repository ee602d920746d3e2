import pytest

from hotspotd import db
from hotspotd.models import Package, Setting


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


def test_restart_keeps_data_and_seeds_once(tmp_path):
    url = f"sqlite:///{tmp_path}/a.db"
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


def test_newer_schema_is_refused(tmp_path):
    database = db.prepare(f"sqlite:///{tmp_path}/a.db")
    Setting.replace(key="schema_version", value=str(db.LATEST + 1)).execute()
    with pytest.raises(RuntimeError, match="newer than this hotspotd"):
        db.migrate(database)
    database.close()
