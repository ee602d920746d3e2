"""What a newcomer meets when the daemon cannot start or its output is cut short: one line that
says what is wrong and what to do, never a Python traceback (issue 17, "The newcomer")."""
import os
import socket
import subprocess
import sys

import pytest

from hotspotd import config

CLI = [sys.executable, "-m", "hotspotd.service.cli"]


def hotspotd(tmp_path, *args, env=None, timeout=60, **kwargs):
    (tmp_path / "h.toml").write_text(f'[database]\nurl = "sqlite:///{tmp_path}/h.db"\n[portal]\nlisten = "127.0.0.1:0"\n'
                                     '[radius]\nlisten = "127.0.0.1"\nauth_port = 0\nacct_port = 0\n')
    os.chmod(tmp_path / "h.toml", 0o600)
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("HOTSPOTD_")}
    full_env.update(env or {})
    return subprocess.run([*CLI, "--config", str(tmp_path / "h.toml"), *args], capture_output=True, text=True,
                          env=full_env, timeout=timeout, **kwargs)


def test_a_portal_port_in_use_is_named_with_its_holder_and_the_way_out(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = hotspotd(tmp_path, "run", env={"HOTSPOTD_PORTAL_LISTEN": f"127.0.0.1:{port}"})
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    line = done.stderr.strip().splitlines()[-1]
    assert f"TCP port {port} on 127.0.0.1 is already in use" in line
    assert f"held by pid {os.getpid()} " in line                       # this test's process holds it
    assert "HOTSPOTD_PORTAL_LISTEN=127.0.0.1:" in line and "[portal] listen" in line


@pytest.mark.parametrize("which", ["AUTH", "ACCT"])
def test_a_radius_port_in_use_is_named_and_has_an_environment_override(tmp_path, which):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("127.0.0.1", 0))
        port = taken.getsockname()[1]
        done = hotspotd(tmp_path, "run", env={f"HOTSPOTD_RADIUS_{which}_PORT": str(port)})
    assert done.returncode == 2 and "Traceback" not in done.stderr
    line = done.stderr.strip().splitlines()[-1]
    assert f"the RADIUS server cannot listen: UDP port {port} on 127.0.0.1 is already in use" in line
    assert f"held by pid {os.getpid()} " in line
    assert f"[radius] {which.lower()}_port" in line and f"HOTSPOTD_RADIUS_{which}_PORT=" in line


def test_the_radius_port_overrides_are_read_and_checked():
    cfg = config.from_dict({}, env={"HOTSPOTD_RADIUS_AUTH_PORT": "11812", "HOTSPOTD_RADIUS_ACCT_PORT": "11813"})
    assert (cfg.radius.auth_port, cfg.radius.acct_port) == (11812, 11813)
    with pytest.raises(config.ConfigError, match=r"HOTSPOTD_RADIUS_AUTH_PORT='radius' \(from the environment\) is not a whole number"):
        config.from_dict({}, env={"HOTSPOTD_RADIUS_AUTH_PORT": "radius"})


def test_a_postgresql_url_without_its_driver_is_one_line_saying_what_to_install(tmp_path):
    blocked = tmp_path / "blocked"
    for name in ("psycopg2", "psycopg"):
        (blocked / name).mkdir(parents=True)
        (blocked / name / "__init__.py").write_text("raise ImportError('not installed here')\n")
    env = {"PYTHONPATH": str(blocked), "HOTSPOTD_DATABASE_URL": "postgresql://postgres@127.0.0.1:5432/postgres"}
    for args in (("run",), ("payments", "list")):
        done = hotspotd(tmp_path, *args, env=env)
        assert done.returncode != 0 and "Traceback" not in done.stderr, done.stderr
        assert "its driver (psycopg2) is not installed" in done.stderr
        assert "pip install" in done.stderr and "postgres" in done.stderr


def test_a_listing_cut_short_by_its_reader_ends_quietly(tmp_path):
    assert hotspotd(tmp_path, "db", "migrate").returncode == 0
    import sqlite3
    with sqlite3.connect(tmp_path / "h.db") as con:       # enough rows to fill the pipe several times
        con.executemany("INSERT INTO payment (created_at, phone, amount, package_id, status, site, query_attempts) "
                        "VALUES (strftime('%s', 'now'), ?, 10, 1, 'failed', 'default', 0)",
                        [(f"2547{n:08d}",) for n in range(3000)])
    (tmp_path / "h.toml").chmod(0o600)
    env = {k: v for k, v in os.environ.items() if not k.startswith("HOTSPOTD_")}
    done = subprocess.run(f"{' '.join(CLI)} --config {tmp_path / 'h.toml'} payments list --limit 3000 | head -n 2",
                          shell=True, capture_output=True, text=True, env=env, timeout=60)
    assert len(done.stdout.splitlines()) == 2
    assert "Traceback" not in done.stderr and "BrokenPipeError" not in done.stderr, done.stderr
