"""The benchmark suite behind ``scripts/bench``: each section measures, prints its figures and adds
them to one table (BENCHMARKS.md keeps the latest). A benchmark, not a test: it exits 0 with
targets missed, and non-zero only when something could not be measured."""
from __future__ import annotations

import argparse
import importlib.machinery
import os
import platform
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from . import radius_load as rl
from .common import CpuMeter, RssSampler, Table, median, memory_kb, percentile
from .hotspot import REPO, SECRET, Hotspot, mac_of
from .portal_load import Payer, callback_to_accept, push_to_success, wrk

PHONE_HELD = "254711000001"     # the simulator holds this number's callbacks back
PHONE_PUSH = "254711000002"     # this one's callback goes at once


def machine() -> str:
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.machine())
    mem = int(next(line.split()[1] for line in Path("/proc/meminfo").read_text().splitlines()
                   if line.startswith("MemTotal"))) // 1024 // 1024
    radiusd = subprocess.run(["/usr/sbin/freeradius", "-v"], capture_output=True, text=True).stdout.splitlines()
    return (f"{model}, {os.cpu_count()} cores, {mem} GiB; Linux {platform.release()}; "
            f"Python {platform.python_version()}; {radiusd[0].split(',')[0] if radiusd else 'FreeRADIUS ?'}")


