"""The owner's figures: who is online, what came in, where payments got stuck (whether everything
is up: :mod:`hotspotd.health`).

The dashboard (``portal_web/admin.py``) is a thin layer over this module; tests check the figures
here directly. Nothing here changes data. Days are Nairobi days (:data:`hotspotd.clock.LOCAL`,
UTC+3 all year), so "today" ends at local midnight, not at 03:00.

Which timestamp counts where:

* revenue counts a successful payment on the day it *completed* (a late success counts when it came);
* the payment funnel and the payment search take a payment on the day it was *created* (the prompt).

Venues: every figure takes an optional ``site``: None (every venue), one ``[[sites]]`` id, or a
collection of ids (an account limited to several venues). Payments belong to ``payment.site`` (where
they were made), sessions to ``entitlement.site`` (where the time was bought, even when it roams),
devices online to ``acct_session.site`` (the venue of the router reporting them), and a venue's
packages are those it sells: its own and those sold at every venue (``package.site`` NULL).
"""
from __future__ import annotations

import csv
import re
from collections import Counter
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any, Collection, Iterable, Mapping, TextIO

import peewee as pw

from . import access, clock
from .daraja import codes
from .identifiers import mask_phone
from .storage.models import DEFAULT_SITE, AcctSession, Device, Entitlement, Event, Package, Payment, Voucher

#: Payment states as stored, in the order the dashboard offers them as filters.
PAYMENT_STATES = ("created", "pending", "success", "failed", "cancelled", "timeout", "error")
#: States in which "Reconcile now" (an STK query) can still learn something.
RECONCILABLE = ("pending", "timeout", "error")
PERIODS = {"today": "Today", "7d": "Last 7 days", "30d": "Last 30 days", "month": "This month"}
#: Which venues a figure covers: None (every venue), one site id, or several.
Sites = str | Collection[str] | None


# --- venues ---------------------------------------------------------------------------------
def site_ids(site: Sites) -> tuple[str, ...] | None:
    """``site`` as a tuple of ids, or None for every venue."""
    if site is None:
        return None
    return (site,) if isinstance(site, str) else tuple(site)


def _at(query, column, site: Sites):
    """``query`` narrowed to rows whose ``column`` is one of the venues of ``site``."""
    ids = site_ids(site)
    return query if ids is None else query.where(column.in_(ids))


def sold_at(site: Sites, every_venue: bool = True):
    """The condition "the package is sold at ``site``": its own packages and, unless
    ``every_venue`` is False, those sold at every venue. None when ``site`` is every venue."""
    ids = site_ids(site)
    return None if ids is None else Package.sold_at(ids, every_venue)


def packages(site: Sites = None) -> list[Package]:
    """The packages sold at ``site`` (all of them for None), in the order customers see them."""
    q = Package.select().order_by(Package.position, Package.id)
    cond = sold_at(site)
    return list(q if cond is None else q.where(cond))


# --- days and periods -----------------------------------------------------------------------
def local_day(ts: float) -> date:
    """The Nairobi calendar day of an epoch timestamp."""
    return clock.local(ts).date()


@dataclass(frozen=True)
class Period:
    """``[start, end)`` in epoch seconds, with the name the dashboard uses for it."""
    name: str
    label: str
    start: float
    end: float


def period(name: str, now: float | None = None) -> Period:
    """``today``, ``7d`` (today and the 6 days before), ``30d`` or ``month`` (since the 1st), all
    ending at the coming Nairobi midnight. An unknown name means ``today``."""
    now = clock.now() if now is None else now
    name = name if name in PERIODS else "today"
    today = local_day(now)
    first = {"today": today, "7d": today - timedelta(days=6), "30d": today - timedelta(days=29),
             "month": today.replace(day=1)}[name]
    return Period(name, PERIODS[name], clock.day_start(first), clock.day_start(today + timedelta(days=1)))


# --- now ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class OnlineNow:
    devices_online: int      # router sessions that accounting reports as running
    active_sessions: int     # entitlements with time left right now


def online_now(now: float | None = None, site: Sites = None) -> OnlineNow:
    """Devices online by RADIUS accounting (at ``site``'s routers), and entitlements bought at
    ``site`` live at ``now``."""
    now = clock.now() if now is None else now
    devices = _at(AcctSession.select().where(AcctSession.online), AcctSession.site, site).count()
    live = _at(Entitlement.select().where(Entitlement.status == "active", Entitlement.started_at <= now,
                                          Entitlement.expires_at > now), Entitlement.site, site).count()
    return OnlineNow(devices, live)


