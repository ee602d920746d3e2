"""FreeRADIUS 3.2 with rlm_sql and its SQLite driver, as daloRADIUS, RADIUSdesk and PHPNuxBill
(RADIUS mode) run it: the yardstick hotspotd's RADIUS server is compared with.

The server runs from a private copy of the Debian package's /etc/freeradius/3.0 in the work
folder. It is the stock configuration except for these changes:

radiusd.conf
  * ``raddbdir``, ``logdir`` and ``run_dir`` point into the work folder, so the copy is the one
    read, and radius.log, the ``detail`` module's files (``radacctdir`` = ``${logdir}/radacct``),
    the ``unix`` module's radwtmp and the pidfile are written there, not under /var.
  * ``user``/``group`` (freerad) are commented out: the server stays the user who starts it (root
    for the bench), so it can read the copy and write the SQLite database wherever the work folder
    is. Running as freerad or root costs the same.
  * ``reject_delay = 0`` (stock 1 s): an unknown MAC is rejected at once, as hotspotd does; a 1 s
    delay would measure a politeness timer, not the server.
  * ``max_requests`` stays 16384 (stock). It caps the requests tracked at once (auth and acct
    together; no per-client factor in 3.2), and a request stays tracked for ``cleanup_delay``
    (5 s) after its reply: drops ("Dropping request (... is too many)" in radius.log) start above
    about 3,300 requests/s sustained, or a 16,384-request burst. The SQLite-bound server answers
    about 1,100/s at best here, so the cap never binds.
  * Unchanged and harmless: ``proxy_requests = yes`` opens one proxy socket on a random port.
clients.conf
  Only 127.0.0.1, with the bench's secret and ``require_message_authenticator = yes`` (stock:
  localhost and ::1 with "testing123").
sites-enabled/default
  The four stock listen sections (auth and acct on every IPv4 and IPv6 address, ports 1812/1813)
  are replaced by one auth and one acct listener on 127.0.0.1 at the chosen ports. The
  authorize, authenticate, preacct, accounting and post-auth sections are stock: ``-sql`` runs in
  authorize, accounting (radacct) and post-auth (radpostauth), as daloRADIUS leaves them once sql
  is enabled; ``detail`` and ``unix`` still write accounting into the work folder.
sites-enabled/inner-tunnel
  Disabled (link removed): it listens on 127.0.0.1:18120 and only serves the inside of PEAP/TTLS,
  which MAC authentication never reaches. The eap module still loads without it. No other site
  is enabled in the package (the "status" site is not), so nothing else binds a fixed port.
mods-enabled/sql
  Enabled (stock: not enabled) with ``driver = "rlm_sql_sqlite"`` (the stock dialect is already
  sqlite), the database file in the work folder and ``read_clients = no`` spelled out (the stock
  default); pool, busy_timeout and queries are stock.

The database is created from the stock sqlite schema.sql. Each known MAC gets a radcheck row
``Auth-Type := Accept`` (MAC authentication: MikroTik sends the MAC as User-Name with an empty
User-Password) and a radreply row ``Session-Timeout = <session_timeout>``.

SQLite under concurrent load: stock, the pooled connections (one per server thread, up to 32)
share a rollback-journal database and give up on a lock after ``busy_timeout = 200`` ms. Every
Access-Request writes a radpostauth row, so in a burst (radclient, 50 in flight) some radcheck
reads fail with "database is locked" and those known MACs get Access-Reject (20-27 % of 10,000
in our runs). ``tuned_sqlite=True`` applies the two usual remedies, WAL journal mode and
``busy_timeout = 5000``; with both, every known MAC is accepted. It is off by default: the
default is the configuration as shipped.

Run ``python scripts/benchlib/freeradius.py`` for a short demonstration.
"""
from __future__ import annotations

import hashlib
import hmac
import os
import re
import shutil
import signal
import socket
import sqlite3
import struct
import subprocess
import time
from pathlib import Path

