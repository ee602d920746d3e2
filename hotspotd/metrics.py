"""The figures ``/metrics`` shows, in the Prometheus format: one :class:`Metrics` per Hotspot.

Every figure lives in the Hotspot's own registry, never the process-wide default one: tests start
many daemons in one process, and a global registry would mix their figures or refuse to register
twice. The core reports to an optional observer (``metrics=None`` is no metrics at all), so only
this module imports prometheus_client:

- ``PaymentService(..., metrics=)`` → :meth:`Metrics.payment_final`, :meth:`Metrics.callback`,
  :meth:`Metrics.daraja_error`;
- ``RadiusServer(..., metrics=)`` → :meth:`Metrics.radius_request` (latency) and
  :meth:`Metrics.online`; its counts by type and outcome are read from ``RadiusServer.stats`` at
  scrape time, so they cost the request path nothing;
- ``disconnects.run_due(..., metrics=)`` → :meth:`Metrics.disconnect_attempt`;
- the router login after payment → :meth:`Metrics.online`.

Labels stay few: result codes outside Daraja's known table are ``other``, Daraja error codes
that do not look like one are ``other`` and at most :data:`MAX_ERROR_CODES` are kept.
"""
from __future__ import annotations

import bisect
import logging
import re
import threading
from typing import Any, Callable, Iterable

import peewee as pw
from prometheus_client import CollectorRegistry, Counter, Histogram, ProcessCollector
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

from . import clock
from .daraja import codes
from .daraja.client import DarajaAuthError
from .storage.models import AcctSession, Entitlement

log = logging.getLogger(__name__)

#: Distinct Daraja error codes kept as labels; later ones count as ``other``.
MAX_ERROR_CODES = 40
#: Paid entitlements waiting for their first time online; the oldest is forgotten beyond this.
MAX_AWAITING_ONLINE = 5000
#: Daraja's errorCode (``404.001.03``), a ResponseCode or an HTTP status: anything else is ``other``.
_CODE_SHAPE = re.compile(r"\d{1,4}(\.\d{3}\.\d{1,4})?|[A-Z]{2,4}_[A-Z]{2}\d{4}")

#: ``RadiusServer.stats`` key → (type, outcome) of ``hotspotd_radius_requests_total``.
RADIUS_STATS: dict[str, tuple[str, str]] = {
    "access_accept": ("auth", "accept"),
    "access_reject": ("auth", "reject"),
    "auth_dropped": ("auth", "dropped"),
    "auth_malformed": ("auth", "malformed"),
    "auth_duplicate": ("auth", "duplicate"),
    "auth_errors": ("auth", "error"),
    "acct_start": ("acct", "start"),
    "acct_interim": ("acct", "interim"),
    "acct_stop": ("acct", "stop"),
    "acct_other": ("acct", "other"),
    "acct_dropped": ("acct", "dropped"),
    "acct_malformed": ("acct", "malformed"),
    "acct_duplicate": ("acct", "duplicate"),
    "acct_errors": ("acct", "error"),
    # the type is not known yet when the source is no configured client
    "dropped_unknown_client": ("any", "unknown_client"),
}

_SECONDS_FAST = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
_SECONDS_PROMPT = (1, 2, 5, 10, 15, 20, 30, 45, 60, 90, 120, 180, 300, 600, 1800)
_SECONDS_ONLINE = (0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1800)


