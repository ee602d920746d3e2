"""The running daemon's health (hotspotd.health.live, the dashboard's health page) and the bounded calls behind it."""
import threading
from datetime import date
from types import SimpleNamespace

import pytest

from hotspotd import clock, health
from hotspotd.daraja.client import DarajaAuthError
from hotspotd.health import live
from hotspotd.routers import RouterUnavailable
from hotspotd.storage import db as db_mod
from hotspotd.storage.models import Disconnect

#: run again on PostgreSQL by scripts/test (-m postgres)
pytestmark = pytest.mark.postgres

TODAY = date(2026, 5, 31)
NOW = clock.day_start(TODAY) + 23.5 * 3600          # 23:30 in Nairobi, 20:30 UTC


@pytest.fixture
def db(tmp_path):
    database = db_mod.prepare(f"sqlite:///{tmp_path}/health.db")
    yield database
    database.close()


def test_bounded_reports_values_errors_and_calls_that_take_too_long():
    release = threading.Event()
    try:
        out = health.bounded({"ok": (lambda: 42, 5), "boom": (lambda: 1 / 0, 5),
                               "stuck": (lambda: release.wait(30), 0.1)})
    finally:
        release.set()
    assert out["ok"] == ("ok", 42)
    assert out["boom"][0] == "error" and isinstance(out["boom"][1], ZeroDivisionError)
    assert out["stuck"] == ("timeout", 0.1)


def _fake_hotspot(**kw):
    def refuse():
        raise DarajaAuthError("Invalid client id passed", code="400.008.01", http_status=400)

    def down():
        raise RouterUnavailable("router 'bar' (10.0.0.2:8728): cannot connect: no answer in time")

    router = SimpleNamespace(name="bar", kind="mikrotik", address="10.0.0.2", api_port=8728, coa_port=3799, site="main")
    coova = SimpleNamespace(name="door", kind="coova", address="10.1.0.1", api_port=0, coa_port=3799, site="main")
    base = dict(
        config=SimpleNamespace(simulated=False, mpesa=SimpleNamespace(environment="production"), sites={}),
        client=SimpleNamespace(base_url="https://api.example", timeout=5.0, check_credentials=refuse), site_clients={},
        callback_url="http://127.0.0.1:8080/cb/SECRETTOKEN123", callback_token="SECRETTOKEN123",
        routers=(router, coova), api_routers=[SimpleNamespace(name="bar", timeout=0.5, ping=down)],
        radius=None, scheduler=None, timekeeper=SimpleNamespace(synchronized=False), readback=None,
        storage_problem=lambda: "only 3 MB free on the database's disk (/var/lib/hotspotd); free some space")
    base.update(kw)
    return SimpleNamespace(**base)


def test_health_reports_each_problem(db):
    Disconnect.create(mac="AA:AA:AA:AA:AA:01", router="bar", reason="ended", status="failing", created_at=NOW,
                      next_at=NOW, attempts=4, last_error="cannot connect")
    checks = {c.key: c for c in live.run(_fake_hotspot(), NOW)}
    assert list(checks) == ["daraja", "callback", "router:bar", "router:door", "radius", "scheduler", "disconnects",
                            "clock", "storage", "router_logins"]
    assert checks["daraja"].state == "fail" and "Invalid client id passed" in checks["daraja"].detail
    assert checks["callback"].state == "fail" and "https" in checks["callback"].detail.lower()
    assert "SECRETTOKEN123" not in checks["callback"].detail
    assert checks["router:bar"].state == "fail" and "cannot connect" in checks["router:bar"].detail
    assert checks["router:door"].state == "info" and "configured" in checks["router:door"].detail
    assert checks["radius"].state == "warn" and checks["scheduler"].state == "fail"
    assert checks["disconnects"].state == "fail" and "AA:AA:AA:AA:AA:01" in checks["disconnects"].items[0]
    assert "2026-05-31 23:30" in checks["clock"].detail
    assert checks["clock"].state == "warn" and "not NTP-synchronised" in checks["clock"].detail
    assert checks["storage"].state == "fail" and "payments are refused" in checks["storage"].detail


def test_health_callback_on_loopback_is_refused_even_over_https(db):
    hs = _fake_hotspot(callback_url="https://localhost/cb/SECRETTOKEN123")
    check = next(c for c in live.run(hs, NOW) if c.key == "callback")
    assert check.state == "fail" and "loopback" in check.detail
    hs = _fake_hotspot(callback_url="https://wifi.example.co.ke/cb/SECRETTOKEN123")
    check = next(c for c in live.run(hs, NOW) if c.key == "callback")
    assert check.state == "ok" and check.detail == "https://wifi.example.co.ke/cb/SECR…"


def test_health_radius_and_scheduler_when_running(db):
    radius = SimpleNamespace(stats={"access_accept": 3, "access_reject": 1, "acct_start": 2, "acct_seconds": 0.1},
                             last_request_at=NOW - 30, no_message_authenticator={})
    scheduler = SimpleNamespace(running=True, runs={"expire": 5, "reconcile": 4}, failures={"reconcile": 1})
    checks = {c.key: c for c in live.run(_fake_hotspot(radius=radius, scheduler=scheduler), NOW)}
    assert checks["radius"].state == "ok"
    assert "30 s ago" in checks["radius"].detail and "3 accepted, 1 rejected, 2 accounting" in checks["radius"].detail
    assert checks["scheduler"].state == "warn" and "reconcile: 4 run(s), 1 failed" in checks["scheduler"].items
    quiet = SimpleNamespace(stats={"dropped_unknown_client": 2}, last_request_at=NOW - 3600,
                            no_message_authenticator={})
    check = next(c for c in live.run(_fake_hotspot(radius=quiet), NOW) if c.key == "radius")
    assert check.state == "warn" and "60 min ago" in check.detail and "unknown routers" in check.items[0]


def test_health_names_wrong_credentials_and_a_wrong_base_url(db):
    from hotspotd.config import SANDBOX_PASSKEY
    from hotspotd.daraja.client import DarajaClient
    from hotspotd.testing.daraja import DarajaSimulator
    with DarajaSimulator() as sim:
        for base, secret, words in ((sim.url, "typo", "wrong consumer key or secret"),
                                    (sim.url + "/mpesa/v9", "simulator", "check base_url in [mpesa]")):
            with DarajaClient(base, "simulator", secret, "174379", SANDBOX_PASSKEY, timeout=2) as client:
                checks = {c.key: c for c in live.run(_fake_hotspot(client=client), NOW)}
            assert checks["daraja"].state == "fail" and words in checks["daraja"].detail, checks["daraja"].detail
