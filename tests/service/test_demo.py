"""A newcomer follows what ``scripts/demo`` prints: the dashboard account made by the printed
command signs in on the running demo, and the CLI reads the demo's database (issue 17)."""
import json
import os
import re
import shlex
import signal
import socket
import subprocess
from contextlib import contextmanager

import requests

from tests.helpers import REPO, token, wait_for


def free_port(kind=socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def demo_running(tmp_path, cwd, stdout=None):
    """``scripts/demo`` with its state in ``tmp_path/var`` and free ports of its own: yields
    (process, port, environment); stopped with SIGTERM (then SIGKILL), its log in a file."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("HOTSPOTD_")}
    env.update(HOTSPOTD_DEMO_DIR=str(tmp_path / "var"), HOTSPOTD_PORTAL_LISTEN=f"127.0.0.1:{port}",
               HOTSPOTD_RADIUS_AUTH_PORT=str(free_port(socket.SOCK_DGRAM)),
               HOTSPOTD_RADIUS_ACCT_PORT=str(free_port(socket.SOCK_DGRAM)))
    with open(tmp_path / "demo.log", "w") as log:      # the daemon's log: a file, never a pipe nobody drains
        demo = subprocess.Popen([str(REPO / "scripts" / "demo")], cwd=cwd, env=env, text=True,
                                stdout=stdout or log, stderr=log, start_new_session=True)
        try:
            yield demo, port, env
        finally:
            os.killpg(demo.pid, signal.SIGTERM)
            try:
                demo.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(demo.pid, signal.SIGKILL)
                demo.wait(timeout=10)
            if demo.stdout:
                demo.stdout.close()


def test_the_demo_prints_the_way_in_and_its_commands_read_its_database(tmp_path):
    with demo_running(tmp_path, tmp_path, stdout=subprocess.PIPE) as (demo, port, env):
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


def readme_blocks(after_heading: str) -> list[list[str]]:
    """The shell blocks of README.md's section ``after_heading``, each as its commands (a line
    continued with a backslash joined to the next; comments after the command dropped)."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    section = text.split(f"\n## {after_heading}\n", 1)[1].split("\n## ", 1)[0]
    blocks = []
    for block in re.findall(r"```sh\n(.*?)```", section, re.S):
        commands = block.replace("\\\n", " ").splitlines()
        blocks.append([c.split("  # ")[0].strip() for c in commands if c.strip()])
    return blocks


def test_the_readmes_commands_work_as_written_after_the_demo(tmp_path):
    """Every command the README gives for the running demo, as written: only the port (the test's
    own instead of 8080), the demo's folder (HOTSPOTD_DEMO_DIR instead of var/) and the id the
    README says to take from the answer are put in."""
    import pty
    with demo_running(tmp_path, REPO) as (demo, port, env):
        put_in = lambda command: (command.replace("localhost:8080", f"localhost:{port}")
                                  .replace("var/hotspotd.toml", str(tmp_path / "var" / "hotspotd.toml")))
        wait_for(lambda: _answers(f"http://127.0.0.1:{port}/"), timeout=60)
        # "Try a payment"
        (payment,) = readme_blocks("Try a payment")
        outputs = []
        for command in payment:
            if "<checkoutRequestId from the answer>" in command:
                answer = json.loads(outputs[-1])
                command = command.replace("<checkoutRequestId from the answer>", answer["checkoutRequestId"])
            done = subprocess.run(put_in(command), shell=True, cwd=REPO, env=env, capture_output=True, text=True,
                                  timeout=60)
            assert done.returncode == 0 and done.stdout, (command, done.stderr)
            outputs.append(done.stdout)
        assert json.loads(outputs[0])["packages"] and json.loads(outputs[1])["success"] is True
        assert json.loads(outputs[2])["status"] in ("pending", "success")
        # "The owner's dashboard": the account command asks for the password twice, at a terminal
        create, others = readme_blocks("The owner's dashboard")
        (command,) = create
        pid, fd = pty.fork()
        if pid == 0:
            os.chdir(REPO)
            os.execvpe("/bin/sh", ["/bin/sh", "-c", put_in(command)], env)
        said = _converse(fd, [b"Password: ", b"Password again: "], b"demo-pass-123\n")
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0 and b"account 'owner' created" in said, said
        status = f"http://127.0.0.1:{port}/api/portal/status/{json.loads(outputs[1])['checkoutRequestId']}"
        wait_for(lambda: requests.get(status, timeout=5).json()["status"] == "success", timeout=30)
        for command in others:
            done = subprocess.run(put_in(command), shell=True, cwd=REPO, env=env, capture_output=True, text=True,
                                  timeout=120)
            assert done.returncode == 0, (command, done.stdout, done.stderr)
            if "payments list" in command:
                assert "success" in done.stdout and "2547****4149" in done.stdout
            if "sms list" in command:       # the demo sends SMS (to the simulator): the receipt is queued or sent
                assert re.search(r"receipt\s+2547\*\*\*\*4149\s+(pending|sent)", done.stdout), done.stdout
            if command.endswith(" check"):
                assert "dashboard          1 account(s)" in done.stdout and "uses another database" not in done.stdout


def _converse(fd: int, prompts: list[bytes], answer: bytes, timeout: float = 30.0) -> bytes:
    """Answer each of ``prompts`` on the terminal ``fd`` with ``answer``; everything said, bounded."""
    import select
    import time
    said, deadline = b"", time.monotonic() + timeout
    while time.monotonic() < deadline:
        if prompts and said.rstrip().endswith(prompts[0].rstrip()):
            os.write(fd, answer)
            prompts.pop(0)
        ready, _, _ = select.select([fd], [], [], 0.2)
        if ready:
            try:
                chunk = os.read(fd, 1024)
            except OSError:            # the child closed the terminal: done
                break
            if not chunk:
                break
            said += chunk
    os.close(fd)
    return said


def _answers(url: str) -> bool:
    try:
        return requests.get(url, timeout=2).status_code == 200
    except requests.RequestException:
        return False
