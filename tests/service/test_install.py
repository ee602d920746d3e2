"""scripts/install.sh into a throw-away root, and the unit it installs.

The installer runs for real (user, virtual environment with a real ``pip install``, config,
state directory, unit, offline enable) into a temporary directory; the unit is checked with
``systemd-analyze verify``; the installed daemon is started as the unit would start it (its
``ExecStart=``, its user, ``UMask=0077``, no new privileges, no writable+executable memory, a
notify socket and ``WatchdogSec=``) and must report READY and feed the watchdog. Then a re-run,
an upgrade, ``--uninstall`` and ``--uninstall --purge``.
"""
from __future__ import annotations

import os
import re
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from tests.helpers import REPO, launch, NotifySocket, wait_log

INSTALL = REPO / "scripts" / "install.sh"
UNIT = REPO / "systemd" / "hotspotd.service"
SERVICE_ENV = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8",
               "USER": "hotspotd", "LOGNAME": "hotspotd", "SHELL": "/usr/sbin/nologin"}

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="the installer creates a user: run as root")


def verify(unit_text: str, executable: str, folder: Path) -> None:
    """``systemd-analyze verify`` a copy of the unit whose ``ExecStart=`` names ``executable``:
    verify refuses a command that does not exist, and /opt/hotspotd exists only after an install."""
    assert "ExecStart=/opt/hotspotd/venv/bin/hotspotd " in unit_text
    folder.mkdir(parents=True, exist_ok=True)
    copy = folder / "hotspotd.service"
    copy.write_text(unit_text.replace("ExecStart=/opt/hotspotd/venv/bin/hotspotd ", f"ExecStart={executable} "))
    done = subprocess.run(["systemd-analyze", "verify", str(copy)], capture_output=True, text=True, timeout=60)
    # verify also loads the machine's other units and warns about theirs (Debian's freeradius.service,
    # installed by scripts/bench, uses the old MemoryLimit=): only what it says of ours counts
    ours = [line for line in done.stderr.splitlines() if not line.startswith(("/lib/systemd/", "/usr/lib/systemd/",
                                                                            "/etc/systemd/"))]
    assert done.returncode == 0 and ours == [], done.stderr


def test_the_unit_in_the_repo_passes_systemd_analyze_verify(tmp_path):
    verify(UNIT.read_text(), str(Path(sys.executable).parent / "hotspotd"), tmp_path)


@pytest.fixture
def root():
    """A throw-away root with just what useradd --root needs (not under pytest's 0700 tmp: the
    service user must be able to reach its files)."""
    path = Path(tempfile.mkdtemp(prefix="hotspotd-root-", dir="/tmp"))
    path.chmod(0o755)
    etc = path / "etc"
    etc.mkdir()
    (etc / "passwd").write_text("root:x:0:0:root:/root:/bin/bash\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n")
    (etc / "group").write_text("root:x:0:\nnogroup:x:65534:\n")
    for name, text in (("shadow", "root:*:19000:0:99999:7:::\nnobody:*:19000:0:99999:7:::\n"),
                       ("gshadow", "root:*::\nnogroup:*::\n")):
        (etc / name).write_text(text)
        (etc / name).chmod(0o640)
    shutil.copy("/etc/login.defs", etc / "login.defs")
    yield path
    shutil.rmtree(path)


def install(root: Path, *args: str, source: Path = REPO) -> str:
    done = subprocess.run(["bash", str(INSTALL), "--root", str(root), "--source", str(source), *args],
                          capture_output=True, text=True, timeout=900, stdin=subprocess.DEVNULL)
    assert done.returncode == 0, f"install.sh {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def entry(root: Path, table: str, name: str = "hotspotd") -> list[str] | None:
    for line in (root / "etc" / table).read_text().splitlines():
        if line.split(":")[0] == name:
            return line.split(":")
    return None


def owner_mode(path: Path) -> tuple[int, int, int]:
    st = path.stat()
    return st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)


