"""The web side under load: ``wrk`` (a C load generator, Debian's package) against the portal, and
the payment path timed end to end as a phone and a router see it."""
from __future__ import annotations

import re
import subprocess
import threading
import time
from dataclasses import dataclass

import requests

from .radius_load import mac_accepted

WRK = "/usr/bin/wrk"
_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1000.0}


@dataclass
class Load:
    per_second: float
    p50_ms: float
    p99_ms: float
    requests: int
    errors: int          # non-2xx/3xx answers and socket errors


def wrk(url: str, seconds: int = 10, connections: int = 50) -> Load:
    """``wrk`` with one thread (the other core serves) and ``connections`` phones polling at once."""
    out = subprocess.run([WRK, "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", "--timeout", "5s", url],
                         capture_output=True, text=True, check=True).stdout

    def latency(pct: str) -> float:
        found = re.search(rf"^\s*{pct}%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
        if not found:
            raise RuntimeError(f"wrk printed no {pct}% latency:\n{out}")
        return float(found.group(1)) * _UNITS[found.group(2)]
    rate = re.search(r"Requests/sec:\s+([\d.]+)", out)
    total = re.search(r"(\d+) requests in", out)
    bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    errors = (int(bad.group(1)) if bad else 0) + (sum(int(g) for g in sock.groups()) if sock else 0)
    return Load(per_second=float(rate.group(1)), p50_ms=latency("50"), p99_ms=latency("99"),
                requests=int(total.group(1)), errors=errors)


class Payer:
    """Buys packages through the portal API as the splash page's script does."""

    def __init__(self, url: str, package_id: int):
        self.url, self.package_id = url, package_id
        self.http = requests.Session()

    def pay(self, phone: str, mac: str) -> str:
        r = self.http.post(f"{self.url}/api/portal/pay", json={"phone": phone, "packageId": self.package_id,
                                                               "macAddress": mac}, timeout=10)
        r.raise_for_status()
        return r.json()["checkoutRequestId"]

    def status(self, checkout: str) -> str:
        r = self.http.get(f"{self.url}/api/portal/status/{checkout}", timeout=10)
        r.raise_for_status()
        return r.json()["status"]


def callback_to_accept(payer: Payer, sim, auth_port: int, secret: str, macs: list[str], phone: str) -> list[float]:
    """For each MAC: a payment whose callback the simulator holds back; then the bench delivers it
    and asks RADIUS for the MAC until it is accepted. Milliseconds from sending the callback to
    the Access-Accept (the HTTP answer to the callback and the RADIUS round trip included)."""
    sim.set_outcome(phone, "0", deliver_callback=False)
    times = []
    for i, mac in enumerate(macs):
        checkout = payer.pay(phone, mac)
        started = time.perf_counter()
        status = sim.resend_callback(checkout)
        if status != 200:
            raise RuntimeError(f"callback for {checkout} answered HTTP {status}")
        while not mac_accepted(auth_port, secret, mac, ip=f"10.6.{i // 250}.{i % 250 + 2}"):
            if time.perf_counter() - started > 10:
                raise RuntimeError(f"{mac} not accepted 10 s after its callback")
        times.append((time.perf_counter() - started) * 1000)
    return times


def push_to_success(payer: Payer, sim, macs: list[str], phone: str, poll: float = 0.002) -> list[float]:
    """For each MAC: milliseconds from the portal accepting the push (the pay call's answer) to the
    status endpoint reporting success, the simulator sending its callback at once."""
    sim.set_outcome(phone, "0", deliver_callback=True)
    times = []
    for mac in macs:
        checkout = payer.pay(phone, mac)
        started = time.perf_counter()
        while payer.status(checkout) != "success":
            if time.perf_counter() - started > 10:
                raise RuntimeError(f"{checkout} not successful 10 s after its push")
            time.sleep(poll)
        times.append((time.perf_counter() - started) * 1000)
    return times


__all__ = ["wrk", "Load", "Payer", "callback_to_accept", "push_to_success", "threading"]