FREERADIUS = Path("/usr/sbin/freeradius")
RADCLIENT = Path("/usr/bin/radclient")
SQLITE_DRIVER = Path("/usr/lib/freeradius/rlm_sql_sqlite.so")
STOCK_RADDB = Path("/etc/freeradius/3.0")
PACKAGES = ("freeradius", "freeradius-utils")

# FreeRADIUS configuration values are unquoted words; a path outside this set would need quoting.
_PLAIN_PATH = re.compile(r"[A-Za-z0-9_./+-]+")


def ensure_installed() -> None:
    """Install FreeRADIUS (server, SQLite driver, radclient) if any piece is missing.

    Needs root; otherwise raises RuntimeError naming the packages. While apt runs, a
    /usr/sbin/policy-rc.d answering 101 (Debian's "do not start services" switch, honoured by
    invoke-rc.d in the package's postinst) keeps the package's own freeradius service from being
    started; any policy-rc.d already there is put back afterwards."""
    if FREERADIUS.exists() and SQLITE_DRIVER.exists() and RADCLIENT.exists():
        return
    if os.geteuid() != 0:
        raise RuntimeError(f"FreeRADIUS 3.2 is not installed; as root run: "
                           f"apt-get install --no-install-recommends {' '.join(PACKAGES)}")
    policy = Path("/usr/sbin/policy-rc.d")
    saved = policy.read_bytes() if policy.exists() else None
    policy.write_text("#!/bin/sh\n# written by hotspotd's bench while it installs FreeRADIUS\nexit 101\n")
    policy.chmod(0o755)
    try:
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "update"], env=env, check=True)
        subprocess.run(["apt-get", "install", "-y", "--no-install-recommends", *PACKAGES], env=env, check=True)
    finally:
        if saved is None:
            policy.unlink()
        else:
            policy.write_bytes(saved)


def _free_udp_ports(count: int) -> list[int]:
    """``count`` distinct UDP ports free on 127.0.0.1 now (all bound at once, so none repeats)."""
    sockets = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def _replace(path: Path, old: str, new: str) -> None:
    """Replace the one occurrence of ``old`` in ``path``; fail loudly if the stock text has changed."""
    text = path.read_text()
    if text.count(old) != 1:
        raise RuntimeError(f"{path}: expected {old!r} once, found it {text.count(old)} times")
    path.write_text(text.replace(old, new))


def _drop_listen_sections(path: Path, expected: int) -> str:
    """The text of ``path`` without its top-level ``listen { ... }`` sections (opening line and
    closing brace at column 0, as in the stock files); checks there were ``expected`` of them."""
    kept, inside, found = [], False, 0
    for line in path.read_text().splitlines(keepends=True):
        if not inside and line.rstrip() == "listen {":
            inside, found = True, found + 1
        elif inside:
            inside = line.rstrip() != "}"
        else:
            kept.append(line)
    if found != expected:
        raise RuntimeError(f"{path}: expected {expected} listen sections, found {found}")
    return "".join(kept)


def status_server(port: int, secret: str, timeout: float = 0.2) -> bool:
    """Whether a RADIUS server answers a Status-Server (RFC 5997, with its required
    Message-Authenticator) on 127.0.0.1:``port`` within ``timeout`` seconds."""
    ident = os.urandom(1)[0]
    authenticator = os.urandom(16)
    attrs = bytes([80, 18]) + bytes(16)                       # Message-Authenticator, zeroed
    head = struct.pack("!BBH", 12, ident, 20 + len(attrs))    # code 12: Status-Server
    signature = hmac.new(secret.encode(), head + authenticator + attrs, hashlib.md5).digest()
    packet = head + authenticator + attrs[:2] + signature
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(timeout)
        s.connect(("127.0.0.1", port))
        try:
            s.send(packet)
            reply = s.recv(4096)
        except OSError:                                       # timeout, or port not bound yet
            return False
    return len(reply) >= 20 and reply[1] == ident


