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
