"""Shared fixtures: a real hotspotd (portal on port 0, Daraja simulator, SQLite in tmp)."""
from __future__ import annotations

import os

import pytest
import requests

from hotspotd.config import from_dict
from tests.helpers import (REALISTIC, SIM_SEED, SIM_TIME_SCALE, fresh_postgres_database, make_config_dict,
                           POSTGRES_ENV)


def pytest_report_header(config):
    if REALISTIC:
        return (f"Daraja simulator: realistic timing, time scale {SIM_TIME_SCALE:g} "
                f"(HOTSPOTD_SIM_SEED={SIM_SEED} replays this run)")


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


