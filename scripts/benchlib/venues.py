"""Venues at peak, as a central server sees them: the per-venue load model, and the two drivers
that offer V venues' worth of it with real packets and real HTTP.

- :class:`VenueLoad`: what one busy venue sends in its peak hour (every figure stated in
  :meth:`VenueLoad.describe`).
- :func:`radius_driver` (its own process): the online devices' routers: Interim-Updates and
  reconnects (Stop, Access-Request, Start with the Accept's Class), open loop at the model's rates
  (Poisson arrivals), each answer timed, an answer missing after 3 s counted lost.
- :class:`PaymentDriver` (the bench's process, with the Daraja simulator): walk-ins (an
  Access-Request answered Reject, the splash page) and, for most of them, a payment: the pay call,
  status polls as ``portal.js`` makes them, the callback a PIN-typing customer's time later,
  posted by the simulator to the daemon, then the router's Access-Request until it is accepted
  and its accounting Start.
"""
from __future__ import annotations

import heapq
import itertools
import os
import random
import resource
import select
import socket
import threading
import time
from collections import defaultdict, deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import requests

from .nas import Nas, ask

LOST_AFTER = 3.0    # seconds without an answer: lost (no retransmission: it would hide the loss)


@dataclass(frozen=True)
class VenueLoad:
    """One venue's peak hour. The defaults are a busy café or hostel; see :meth:`describe`."""
    devices_online: int = 40
    interim_interval: int = 300
    reconnects_per_device_hour: float = 2.0
    walkins_per_hour: float = 45.0
    payments_per_hour: float = 30.0
    pin_seconds: float = 8.0
    poll_first: float = 1.5
    poll_every: float = 2.0
    bytes_per_second: int = 25_000

    def rates(self, venues: int) -> dict[str, float]:
        """Events per second for ``venues`` venues."""
        devices = venues * self.devices_online
        return {"interim": devices / self.interim_interval,
                "reconnect": devices * self.reconnects_per_device_hour / 3600,
                "walkin": venues * self.walkins_per_hour / 3600,
                "payment": venues * self.payments_per_hour / 3600}

    def requests_per_second(self, venues: int) -> dict[str, float]:
        """What those events send the server, per second: RADIUS auth and accounting, HTTP."""
        r = self.rates(venues)
        polls = 1 + int((self.pin_seconds - self.poll_first) // self.poll_every + 1)
        return {"auth": r["reconnect"] + r["walkin"] + r["payment"],
                "acct": r["interim"] + 2 * r["reconnect"] + r["payment"],
                "http": r["walkin"] + r["payment"] * (1 + polls + 1),
                "payments": r["payment"]}

    def describe(self) -> list[str]:
        polls = 1 + int((self.pin_seconds - self.poll_first) // self.poll_every + 1)
        per_hour = self.requests_per_second(1)
        return [
            f"{self.devices_online} devices online at once, each router session sending an Accounting "
            f"Interim-Update every {self.interim_interval} s (hotspotd's interim_interval, which the MikroTik obeys)",
            f"{self.reconnects_per_device_hour:g} reconnects per device an hour (a phone waking from sleep, roaming "
            f"between access points): Accounting Stop, Access-Request (accepted), Accounting Start with the Accept's Class",
            f"{self.walkins_per_hour:g} new devices an hour: an Access-Request (rejected: no time yet) and the "
            f"splash page; {self.payments_per_hour:g} of them pay (M-Pesa STK push through the portal's pay call)",
            f"each payment: status polls as portal.js makes them (first after {self.poll_first:g} s, then every "
            f"{self.poll_every:g} s: {polls} a payment), the callback {self.pin_seconds:g} s after the push "
            f"(the customer reading the prompt and typing the PIN), then the router's Access-Request (accepted) "
            f"and Accounting Start",
            f"per venue: {per_hour['auth'] * 3600:.0f} Access-Requests, {per_hour['acct'] * 3600:.0f} "
            f"Accounting-Requests and {per_hour['http'] * 3600:.0f} HTTP requests an hour "
            f"({per_hour['auth'] + per_hour['acct']:.3f} RADIUS and {per_hour['http']:.3f} HTTP requests a second)",
        ]


def arrivals(rng: random.Random, rate: float, until: float) -> list[float]:
    """Poisson arrival times in [0, until) at ``rate`` a second (routers and customers act independently)."""
    times, t = [], 0.0
    if rate <= 0:
        return times
    while True:
        t += rng.expovariate(rate)
        if t >= until:
            return times
        times.append(t)


def device_mac(k: int) -> str:
    digits = f"{k:08X}"
    return "AA:BB:" + ":".join(digits[i:i + 2] for i in range(0, 8, 2))


def device_ip(k: int) -> str:
    return f"10.{64 + k // 62500 % 64}.{k // 250 % 250}.{k % 250 + 2}"


def venue_site(v: int) -> str:
    """Venue ``v``'s ``[[sites]]`` id."""
    return f"v{v}"


def venue_address(v: int) -> str:
    """Venue ``v``'s router, as the central server sees it (its tunnel address; here one of
    loopback's 127.0.0.0/8, so every venue's packets come from their own address)."""
    return f"127.{100 + v // 62500}.{v // 250 % 250}.{v % 250 + 2}"


# --- the routers of the online devices (a process of its own) -----------------------------------
def radius_driver(conn, p: dict) -> None:
    """Run in a child process: offer ``p``'s Interim-Updates and reconnects, then send the results
    (and the devices' new session state) through ``conn``."""
    rng = random.Random(p["seed"])
    load: VenueLoad = p["load"]
    devices = p["venues"] * load.devices_online
    rates = load.rates(p["venues"])
    total = p["warmup"] + p["duration"]
    events = [(t, "interim", rng.randrange(devices)) for t in arrivals(rng, rates["interim"], total)]
    events += [(t, "reconnect", rng.randrange(devices)) for t in arrivals(rng, rates["reconnect"], total)]
    events.sort()
    sessions: dict[int, list] = p["sessions"]     # k → [session number, started (wall), Class]
    nas = Nas(p["secret"])
    daemons = p["daemons"]                        # [(auth port, acct port)]
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))   # a socket per venue's router
    poller = select.epoll()
    socks, by_fd = [], {}
    for v in range(p["venues"]):
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind((venue_address(v), 0))
        sock.setblocking(False)
        poller.register(sock.fileno(), select.EPOLLIN)
        socks.append(sock)
        by_fd[sock.fileno()] = (v, sock)
    free = [deque(range(256)) for _ in socks]
    pending: dict[tuple, tuple] = {}
    order: deque = deque()                        # (deadline, key) in send order, for the lost ones
    t0 = p["t0"]
    lat, sent, answered, lost, wrong = defaultdict(list), defaultdict(int), defaultdict(int), defaultdict(int), 0
    lateness = []
    trace = [] if p.get("trace") else None    # (sent at, kind, daemon, ms) of every measured answer

    def state(k: int) -> list:
        return sessions.setdefault(k, [0, p["seeded_at"], f"hotspotd:{p['ent_ids'][k]}".encode()])

    def send(kind: str, k: int, measured: bool) -> None:
        v = k // load.devices_online
        d = v % len(daemons)
        if not free[v]:
            lost[kind] += 1       # all 256 identifiers of the router's socket in flight: counts as lost
            return
        ident = free[v].popleft()
        mac, ip = device_mac(k), device_ip(k)
        number, started, cls = state(k)
        if kind == "auth":
            data, auth = nas.access_request(ident, mac, ip)
            port = daemons[d][0]
        else:
            seconds = max(int(time.time() - started), 0)
            data, auth = nas.accounting(ident, kind, mac, ip, f"{k:x}-{number}", seconds,
                                        seconds * load.bytes_per_second, cls)
            port = daemons[d][1]
        socks[v].sendto(data, ("127.0.0.1", port))
        now = time.monotonic()
        pending[(v, ident)] = (now, kind, k, auth, measured)
        order.append((now + LOST_AFTER, (v, ident)))
        sent[kind] += 1

    def received(v: int, data: bytes) -> None:
        nonlocal wrong
        key = (v, data[1]) if len(data) >= 20 else None
        item = pending.get(key)
        if item is None:
            return
        at, kind, k, auth, measured = item
        got = nas.answer(data, auth)
        if got is None:
            return
        del pending[key]
        free[v].append(key[1])
        answered[kind] += 1
        if measured:
            lat[kind].append((time.monotonic() - at) * 1000)
            if trace is not None:
                trace.append((round(at - t0, 4), kind, v % len(daemons), round(lat[kind][-1], 2)))
        if kind == "auth":
            code, cls = got
            if code != 2:
                wrong += 1
                return
            s = state(k)             # the device is back: a new router session with the Accept's Class
            s[0], s[1], s[2] = s[0] + 1, time.time(), cls or s[2]
            send("start", k, measured)

    cpu0 = None
    i = 0
    while i < len(events) or pending:
        now = time.monotonic() - t0
        if cpu0 is None and now >= p["warmup"]:
            cpu0 = os.times()
        while i < len(events) and events[i][0] <= now:
            at, kind, k = events[i]
            measured = at >= p["warmup"]
            if measured:
                lateness.append((now - at) * 1000)
            if kind == "interim":
                send("interim", k, measured)
            else:
                send("stop", k, measured)
                send("auth", k, measured)
            i += 1
        clock = time.monotonic()
        while order and order[0][0] <= clock:
            _, key = order.popleft()
            item = pending.pop(key, None)
            if item is not None:
                free[key[0]].append(key[1])
                lost[item[1]] += 1
        wait = (events[i][0] - now) if i < len(events) else 0.05
        for fd, _ in poller.poll(max(min(wait, 0.05), 0)):
            v, sock = by_fd[fd]
            while True:
                try:
                    data = sock.recv(4096)
                except BlockingIOError:
                    break
                received(v, data)
    cpu1 = os.times()
    for sock in socks:
        sock.close()
    conn.send({"lat": dict(lat), "sent": dict(sent), "answered": dict(answered), "lost": dict(lost),
               "wrong": wrong, "lateness": lateness, "sessions": sessions, "trace": trace,
               "cpu": (cpu1.user + cpu1.system) - ((cpu0.user + cpu0.system) if cpu0 else 0)})
    conn.close()