def run_as_service(root: Path, uid: int, gid: int, *args: str) -> subprocess.CompletedProcess:
    """The installed command as the service user (a CLI call, not the daemon)."""
    return subprocess.run([str(root / "opt/hotspotd/venv/bin/hotspotd"), "--config", str(root / "etc/hotspotd/hotspotd.toml"),
                           *args], user=uid, group=gid, extra_groups=[], umask=0o077, env=SERVICE_ENV,
                          capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)


def start_as_the_unit_would(root: Path, uid: int, gid: int, log: Path):
    """``ExecStart=`` of the installed unit (paths under ``root``), its user, umask, no new
    privileges, no W+X memory, ``WatchdogSec=`` and a notify socket; returns (process, manager)."""
    unit = (root / "etc/systemd/system/hotspotd.service").read_text()
    argv = re.search(r"^ExecStart=(.+)$", unit, re.M).group(1).split()
    argv = [str(root) + a if a.startswith("/") else a for a in argv]
    watchdog = int(re.search(r"^WatchdogSec=(\d+)$", unit, re.M).group(1))
    run = root / "run"
    run.mkdir(exist_ok=True)
    if (run / "notify").exists():
        (run / "notify").unlink()
    manager = NotifySocket(str(run / "notify"))
    env = dict(SERVICE_ENV, NOTIFY_SOCKET=manager.address, WATCHDOG_USEC=str(watchdog * 1_000_000))
    return launch(argv, env, uid=uid, gid=gid, log=log), manager


def stop(proc, manager) -> None:
    """SIGTERM as ``systemctl stop`` sends it: STOPPING=1, then exit 0."""
    proc.send_signal(signal.SIGTERM)
    manager.expect("STOPPING", "1", timeout=10)
    assert proc.wait(timeout=30) == 0


def end(proc, manager) -> None:
    if proc.poll() is None:
        proc.kill()
    proc.wait(timeout=30)
    manager.close()


