"""A real hotspotd for the benchmarks: its own process (``hotspotd run``), SQLite in a work folder
or a PostgreSQL database by URL, Daraja simulated in the bench's own process (so the bench can
deliver callbacks itself), and a database seeded with paid MACs, live sessions and payment history.

The seeding writes rows by hand (a million payments through peewee would take most of an hour):
``?`` placeholders and the columns named, so the same statements run on SQLite (``executemany``)
and PostgreSQL (``execute_values``), and columns added later fill with their defaults."""
from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import requests

from .common import free_port

REPO = Path(__file__).resolve().parents[2]
#: the daemon runs from the runtime-only virtualenv scripts/bench makes (as installed on a Pi)
DAEMON_PYTHON = REPO / ".venv-bench" / "bin" / "python"
SECRET = "bench-secret"
PHONE = "254708374149"


def mac_of(index: int, prefix: str = "AA:BB") -> str:
    """A distinct MAC per index: ``AA:BB:00:00:27:10`` for 10000."""
    digits = f"{index:08X}"
    return f"{prefix}:" + ":".join(digits[i:i + 2] for i in range(0, 8, 2))


def insert_rows(db, sql: str, rows) -> None:
    """``INSERT INTO t (columns) VALUES (?, …)`` once per row of ``rows``: SQLite's
    ``executemany``; on PostgreSQL psycopg2's ``execute_values`` (many rows a statement: its
    ``executemany`` is one round trip per row)."""
    if db.param == "?":
        db.connection().executemany(sql, rows)
        return
    from psycopg2.extras import execute_values
    head, _, template = sql.partition(" VALUES ")
    with db.cursor() as cursor:
        execute_values(cursor, f"{head} VALUES %s", rows, template=template.replace("?", "%s"), page_size=2000)


def query(db, sql: str, params: tuple = ()):
    """One statement with ``?`` placeholders on either database; the cursor."""
    return db.execute_sql(sql if db.param == "?" else sql.replace("?", db.param), params)


def reset_sequences(db, tables: tuple[str, ...]) -> None:
    """After rows inserted with their ids: PostgreSQL's id sequences carry on past the highest
    (SQLite's rowid does by itself)."""
    if db.param == "?":
        return
    for table in tables:
        db.execute_sql(f"SELECT setval(pg_get_serial_sequence('\"{table}\"', 'id'),"
                       f' (SELECT COALESCE(MAX(id), 0) + 1 FROM "{table}"), false)')