# --- money ----------------------------------------------------------------------------------
def revenue(start: float, end: float, site: Sites = None) -> int:
    """Whole KES of the successful payments made at ``site`` completed in ``[start, end)``."""
    total = _at(Payment.select(pw.fn.COALESCE(pw.fn.SUM(Payment.amount), 0))
                .where(Payment.status == "success", Payment.completed_at >= start, Payment.completed_at < end),
                Payment.site, site).scalar()
    return int(total or 0)


def revenue_today(now: float | None = None, site: Sites = None) -> int:
    p = period("today", now)
    return revenue(p.start, p.end, site)


def revenue_month(now: float | None = None, site: Sites = None) -> int:
    p = period("month", now)
    return revenue(p.start, p.end, site)


@dataclass(frozen=True)
class DayRevenue:
    day: date
    amount: int
    payments: int


def daily_revenue(days: int = 30, now: float | None = None, site: Sites = None) -> list[DayRevenue]:
    """One entry per Nairobi day, oldest first, the last one today; days without sales are 0."""
    now = clock.now() if now is None else now
    today = local_day(now)
    first = today - timedelta(days=days - 1)
    amounts: Counter = Counter()
    counts: Counter = Counter()
    rows = _at(Payment.select(Payment.completed_at, Payment.amount)
               .where(Payment.status == "success", Payment.completed_at >= clock.day_start(first),
                      Payment.completed_at < clock.day_start(today + timedelta(days=1))), Payment.site, site).tuples()
    for completed_at, amount in rows:
        day = local_day(completed_at)
        amounts[day] += amount
        counts[day] += 1
    out = []
    for i in range(days):
        day = first + timedelta(days=i)
        out.append(DayRevenue(day, int(amounts[day]), counts[day]))
    return out


def failure_reason(payment: Payment) -> str:
    """Why a payment did not go through, as a word of :data:`hotspotd.daraja.codes.REASONS`
    (what the customer was told); a timeout without a result code is ``no_response``."""
    if payment.result_code:
        return codes.reason(payment.result_code)
    if payment.status == "timeout":
        return "no_response"
    if payment.status == "error":
        return "push_failed"
    return "failed"


@dataclass(frozen=True)
class Funnel:
    """What became of the prompts of a period.

    ``sent``: pushes Daraja accepted (every state but ``created`` and ``error``); ``paid``: of
    those, ``success``; ``online``: of those, sessions the router reported (accounting) or that
    were logged in at the router after payment. ``failures`` counts the reasons of the failed,
    cancelled and timed-out ones, most common first; ``waiting`` are still open; ``push_errors``
    never reached a phone.
    """
    sent: int
    paid: int
    online: int
    waiting: int
    push_errors: int
    failures: list[tuple[str, int]] = field(default_factory=list)

    def rate(self, part: int) -> int:
        """``part`` as a whole percentage of ``sent``."""
        return round(100 * part / self.sent) if self.sent else 0


def funnel(start: float, end: float, site: Sites = None) -> Funnel:
    """The payment funnel of the payments made at ``site`` created in ``[start, end)``."""
    in_period = (Payment.created_at >= start) & (Payment.created_at < end)
    ids = site_ids(site)
    if ids is not None:
        in_period &= Payment.site.in_(ids)
    by_status = dict(Payment.select(Payment.status, pw.fn.COUNT(Payment.id)).where(in_period)
                     .group_by(Payment.status).tuples())
    sent = sum(n for s, n in by_status.items() if s not in ("created", "error"))
    paid_ids = Payment.select(Payment.id).where(in_period, Payment.status == "success")
    accounted = AcctSession.select(AcctSession.entitlement).where(AcctSession.entitlement.is_null(False))
    logged_in = Event.select(Event.entitlement).where(Event.kind == "router_login", Event.entitlement.is_null(False))
    online = (Entitlement.select().where(Entitlement.payment.in_(paid_ids),
                                         Entitlement.id.in_(accounted) | Entitlement.id.in_(logged_in)).count())
    reasons: Counter = Counter()
    for p in Payment.select(Payment.status, Payment.result_code).where(
            in_period, Payment.status.in_(("failed", "cancelled", "timeout"))):
        reasons[failure_reason(p)] += 1
    return Funnel(sent=sent, paid=by_status.get("success", 0), online=online,
                  waiting=by_status.get("pending", 0) + by_status.get("created", 0),
                  push_errors=by_status.get("error", 0),
                  failures=sorted(reasons.items(), key=lambda kv: (-kv[1], kv[0])))


# --- sessions -------------------------------------------------------------------------------
@dataclass(frozen=True)
class SessionRow:
    """One live entitlement as the owner sees it (phone masked)."""
    entitlement_id: int
    package_name: str
    phone_masked: str
    source: str                      # "M-Pesa" | "voucher"
    payment_id: int | None
    macs: tuple[str, ...]            # devices bound now
    online_macs: tuple[str, ...]     # of those (or others on this session), online by accounting
    started_at: float
    expires_at: float
    seconds_left: int
    starts_in: int                   # > 0: stacked after the device's current time
    bytes_used: int
    data_cap_bytes: int | None
    site: str = DEFAULT_SITE         # where the time was bought

    @property
    def bytes_left(self) -> int | None:
        return None if self.data_cap_bytes is None else max(self.data_cap_bytes - self.bytes_used, 0)


