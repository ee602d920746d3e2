"""The sd_notify client and ``hotspotd run`` as systemd runs it: READY, watchdog, reload, stop.

No systemd here: a real Unix datagram socket plays the manager (``$NOTIFY_SOCKET``), and the
daemon is the real ``hotspotd`` command in a child process with the unit's ``ExecStart=``
arguments, ``UMask=0077``, ``NoNewPrivileges=yes`` and (kernel 6.3 or newer, where the kernel
offers it as ``PR_SET_MDWE``) ``MemoryDenyWriteExecute=yes``.
"""
from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

import pytest
import requests

from hotspotd import systemd
from tests.helpers import launch, NotifySocket, wait_log

HOTSPOTD = str(Path(sys.executable).parent / "hotspotd")


def write_config(path: Path, db: Path, **changes: str) -> None:
    """A config as the installer writes it, on loopback port 0, with ``changes`` (key = TOML value)."""
    values = {"site_name": '"Mama Njeri Cafe"', "level": '"INFO"', "listen": '"127.0.0.1:0"'}
    values.update(changes)
    path.write_text(f"""
[portal]
listen = {values["listen"]}
site_name = {values["site_name"]}
[database]
url = "sqlite:///{db}"
[radius]
listen = "127.0.0.1"
auth_port = 0
acct_port = 0
[logging]
level = {values["level"]}
""")
    path.chmod(0o600)


# --- the client, against a real socket ------------------------------------------------------------
def test_notify_reaches_a_path_socket_and_an_abstract_one(tmp_path, monkeypatch):
    for name in (str(tmp_path / "notify"), f"\0hotspotd-test-{os.getpid()}"):
        manager = NotifySocket(name)
        try:
            monkeypatch.setenv("NOTIFY_SOCKET", manager.address)
            assert systemd.ready("portal 127.0.0.1:8080")
            assert manager.expect("READY") == {"READY": "1", "STATUS": "portal 127.0.0.1:8080"}
            assert systemd.reloading()
            reloading = manager.expect("RELOADING")
            assert int(reloading["MONOTONIC_USEC"]) == pytest.approx(time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000,
                                                                     abs=5_000_000)
            assert systemd.watchdog() and manager.expect("WATCHDOG") == {"WATCHDOG": "1"}
            assert systemd.stopping() and manager.expect("STOPPING")["STOPPING"] == "1"
        finally:
            manager.close()


def test_no_socket_means_no_op(monkeypatch, tmp_path):
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert systemd.ready() is False and systemd.watchdog() is False
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "nobody-listens"))
    assert systemd.ready() is False          # logged, never raised: the service goes on


@pytest.mark.parametrize("usec, pid, expected", [
    ("30000000", None, 30.0), ("2000000", "self", 2.0), ("2000000", "1", None), ("0", None, None),
    ("", None, None), ("abc", None, None)])
def test_watchdog_interval_follows_sd_watchdog_enabled(monkeypatch, usec, pid, expected):
    monkeypatch.setenv("WATCHDOG_USEC", usec)
    if pid is None:
        monkeypatch.delenv("WATCHDOG_PID", raising=False)
    else:
        monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()) if pid == "self" else pid)
    assert systemd.watchdog_interval() == expected


# --- the daemon as the unit runs it --------------------------------------------------------------
@pytest.fixture
def daemon(tmp_path):
    """Start ``hotspotd --config … run`` as the unit would; yields (process, manager, config, log)."""
    started = []

    def start(watchdog_usec: int = 2_000_000):
        config, log = tmp_path / "hotspotd.toml", tmp_path / "hotspotd.log"
        write_config(config, tmp_path / "state" / "hotspotd.db")
        manager = NotifySocket(str(tmp_path / "notify"))
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "NOTIFY_SOCKET": manager.address,
               "WATCHDOG_USEC": str(watchdog_usec)}
        proc = launch([HOTSPOTD, "--config", str(config), "run"], env, log=log)
        started.append((proc, manager))
        return proc, manager, config, log

    yield start
    for proc, manager in started:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)
        manager.close()


def portal_address(log: Path) -> str:
    line = next(line for line in wait_log(log, "portal listening on").splitlines() if "portal listening on" in line)
    return line.split("portal listening on ")[1].split()[0]


def test_ready_watchdog_reload_and_stop(daemon):
    proc, manager, config, log = daemon(watchdog_usec=4_000_000)
    ready = manager.expect("READY", "1")
    assert ready["STATUS"].startswith("portal 127.0.0.1:") and "RADIUS auth" in ready["STATUS"]
    assert proc.poll() is None
    url = portal_address(log)
    assert "Mama Njeri Cafe" in requests.get(url + "/", timeout=5).text
    simulator = log.read_text().split("Daraja simulator listening on ")[1].split()[0]
    requests.get(simulator + "/ping", timeout=5).close()       # the simulator logs each request at DEBUG

    # the watchdog is fed at half its interval (4 s): every 2 s, well within it
    manager.expect("WATCHDOG", "1", timeout=4.0)
    t0 = time.monotonic()
    manager.expect("WATCHDOG", "1", timeout=4.0)
    assert 1.0 < time.monotonic() - t0 < 4.0

    # SIGHUP: level and site name change at once; the listen address waits for a restart
    write_config(config, Path(config.parent / "state" / "hotspotd.db"), level='"DEBUG"',
                 site_name='"Kahawa Corner"', listen='"127.0.0.1:1"')
    proc.send_signal(signal.SIGHUP)
    manager.expect("RELOADING", "1", timeout=5)
    again = manager.expect("READY", "1", timeout=5)
    assert again["STATUS"] == ready["STATUS"]
    content = wait_log(log, "config reloaded from")
    assert "portal.site_name, logging.level" in content
    assert "portal.listen changed but needs a restart" in content
    assert "Kahawa Corner" in requests.get(url + "/", timeout=5).text     # same port: old listen kept
    assert " DEBUG " not in content
    requests.get(simulator + "/ping", timeout=5).close()
    wait_log(log, " DEBUG hotspotd.testing.daraja")
    manager.expect("WATCHDOG", "1", timeout=4.0)                           # still fed after a reload

    proc.send_signal(signal.SIGTERM)
    manager.expect("STOPPING", "1", timeout=5)
    assert proc.wait(timeout=20) == 0
    assert "stopped" in log.read_text()