class Suite:
    def __init__(self, opts: argparse.Namespace, workdir: Path):
        self.opts, self.workdir = opts, workdir
        self.table = Table()
        self.rng = random.Random(opts.seed)
        self.known = [mac_of(i) for i in range(opts.macs)]
        self.unknown = [mac_of(i, "CC:DD") for i in range(opts.macs // 9)]   # 90 % known, 10 % unknown
        self.figures: dict[str, float] = {}

    # --- helpers --------------------------------------------------------------------------
    def ms(self, seconds: float) -> str:
        return f"{seconds * 1000:.3f} ms"

    def radclient_rounds(self, servers: dict, path: Path, kind: str, rounds: int) -> dict[str, dict]:
        """``rounds`` interleaved runs of radclient over ``path`` against each server (the order
        alternating from round to round); medians of CPU per request, requests/s, lost, peak RSS."""
        runs: dict[str, list] = {name: [] for name in servers}
        names = list(servers)
        for port, _ in servers.values():     # one unmeasured run each: caches warm alike for every round
            rl.radclient(path, port, SECRET, kind, parallel=self.opts.parallel)
        for r in range(rounds):
            for name in (names if r % 2 == 0 else names[::-1]):
                port, pid = servers[name]
                with RssSampler(pid) as rss, CpuMeter(pid) as cpu:
                    run = rl.radclient(path, port, SECRET, kind, parallel=self.opts.parallel)
                runs[name].append((cpu.cpu / run.requests, run.per_second, run.lost, rss.peak_mb, run))
                print(f"    round {r + 1} {name:<10} {kind}: {run.requests} requests, {cpu.cpu:.2f} s CPU "
                      f"({cpu.cpu / run.requests * 1000:.3f} ms each), {run.per_second:.0f}/s, lost {run.lost}, "
                      f"accepted {run.accepted}, rejected {run.rejected}, peak RSS {rss.peak_mb:.1f} MB", flush=True)
        return {name: {"cpu": median([x[0] for x in rs]), "rate": median([x[1] for x in rs]),
                       "lost": sum(x[2] for x in rs), "rss": max(x[3] for x in rs), "runs": [x[4] for x in rs]}
                for name, rs in runs.items()}

    # --- sections -------------------------------------------------------------------------
    def radius(self, hotspot: Hotspot, freeradius, label: str = "") -> dict:
        """``label`` "s" marks the scale runs (keys and section numbers; " (scale)" in the text)."""
        shown = " (scale)" if label else ""
        """1 and 2: MAC authentication and Interim-Updates, hotspotd against FreeRADIUS."""
        servers = {"hotspotd": (hotspot.auth_port, hotspot.pid)}
        if freeradius is not None:
            servers["FreeRADIUS"] = (freeradius.auth_port, freeradius.pid)
        auth = self.workdir / "auth.txt"
        rl.auth_file(auth, self.known[:len(self.known) * 9 // 10], self.unknown, self.rng)
        print(f"  1{label}. MAC authentication: {auth.read_text().count(chr(10) + chr(10)) + 1} requests per run")
        result = self.radclient_rounds(servers, auth, "auth", self.opts.rounds)
        expected = len(self.known) * 9 // 10
        for name, res in result.items():
            wrong = [r for r in res["runs"] if r.accepted != expected or r.rejected != len(self.unknown)]
            tag = f"{name}{shown}"
            self.table.add(f"1{label}", f"{tag}: server CPU per Access-Request (median of {self.opts.rounds})",
                           self.ms(res["cpu"]), *( ("≤ 0.100 ms", res["cpu"] <= 0.0001) if name == "hotspotd" else ()))
            self.table.add(f"1{label}", f"{tag}: requests/s at the radclient ceiling", f"{res['rate']:.0f}")
            self.table.add(f"1{label}", f"{tag}: lost (all rounds)", str(res["lost"]), "0", res["lost"] == 0)
            self.table.add(f"1{label}", f"{tag}: answers as seeded (accepts {expected}, rejects {len(self.unknown)})",
                           "yes" if not wrong else f"NO in {len(wrong)} run(s)")
            self.figures[f"auth_cpu_{name}{label}"] = res["cpu"]
            self.figures[f"auth_rss_{name}{label}"] = res["rss"]

        acct_servers = {name: ((hotspot.acct_port if name == "hotspotd" else freeradius.acct_port), pid)
                        for name, (_, pid) in servers.items()}
        macs = self.known[:self.opts.acct]
        start = self.workdir / "acct-start.txt"
        rl.acct_file(start, macs, "Start", 0)
        for name, (port, _) in acct_servers.items():
            rl.radclient(start, port, SECRET, "acct", parallel=self.opts.parallel)
        print(f"  2{label}. Interim-Updates: {len(macs)} sessions per run (each started once beforehand)")
        results = {}
        for r in range(self.opts.rounds):
            interim = self.workdir / f"acct-{r}.txt"
            rl.acct_file(interim, macs, "Interim-Update", r + 1)
            one = self.radclient_rounds(acct_servers, interim, "acct", 1)
            for name, res in one.items():
                results.setdefault(name, []).append(res)
        for name, rs in results.items():
            cpu, rate = median([x["cpu"] for x in rs]), median([x["rate"] for x in rs])
            lost = sum(x["lost"] for x in rs)
            self.table.add(f"2{label}", f"{name}{shown}: server CPU per Interim-Update (median of {len(rs)})",
                           self.ms(cpu))
            self.table.add(f"2{label}", f"{name}{shown}: Interim-Updates/s", f"{rate:.0f}")
            self.table.add(f"2{label}", f"{name}{shown}: accounting lost (all rounds)", str(lost), "0", lost == 0)
            self.figures[f"acct_cpu_{name}{label}"] = cpu
            self.figures[f"acct_rss_{name}{label}"] = max(x["rss"] for x in rs)
        return result

    def freeradius_as_shipped(self) -> None:
        """For reference, once: FreeRADIUS's SQLite set-up as shipped (rollback journal, 200 ms
        busy timeout), which answers some known MACs Access-Reject under this load."""
        from .freeradius import FreeRadius
        (self.workdir / "freeradius-stock").mkdir()
        stock = FreeRadius(self.workdir / "freeradius-stock", self.known, SECRET, session_timeout=3600).start()
        try:
            with CpuMeter(stock.pid) as cpu:
                run = rl.radclient(self.workdir / "auth.txt", stock.auth_port, SECRET, "auth",
                                   parallel=self.opts.parallel)
        finally:
            stock.stop()
        expected = len(self.known) * 9 // 10
        self.table.add("1", "FreeRADIUS as shipped (SQLite rollback journal, 200 ms busy timeout), one run: "
                       "server CPU per Access-Request", self.ms(cpu.cpu / run.requests))
        self.table.add("1", "FreeRADIUS as shipped: known MACs answered Access-Reject",
                       f"{expected - run.accepted} of {expected}")

    def payment_path(self, hotspot: Hotspot, sim) -> None:
        """3: callback → RADIUS accept, and push accepted → status success."""
        payer = Payer(hotspot.url, package_id=2)
        n = self.opts.payments
        with RssSampler(hotspot.pid) as rss:
            held = callback_to_accept(payer, sim, hotspot.auth_port, SECRET,
                                      [mac_of(i, "EE:01") for i in range(n)], PHONE_HELD)
            pushed = push_to_success(payer, sim, [mac_of(i, "EE:02") for i in range(n)], PHONE_PUSH)
        p99 = percentile(held, 99)
        self.table.add("3", f"callback → RADIUS Access-Accept, median ({n} payments)", f"{median(held):.1f} ms")
        self.table.add("3", "callback → RADIUS Access-Accept, 99th percentile", f"{p99:.1f} ms", "< 50 ms", p99 < 50)
        self.table.add("3", f"STK push accepted → status says success, median ({n})", f"{median(pushed):.1f} ms")
        self.table.add("3", "STK push accepted → status says success, 99th percentile", f"{percentile(pushed, 99):.1f} ms")
        self.figures["payment_rss"] = rss.peak_mb

    def portal(self, hotspot: Hotspot, label: str = "") -> None:
        """4: many phones polling the status endpoint, and loading the splash page."""
        payer = Payer(hotspot.url, package_id=2)
        checkout = payer.pay(PHONE_PUSH, mac_of(1, "EE:03"))
        deadline = time.monotonic() + 10
        while payer.status(checkout) != "success" and time.monotonic() < deadline:
            time.sleep(0.01)
        targets = [("status", f"{hotspot.url}/api/portal/status/{checkout}"),
                   ("splash", f"{hotspot.url}/?mac=AA:BB:00:00:00:01&ip=10.5.50.9")]
        for name, url in targets:
            for connections in self.opts.connections:
                with RssSampler(hotspot.pid) as rss:
                    load = wrk(url, seconds=self.opts.wrk_seconds, connections=connections)
                key = f"{name}_rss{label}_{connections}"
                self.figures[key] = rss.peak_mb
                if connections == self.opts.connections[0]:
                    self.figures[f"{name}_rate{label}"] = load.per_second
                what = "GET /api/portal/status/<id>" if name == "status" else "GET / (splash page)"
                what += " (scale)" if label else ""
                status = name == "status"
                self.table.add(f"4{label}", f"{what}, {connections} connections: requests/s",
                               f"{load.per_second:.0f}", *(("≥ 1500/s", load.per_second >= 1500) if status else ()))
                self.table.add(f"4{label}", f"{what}, {connections} connections: p50 / p99 latency",
                               f"{load.p50_ms:.1f} / {load.p99_ms:.1f} ms",
                               *(("p99 < 50 ms", load.p99_ms < 50) if status else ()))
                self.table.add(f"4{label}", f"{what}, {connections} connections: errors (non-2xx, socket)",
                               str(load.errors), "0", load.errors == 0)

    def splash_weight(self, hotspot: Hotspot) -> None:
        """7: what the first screen costs a phone, measured in Chromium by scripts/page_weight."""
        loader = importlib.machinery.SourceFileLoader("page_weight", str(REPO / "scripts" / "page_weight"))
        page_weight = loader.load_module()
        from playwright.sync_api import sync_playwright
        with sync_playwright() as playwright:
            args = ["--no-sandbox"] if os.geteuid() == 0 else []
            browser = playwright.chromium.launch(executable_path=page_weight.CHROMIUM, args=args, headless=True)
            try:
                rows, failures = page_weight.measure(browser, hotspot.url + "/")
            finally:
                browser.close()
        if failures:
            raise RuntimeError(f"splash page did not load: {failures}")
        total = sum(r["bytes"] for r in rows)
        self.table.add("7", "splash page first screen: bytes as served", f"{total} ({total / 1024:.1f} KB)",
                       "< 30 KB", total < 30 * 1024)
        self.table.add("7", "splash page first screen: requests", str(len(rows)), "≤ 3", len(rows) <= 3)

    def expiry(self, db_path: Path) -> None:
        """5: 10,000 live sessions (of the scale database) all due at once; the expiry job
        (:func:`hotspotd.disconnects.expire_and_queue`, as the scheduler calls it) until none is left."""
        import sqlite3

        from hotspotd import disconnects
        from hotspotd.storage import db as db_mod
        copy = self.workdir / "expiry.db"
        src = sqlite3.connect(db_path)
        dst = sqlite3.connect(copy)
        src.backup(dst)
        src.close()
        now = time.time()
        dst.execute("UPDATE entitlement SET expires_at = ? WHERE status = 'active'", (now - 1,))
        due = dst.execute("SELECT COUNT(*) FROM entitlement WHERE status = 'active'").fetchone()[0]
        dst.commit()
        dst.close()
        database = db_mod.prepare(f"sqlite:///{copy}")
        try:
            started = time.perf_counter()
            ended = runs = 0
            while True:
                count = disconnects.expire_and_queue(["venue"])
                if not count:
                    break
                ended, runs = ended + count, runs + 1
            took = time.perf_counter() - started
        finally:
            database.close()
        self.table.add("5", f"expiry job: {ended} of {due} sessions due at once, ended and their cuts queued "
                       f"({runs} run(s))", f"{took:.2f} s", "< 2 s", took < 2 and ended == due)

    # --- the whole run --------------------------------------------------------------------
    def run(self) -> int:
        from hotspotd.testing.daraja import DarajaSimulator

        from .freeradius import FreeRadius, ensure_installed

        print(f"machine: {machine()}", flush=True)
        self.table.machine = machine()
        sim = DarajaSimulator(callback_delay=0, final_after=0).start()
        (self.workdir / "hotspotd").mkdir()
        hotspot = Hotspot(self.workdir / "hotspotd", sim.url)
        freeradius = None
        try:
            hotspot.seed_paid(self.known)
            # 6: start-up, three times; the daemon's idle memory
            starts = []
            for _ in range(3):
                starts.append(hotspot.start())
                if len(starts) < 3:
                    hotspot.stop()
            time.sleep(1)
            idle = memory_kb(hotspot.pid)["VmRSS"] / 1024
            self.table.add("6", "start-up to portal and both RADIUS ports answering (median of 3)",
                           f"{median(starts):.2f} s", "< 2 s", median(starts) < 2)
            self.figures["idle_rss"] = idle

            if not self.opts.no_freeradius:
                ensure_installed()
                (self.workdir / "freeradius").mkdir()
                freeradius = FreeRadius(self.workdir / "freeradius", self.known, SECRET,
                                        session_timeout=3600, tuned_sqlite=True).start()
            print("sections 1 and 2: RADIUS, hotspotd and FreeRADIUS interleaved", flush=True)
            self.radius(hotspot, freeradius)
            if freeradius is not None:
                self.figures["freeradius_rss"] = memory_kb(freeradius.pid)["VmHWM"] / 1024
                freeradius.stop()
                freeradius = None
                self.freeradius_as_shipped()
            print("section 3: payment path", flush=True)
            self.payment_path(hotspot, sim)
            print("section 4: portal under load", flush=True)
            self.portal(hotspot)
            print("section 7: splash page weight", flush=True)
            self.splash_weight(hotspot)
            hotspot.stop()

            print(f"section 5: scale ({len(self.known)} live sessions, {self.opts.history:,} historical payments)",
                  flush=True)
            started = time.perf_counter()
            hotspot.seed_live_sessions(self.known)
            returning = self.known + [mac_of(i, "DD:EE") for i in range(self.opts.macs * 4)]
            hotspot.seed_history(self.opts.history, returning, self.rng)
            os.sync()   # the seed's dirty pages written out now, not during the measured runs
            print(f"  seeded in {time.perf_counter() - started:.0f} s; database "
                  f"{hotspot.db_path.stat().st_size / 1e6:.0f} MB", flush=True)
            self.table.add("5", "start-up with the scale database", f"{hotspot.start():.2f} s", "< 2 s")
            time.sleep(1)
            self.figures["idle_rss_scale"] = memory_kb(hotspot.pid)["VmRSS"] / 1024
            self.radius(hotspot, None, label="s")
            self.portal(hotspot, label="s")
            for base, scaled, what in (("auth_cpu_hotspotd", "auth_cpu_hotspotds", "CPU per Access-Request"),
                                       ("acct_cpu_hotspotd", "acct_cpu_hotspotds", "CPU per Interim-Update"),
                                       ("status_rate", "status_rates", "status requests/s")):
                a, b = self.figures[base], self.figures[scaled]
                change = (b - a) / a * 100
                worse = change if "CPU" in what else -change
                self.table.add("5", f"scale against empty: {what}", f"{change:+.0f} %", "within 20 %", worse <= 20)
            hotspot.stop()
            self.expiry(hotspot.db_path)

            peaks = {k: v for k, v in self.figures.items() if "rss" in k and "freeradius" not in k.lower()}
            worst = max(peaks, key=peaks.get)
            self.table.add("6", "hotspotd RSS idle (empty / scale database)",
                           f"{self.figures['idle_rss']:.1f} / {self.figures['idle_rss_scale']:.1f} MB")
            for key in sorted(peaks):
                print(f"    peak RSS during {key}: {peaks[key]:.1f} MB")
            self.table.add("6", f"hotspotd peak RSS under load (highest: {worst})", f"{peaks[worst]:.1f} MB",
                           "< 80 MB", peaks[worst] < 80)
            if "freeradius_rss" in self.figures:
                self.table.add("6", "FreeRADIUS (rlm_sql, SQLite) peak RSS", f"{self.figures['freeradius_rss']:.1f} MB")
        finally:
            if freeradius is not None:
                freeradius.stop()
            hotspot.stop()
            sim.stop()
        print("\n" + self.table.markdown())
        return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--macs", type=int, default=10_000, help="paid MACs in the database (default 10000)")
    parser.add_argument("--history", type=int, default=1_000_000, help="historical payments for the scale runs")
    parser.add_argument("--acct", type=int, default=10_000, help="sessions sending Interim-Updates")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved radclient rounds (default 3)")
    parser.add_argument("--parallel", type=int, default=64, help="radclient requests in flight")
    parser.add_argument("--payments", type=int, default=300, help="payments timed in section 3")
    parser.add_argument("--wrk-seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, nargs="+", default=[16, 50],
                        help="wrk connections (closed loop: each sends its next request as soon as the answer "
                             "comes), one run per figure; the first is the one scale is compared on")
    parser.add_argument("--no-freeradius", action="store_true", help="hotspotd alone")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    parser.add_argument("--markdown", type=Path, help="also write the table to this file")
    opts = parser.parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="hotspotd-bench-"))
    suite = Suite(opts, workdir)
    try:
        code = suite.run()
    finally:
        if opts.keep:
            print(f"work folder kept: {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    if opts.markdown:
        opts.markdown.write_text(f"Machine: {suite.table.machine}\n\n{suite.table.markdown()}\n")
    return code


if __name__ == "__main__":
    sys.exit(main())