def live_sessions(now: float | None = None, site: Sites = None) -> list[SessionRow]:
    """Entitlements bought at ``site`` still running or waiting to start, soonest to end first."""
    now = clock.now() if now is None else now
    ents = list(_at(Entitlement.select(Entitlement, Package.name.alias("package_name")).join(Package)
                    .where(Entitlement.status == "active", Entitlement.expires_at > now), Entitlement.site, site)
                .order_by(Entitlement.expires_at, Entitlement.id).objects())
    ids = [e.id for e in ents]
    macs: dict[int, list[str]] = {i: [] for i in ids}
    online: dict[int, set[str]] = {i: set() for i in ids}
    if ids:
        for d in (Device.select(Device.entitlement, Device.mac).where(Device.entitlement.in_(ids), Device.active)
                  .order_by(Device.bound_at)):
            macs[d.entitlement_id].append(d.mac)
        owner_of = {mac: ent_id for ent_id, ms in macs.items() for mac in ms}
        for s in AcctSession.select(AcctSession.mac, AcctSession.entitlement).where(AcctSession.online):
            ent_id = s.entitlement_id if s.entitlement_id in online else owner_of.get(s.mac)
            if ent_id is not None and s.mac:
                online[ent_id].add(s.mac)
    return [SessionRow(entitlement_id=e.id, package_name=e.package_name, phone_masked=mask_phone(e.phone),
                       source="M-Pesa" if e.payment_id else "voucher", payment_id=e.payment_id,
                       macs=tuple(macs[e.id]), online_macs=tuple(sorted(online[e.id])),
                       started_at=e.started_at, expires_at=e.expires_at,
                       seconds_left=max(int(e.expires_at - max(now, e.started_at)), 0),
                       starts_in=max(int(e.started_at - now), 0), bytes_used=e.bytes_used,
                       data_cap_bytes=e.data_cap_bytes, site=e.site) for e in ents]


# --- payments -------------------------------------------------------------------------------
@dataclass(frozen=True)
class PaymentFilter:
    """What the payments list is narrowed to. ``q``: phone digits (any form: 0708…, 254708…, a
    part of it), an M-Pesa receipt or a CheckoutRequestID (or a part). Days are Nairobi days,
    both ends included, on the payment's creation time. ``site``: the venues (see :data:`Sites`);
    one chosen venue (a str) is part of :meth:`params`, a collection (an account's limit) is not."""
    q: str = ""
    status: str = ""
    date_from: date | None = None
    date_to: date | None = None
    site: Sites = None

    @classmethod
    def from_params(cls, params: Mapping[str, str]) -> tuple["PaymentFilter", dict[str, str]]:
        """Read ``q``, ``status``, ``from``, ``to`` (``YYYY-MM-DD``); returns the filter made of
        what was usable and the errors by field."""
        errors: dict[str, str] = {}
        q = str(params.get("q") or "").strip()[:64]
        status = str(params.get("status") or "").strip()
        if status and status not in PAYMENT_STATES:
            errors["status"] = "unknown status"
            status = ""
        days = {}
        for key in ("from", "to"):
            text = str(params.get(key) or "").strip()
            days[key] = None
            if text:
                try:
                    days[key] = date.fromisoformat(text)
                except ValueError:
                    errors[key] = "use a date like 2026-05-31"
        if days["from"] and days["to"] and days["from"] > days["to"]:
            errors["to"] = "the end is before the start"
            days["to"] = None
        return cls(q, status, days["from"], days["to"]), errors

    def params(self) -> dict[str, str]:
        """The query-string form (for links to other pages and the CSV export)."""
        out = {"q": self.q, "status": self.status,
               "from": self.date_from.isoformat() if self.date_from else "",
               "to": self.date_to.isoformat() if self.date_to else "",
               "site": self.site if isinstance(self.site, str) else ""}
        return {k: v for k, v in out.items() if v}

    def query(self) -> pw.ModelSelect:
        """The matching payments, newest first, with their package."""
        q = Payment.select(Payment, Package).join(Package).order_by(Payment.created_at.desc(), Payment.id.desc())
        q = _at(q, Payment.site, self.site)
        if self.status:
            q = q.where(Payment.status == self.status)
        if self.date_from:
            q = q.where(Payment.created_at >= clock.day_start(self.date_from))
        if self.date_to:
            q = q.where(Payment.created_at < clock.day_start(self.date_to + timedelta(days=1)))
        text = self.q
        if text:
            digits = re.sub(r"\D", "", text)
            if re.fullmatch(r"[\d\s+()-]+", text) and len(digits) >= 3:
                if digits.startswith("0"):
                    digits = digits[1:]        # 0708… is stored 254708…
                q = q.where(Payment.phone.contains(digits) | Payment.paid_phone.contains(digits)
                            | Payment.checkout_request_id.contains(text))
            else:
                q = q.where(Payment.receipt.contains(text) | Payment.checkout_request_id.contains(text))
        return q


