"""How many venues one central server carries (``scripts/bench --central``; docs/central-server.md §7).

The central set-up as docs/central-server.md describes it, on this machine: several ``hotspotd run``
processes (each its own portal and RADIUS ports) sharing one PostgreSQL database, made fresh on
127.0.0.1:5432 and seeded as a central server's would be (every venue's live sessions and its
payment history). Then the load of V venues at peak (:class:`benchlib.venues.VenueLoad`) for
increasing V, each step for a fixed time, with real RADIUS datagrams and real HTTP (payments
through the Daraja simulator, callbacks posted to the daemons). Each step is judged by
:data:`THRESHOLDS`; the capacity is the largest V at which it and every smaller step held them.

A benchmark: it prints figures and exits 0 whatever the capacity; non-zero only when it could not
measure.
"""
from __future__ import annotations

import argparse
import multiprocessing
import os
import platform
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

from .common import RssSampler, cpu_seconds, percentile
from .hotspot import REPO, SECRET, Hotspot, reset_sequences
from .venues import PaymentDriver, VenueLoad, device_mac, radius_driver, venue_address, venue_site

#: the daemons need psycopg2 (the ``postgres`` extra, as docs/central-server.md installs a central
#: server); .venv-bench leaves it out (a Pi's memory), .venv has it (the test extra)
CENTRAL_PYTHON = REPO / ".venv" / "bin" / "python"
ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"

#: what a step must hold to count (name, test on the step's figures, as printed)
THRESHOLDS = [
    ("RADIUS auth p99 < 100 ms", lambda f: f["auth_p99"] < 100),
    ("RADIUS accounting p99 < 100 ms", lambda f: f["acct_p99"] < 100),
    ("no RADIUS request lost (3 s) or wrongly answered", lambda f: f["lost"] == 0 and f["wrong"] == 0),
    ("callback → Access-Accept p99 < 1 s", lambda f: f["cb_p99"] < 1000),
    ("status poll p99 < 500 ms, pay call p99 < 1 s, no HTTP error", lambda f: f["status_p99"] < 500
     and f["pay_p99"] < 1000 and f["http_errors"] == 0),
    ("every payment begun completed (status success and Access-Accept)",
     lambda f: f["payments_completed"] == f["payments_started"]),
    ("hotspotd + PostgreSQL CPU < 70 % of the machine", lambda f: f["server_cpu"] < 70),
    ("load generator on schedule (p99 lateness < 50 ms)", lambda f: f["late_p99"] < 50),
]


# --- the machine and its PostgreSQL ------------------------------------------------------------
def machine_size() -> dict:
    cpuinfo = Path("/proc/cpuinfo").read_text().splitlines()
    model = next((line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name")),
                 platform.machine())
    mem_kb = int(next(line.split()[1] for line in Path("/proc/meminfo").read_text().splitlines()
                      if line.startswith("MemTotal")))
    return {"cores": os.cpu_count(), "model": model, "ram_gib": mem_kb / 1024 / 1024,
            "linux": platform.release(), "python": platform.python_version()}


def admin():
    import psycopg2
    conn = psycopg2.connect(ADMIN_URL)
    conn.autocommit = True
    return conn


def postgres_facts() -> dict:
    with admin() as conn, conn.cursor() as cur:
        cur.execute("SHOW server_version")
        version = cur.fetchone()[0]
        cur.execute("SELECT name, setting, unit FROM pg_settings WHERE name IN"
                    " ('shared_buffers', 'synchronous_commit', 'max_connections')")
        settings = {name: f"{setting}{' × ' + unit if unit else ''}" for name, setting, unit in cur.fetchall()}
    conn.close()
    return {"version": version, **settings}


def postgres_pids(dbname: str | None = None) -> list[int]:
    """Every postgres process; with ``dbname``, less the backends serving other databases
    (another program's tests, say): the server's own processes stay in."""
    foreign: set[int] = set()
    if dbname is not None:
        conn = admin()
        with conn.cursor() as cur:
            cur.execute("SELECT pid FROM pg_stat_activity WHERE datname IS NOT NULL AND datname <> %s", (dbname,))
            foreign = {row[0] for row in cur.fetchall()}
        conn.close()
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) not in foreign:
            try:
                if Path(f"/proc/{entry}/comm").read_text().strip() == "postgres":
                    pids.append(int(entry))
            except OSError:
                continue
    return pids


