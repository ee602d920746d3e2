"""A newcomer follows what ``scripts/demo`` prints: the dashboard account made by the printed
command signs in on the running demo, and the CLI reads the demo's database (issue 17)."""
import os
import re
import shlex
import signal
import socket
import subprocess

import requests

from tests.helpers import REPO, token, wait_for


def free_port(kind=socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_the_demo_prints_the_way_in_and_its_commands_read_its_database(tmp_path):
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("HOTSPOTD_")}
    env.update(HOTSPOTD_DEMO_DIR=str(tmp_path / "var"), HOTSPOTD_PORTAL_LISTEN=f"127.0.0.1:{port}",
               HOTSPOTD_RADIUS_AUTH_PORT=str(free_port(socket.SOCK_DGRAM)),
               HOTSPOTD_RADIUS_ACCT_PORT=str(free_port(socket.SOCK_DGRAM)))
    log = open(tmp_path / "demo.log", "w")          # the daemon's log: a file, never a pipe nobody drains
    demo = subprocess.Popen([str(REPO / "scripts" / "demo")], cwd=tmp_path, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=log, start_new_session=True)
    try:
        printed = []
        for line in demo.stdout:                      # bounded: the banner ends with "Stop with Ctrl-C."
            printed.append(line)
            if line.startswith("Stop with Ctrl-C.") or len(printed) > 50:
                break
        banner = "".join(printed)
        assert f"splash page   http://127.0.0.1:{port}/" in banner
        assert f"dashboard     http://127.0.0.1:{port}/admin/" in banner
        create = re.search(r"^\s+(\.venv/bin/hotspotd --config \S+ admin create owner)$", banner, re.M)
        assert create, banner
        config = tmp_path / "var" / "hotspotd.toml"
        assert oct(config.stat().st_mode & 0o777) == "0o600"          # holds secrets: private from the start
        wait_for(lambda: _answers(f"http://127.0.0.1:{port}/"), timeout=60)

        # the printed command, as printed (from the checkout), with the password on stdin
        made = subprocess.run(shlex.split(create[1]) + ["--password-stdin"], cwd=REPO, env=env, input="demo-pass-123\n",
                              capture_output=True, text=True, timeout=60)
        assert made.returncode == 0, made.stderr
        http = requests.Session()
        page = http.get(f"http://127.0.0.1:{port}/admin/login").text
        r = http.post(f"http://127.0.0.1:{port}/admin/login",
                      data={"csrf_token": token(page), "username": "owner", "password": "demo-pass-123"})
        assert 'data-page="overview"' in r.text, r.text[:500]

        check = subprocess.run([str(REPO / ".venv/bin/hotspotd"), "--config", str(config), "check"], cwd=REPO,
                               env=env, capture_output=True, text=True, timeout=120)
        assert f"{tmp_path}/var/hotspotd.db intact" in check.stdout
        assert "uses another database" not in check.stdout and "dashboard          1 account(s)" in check.stdout
        assert "chmod 600" not in check.stdout + check.stderr

        # another configuration's database: check says it is not the one the daemon serves
        other = tmp_path / "other.toml"
        other.write_text(f'[database]\nurl = "sqlite:///{tmp_path}/other.db"\n')
        other.chmod(0o600)
        hotspotd = [str(REPO / ".venv/bin/hotspotd"), "--config", str(other)]
        assert subprocess.run([*hotspotd, "db", "migrate"], env=env, capture_output=True, timeout=60).returncode == 0
        check = subprocess.run([*hotspotd, "check"], env=env, capture_output=True, text=True, timeout=120)
        assert f"the hotspotd running on 127.0.0.1:{port} uses another database than {tmp_path}/other.db" in check.stdout
        assert "no account yet, so nobody can sign in" in check.stdout
    finally:
        os.killpg(demo.pid, signal.SIGTERM)
        try:
            demo.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(demo.pid, signal.SIGKILL)
            demo.wait(timeout=10)
        demo.stdout.close()
        log.close()


def _answers(url: str) -> bool:
    try:
        return requests.get(url, timeout=2).status_code == 200
    except requests.RequestException:
        return False
