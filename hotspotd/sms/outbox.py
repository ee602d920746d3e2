"""The SMS queue: what is to be sent to whom, sent by a scheduler job with retries.

A payment, a reminder or the owner's "send this voucher" only *queues* a row
(:class:`~hotspotd.storage.models.SmsMessage`); :func:`send_due` sends it through the gateway.
So a gateway that is slow, down or misconfigured never holds up a payment, a login or a page:
the row waits, is retried with backoff (``FIRST_RETRY_SECONDS`` doubling to
``MAX_RETRY_SECONDS``) and is given up at its ``give_up_at`` (a receipt an hour later is still
useful, a reminder after the time ended is not). Every send and failure leaves an
:class:`~hotspotd.storage.models.Event`; the phone is masked in the log.

The text is written when the row is sent, from the rows it names (:class:`Composer`): the
receipt's M-Pesa code may arrive after the payment (the STK query carries none), a reminder of a
session that was extended or ended meanwhile is dropped, not sent.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Callable

import peewee as pw

from .. import access, clock
from ..identifiers import mask_phone
from ..storage.models import DEFAULT_SITE, Entitlement, Event, Package, Payment, SmsMessage, Voucher, database
from . import texts
from .gateways import Gateway, SmsFailed

log = logging.getLogger(__name__)

FIRST_RETRY_SECONDS = 30
MAX_RETRY_SECONDS = 900
#: how long a receipt or a voucher SMS is worth trying
GIVE_UP_SECONDS = {"receipt": 3600, "voucher": 24 * 3600}
#: a receipt waits this long for the M-Pesa code (a payment the STK query settled gets it from the
#: callback after) before it goes without one
RECEIPT_WAIT_SECONDS = 60
#: no reminder closer than this to the end (it would come after the time ended)
REMINDER_LAST_SECONDS = 60


class NotYet(Exception):
    """The row's text cannot be written yet: try again after ``seconds``."""

    def __init__(self, seconds: float):
        super().__init__(seconds)
        self.seconds = seconds


def queue(kind: str, key: str, phone: str, *, lang: str | None, site: str = DEFAULT_SITE,
          payment: int | None = None, entitlement: int | None = None, voucher: str | None = None,
          give_up_at: float | None = None, now: float | None = None) -> bool:
    """Queue an SMS; False when one with ``key`` was queued before (it is never sent twice)."""
    now = clock.now() if now is None else now
    give_up_at = now + GIVE_UP_SECONDS.get(kind, 3600) if give_up_at is None else give_up_at
    row = dict(key=key, kind=kind, phone=phone, lang=lang if lang in ("en", "sw") else "en", site=site,
               payment=payment, entitlement=entitlement, voucher=voucher, status="pending", created_at=now,
               next_at=now, give_up_at=give_up_at)
    # the cursor's row count: execute() answers the last row id, which SQLite leaves as it was on a conflict
    return database.execute(SmsMessage.insert(row).on_conflict_ignore()).rowcount == 1


def queue_receipt(payment: Payment, now: float | None = None) -> bool:
    """The receipt SMS of a successful payment, to the number the prompt went to."""
    return queue("receipt", f"receipt:{payment.id}", payment.phone, lang=payment.lang, site=payment.site,
                 payment=payment.id, now=now)


def queue_voucher(code: str, phone: str, lang: str | None) -> bool:
    """A voucher's code, sent to a customer's phone (the owner's "send by SMS")."""
    return queue("voucher", f"voucher:{code}", phone, lang=lang, voucher=code)


def queue_reminders(minutes: int, now: float | None = None) -> int:
    """Queue "N minutes left" for every paid session ending within ``minutes`` (only those that
    lasted longer than twice that: a 15-minute package gets none). Keyed by the session and its
    end: time added later gets its own reminder. Returns how many were queued."""
    if minutes <= 0:
        return 0
    now = clock.now() if now is None else now
    window = minutes * 60
    rows = (Entitlement.select(Entitlement.id, Entitlement.expires_at, Entitlement.site, Payment.phone,
                               Payment.lang)
            .join(Payment, on=(Entitlement.payment == Payment.id))
            .where(Entitlement.status == "active", Entitlement.expires_at > now + REMINDER_LAST_SECONDS,
                   Entitlement.expires_at <= now + window,
                   Entitlement.expires_at - Entitlement.started_at > 2 * window)
            .objects())
    queued = 0
    for r in rows:
        queued += queue("reminder", f"reminder:{r.id}:{int(r.expires_at)}", r.phone, lang=r.lang, site=r.site,
                        entitlement=r.id, give_up_at=r.expires_at - REMINDER_LAST_SECONDS, now=now)
    return queued