def postgres_cpu(dbname: str) -> dict[int, float]:
    """CPU seconds so far of the postgres processes working for ``dbname`` (and the server's own)."""
    out = {}
    for pid in postgres_pids(dbname):
        try:
            out[pid] = cpu_seconds(pid)
        except OSError:
            continue
    return out


def postgres_private_mb(dbname: str) -> float:
    """RssAnon summed over every postgres process (their shared buffers counted apart)."""
    total = 0
    for pid in postgres_pids(dbname):
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("RssAnon:"):
                    total += int(line.split()[1])
        except OSError:
            continue
    return total / 1024


def radius_handler_seconds(url: str) -> tuple[float, int]:
    """(seconds, requests) the daemon's RADIUS thread has spent answering so far, from its
    ``hotspotd_radius_request_seconds`` histogram (/metrics): the thread answers one request at a
    time, so their growth over a step divided by the step's length is how busy that thread was."""
    import requests
    seconds, count = 0.0, 0
    for line in requests.get(f"{url}/metrics", timeout=10).text.splitlines():
        if line.startswith("hotspotd_radius_request_seconds_sum"):
            seconds += float(line.rsplit(" ", 1)[1])
        elif line.startswith("hotspotd_radius_request_seconds_count"):
            count += int(float(line.rsplit(" ", 1)[1]))
    return seconds, count


