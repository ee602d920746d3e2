"""Shared fixtures: a real hotspotd (portal on port 0, Daraja simulator, SQLite in tmp)."""
from __future__ import annotations

import os
import time

import pytest
import requests

from hotspotd.config import from_dict



#: a PostgreSQL server's URL (e.g. postgresql://postgres@127.0.0.1:5432/postgres): the tests that
#: run a Hotspot then run it on a fresh database of their own there instead of SQLite
POSTGRES_ENV = "HOTSPOTD_TEST_POSTGRES"


def sqlite_only(why: str):
    """Mark a test that fakes a fault of SQLite itself (its file, its pragmas): skipped in the
    PostgreSQL pass, where a test of that fault's PostgreSQL counterpart runs instead."""
    return pytest.mark.skipif(bool(os.environ.get(POSTGRES_ENV)), reason=f"SQLite only: {why}")


def postgres_only(why: str):
    """Mark a test of a PostgreSQL server's own fault: it runs in the PostgreSQL pass of
    scripts/test (``HOTSPOTD_TEST_POSTGRES`` set), and is skipped in the SQLite one."""
    return pytest.mark.skipif(not os.environ.get(POSTGRES_ENV),
                              reason=f"PostgreSQL only ({POSTGRES_ENV} unset): {why}")


def fresh_postgres_database(admin_url: str) -> tuple[str, "callable"]:
    """A new, empty database on the server of ``admin_url``: its URL and a function dropping it."""
    import uuid

    import psycopg2
    name = f"hotspotd_test_{uuid.uuid4().hex[:12]}"
    admin = psycopg2.connect(admin_url)
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{name}"')

    def drop() -> None:
        # connections left open by the test's threads go with the database
        with admin.cursor() as c:
            c.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,))
            c.execute(f'DROP DATABASE IF EXISTS "{name}"')
        admin.close()
    return admin_url.rsplit("/", 1)[0] + "/" + name, drop


@pytest.fixture
def database_url(tmp_path):
    """Where the test's Hotspot keeps its data: SQLite in tmp_path, or a fresh PostgreSQL
    database when ``HOTSPOTD_TEST_POSTGRES`` names a server."""
    admin_url = os.environ.get(POSTGRES_ENV)
    if not admin_url:
        yield f"sqlite:///{tmp_path}/hotspotd.db"
        return
    url, drop = fresh_postgres_database(admin_url)
    try:
        yield url
    finally:
        drop()


def make_config_dict(tmp_path, database_url: str | None = None, **tables) -> dict:
    """A config for tests: everything on loopback port 0, short delays, generous rate limits."""
    data = {
        "portal": {"listen": "127.0.0.1:0", "pay_limit_per_client": "1000/minute",
                   "pay_limit_per_phone": "1000/minute", "pay_limit_per_device": "1000/minute"},
        "database": {"url": database_url or f"sqlite:///{tmp_path}/hotspotd.db"},
        "mpesa": {"query_after_seconds": 1, "query_interval_seconds": 1, "query_max_interval_seconds": 2},
        "simulator": {"callback_delay_seconds": 0.05, "final_after_seconds": 0.05},
        "scheduler": {"reconcile_every_seconds": 0.2, "expire_every_seconds": 0.2},
        "radius": {"enabled": False},
    }
    for table, values in tables.items():
        if isinstance(values, list):      # arrays of tables: [[routers]]
            data[table] = values
        else:
            data.setdefault(table, {}).update(values)
    return data


@pytest.fixture
def make_hotspot(tmp_path, database_url):
    started: list = []

    from hotspotd.service.daemon import Hotspot

    def make(**tables) -> Hotspot:
        hs = Hotspot(from_dict(make_config_dict(tmp_path, database_url, **tables), "test")).start()
        started.append(hs)
        return hs

    yield make
    for hs in reversed(started):
        hs.stop()


@pytest.fixture
def hotspot(make_hotspot):
    return make_hotspot()


@pytest.fixture
def http():
    with requests.Session() as session:
        yield session


def wait_for(predicate, timeout: float = 10.0, interval: float = 0.05):
    """Poll ``predicate`` until it returns something truthy; fail the test on timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout} s")


def give_time(mac: str | None, *, seconds: int = 3600, price: int = 10, data_cap: int | None = None,
              rate: str | None = None, devices: int = 1, phone: str = "254708374149", login=None):
    """A paid entitlement for ``mac`` as a successful payment would leave it (for RADIUS tests)."""
    from hotspotd import access, clock
    from hotspotd.storage.models import Package, Payment, database

    now = clock.now()
    with database.atomic():
        package = Package.create(name=f"test {seconds}s", price=price, duration_seconds=seconds, data_cap_bytes=data_cap,
                                 rate_limit=rate, devices=devices, created_at=now, active=False)
        payment = Payment.create(phone=phone, amount=price, package=package.id, mac=mac, status="success",
                                 created_at=now, completed_at=now, resolved_by="test")
        ent = access.grant_for_payment(payment, now)
        if login:
            ent.login_user, ent.login_password = login
            ent.save()
    return ent
