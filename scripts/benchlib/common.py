"""What every benchmark needs: free ports, a process's CPU time and memory read from /proc, an
RSS sampler, percentiles and the table the suite prints."""
from __future__ import annotations

import os
import socket
import statistics
import threading
import time
from dataclasses import dataclass, field
from functools import cache

TICK = os.sysconf("SC_CLK_TCK")


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of every thread of ``pid`` so far (/proc/<pid>/stat, 1/CLK_TCK steps)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK   # utime, stime: fields 14 and 15 of the line


def memory_kb(pid: int) -> dict[str, int]:
    """VmRSS (now) and VmHWM (peak since start) of ``pid``, in KiB."""
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(value.split()[0])
    return out


class RssSampler:
    """Samples a process's RSS every ``every`` seconds while running; ``peak_mb`` is the highest seen.
    Unlike VmHWM (a lifetime peak), it gives the peak of one stretch of load."""

    def __init__(self, pid: int, every: float = 0.05):
        self.pid, self.every = pid, every
        self.peak_kb = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> "RssSampler":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()

    def _sample(self) -> None:
        try:
            self.peak_kb = max(self.peak_kb, memory_kb(self.pid)["VmRSS"])
        except (OSError, KeyError):
            pass

    def _run(self) -> None:
        while not self._stop.is_set():
            self._sample()
            self._stop.wait(self.every)

    @property
    def peak_mb(self) -> float:
        return self.peak_kb / 1024


class CpuMeter:
    """CPU seconds a process spent between ``__enter__`` and ``__exit__``, with the wall time."""

    def __init__(self, pid: int):
        self.pid = pid
        self.cpu = self.wall = 0.0

    def __enter__(self) -> "CpuMeter":
        self._cpu0, self._wall0 = cpu_seconds(self.pid), time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        self.cpu = cpu_seconds(self.pid) - self._cpu0
        self.wall = time.perf_counter() - self._wall0


def percentile(values: list[float], pct: float) -> float:
    """The ``pct``-th percentile (nearest rank) of ``values``."""
    ordered = sorted(values)
    rank = max(int(round(pct / 100 * len(ordered) + 0.5)) - 1, 0)
    return ordered[min(rank, len(ordered) - 1)]


def median(values: list[float]) -> float:
    return statistics.median(values)


@dataclass
class Row:
    """One line of the result table: what was measured, the figure, the target and whether it is met."""
    section: str
    what: str
    value: str
    target: str = ""
    met: bool | None = None


@dataclass
class Table:
    rows: list[Row] = field(default_factory=list)
    machine: str = ""

    def add(self, section: str, what: str, value: str, target: str = "", met: bool | None = None) -> None:
        self.rows.append(Row(section, what, value, target, met))
        print(f"  {section}: {what} = {value}" + (f"  (target {target}: {'met' if met else 'MISSED'})" if target else ""),
              flush=True)

    def markdown(self) -> str:
        lines = ["| # | measured | figure | target | |", "|---|---|---|---|---|"]
        for r in self.rows:
            mark = "" if r.met is None else ("met" if r.met else "**missed**")
            lines.append(f"| {r.section} | {r.what} | {r.value} | {r.target} | {mark} |")
        return "\n".join(lines)


@cache
def radius_dictionary():
    """The daemon's RADIUS dictionary, loaded once (on first use: importing radius.server loads pyrad)."""
    from radius.server import load_dictionary
    return load_dictionary()