@dataclass(frozen=True)
class Page:
    rows: list
    total: int
    page: int
    pages: int
    per_page: int


def payments_page(f: PaymentFilter, page: int = 1, per_page: int = 50) -> Page:
    """One page of :meth:`PaymentFilter.query` (pages count from 1; out of range → the last)."""
    total = f.query().count()
    pages = max((total + per_page - 1) // per_page, 1)
    page = min(max(page, 1), pages)
    return Page(list(f.query().paginate(page, per_page)), total, page, pages, per_page)


def timeline(payment: Payment) -> list[Event]:
    """Every event of the payment and of the session it bought, oldest first: created, pushed,
    callback, query, resolved, session created, router login, disconnects, session ended…"""
    ent = access.entitlement_of(payment)
    cond = Event.payment == payment.id
    if ent is not None:
        cond |= Event.entitlement == ent.id
    return list(Event.select().where(cond).order_by(Event.at, Event.id))


CSV_COLUMNS = ("created (Nairobi)", "completed (Nairobi)", "status", "reason", "amount KES", "package", "phone",
               "paid from", "receipt", "checkout request id", "mac", "resolved by", "payment id")
#: the last column when the install has several venues
CSV_SITE_COLUMN = "venue"


def _cell(value: Any) -> str:
    # A cell starting with = + - @ is a formula to a spreadsheet: a package name or a forged
    # field must not run in the owner's Excel (OWASP "CSV injection").
    text = "" if value is None else str(value)
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


def write_payments_csv(payments: Iterable[Payment], out: TextIO, with_site: bool = False) -> int:
    """Write ``payments`` as CSV (header first) to ``out``; returns the number of rows. With
    ``with_site``, a last column names each payment's venue (its site id).

    Phone numbers are written in full: the export is the owner's own record, downloaded only
    by a signed-in owner, and full numbers are what matching it with the M-Pesa statement needs.
    """
    writer = csv.writer(out)
    writer.writerow(CSV_COLUMNS + ((CSV_SITE_COLUMN,) if with_site else ()))
    n = 0
    for p in payments:
        failed = p.status in ("failed", "cancelled", "timeout", "error")
        row = (clock.local_stamp(p.created_at), clock.local_stamp(p.completed_at) if p.completed_at else "",
               p.status, failure_reason(p) if failed else "", p.amount, p.package.name, p.phone,
               p.paid_phone or "", p.receipt or "", p.checkout_request_id or "", p.mac or "", p.resolved_by or "",
               p.id) + ((p.site,) if with_site else ())
        writer.writerow([_cell(v) for v in row])
        n += 1
    return n


# --- vouchers -------------------------------------------------------------------------------
@dataclass(frozen=True)
class Batch:
    name: str
    package_name: str
    count: int
    redeemed: int
    created_at: float
    site: str | None = None          # the package's venue; None: sold at every venue


def voucher_batches(site: Sites = None, every_venue: bool = True) -> list[Batch]:
    """Voucher batches (per package), newest first, with how many were used: those of the
    packages sold at ``site`` (see :func:`sold_at` for ``every_venue``)."""
    q = (Voucher.select(Voucher.batch, Package.name, Package.site, pw.fn.COUNT(Voucher.id),
                        pw.fn.COUNT(Voucher.redeemed_at), pw.fn.MIN(Voucher.created_at))
         .join(Package).group_by(Voucher.batch, Package.name, Package.site))
    cond = sold_at(site, every_venue)
    if cond is not None:
        q = q.where(cond)
    rows = q.order_by(pw.fn.MIN(Voucher.created_at).desc(), Voucher.batch).tuples()
    return [Batch(name, package, count, redeemed, created, where)
            for name, package, where, count, redeemed, created in rows]


def batch_vouchers(batch: str, site: Sites = None, every_venue: bool = True) -> list[Voucher]:
    """The codes of one batch with their package, in the order they were made (only those of the
    packages sold at ``site``)."""
    q = Voucher.select(Voucher, Package).join(Package).where(Voucher.batch == batch)
    cond = sold_at(site, every_venue)
    if cond is not None:
        q = q.where(cond)
    return list(q.order_by(Voucher.id))