@needs_root
@pytest.mark.slow
def test_install_run_upgrade_uninstall_in_a_throwaway_root(root, tmp_path):
    out = install(root)
    assert "created the system user hotspotd" in out

    # the user: a system account without a login, its own group
    user = entry(root, "passwd")
    assert user is not None, (root / "etc/passwd").read_text()
    uid, gid = int(user[2]), int(user[3])
    assert 0 < uid < 1000 and user[5:] == ["/var/lib/hotspotd", "/usr/sbin/nologin"]
    assert entry(root, "group")[2] == str(gid) and entry(root, "shadow")[1].startswith("!")

    # files, owners, modes
    config = root / "etc/hotspotd/hotspotd.toml"
    assert config.read_text() == (REPO / "config/hotspotd.toml").read_text()
    assert 'url = "sqlite:////var/lib/hotspotd/hotspotd.db"' in config.read_text()
    assert owner_mode(config) == (uid, gid, 0o600)
    assert owner_mode(root / "etc/hotspotd") == (0, gid, 0o750)
    assert owner_mode(root / "var/lib/hotspotd") == (uid, gid, 0o750)
    venv = root / "opt/hotspotd/venv"
    assert venv.is_symlink() and os.readlink(venv).startswith("venv-")
    first_venv = venv.resolve()
    assert os.access(venv / "bin/hotspotd", os.X_OK)
    assert (venv / "bin/hotspotd").read_text().splitlines()[0] == f"#!{first_venv}/bin/python"
    assert not list(first_venv.glob("lib/python3*/site-packages/hotspotd*.egg-link"))     # not editable
    unit = root / "etc/systemd/system/hotspotd.service"
    assert unit.read_text() == UNIT.read_text() and owner_mode(unit) == (0, 0, 0o644)
    wants = root / "etc/systemd/system/multi-user.target.wants/hotspotd.service"
    assert wants.is_symlink() and os.readlink(wants) == "/etc/systemd/system/hotspotd.service"
    verify(unit.read_text(), str(venv / "bin/hotspotd"), tmp_path / "verify")

    # the owner edits the config (here: loopback ports, the database inside the throw-away root)
    state = root / "var/lib/hotspotd"
    edited = (config.read_text()
              .replace('sqlite:////var/lib/hotspotd/hotspotd.db', f"sqlite:///{state}/hotspotd.db")
              .replace('listen = "0.0.0.0:8080"', 'listen = "127.0.0.1:0"')
              .replace('listen = "0.0.0.0"', 'listen = "127.0.0.1"')
              .replace("auth_port = 1812", "auth_port = 0").replace("acct_port = 1813", "acct_port = 0")
              .replace('site_name = "hotspotd Wi-Fi"', 'site_name = "Mama Njeri Cafe"'))
    config.write_text(edited)
    checked = run_as_service(root, uid, gid, "check")
    assert checked.returncode == 0 and "all checks passed" in checked.stdout, checked.stdout + checked.stderr

    # the daemon under the unit's settings: READY, the watchdog answered, a clean stop
    proc, manager = start_as_the_unit_would(root, uid, gid, tmp_path / "first.log")
    try:
        ready = manager.expect("READY", "1", timeout=60)
        assert ready["STATUS"].startswith("portal 127.0.0.1:")
        manager.expect("WATCHDOG", "1", timeout=5)
        assert "migrating database to version 1" in wait_log(tmp_path / "first.log", "portal listening")
        stop(proc, manager)
    finally:
        end(proc, manager)
    database = state / "hotspotd.db"
    assert owner_mode(database) == (uid, gid, 0o600)           # UMask=0077, the service user's
    added = run_as_service(root, uid, gid, "packages", "add", "--name", "Owner's special", "--price", "7", "--minutes", "45")
    assert added.returncode == 0, added.stderr

    # a second run changes nothing and keeps the owner's config; the new default goes beside it
    out = install(root)
    assert "already installed" in out and "kept your" in out
    assert venv.resolve() == first_venv and config.read_text() == edited and owner_mode(config) == (uid, gid, 0o600)
    dist = root / "etc/hotspotd/hotspotd.toml.dist"
    assert dist.read_text() == (REPO / "config/hotspotd.toml").read_text() and owner_mode(dist) == (0, gid, 0o640)
    assert entry(root, "passwd")[2] == str(uid)
    assert sum(line.startswith("hotspotd:") for line in (root / "etc/passwd").read_text().splitlines()) == 1

    # an upgrade: a new environment, switched atomically; the old one kept; data and config kept
    source = tmp_path / "newer"
    shutil.copytree(REPO, source, symlinks=True, ignore=shutil.ignore_patterns(
        ".git", ".venv", "build", "dist", "*.egg-info", "__pycache__", ".hypothesis", ".pytest_cache",
        "test-artifacts", "var"))
    with open(source / "hotspotd/__init__.py", "a") as fh:
        fh.write("# a newer release\n")
    out = install(root, source=source)
    assert "building" in out
    assert venv.resolve() != first_venv and first_venv.is_dir()
    assert "# a newer release" in next(venv.resolve().glob("lib/python3*/site-packages/hotspotd/__init__.py")).read_text()
    assert config.read_text() == edited
    proc, manager = start_as_the_unit_would(root, uid, gid, tmp_path / "second.log")
    try:
        manager.expect("READY", "1", timeout=60)
        manager.expect("WATCHDOG", "1", timeout=5)
        stop(proc, manager)
    finally:
        end(proc, manager)
    listed = run_as_service(root, uid, gid, "packages", "list")
    assert "Owner's special" in listed.stdout and "30 minutes" in listed.stdout

    # --uninstall keeps the config, the data and the user
    out = install(root, "--uninstall")
    assert "kept" in out
    assert not (root / "opt/hotspotd").exists() and not unit.exists() and not wants.is_symlink()
    assert config.read_text() == edited and database.exists() and entry(root, "passwd") is not None

    # --uninstall --purge removes them too
    install(root, "--uninstall", "--purge")
    assert not (root / "etc/hotspotd").exists() and not state.exists()
    assert entry(root, "passwd") is None and entry(root, "group") is None and entry(root, "shadow") is None
    assert entry(root, "passwd", "root") is not None