@dataclass(frozen=True)
class Composer:
    """Writes a row's text. ``translate(message, lang, **values)``: the catalogue's words;
    ``site_name(site_id)``: the venue's name; ``me_url``: the customer's "my time" page."""
    translate: Callable[..., str]
    site_name: Callable[[str], str]
    me_url: str

    def __call__(self, row: SmsMessage, now: float) -> str | None:
        """The text, None when it is no longer true (the row is dropped); raises :class:`NotYet`."""
        site = self.site_name(row.site)
        if row.kind == "receipt":
            payment = Payment.get_or_none(Payment.id == row.payment_id)
            ent = access.entitlement_of(payment) if payment else None
            if ent is None:
                return None
            if not payment.receipt and now < row.created_at + RECEIPT_WAIT_SECONDS:
                raise NotYet(10)
            return texts.receipt(self.translate, row.lang, site=site, amount=payment.amount, receipt=payment.receipt,
                                 package=Package.get_by_id(payment.package_id), ends_at=ent.expires_at,
                                 data_cap=ent.data_cap_bytes, me=self.me_url)
        if row.kind == "reminder":
            ent = Entitlement.get_or_none(Entitlement.id == row.entitlement_id)
            if ent is None or ent.status != "active" or f"reminder:{ent.id}:{int(ent.expires_at)}" != row.key:
                return None
            if ent.expires_at - now < REMINDER_LAST_SECONDS:
                return None
            return texts.reminder(self.translate, row.lang, site=site, ends_at=ent.expires_at,
                                  minutes=max(1, round((ent.expires_at - now) / 60)), me=self.me_url)
        if row.kind == "voucher":
            voucher = Voucher.get_or_none(Voucher.code == row.voucher)
            if voucher is None or voucher.revoked:
                return None
            from ..vouchers import display
            return texts.voucher(self.translate, row.lang, site=site, package=Package.get_by_id(voucher.package_id),
                                 code=display(voucher.code))
        return None


def send_due(gateway: Gateway, compose: Composer, now: float | None = None, limit: int = 20) -> int:
    """Send the rows that are due, oldest first; returns how many went out."""
    now = clock.now() if now is None else now
    rows = list(SmsMessage.select().where(SmsMessage.status == "pending", SmsMessage.next_at <= now)
                .order_by(SmsMessage.next_at).limit(limit))
    sent = 0
    for row in rows:
        sent += _send(gateway, compose, row, now)
    return sent


def _send(gateway: Gateway, compose: Composer, row: SmsMessage, now: float) -> int:
    if now >= row.give_up_at:
        _finish(row, "failed", f"gave up after {row.attempts} attempt(s): {row.last_error or 'not sent in time'}", now)
        return 0
    try:
        text = compose(row, now)
    except NotYet as later:
        SmsMessage.update(next_at=now + later.seconds).where(SmsMessage.id == row.id).execute()
        return 0
    if text is None:
        _finish(row, "dropped", "no longer true", now)
        return 0
    try:
        provider_id = gateway.send(row.phone, text)
    except SmsFailed as exc:
        attempts = row.attempts + 1
        if exc.permanent:
            _finish(row, "failed", str(exc), now, attempts=attempts, text=text)
            return 0
        delay = min(FIRST_RETRY_SECONDS * 2 ** (attempts - 1), MAX_RETRY_SECONDS)
        SmsMessage.update(attempts=attempts, next_at=now + delay, last_error=str(exc)[:500]
                          ).where(SmsMessage.id == row.id, SmsMessage.status == "pending").execute()
        log.warning("SMS %s to %s not sent (%s); next try in %d s", row.kind, mask_phone(row.phone), exc, delay)
        return 0
    with database.atomic():
        SmsMessage.update(status="sent", attempts=row.attempts + 1, text=text, provider_id=provider_id[:64] or None,
                          sent_at=now, last_error=None).where(SmsMessage.id == row.id).execute()
        _event(row, "sms_sent", f"{row.kind} SMS to {mask_phone(row.phone)} via {gateway.name}", now)
    log.info("SMS %s sent to %s via %s", row.kind, mask_phone(row.phone), gateway.name)
    return 1


def _finish(row: SmsMessage, status: str, why: str, now: float, *, attempts: int | None = None,
            text: str | None = None) -> None:
    with database.atomic():
        SmsMessage.update(status=status, last_error=why[:500], attempts=row.attempts if attempts is None else attempts,
                          text=text).where(SmsMessage.id == row.id).execute()
        if status == "failed":
            _event(row, "sms_failed", f"{row.kind} SMS to {mask_phone(row.phone)} failed: {why}"[:500], now)
    if status == "failed":
        log.warning("SMS %s to %s failed: %s", row.kind, mask_phone(row.phone), why)


def _event(row: SmsMessage, kind: str, message: str, now: float) -> None:
    Event.create(at=now, kind=kind, payment=row.payment_id, entitlement=row.entitlement_id, message=message)


def counts(since: float) -> dict[str, int]:
    """How many SMS are waiting, and how many were sent and failed since ``since`` (health)."""
    pending = SmsMessage.select().where(SmsMessage.status == "pending").count()
    rows = (SmsMessage.select(SmsMessage.status, pw.fn.COUNT(SmsMessage.id).alias("n"))
            .where(SmsMessage.created_at >= since, SmsMessage.status.in_(("sent", "failed")))
            .group_by(SmsMessage.status).tuples())
    done = dict(rows)
    return {"pending": pending, "sent": done.get("sent", 0), "failed": done.get("failed", 0)}