class Hotspot:
    """``hotspotd run`` on free ports. ``seed_*`` write the database before :meth:`start`.

    ``db_url``: SQLite in ``workdir`` when None; several Hotspots may share one PostgreSQL URL
    (the central server). ``python``: the interpreter the daemon runs from (a virtualenv with
    psycopg2 for PostgreSQL). ``extra_config``: TOML added to the generated file (``[[sites]]``…)."""

    def __init__(self, workdir: Path, daraja_url: str, *, threads: int = 8, db_url: str | None = None,
                 python: Path | None = None, log_level: str = "WARNING", extra_config: str = ""):
        self.workdir = workdir
        self.db_path = workdir / "hotspotd.db" if db_url is None else None
        self.db_url = db_url or f"sqlite:///{self.db_path}"
        self.python = python
        self.portal_port = free_port()
        self.auth_port = free_port(socket.SOCK_DGRAM)
        self.acct_port = free_port(socket.SOCK_DGRAM)
        self.url = f"http://127.0.0.1:{self.portal_port}"
        self.config_path = workdir / "hotspotd.toml"
        self.log_path = workdir / "hotspotd.log"
        self.proc: subprocess.Popen | None = None
        self.config_path.write_text(f"""\
[portal]
listen = "127.0.0.1:{self.portal_port}"
public_url = "{self.url}"
threads = {threads}
pay_limit_per_client = "1000000/minute"
pay_limit_per_phone = "1000000/minute"
pay_limit_per_device = "1000000/minute"

[database]
url = "{self.db_url}"

[mpesa]
environment = "sandbox"
base_url = "{daraja_url}"
consumer_key = "simulator"
consumer_secret = "simulator"
passkey = "bfb279f9aa9bdbcf158e97dd71a467cd2e0c893059b10f78e6b72ada1ed2c919"
timeout_seconds = 5

[radius]
listen = "127.0.0.1"
auth_port = {self.auth_port}
acct_port = {self.acct_port}

[[radius.clients]]
address = "127.0.0.1"
secret = "{SECRET}"

[backup]
enabled = false

[logging]
level = "{log_level}"
{extra_config}""")
        self.config_path.chmod(0o600)

    # --- the database ---------------------------------------------------------------------
    def _open(self):
        from hotspotd.storage import db
        return db.prepare(self.db_url)

    def seed_paid(self, macs: list[str], seconds: int = 3600, id_base: int = 0,
                  sites: list[str] | None = None) -> list[int]:
        """One successful payment, its live entitlement and the device binding per MAC; returns
        the entitlement ids in the order of ``macs``. ``sites``: each MAC's venue (the column's
        default, the default venue, when None)."""
        from hotspotd.storage.models import Package
        db = self._open()
        site_col, site_mark = (", site", ", ?") if sites else ("", "")

        def site(i: int) -> tuple:
            return (sites[i],) if sites else ()
        try:
            package = Package.select().where(Package.name == "1 hour").get()
            now = time.time()
            with db.atomic():
                first = query(db, "SELECT COALESCE(MAX(id), 0) + 1 FROM payment").fetchone()[0]
                ent_first = query(db, "SELECT COALESCE(MAX(id), 0) + 1 FROM entitlement").fetchone()[0]
                dev_first = query(db, "SELECT COALESCE(MAX(id), 0) + 1 FROM device").fetchone()[0]
                insert_rows(db,
                    "INSERT INTO payment (id, checkout_request_id, merchant_request_id, phone, amount, package_id, mac,"
                    f" status, result_code, receipt, created_at, pushed_at, completed_at, resolved_by, query_attempts"
                    f"{site_col}) VALUES (?, ?, ?, ?, ?, ?, ?, 'success', '0', ?, ?, ?, ?, 'callback', 0{site_mark})",
                    ((first + i, f"ws_CO_bench{id_base + i}", f"m{id_base + i}", PHONE, package.price, package.id,
                      mac, f"BNC{id_base + i:07d}", now, now, now) + site(i) for i, mac in enumerate(macs)))
                insert_rows(db,
                    "INSERT INTO entitlement (id, payment_id, package_id, phone, started_at, expires_at, bytes_used,"
                    f" devices, status, login_user, login_password{site_col})"
                    f" VALUES (?, ?, ?, ?, ?, ?, 0, 1, 'active', ?, ?{site_mark})",
                    ((ent_first + i, first + i, package.id, PHONE, now, now + seconds, f"hsb{id_base + i}", "x")
                     + site(i) for i in range(len(macs))))
                insert_rows(db, "INSERT INTO device (id, mac, entitlement_id, active, bound_at) VALUES (?, ?, ?, TRUE, ?)",
                            ((dev_first + i, mac, ent_first + i, now) for i, mac in enumerate(macs)))
                reset_sequences(db, ("payment", "entitlement", "device"))
            return [ent_first + i for i in range(len(macs))]
        finally:
            db.close()

    def seed_live_sessions(self, macs: list[str], session_ids: list[str] | None = None,
                           nas: list[str] | None = None, sites: list[str] | None = None) -> None:
        """An online router session (as accounting Start left it) for each MAC; ``session_ids``:
        their Acct-Session-Ids (``live<i>`` when None); ``nas``: each one's router address
        (127.0.0.1 when None); ``sites``: each one's venue (the column's default when None)."""
        db = self._open()
        site_col, site_mark = (", site", ", ?") if sites else ("", "")
        try:
            now = time.time()
            with db.atomic():
                ents = dict(query(db, "SELECT d.mac, d.entitlement_id FROM device d JOIN entitlement e"
                                      " ON e.id = d.entitlement_id WHERE e.status = 'active' AND d.active"))
                first = query(db, "SELECT COALESCE(MAX(id), 0) + 1 FROM acct_session").fetchone()[0]
                insert_rows(db,
                    "INSERT INTO acct_session (id, nas, acct_session_id, mac, entitlement_id, ip, username, started_at,"
                    f" updated_at, input_octets, output_octets, session_time, online, updates{site_col})"
                    f" VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 0, 0, 0, TRUE, 1{site_mark})",
                    ((first + i, nas[i] if nas else "127.0.0.1", session_ids[i] if session_ids else f"live{i:08x}",
                      mac, ents.get(mac), f"10.5.{50 + i // 250 % 200}.{i % 250 + 2}", mac, now, now)
                     + ((sites[i],) if sites else ()) for i, mac in enumerate(macs)))
                reset_sequences(db, ("acct_session",))
        finally:
            db.close()

    def seed_history(self, count: int, macs: list[str], rng: random.Random, chunk: int = 50_000) -> None:
        """``count`` old successful payments spread over the last year by returning customers
        (``macs``), each with its ended entitlement, device binding (released at the end, as
        access.end_bindings leaves it) and events, as a year of trade leaves them."""
        from hotspotd.storage.models import Package
        db = self._open()
        try:
            packages = [(p.id, p.price, p.duration_seconds) for p in Package.select()]
            now = time.time()
            pay_id = query(db, "SELECT COALESCE(MAX(id), 0) FROM payment").fetchone()[0]
            ent_id = query(db, "SELECT COALESCE(MAX(id), 0) FROM entitlement").fetchone()[0]
            dev_id = query(db, "SELECT COALESCE(MAX(id), 0) FROM device").fetchone()[0]
            done = 0
            while done < count:
                n = min(chunk, count - done)
                pays, ents, devs, events = [], [], [], []
                for i in range(n):
                    pay_id += 1
                    ent_id += 1
                    package_id, price, seconds = rng.choice(packages)
                    mac = rng.choice(macs)
                    at = now - 86400 - rng.random() * 365 * 86400
                    dev_id += 1
                    pays.append((pay_id, f"ws_CO_hist{pay_id}", f"h{pay_id}", PHONE, price, package_id, mac,
                                 f"H{pay_id:09d}", at, at, at + 5))
                    ents.append((ent_id, pay_id, package_id, PHONE, at + 5, at + 5 + seconds, at + 5 + seconds))
                    devs.append((dev_id, mac, ent_id, at + 5))
                    events.append((at + 5, "session_created", pay_id, ent_id, mac))
                    events.append((at + 5 + seconds, "session_ended", None, ent_id, None))
                with db.atomic():
                    insert_rows(db,
                        "INSERT INTO payment (id, checkout_request_id, merchant_request_id, phone, amount, package_id,"
                        " mac, status, result_code, receipt, created_at, pushed_at, completed_at, resolved_by,"
                        " query_attempts) VALUES (?, ?, ?, ?, ?, ?, ?, 'success', '0', ?, ?, ?, ?, 'callback', 0)", pays)
                    insert_rows(db,
                        "INSERT INTO entitlement (id, payment_id, package_id, phone, started_at, expires_at,"
                        " bytes_used, devices, status, ended_at, end_reason)"
                        " VALUES (?, ?, ?, ?, ?, ?, 0, 1, 'expired', ?, 'expired')", ents)
                    insert_rows(db, "INSERT INTO device (id, mac, entitlement_id, active, bound_at)"
                                    " VALUES (?, ?, ?, FALSE, ?)", devs)
                    insert_rows(db, "INSERT INTO event (at, kind, payment_id, entitlement_id, mac, message)"
                                    " VALUES (?, ?, ?, ?, ?, '')", events)
                done += n
            reset_sequences(db, ("payment", "entitlement", "device"))
            db.execute_sql("ANALYZE")
        finally:
            db.close()

    # --- the process ----------------------------------------------------------------------
    def start(self, timeout: float = 30.0) -> float:
        """Start ``hotspotd run``; returns the seconds until the portal and both RADIUS ports answer."""
        env = {k: v for k, v in os.environ.items() if k not in ("HOTSPOTD_CONFIG", "HOTSPOTD_CRASH_AT")}
        started = time.perf_counter()
        with open(self.log_path, "ab") as log:
            python = str(self.python or (DAEMON_PYTHON if DAEMON_PYTHON.exists() else sys.executable))
            self.proc = subprocess.Popen([python, "-m", "hotspotd.service.cli", "--config", str(self.config_path),
                                          "run"], cwd=REPO, env=env, stdin=subprocess.DEVNULL, stdout=log,
                                         stderr=subprocess.STDOUT)
        from .radius_load import answers
        deadline = started + timeout
        portal = auth = acct = False
        while time.perf_counter() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"hotspotd exited during start; see {self.log_path}")
            if not portal:
                try:
                    with requests.get(f"{self.url}/api/portal/packages", timeout=1) as r:
                        portal = r.status_code == 200
                except requests.RequestException:
                    pass
            auth = auth or answers(self.auth_port, SECRET, "auth")
            acct = acct or answers(self.acct_port, SECRET, "acct")
            if portal and auth and acct:
                return time.perf_counter() - started
            time.sleep(0.005)
        raise RuntimeError(f"hotspotd did not answer within {timeout} s; see {self.log_path}")

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