class FreeRadius:
    """FreeRADIUS with rlm_sql/SQLite in ``workdir``, accepting ``macs_known`` by MAC
    authentication. ``start`` writes the configuration and database and runs the server;
    ``pid`` is the radiusd process itself (no shell in between). ``tuned_sqlite``: WAL and a 5 s
    busy_timeout instead of the stock rollback journal and 200 ms (see the module docstring)."""

    def __init__(self, workdir: Path, macs_known: list[str], secret: str, session_timeout: int = 3600,
                 auth_port: int = 0, acct_port: int = 0, *, tuned_sqlite: bool = False):
        self.workdir = Path(workdir).resolve()
        if not _PLAIN_PATH.fullmatch(str(self.workdir)):
            raise ValueError(f"work folder {self.workdir} must be a plain path (letters, digits, _ . / + -)")
        if re.search(r'["\\\x00-\x1f]', secret):
            raise ValueError("the secret may not hold quotes, backslashes or control characters")
        self.macs_known = list(macs_known)
        self.secret = secret
        self.session_timeout = session_timeout
        self.tuned_sqlite = tuned_sqlite
        free = iter(_free_udp_ports(2))
        self.auth_port = auth_port or next(free)
        self.acct_port = acct_port or next(free)
        self.raddb = self.workdir / "raddb"
        self.log_dir = self.workdir / "log"
        self.log_path = self.log_dir / "radius.log"
        self.db_path = self.workdir / "radius.sqlite"
        self.proc: subprocess.Popen | None = None

    @property
    def pid(self) -> int:
        return self.proc.pid

    # --- configuration --------------------------------------------------------------------
    def _write_config(self) -> None:
        """A fresh copy of the stock raddb with the changes the module docstring lists."""
        shutil.rmtree(self.raddb, ignore_errors=True)
        shutil.copytree(STOCK_RADDB, self.raddb, symlinks=True)
        for link in self.raddb.rglob("*"):
            if link.is_symlink() and not link.resolve().is_relative_to(self.raddb):
                raise RuntimeError(f"{link} points outside the copied raddb: {os.readlink(link)}")
        for folder in (self.log_dir, self.workdir / "run"):
            folder.mkdir(parents=True, exist_ok=True)

        conf = self.raddb / "radiusd.conf"
        _replace(conf, "\nraddbdir = /etc/freeradius/3.0\n", f"\nraddbdir = {self.raddb}\n")
        _replace(conf, "\nlogdir = /var/log/freeradius\n", f"\nlogdir = {self.log_dir}\n")
        _replace(conf, "\nrun_dir = ${localstatedir}/run/${name}\n", f"\nrun_dir = {self.workdir}/run\n")
        _replace(conf, "\n\tuser = freerad\n", "\n#\tuser = freerad\t# stays the starting user (bench)\n")
        _replace(conf, "\n\tgroup = freerad\n", "\n#\tgroup = freerad\n")
        _replace(conf, "\n\treject_delay = 1\n", "\n\treject_delay = 0\n")

        (self.raddb / "clients.conf").write_text(
            "client localhost {\n"
            "\tipaddr = 127.0.0.1\n"
            f'\tsecret = "{self.secret}"\n'
            "\trequire_message_authenticator = yes\n"
            "\tnas_type = other\n"
            "}\n")

        default = self.raddb / "sites-enabled" / "default"
        text = _drop_listen_sections(default, expected=4)
        listeners = (f"listen {{\n\ttype = auth\n\tipaddr = 127.0.0.1\n\tport = {self.auth_port}\n}}\n"
                     f"listen {{\n\ttype = acct\n\tipaddr = 127.0.0.1\n\tport = {self.acct_port}\n}}\n")
        if text.count("\nserver default {\n") != 1:
            raise RuntimeError(f"{default}: no 'server default {{' line")
        default.unlink()                       # the symlink; the private copy gets a file of its own
        default.write_text(text.replace("\nserver default {\n", "\nserver default {\n" + listeners))

        (self.raddb / "sites-enabled" / "inner-tunnel").unlink()

        sql = self.raddb / "mods-available" / "sql"
        _replace(sql, '\tdriver = "rlm_sql_null"\n', '\tdriver = "rlm_sql_sqlite"\n')
        _replace(sql, '\t\tfilename = "/tmp/freeradius.db"\n', f'\t\tfilename = "{self.db_path}"\n')
        _replace(sql, "\n#\tread_clients = yes\n", "\n\tread_clients = no\n")
        if self.tuned_sqlite:
            _replace(sql, "\t\tbusy_timeout = 200\n", "\t\tbusy_timeout = 5000\n")
        (self.raddb / "mods-enabled" / "sql").symlink_to("../mods-available/sql")

    def _write_database(self) -> None:
        """The stock SQLite schema, plus radcheck/radreply rows for every known MAC."""
        self.db_path.unlink(missing_ok=True)
        schema = (self.raddb / "mods-config" / "sql" / "main" / "sqlite" / "schema.sql").read_text()
        with sqlite3.connect(self.db_path) as db:
            if self.tuned_sqlite:
                db.execute("PRAGMA journal_mode = WAL")           # a property of the file: it stays
            db.executescript(schema)
            db.executemany("INSERT INTO radcheck (username, attribute, op, value)"
                           " VALUES (?, 'Auth-Type', ':=', 'Accept')", ((mac,) for mac in self.macs_known))
            db.executemany("INSERT INTO radreply (username, attribute, op, value)"
                           " VALUES (?, 'Session-Timeout', '=', ?)",
                           ((mac, str(self.session_timeout)) for mac in self.macs_known))
        db.close()

    # --- the process ----------------------------------------------------------------------
    def start(self, timeout: float = 30.0) -> "FreeRadius":
        """Write configuration and database, run ``freeradius -f`` (foreground, normal logging)
        and wait until both ports answer a Status-Server. Raises with the log's tail if the
        server exits or stays silent."""
        self._write_config()
        self._write_database()
        # The server's own log (log.file = ${logdir}/radius.log) and anything it prints before
        # that log is open go to the same file; both append, so neither overwrites the other.
        self.log_path.unlink(missing_ok=True)
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen([str(FREERADIUS), "-f", "-d", str(self.raddb)], cwd=self.workdir,
                                         stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                break
            if status_server(self.auth_port, self.secret) and status_server(self.acct_port, self.secret):
                return self
            time.sleep(0.05)
        code = self.proc.poll()
        self.stop()
        state = f"exited with {code}" if code is not None else f"did not answer within {timeout} s"
        raise RuntimeError(f"FreeRADIUS {state}; end of {self.log_path}:\n{self.log_tail()}")

    def log_tail(self, lines: int = 30) -> str:
        """The last ``lines`` lines of radius.log, for error messages."""
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return "(no log)"

    def stop(self) -> None:
        """SIGTERM, up to 10 s to exit, then SIGKILL."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


if __name__ == "__main__":
    import tempfile

    ensure_installed()
    macs = ["AA:BB:CC:00:00:01", "AA:BB:CC:00:00:02", "AA:BB:CC:00:00:03"]
    with tempfile.TemporaryDirectory(prefix="freeradius-demo-") as tmp:
        server = FreeRadius(Path(tmp), macs, secret="demo-secret", session_timeout=3600).start()
        try:
            print(f"FreeRADIUS pid {server.pid}, auth port {server.auth_port}, acct port {server.acct_port}")
            request = (f'User-Name = "{macs[0]}"\nUser-Password = ""\nNAS-IP-Address = 127.0.0.1\n'
                       f'NAS-Identifier = "venue"\nNAS-Port-Type = Wireless-802.11\n'
                       f'Calling-Station-Id = "{macs[0]}"\nCalled-Station-Id = "hotspot1"\n'
                       f'Framed-IP-Address = 10.5.50.2\nService-Type = Login-User\nMessage-Authenticator = 0x00\n')
            subprocess.run([str(RADCLIENT), "-x", "-s", f"127.0.0.1:{server.auth_port}", "auth", server.secret],
                           input=request, text=True, check=True)
        finally:
            server.stop()