def machine_busy() -> tuple[float, float]:
    """(busy, total) jiffies of every core since boot (/proc/stat; idle and iowait are not busy)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    total = sum(fields[:8])
    return total - fields[3] - fields[4], total


# --- the database -----------------------------------------------------------------------------
def seed_history(db, venues: int, per_venue: int, customers_per_venue: int) -> int:
    """``venues`` × ``per_venue`` old payments over the last year, made by the database itself
    (``generate_series``: ten times what rows sent from Python manage): 4 in 5 successful, each
    with its ended session, released device binding and two events; 1 in 5 cancelled at the
    prompt (ResultCode 1032), nothing else. Each venue's regulars (``customers_per_venue`` phones
    and MACs) come back again and again. Returns the payments made. (``%%`` is the modulo sign:
    psycopg2 reads ``%`` as a placeholder.)"""
    count = venues * per_venue
    steps = [
        f"""CREATE TEMP TABLE hist AS
            SELECT *, '2547' || lpad((20000000 + who)::text, 8, '0') AS phone, 'v' || (n %% {venues}) AS site,
                   'DD:' || substr(h, 1, 2) || ':' || substr(h, 3, 2) || ':' || substr(h, 5, 2) || ':'
                   || substr(h, 7, 2) || ':' || substr(h, 9, 2) AS mac
            FROM (SELECT n, pid, eid, did, at, pkg, ok, who, lpad(upper(to_hex(who)), 10, '0') AS h
                  FROM (SELECT n,
                          (SELECT COALESCE(MAX(id), 0) FROM payment) + n AS pid,
                          (SELECT COALESCE(MAX(id), 0) FROM entitlement) + n AS eid,
                          (SELECT COALESCE(MAX(id), 0) FROM device) + n AS did,
                          extract(epoch FROM now()) - 86400 - ((n * 7919) %% 31536000) AS at,
                          1 + (n %% 3) AS pkg, n %% 5 <> 0 AS ok,
                          (n %% {venues}) * {customers_per_venue} + (n * 2654435761) %% {customers_per_venue} AS who
                        FROM generate_series(1::bigint, {count}::bigint) AS n) AS g) AS x""",
        """INSERT INTO payment (id, checkout_request_id, merchant_request_id, phone, amount, package_id, mac,
                                status, result_code, result_desc, receipt, created_at, pushed_at, completed_at,
                                resolved_by, query_attempts, site)
            SELECT pid, 'ws_CO_hist' || pid, 'h' || pid, phone, p.price, pkg, mac,
                   CASE WHEN ok THEN 'success' ELSE 'cancelled' END, CASE WHEN ok THEN '0' ELSE '1032' END,
                   CASE WHEN ok THEN 'The service request is processed successfully.'
                        ELSE 'Request cancelled by user' END,
                   CASE WHEN ok THEN 'H' || lpad(pid::text, 9, '0') END, at, at, at + 9, 'callback', 0, hist.site
            FROM hist JOIN package p ON p.id = hist.pkg""",
        """INSERT INTO entitlement (id, payment_id, package_id, phone, started_at, expires_at, bytes_used,
                                    devices, status, ended_at, end_reason, login_user, login_password, site)
            SELECT eid, pid, pkg, phone, at + 9, at + 9 + p.duration_seconds, 0, 1, 'expired',
                   at + 9 + p.duration_seconds, 'expired', 'hs' || eid, 'x', hist.site
            FROM hist JOIN package p ON p.id = hist.pkg WHERE ok""",
        """INSERT INTO device (id, mac, entitlement_id, active, bound_at, unbound_at)
            SELECT did, mac, eid, FALSE, at + 9, at + 9 + 3600 FROM hist WHERE ok""",
        """INSERT INTO event (at, kind, payment_id, entitlement_id, mac, message)
            SELECT at + 9, 'session_created', pid, eid, mac, '' FROM hist WHERE ok
            UNION ALL SELECT at + 3609, 'session_ended', NULL, eid, NULL, '' FROM hist WHERE ok""",
        """DROP TABLE hist""",
    ]
    tables = ("payment", "entitlement", "device", "event")
    with db.atomic():
        # the tables' secondary indexes are dropped for the load and built again after it, from
        # their own definitions (a sort per index: several times faster than growing them row by row)
        indexes = db.execute_sql("SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = current_schema()"
                                 " AND tablename IN %s AND indexname NOT LIKE '%%_pkey'", (tables,)).fetchall()
        for name, _ in indexes:
            db.execute_sql(f'DROP INDEX "{name}"')
        for sql in steps:
            db.execute_sql(sql)
        db.execute_sql("SET LOCAL maintenance_work_mem = '256MB'")
        for _, definition in indexes:
            db.execute_sql(definition.replace("%", "%%"))
        reset_sequences(db, ("payment", "entitlement", "device"))
    return count


class CentralRun:
    def __init__(self, opts: argparse.Namespace, workdir: Path):
        self.opts, self.workdir = opts, workdir
        self.load = VenueLoad(devices_online=opts.devices)
        self.dbname = f"hotspotd_capacity_{os.getpid()}"
        self.db_url = f"postgresql://postgres@127.0.0.1:5432/{self.dbname}"
        self.daemons: list[Hotspot] = []
        self.sim = None
        self.sessions: dict = {}
        self.rows: list[dict] = []

    # -- set-up
    def create_database(self) -> None:
        conn = admin()
        with conn.cursor() as cur:
            cur.execute(f'CREATE DATABASE "{self.dbname}"')
        conn.close()

    def drop_database(self) -> None:
        try:
            conn = admin()
            with conn.cursor() as cur:
                cur.execute(f'DROP DATABASE IF EXISTS "{self.dbname}" WITH (FORCE)')
            conn.close()
        except Exception as exc:  # noqa: BLE001 - said, and the run's figures still stand
            print(f"could not drop database {self.dbname}: {exc}", flush=True)

    def seed(self, venues: int) -> None:
        from hotspotd.storage import db as db_mod
        started = time.perf_counter()
        devices = venues * self.load.devices_online
        seeder = Hotspot(self.workdir, "http://127.0.0.1:9", db_url=self.db_url)   # only its seed_* here
        macs = [device_mac(k) for k in range(devices)]
        venue_of = [k // self.load.devices_online for k in range(devices)]
        # the devices online now: each bought time at its venue (6 hours left), its router session open
        self.ent_ids = seeder.seed_paid(macs, seconds=6 * 3600, id_base=10_000_000,
                                        sites=[venue_site(v) for v in venue_of])
        seeder.seed_live_sessions(macs, session_ids=[f"{k:x}-0" for k in range(devices)],
                                  nas=[venue_address(v) for v in venue_of], sites=[venue_site(v) for v in venue_of])
        self.seeded_at = time.time()
        database = db_mod.prepare(self.db_url)
        try:
            made = seed_history(database, venues, self.opts.history, self.opts.regulars)
            database.execute_sql("ANALYZE")
            size = database.execute_sql("SELECT pg_database_size(current_database())").fetchone()[0]
            counts = {t: database.execute_sql(f'SELECT COUNT(*) FROM "{t}"').fetchone()[0]
                      for t in ("payment", "entitlement", "device", "acct_session", "event")}
        finally:
            database.close()
        self.seed_figures = {"venues": venues, "live": devices, "history": made, "mb": size / 1e6,
                             "counts": counts, "seconds": time.perf_counter() - started}
        print(f"  seeded {venues} venues in {self.seed_figures['seconds']:.0f} s: {devices:,} devices online "
              f"(paid, live router session), {made:,} past payments ({self.opts.history:,} per venue, "
              f"4 in 5 successful, by {self.opts.regulars} regulars per venue); "
              + ", ".join(f"{t} {n:,}" for t, n in counts.items())
              + f" rows; database {size / 1e6:,.0f} MB", flush=True)

    def venues_config(self, venues: int) -> str:
        """Each venue as docs/central-server.md declares it: a ``[[sites]]`` entry and its router's
        ``[[radius.clients]]`` (its own address; one secret for all here)."""
        return "".join(f'\n[[sites]]\nid = "{venue_site(v)}"\nname = "Venue {v}"\n\n[[radius.clients]]\n'
                       f'address = "{venue_address(v)}"\nsecret = "{SECRET}"\nsite = "{venue_site(v)}"\n'
                       for v in range(venues))

    def start(self, venues: int) -> None:
        from hotspotd.testing.daraja import DarajaSimulator
        # callbacks are held back and posted by the driver (at the customer's PIN time); a query
        # turns final only late, so the reconcile job does not answer before the callback does
        self.sim = DarajaSimulator(callback_delay=0, final_after=60).start()
        python = CENTRAL_PYTHON if CENTRAL_PYTHON.exists() else Path(sys.executable)
        for i in range(self.opts.daemons):
            folder = self.workdir / f"hotspotd-{i + 1}"
            folder.mkdir()
            self.daemons.append(Hotspot(folder, self.sim.url, db_url=self.db_url, python=python,
                                        extra_config=self.venues_config(venues)))
        for d in self.daemons:
            took = d.start(timeout=60)
            print(f"  hotspotd {d.pid}: portal {d.url}, RADIUS {d.auth_port}/{d.acct_port}, "
                  f"answering {took:.2f} s after start", flush=True)

    def stop(self) -> None:
        for d in self.daemons:
            d.stop()
        if self.sim is not None:
            self.sim.stop()

    # -- one step
    def step(self, venues: int, driver: PaymentDriver, index: int) -> dict:
        opts = self.opts
        for v in range(venues):
            self.sim.set_outcome(f"25471{v:07d}", "0", deliver_callback=False)
        t0 = time.monotonic() + 2.0
        params = {"seed": opts.seed * 1000 + index, "load": self.load, "venues": venues,
                  "warmup": opts.warmup, "duration": opts.duration, "secret": SECRET, "t0": t0,
                  "daemons": [(d.auth_port, d.acct_port) for d in self.daemons],
                  "ent_ids": self.ent_ids[:venues * self.load.devices_online],
                  "sessions": {k: s for k, s in self.sessions.items() if k < venues * self.load.devices_online},
                  "seeded_at": self.seeded_at, "trace": bool(opts.trace)}
        ctx = multiprocessing.get_context("spawn")
        ours, theirs = ctx.Pipe()
        proc = ctx.Process(target=radius_driver, args=(theirs, params), name="radius-driver")
        proc.start()
        result: dict = {}
        payer = threading.Thread(target=lambda: result.update(
            driver.run(venues, t0, opts.warmup, opts.duration, opts.seed * 1000 + index)), name="payments")
        payer.start()
        time.sleep(max(t0 + opts.warmup - time.monotonic(), 0))
        daemon_pids = [d.pid for d in self.daemons]
        samplers = [RssSampler(pid, every=0.25).__enter__() for pid in daemon_pids]
        cpu0 = ([cpu_seconds(pid) for pid in daemon_pids], postgres_cpu(self.dbname), cpu_seconds(os.getpid()),
                machine_busy(), time.perf_counter())
        handled0 = [radius_handler_seconds(d.url) for d in self.daemons]
        time.sleep(max(t0 + opts.warmup + opts.duration - time.monotonic(), 0))
        cpu1 = ([cpu_seconds(pid) for pid in daemon_pids], postgres_cpu(self.dbname), cpu_seconds(os.getpid()),
                machine_busy(), time.perf_counter())
        handled1 = [radius_handler_seconds(d.url) for d in self.daemons]
        pg_private = postgres_private_mb(self.dbname)
        for s in samplers:
            s.__exit__(None, None, None)
        payer.join()
        radius = ours.recv()
        proc.join(timeout=30)
        self.sessions.update(radius["sessions"])
        if opts.trace:
            with open(opts.trace, "a") as out:
                out.writelines(f"{venues}\t{t}\t{kind}\t{d}\t{ms}\n" for t, kind, d, ms in radius["trace"])
        wall = cpu1[4] - cpu0[4]
        cores = os.cpu_count()
        hot = sum(b - a for a, b in zip(cpu0[0], cpu1[0]))
        pg = sum(v - cpu0[1].get(pid, 0.0) for pid, v in cpu1[1].items())
        gen = cpu1[2] - cpu0[2] + radius["cpu"]
        busy = (cpu1[3][0] - cpu0[3][0]) / max(cpu1[3][1] - cpu0[3][1], 1) * 100
        f = self.figures(venues, radius, result, wall, cores, hot, pg, gen, busy,
                         [s.peak_mb for s in samplers], pg_private)
        spent = [(b[0] - a[0], b[1] - a[1]) for a, b in zip(handled0, handled1)]
        f["radius_busy"] = max(sec for sec, _ in spent) / wall * 100
        f["radius_ms"] = sum(sec for sec, _ in spent) / max(sum(n for _, n in spent), 1) * 1000
        return f

    def figures(self, venues, radius, pay, wall, cores, hot, pg, gen, busy, rss, pg_private) -> dict:
        lat = pay["lat"]
        auth = radius["lat"].get("auth", []) + lat.get("auth_reject", [])
        acct = sum((radius["lat"].get(k, []) for k in ("interim", "stop", "start")), []) + lat.get("acct_start", [])
        offered = self.load.requests_per_second(venues)
        duration = self.opts.duration

        def p(values, pct):
            return percentile(values, pct) if values else float("nan")
        http = sum(len(lat.get(k, [])) for k in ("splash", "pay", "status", "callback_http"))
        f = {
            "venues": venues,
            "offered_radius": offered["auth"] + offered["acct"],
            "answered_radius": (len(auth) + len(acct) + len(lat.get("callback_to_accept", []))) / duration,
            "offered_http": offered["http"], "answered_http": http / duration,
            "offered_payments": offered["payments"],
            "payments_started": pay["payments_started"], "payments_completed": pay["payments_completed"],
            "auth_p50": p(auth, 50), "auth_p99": p(auth, 99), "acct_p50": p(acct, 50), "acct_p99": p(acct, 99),
            "lost": sum(radius["lost"].values()) + pay["auth_lost"] + pay["acct_lost"],
            "wrong": radius["wrong"] + pay["wrong"],
            "cb_p50": p(lat.get("callback_to_accept", []), 50), "cb_p99": p(lat.get("callback_to_accept", []), 99),
            "status_p50": p(lat.get("status", []), 50), "status_p99": p(lat.get("status", []), 99),
            "pay_p99": p(lat.get("pay", []), 99), "splash_p99": p(lat.get("splash", []), 99),
            "http_errors": pay["http_errors"], "errors": pay["errors"][:5],
            "hotspotd_cpu": hot / wall / cores * 100, "postgres_cpu": pg / wall / cores * 100,
            "generator_cpu": gen / wall / cores * 100, "machine_busy": busy,
            "other_cpu": max(busy - (hot + pg + gen) / wall / cores * 100, 0.0),
            "rss_mb": max(rss) if rss else 0.0, "pg_private_mb": pg_private,
            "late_p99": p(radius["lateness"] + lat.get("lateness", []), 99),
        }
        f["server_cpu"] = f["hotspotd_cpu"] + f["postgres_cpu"]
        f["failed"] = [name for name, test in THRESHOLDS if not test(f)]
        return f

    # -- the whole run
    def run(self) -> int:
        size, pgf = machine_size(), postgres_facts()
        self.size, self.pg = size, pgf
        print(f"machine: {size['model']}, {size['cores']} cores, {size['ram_gib']:.1f} GiB RAM; Linux {size['linux']}; "
              f"Python {size['python']}; PostgreSQL {pgf['version']} (shared_buffers {pgf.get('shared_buffers')}, "
              f"synchronous_commit {pgf.get('synchronous_commit')}, as installed)", flush=True)
        print(f"central set-up: {self.opts.daemons} hotspotd processes on one PostgreSQL database; each venue a "
              "[[sites]] entry, its router a [[radius.clients]] at its own address (127.100.0.0/16 standing in for "
              "the tunnel's), its RADIUS and portal traffic going to one of the processes (venue number modulo "
              "their count)", flush=True)
        print("load model, per venue at its peak hour:", flush=True)
        for line in self.load.describe():
            print(f"  - {line}", flush=True)
        print("thresholds for a step to count:", flush=True)
        for name, _ in THRESHOLDS:
            print(f"  - {name}", flush=True)
        steps = sorted(self.opts.venues)
        self.create_database()
        try:
            print(f"database {self.dbname}: seeding for {steps[-1]} venues", flush=True)
            self.seed(steps[-1])
            self.start(steps[-1])
            driver = PaymentDriver(self.sim, self.daemons, SECRET, self.load)
            passed, failed_at, index, refinements = None, None, 0, self.opts.refine
            queue = list(steps)
            while queue:
                venues = queue.pop(0)
                index += 1
                print(f"step {index}: {venues} venues for {self.opts.duration} s (after {self.opts.warmup} s "
                      "warm-up)", flush=True)
                f = self.step(venues, driver, index)
                self.rows.append(f)
                self.print_step(f)
                if f["failed"]:
                    failed_at = venues if failed_at is None else min(failed_at, venues)
                    queue = []
                elif failed_at is None or venues < failed_at:
                    passed = max(passed or 0, venues)
                if failed_at is not None and passed is not None and refinements and failed_at > passed * 1.2:
                    # halfway between the last step that held and the first that missed, once or twice
                    mid = int(round((passed + failed_at) / 2 / 50) * 50)
                    if passed < mid < failed_at:
                        queue, refinements = [mid], refinements - 1
                time.sleep(3)    # the last step's stragglers and checkpoints out of the next one's way
        finally:
            self.stop()
            if self.opts.keep:
                print(f"database kept: {self.dbname} (dropdb -h 127.0.0.1 -U postgres {self.dbname})", flush=True)
            else:
                self.drop_database()
        self.summary(passed)
        return 0

    def print_step(self, f: dict) -> None:
        print(f"  offered: {f['offered_radius']:.0f} RADIUS/s, {f['offered_http']:.1f} HTTP/s, "
              f"{f['offered_payments']:.2f} payments/s; answered {f['answered_radius']:.0f} RADIUS/s, "
              f"{f['answered_http']:.1f} HTTP/s; payments {f['payments_completed']}/{f['payments_started']}", flush=True)
        print(f"  RADIUS auth p50/p99 {f['auth_p50']:.1f}/{f['auth_p99']:.1f} ms, accounting "
              f"{f['acct_p50']:.1f}/{f['acct_p99']:.1f} ms, lost {f['lost']}, wrong {f['wrong']}; "
              f"callback→accept p50/p99 {f['cb_p50']:.0f}/{f['cb_p99']:.0f} ms; status poll p50/p99 "
              f"{f['status_p50']:.1f}/{f['status_p99']:.1f} ms; pay p99 {f['pay_p99']:.0f} ms; splash p99 "
              f"{f['splash_p99']:.0f} ms; HTTP errors {f['http_errors']}", flush=True)
        print(f"  CPU of the machine: hotspotd {f['hotspotd_cpu']:.1f} %, PostgreSQL {f['postgres_cpu']:.1f} %, "
              f"load generator {f['generator_cpu']:.1f} %, anything else {f['other_cpu']:.1f} % (whole machine "
              f"busy {f['machine_busy']:.1f} %); "
              f"hotspotd peak RSS {f['rss_mb']:.1f} MB (largest process); PostgreSQL private memory "
              f"{f['pg_private_mb']:.0f} MB; generator lateness p99 {f['late_p99']:.1f} ms", flush=True)
        print(f"  RADIUS thread: {f['radius_ms']:.2f} ms a request in the handler (mean), the busiest process's "
              f"thread answering {f['radius_busy']:.0f} % of the time", flush=True)
        if f["other_cpu"] > 5:
            print(f"  note: the machine was not idle: {f['other_cpu']:.0f} % of it went to other processes during "
                  "this step (its latencies are worse than an idle machine's)", flush=True)
        for e in f["errors"]:
            print(f"    error: {e}", flush=True)
        print(f"  => {'held every threshold' if not f['failed'] else 'MISSED: ' + '; '.join(f['failed'])}", flush=True)

    def table(self) -> str:
        lines = ["| venues | RADIUS req/s offered / answered | HTTP req/s offered / answered | payments (done / begun) "
                 "| auth p50 / p99 | acct p50 / p99 | lost | callback → accept p99 | status poll p99 | pay p99 "
                 "| CPU (% of the machine): hotspotd / PostgreSQL / load generator / anything else "
                 "| RADIUS thread: busy (busiest process) / ms a request | hotspotd peak RSS | thresholds |",
                 "|---:|---|---|---|---|---|---:|---|---|---|---|---|---|---|"]
        for f in self.rows:
            lines.append(
                f"| {f['venues']} | {f['offered_radius']:.0f} / {f['answered_radius']:.0f} "
                f"| {f['offered_http']:.1f} / {f['answered_http']:.1f} "
                f"| {f['payments_completed']} / {f['payments_started']} "
                f"| {f['auth_p50']:.1f} / {f['auth_p99']:.1f} ms | {f['acct_p50']:.1f} / {f['acct_p99']:.1f} ms "
                f"| {f['lost']} | {f['cb_p99']:.0f} ms | {f['status_p99']:.0f} ms | {f['pay_p99']:.0f} ms "
                f"| {f['hotspotd_cpu']:.0f} / {f['postgres_cpu']:.0f} / {f['generator_cpu']:.0f} / {f['other_cpu']:.0f} "
                f"| {f['radius_busy']:.0f} % / {f['radius_ms']:.2f} ms | {f['rss_mb']:.0f} MB | {'held' if not f['failed'] else 'missed: ' + '; '.join(f['failed'])} |")
        return "\n".join(lines)

    def summary(self, passed: int | None) -> None:
        size, pgf = self.size, self.pg
        server = (f"{size['cores']} cores ({size['model']}), {size['ram_gib']:.0f} GiB RAM, PostgreSQL "
                  f"{pgf['version']} as installed, {self.opts.daemons} hotspotd processes")
        print("\n" + self.table() + "\n", flush=True)
        if passed is None:
            print(f"CAPACITY: fewer than {min(self.opts.venues)} venues held every threshold on {server}", flush=True)
        else:
            best = next(f for f in self.rows if f["venues"] == passed)
            print(f"CAPACITY: {passed} venues at peak on {server}: RADIUS p99 {best['auth_p99']:.0f} ms auth / "
                  f"{best['acct_p99']:.0f} ms accounting, callback→accept p99 {best['cb_p99']:.0f} ms, "
                  f"hotspotd + PostgreSQL {best['server_cpu']:.0f} % of the machine", flush=True)
        if self.opts.markdown:
            self.opts.markdown.write_text(f"{server}\n\n{self.table()}\n\nCAPACITY: {passed}\n")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/bench --central", description=__doc__.split("\n\n")[0])
    parser.add_argument("--venues", type=int, nargs="+", default=[250, 500, 1000, 2000, 4000],
                        help="venue counts to step through, smallest first; stops at the first step that misses "
                             "a threshold (default 250 500 1000 2000 4000); the database is seeded for the largest")
    parser.add_argument("--refine", type=int, default=2,
                        help="after a missed step, this many more steps halfway between the last that held and "
                             "the first that missed (default 2)")
    parser.add_argument("--duration", type=int, default=45, help="measured seconds per step (default 45)")
    parser.add_argument("--warmup", type=int, default=10, help="unmeasured seconds of load before each step")
    parser.add_argument("--daemons", type=int, default=2, help="hotspotd processes (default 2: one per core here)")
    parser.add_argument("--devices", type=int, default=40, help="devices online per venue at peak (default 40)")
    parser.add_argument("--history", type=int, default=1000, help="past payments seeded per venue (default 1000)")
    parser.add_argument("--regulars", type=int, default=300, help="returning customers per venue (default 300)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--keep", action="store_true", help="keep the work folder (the daemons' logs) and the database")
    parser.add_argument("--markdown", type=Path, help="also write the table to this file")
    parser.add_argument("--trace", type=Path, help="append every timed RADIUS answer to this file "
                        "(venues, seconds into the step, kind, daemon, ms: tab-separated)")
    opts = parser.parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="hotspotd-central-"))
    try:
        return CentralRun(opts, workdir).run()
    finally:
        if opts.keep:
            print(f"work folder kept: {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())


__all__ = ["main", "CentralRun", "THRESHOLDS"]