# --- the customers: walk-ins and payments (threads of the bench's process) ------------------------
class PaymentDriver:
    """Walk-ins and payments for V venues against the daemons' portals and RADIUS ports, the
    Daraja simulator ``sim`` holding every callback until the driver posts it (through ``sim``)."""

    def __init__(self, sim, daemons: list, secret: str, load: VenueLoad, workers: int = 48):
        self.sim, self.daemons, self.load = sim, daemons, load
        self.nas = Nas(secret)
        self.workers = workers
        self._local = threading.local()
        self._lock = threading.Lock()
        self._heap: list = []
        self._seq = itertools.count()
        self._wake = threading.Condition(self._lock)
        self._busy = 0
        self.serial = itertools.count()

    # -- per-thread clients
    def _http(self) -> requests.Session:
        s = getattr(self._local, "http", None)
        if s is None:
            s = self._local.http = requests.Session()
        return s

    def _ask(self, venue: int, port: int, build):
        """One request from venue ``venue``'s router address; (seconds, code, Class) or None."""
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.bind((venue_address(venue), 0))
            return ask(self.nas, sock, ("127.0.0.1", port), build, timeout=LOST_AFTER)

    # -- scheduling
    def _at(self, when: float, fn, *args) -> None:
        with self._wake:
            heapq.heappush(self._heap, (when, next(self._seq), fn, args))
            self._wake.notify()

    def _run(self, pool: ThreadPoolExecutor, stop: threading.Event) -> None:
        while True:
            with self._wake:
                while not self._heap or self._heap[0][0] > time.monotonic():
                    if stop.is_set() and not self._heap and self._busy == 0:
                        return
                    wait = (self._heap[0][0] - time.monotonic()) if self._heap else 0.05
                    self._wake.wait(max(min(wait, 0.05), 0))
                when, _, fn, args = heapq.heappop(self._heap)
                self._busy += 1
            pool.submit(self._call, when, fn, args)

    def _call(self, when: float, fn, args) -> None:
        try:
            fn(when, *args)
        except Exception as exc:  # noqa: BLE001 - counted, the run goes on
            with self._lock:
                self.r["errors"].append(f"{fn.__name__}: {type(exc).__name__}: {exc}"[:300])
        finally:
            with self._wake:
                self._busy -= 1
                self._wake.notify()

    def _note(self, kind: str, ms: float, measured: bool) -> None:
        if measured:
            with self._lock:
                self.r["lat"][kind].append(ms)

    def _count(self, key: str, measured: bool = True) -> None:
        if measured:
            with self._lock:
                self.r[key] += 1

    # -- one customer
    def _walkin(self, when: float, venue: int, pays: bool, measured: bool) -> None:
        late = (time.monotonic() - when) * 1000
        self._note("lateness", late, measured)
        n = next(self.serial)
        mac = "EE:" + f"{n:010X}"[:2] + ":" + ":".join(f"{n:08X}"[i:i + 2] for i in range(0, 8, 2))
        ip = f"10.{128 + n // 62500 % 64}.{n // 250 % 250}.{n % 250 + 2}"
        d = self.daemons[venue % len(self.daemons)]
        got = self._ask(venue, d.auth_port, lambda ident: self.nas.access_request(ident, mac, ip))
        if got is None:
            self._count("auth_lost", measured)
        else:
            self._note("auth_reject", got[0] * 1000, measured)
            if got[1] != 3:
                self._count("wrong", measured)
        site = venue_site(venue)
        self._timed("splash", measured, "GET", f"{d.url}/?mac={mac}&ip={ip}&site={site}")
        if not pays:
            return
        phone = f"25471{venue:07d}"
        r = self._timed("pay", measured, "POST", f"{d.url}/api/portal/pay",
                        json={"phone": phone, "packageId": 2, "macAddress": mac, "site": site})
        if r is None:
            return
        checkout = r.json()["checkoutRequestId"]
        pushed = time.monotonic()
        self._count("payments_started", measured)
        pay = {"checkout": checkout, "mac": mac, "ip": ip, "d": d, "venue": venue, "pushed": pushed, "measured": measured,
               "success_seen": False, "accepted": False}
        self._at(pushed + self.load.poll_first, self._poll, pay)
        self._at(pushed + self.load.pin_seconds, self._callback, pay)

    def _timed(self, kind: str, measured: bool, method: str, url: str, **kw):
        started = time.perf_counter()
        try:
            r = self._http().request(method, url, timeout=10, **kw)
        except requests.RequestException as exc:
            self._count("http_errors", measured)
            with self._lock:
                self.r["errors"].append(f"{kind}: {type(exc).__name__}")
            return None
        self._note(kind, (time.perf_counter() - started) * 1000, measured)
        if r.status_code >= 400:
            self._count("http_errors", measured)
            with self._lock:
                self.r["errors"].append(f"{kind}: HTTP {r.status_code} {r.text[:120]}")
            return None
        return r

    def _poll(self, when: float, pay: dict) -> None:
        r = self._timed("status", pay["measured"], "GET", f"{pay['d'].url}/api/portal/status/{pay['checkout']}")
        status = r.json().get("status") if r is not None else "pending"
        if status == "success":
            pay["success_seen"] = True
            self._note("push_to_success", (time.monotonic() - pay["pushed"]) * 1000, pay["measured"])
            self._finish(pay)
        elif status == "pending" and time.monotonic() - pay["pushed"] < 60:
            self._at(time.monotonic() + self.load.poll_every, self._poll, pay)
        else:
            self._count("payments_failed", pay["measured"])

    def _callback(self, when: float, pay: dict) -> None:
        measured = pay["measured"]
        started = time.perf_counter()
        status = self.sim.resend_callback(pay["checkout"])
        self._note("callback_http", (time.perf_counter() - started) * 1000, measured)
        if status != 200:
            self._count("http_errors", measured)
            return
        d = pay["d"]
        while time.perf_counter() - started < 10:
            got = self._ask(pay["venue"], d.auth_port,
                            lambda ident: self.nas.access_request(ident, pay["mac"], pay["ip"]))
            if got is None:
                self._count("auth_lost", measured)
            elif got[1] == 2:
                self._note("callback_to_accept", (time.perf_counter() - started) * 1000, measured)
                start = self._ask(pay["venue"], d.acct_port,
                                  lambda ident: self.nas.accounting(ident, "start", pay["mac"], pay["ip"],
                                                                    f"p{pay['checkout']}", 0, 0, got[2]))
                if start is None:
                    self._count("acct_lost", measured)
                else:
                    self._note("acct_start", start[0] * 1000, measured)
                pay["accepted"] = True
                self._finish(pay)
                return
            else:
                time.sleep(0.02)
        self._count("payments_failed", measured)

    def _finish(self, pay: dict) -> None:
        with self._lock:
            done = pay["success_seen"] and pay["accepted"] and not pay.get("counted")
            if done:
                pay["counted"] = True
                if pay["measured"]:
                    self.r["payments_completed"] += 1

    # -- a step
    def run(self, venues: int, t0: float, warmup: float, duration: float, seed: int) -> dict:
        """Offer ``venues`` venues' walk-ins and payments from ``t0`` (monotonic) for warmup +
        duration seconds; wait for every payment begun to finish; the figures of those begun
        after the warm-up."""
        self.r = {"lat": defaultdict(list), "errors": [], "auth_lost": 0, "acct_lost": 0, "wrong": 0,
                  "http_errors": 0, "payments_started": 0, "payments_completed": 0, "payments_failed": 0}
        rng = random.Random(seed)
        rates = self.load.rates(venues)
        share = self.load.payments_per_hour / self.load.walkins_per_hour
        for t in arrivals(rng, rates["walkin"] + 0.0, warmup + duration):
            self._at(t0 + t, self._walkin, rng.randrange(venues), rng.random() < share, t >= warmup)
        stop = threading.Event()
        with ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="customer") as pool:
            runner = threading.Thread(target=self._run, args=(pool, stop), daemon=True)
            runner.start()
            time.sleep(max(t0 + warmup + duration - time.monotonic(), 0))
            stop.set()
            with self._wake:
                self._wake.notify_all()
            runner.join(timeout=120)
        return self.r