def test_an_invalid_config_on_sighup_is_refused_and_the_old_one_kept(daemon):
    proc, manager, config, log = daemon()
    manager.expect("READY", "1")
    url = portal_address(log)
    config.write_text(config.read_text().replace('level = "INFO"', 'level = "LOUD"'))
    proc.send_signal(signal.SIGHUP)
    manager.expect("RELOADING", "1", timeout=5)
    refused = manager.expect("READY", "1", timeout=5)
    assert refused["STATUS"].startswith("config reload refused:") and "[logging] level" in refused["STATUS"]
    assert "config reload refused, the running configuration stays" in wait_log(log, "reload refused")
    config.write_text("[portal\n")                                        # not even TOML
    proc.send_signal(signal.SIGHUP)
    manager.expect("RELOADING", "1", timeout=5)
    assert "not valid TOML" in manager.expect("READY", "1", timeout=5)["STATUS"]
    assert proc.poll() is None
    assert "Mama Njeri Cafe" in requests.get(url + "/", timeout=5).text
    manager.expect("WATCHDOG", "1", timeout=3.0)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=20) == 0


def test_a_dead_part_starves_the_watchdog(tmp_path, monkeypatch):
    """In-process: the watchdog is fed from a real health check, not a timer."""
    import peewee

    from hotspotd.config import from_dict
    from hotspotd.service.daemon import Hotspot

    from tests.helpers import make_config_dict

    hs = Hotspot(from_dict(make_config_dict(tmp_path), "test")).start()
    try:
        assert hs.liveness_problem() is None
        hs.scheduler.stop()
        assert hs.liveness_problem() == "the scheduler has stopped"
        hs.scheduler = None

        def broken(*args, **kwargs):
            raise peewee.OperationalError("disk I/O error")
        monkeypatch.setattr(hs.db, "execute_sql", broken)
        assert hs.liveness_problem() == "the database does not answer (disk I/O error)"
        monkeypatch.undo()
        assert hs.liveness_problem() is None
    finally:
        hs.stop()


def test_reload_applies_only_what_is_safe(tmp_path):
    import logging

    from hotspotd.config import from_dict
    from hotspotd.service.daemon import Hotspot

    from tests.helpers import make_config_dict

    base = make_config_dict(tmp_path)
    hs = Hotspot(from_dict(base, "test"))
    new = dict(base, portal=dict(base["portal"], site_name="Kahawa", listen="127.0.0.1:9"),
               logging={"level": "WARNING"}, routers=[{"name": "r", "address": "10.0.0.1"}])
    level = logging.getLogger().level
    try:
        applied, restart = hs.reload(from_dict(new, "test"))
        assert logging.getLogger().level == logging.WARNING
    finally:
        logging.getLogger().setLevel(level)
    assert applied == ["portal.site_name", "logging.level"]
    assert restart == ["portal.listen", "routers"]
    assert hs.config.portal.site_name == "Kahawa" and hs.config.portal.listen == "127.0.0.1:0"
    assert hs.config.routers == ()


def test_a_database_it_cannot_migrate_fails_the_start_and_is_left_alone(tmp_path):
    """A database newer than this code (a downgrade): no READY, the reason in STATUS, exit non-zero
    (Restart=on-failure retries, the unit shows why), and not a byte of the database changed."""
    import hashlib

    from hotspotd.storage import db
    from hotspotd.storage.models import Setting

    state = tmp_path / "state"
    database = db.prepare(f"sqlite:///{state}/hotspotd.db")
    Setting.put("schema_version", str(db.LATEST + 1))
    database.close()
    before = hashlib.sha256((state / "hotspotd.db").read_bytes()).hexdigest()
    config, log = tmp_path / "hotspotd.toml", tmp_path / "hotspotd.log"
    write_config(config, state / "hotspotd.db")
    manager = NotifySocket(str(tmp_path / "notify"))
    proc = launch([HOTSPOTD, "--config", str(config), "run"],
                  {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "NOTIFY_SOCKET": manager.address}, log=log)
    try:
        assert proc.wait(timeout=30) == 1
        failed = manager.expect("STATUS", timeout=5)
        assert failed["STATUS"].startswith("failed to start: database schema version") and "READY" not in failed
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        manager.close()
    assert not any("READY" in m for m in manager.messages)
    assert hashlib.sha256((state / "hotspotd.db").read_bytes()).hexdigest() == before