class Metrics:
    """The Hotspot's figures. Every method the core calls is cheap and never raises for a
    figure's sake. ``radius_stats`` returns the RADIUS server's ``stats`` Counter (or None when
    RADIUS is off); it is read at scrape time."""

    def __init__(self, registry: CollectorRegistry | None = None,
                 radius_stats: Callable[[], dict | None] | None = None, process: bool = True,
                 readback: Callable[[], dict] | None = None):
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.payments = Counter("hotspotd_payments", "Payments that reached a final state, by outcome and "
                                "Daraja ResultCode (none: no ResultCode, e.g. the push failed or no answer came; "
                                "a timeout that is paid later counts again as success)",
                                ["outcome", "result_code"], registry=r)
        self.callbacks = Counter("hotspotd_callbacks", "Daraja callbacks processed, by the state they ended in",
                                 ["state"], registry=r)
        self.callback_delay = Histogram("hotspotd_payment_callback_delay_seconds",
                                        "From Daraja accepting the STK push to its callback arriving",
                                        buckets=_SECONDS_PROMPT, registry=r)
        self.prompt_to_paid = Histogram("hotspotd_payment_prompt_to_paid_seconds",
                                        "From the STK push to the payment being known successful",
                                        buckets=_SECONDS_PROMPT, registry=r)
        self.paid_to_online = Histogram("hotspotd_payment_paid_to_online_seconds",
                                        "From a successful payment to its session's first Access-Accept, "
                                        "accounting Start or router login", buckets=_SECONDS_ONLINE, registry=r)
        self.radius_seconds = _RadiusLatency()
        r.register(self.radius_seconds)
        self.disconnects = Counter("hotspotd_disconnect_attempts", "Attempts to cut a device off at a router, "
                                   "by router and outcome (done | still_online | router_down | error)",
                                   ["router", "outcome"], registry=r)
        self.daraja_errors = Counter("hotspotd_daraja_errors", "Failed Daraja calls, by operation and Daraja "
                                     "errorCode, else HTTP status (no_answer: none came)", ["operation", "code"],
                                     registry=r)
        self._codes: set[str] = set()
        self._awaiting: dict[int, float] = {}
        self._lock = threading.Lock()
        r.register(_ScrapeTime(radius_stats, readback))
        if process:
            ProcessCollector(registry=r)

    # --- payments --------------------------------------------------------------------------
    def payment_final(self, outcome: str, result_code: Any = None, *, prompt_seconds: float | None = None,
                      entitlement_id: int | None = None) -> None:
        """A payment reached ``outcome``. On success, ``prompt_seconds`` (push → paid) is observed
        and ``entitlement_id`` waits for its first time online (:meth:`online`)."""
        code = codes.normalize(result_code) if result_code not in (None, "") else "none"
        if code != "none" and code not in codes.OUTCOMES:
            code = "other"
        self.payments.labels(outcome, code).inc()
        if outcome != "success":
            return
        if prompt_seconds is not None:
            self.prompt_to_paid.observe(max(prompt_seconds, 0.0))
        if entitlement_id is not None:
            with self._lock:
                self._awaiting[entitlement_id] = clock.now()
                while len(self._awaiting) > MAX_AWAITING_ONLINE:
                    self._awaiting.pop(next(iter(self._awaiting)))

    def callback(self, state: str, delay: float | None = None) -> None:
        """A callback ended in ``state``; ``delay``: push accepted → callback received."""
        self.callbacks.labels(state).inc()
        if delay is not None:
            self.callback_delay.observe(max(delay, 0.0))

    def daraja_error(self, operation: str, exc: Exception) -> None:
        """A Daraja call (``stk_push`` | ``stk_query``) failed with a DarajaError; OAuth's own
        failures count as ``oauth`` whichever call needed the token."""
        if isinstance(exc, DarajaAuthError):
            operation = "oauth"
        # Daraja's errorCode when it has one; a gateway fault's text code gives way to the HTTP status
        given = [str(v).strip() for v in (getattr(exc, "code", None), getattr(exc, "http_status", None)) if v]
        code = next((c for c in given if _CODE_SHAPE.fullmatch(c)), "other" if given else "no_answer")
        if code not in ("other", "no_answer"):
            with self._lock:
                if code not in self._codes:
                    if len(self._codes) < MAX_ERROR_CODES:
                        self._codes.add(code)
                    else:
                        code = "other"
        self.daraja_errors.labels(operation, code).inc()

    # --- the network -----------------------------------------------------------------------
    def online(self, entitlement_id: int | None) -> None:
        """``entitlement_id``'s device is online (Access-Accept, accounting Start, router login):
        the first time after its payment observes paid → online. A dict lookup otherwise."""
        if entitlement_id is None or entitlement_id not in self._awaiting:
            return
        paid_at = self._awaiting.pop(entitlement_id, None)
        if paid_at is not None:
            self.paid_to_online.observe(max(clock.now() - paid_at, 0.0))

    def radius_request(self, kind: str, seconds: float) -> None:
        """One answered RADIUS request of ``kind`` (auth | acct) took ``seconds``."""
        self.radius_seconds.observe(kind, seconds)

    def disconnect_attempt(self, router: str, outcome: str) -> None:
        self.disconnects.labels(router, outcome).inc()


class _RadiusLatency(Collector):
    """``hotspotd_radius_request_seconds`` by type, as a Prometheus histogram, counted in plain
    lists: observed once per RADIUS request by the one RADIUS thread, where prometheus_client's
    Histogram (a lock per bucket and for the sum) was 4 % of an Access-Request's cost. Read at
    scrape time; a scrape racing an observation may see the count one ahead of a bucket, which
    the next scrape settles."""

    def __init__(self):
        self._counts = {kind: [0] * (len(_SECONDS_FAST) + 1) for kind in ("auth", "acct")}
        self._sums = {kind: 0.0 for kind in ("auth", "acct")}

    def observe(self, kind: str, seconds: float) -> None:
        counts = self._counts.get(kind)
        if counts is not None:
            counts[bisect.bisect_left(_SECONDS_FAST, seconds)] += 1
            self._sums[kind] += seconds

    def describe(self) -> Iterable:
        return []

    def collect(self) -> Iterable:
        family = HistogramMetricFamily("hotspotd_radius_request_seconds",
                                       "Time to answer one RADIUS request (answered ones only)", labels=["type"])
        for kind, counts in self._counts.items():
            running, buckets = 0, []
            for bound, count in zip((*map(str, _SECONDS_FAST), "+Inf"), list(counts)):
                running += count
                buckets.append((bound, running))
            family.add_metric([kind], buckets, self._sums[kind])
        yield family


class _ScrapeTime(Collector):
    """Figures read when Prometheus asks: devices online and live sessions (one COUNT query each),
    RADIUS requests from the server's own counters, and each router's latest read-back."""

    def __init__(self, radius_stats: Callable[[], dict | None] | None, readback: Callable[[], dict] | None = None):
        self.radius_stats = radius_stats
        self.readback = readback

    def describe(self) -> Iterable:
        return []   # nothing to check for clashes; collect() runs only on a scrape

    def collect(self) -> Iterable:
        yield from self._database()
        yield from self._radius()
        yield from self._readback()

    def _database(self) -> Iterable:
        try:
            devices = (AcctSession.select(pw.fn.COUNT(AcctSession.mac.distinct()))
                       .where(AcctSession.online, AcctSession.mac.is_null(False)).scalar()) or 0
            sessions = (Entitlement.select(pw.fn.COUNT(Entitlement.id))
                        .where(Entitlement.status == "active", Entitlement.expires_at > clock.now()).scalar()) or 0
        except Exception as exc:  # noqa: BLE001 - a locked (or absent) database must not fail the whole scrape
            log.warning("metrics: cannot count devices online (%s)", exc)
            return
        yield GaugeMetricFamily("hotspotd_devices_online", "Devices (MACs) with an open RADIUS accounting session",
                                value=devices)
        yield GaugeMetricFamily("hotspotd_sessions_active", "Entitlements with time left (paid or voucher)",
                                value=sessions)

    def _radius(self) -> Iterable:
        stats = self.radius_stats() if self.radius_stats else None
        if stats is None:
            return
        family = CounterMetricFamily("hotspotd_radius_requests", "RADIUS requests by type (auth | acct) and "
                                     "outcome (auth: accept | reject; acct: start | interim | stop | other; "
                                     "both: dropped | malformed | duplicate | error)", labels=["type", "outcome"])
        for key, (kind, outcome) in RADIUS_STATS.items():
            # one get per key, no iteration: the RADIUS thread may be adding keys meanwhile
            family.add_metric([kind, outcome], stats.get(key, 0))
        yield family

    def _readback(self) -> Iterable:
        last = self.readback() if self.readback else None
        if not last:
            return
        family = GaugeMetricFamily("hotspotd_router_drift", "The latest read-back of each router (hotspotd.readback): "
                                   "online (what it listed), cut (online without time: cut queued), logged_in (paid, "
                                   "logged back in), ended (accounting sessions it no longer had), foreign (logged "
                                   "in by a user hotspotd did not make)", labels=["router", "kind"])
        for name, d in sorted(last.items()):
            for kind, value in (("online", d.online), ("cut", len(d.cut)), ("logged_in", len(d.logged_in)),
                                ("ended", d.ended), ("foreign", len(d.foreign))):
                family.add_metric([name, kind], value)
        yield family
