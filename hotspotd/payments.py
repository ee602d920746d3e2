"""A payment's life, from STK push to its final state: the one owner of money.

States: ``created`` (row committed, push being sent) → ``pending`` (Daraja accepted the push)
→ ``success`` | ``failed`` | ``cancelled`` | ``timeout``; ``error`` when the push itself failed.
Every transition is a conditional UPDATE (``WHERE status IN (...)``) so a callback and a
query racing each other, in threads or in processes, apply a result once; the entitlement's
unique ``payment`` column makes "exactly one session per payment" a database fact.
A ``timeout`` may still turn into ``success`` (the customer paid late: they get their time).
"""
from __future__ import annotations

import ipaddress
import json
import math
import logging
from dataclasses import dataclass
from typing import Any, Callable

import peewee as pw

from . import access, clock, faults
from .daraja import codes
from .daraja.client import DarajaBusy, DarajaClient, DarajaError, DarajaRejected
from .errors import DomainError
from .identifiers import InvalidMac, InvalidPhone, mask_phone, normalize_mac, normalize_phone
from .storage.models import DEFAULT_SITE, Callback, Event, Package, Payment, database

log = logging.getLogger(__name__)

OPEN_STATES = ("created", "pending")
MIN_AMOUNT, MAX_AMOUNT = 1, 250_000


#: the codes of :class:`PaymentRefused` (the boundaries' tables say them to people)
CANNOT_RECORD = "cannot_record"         # the database cannot take a payment now (disk, server down)
STORAGE_BUSY = "storage_busy"           # a lock held too long: try again in a moment
UNKNOWN_SITE = "unknown_site"           # the router names a venue this install does not have
BAD_MAC = "bad_mac"
CHOOSE_PACKAGE = "choose_package"
NOT_ON_OFFER = "package_not_on_offer"
AMOUNT_OUT_OF_RANGE = "amount_out_of_range"
#: ``mpesa_<reason>``: the STK push failed, ``reason`` being the DarajaError's (unavailable, ...)
MPESA = "mpesa_"
#: the ``result_desc`` of a payment that ended without a word from M-Pesa: hotspotd's own reason
#: (the boundaries say it in words; Daraja's ResultDesc texts are stored as they came)
UNSENT = "unsent"                        # the push was cut short by a stop; a late confirmation counts
NO_ANSWER = "no_answer"                  # no answer from M-Pesa in time


class _Unverified(Exception):
    """An adoption that waits for the STK query's confirmation (see PaymentService._adopt)."""


class PaymentRefused(DomainError):
    """The pay request cannot go ahead: ``code`` (one of the codes above, an InvalidPhone's or
    ``mpesa_<reason>``) says why, ``field`` names the input to correct."""


@dataclass(frozen=True)
class Policy:
    """The timing of reconciliation (from ``[mpesa]``)."""
    account_reference: str = "WIFI"
    prompt_lifetime: float = 180
    query_after: float = 10
    query_interval: float = 5
    query_max_interval: float = 60
    give_up: int = 86400
    allowlist: tuple = ()
    callback_token: str = ""


def event(kind: str, payment: Payment | int | None = None, message: str = "", mac: str | None = None,
          at: float | None = None) -> None:
    Event.create(at=clock.now() if at is None else at, kind=kind, payment=payment, mac=mac, message=message)


class PaymentService:
    """Initiates payments, takes callbacks, reconciles the ones that never heard back."""

    def __init__(self, client: DarajaClient, callback_url: str, policy: Policy = Policy(),
                 on_success: Callable[[Payment], None] | None = None,
                 storage_problem: Callable[[], str | None] | None = None, metrics: Any = None,
                 sites: dict[str, tuple[DarajaClient, str]] | None = None):
        #: the default venue's (``[mpesa]``) Daraja client
        self.client = client
        #: every venue's Daraja client and account reference (its own till, or ``[mpesa]``'s)
        self.sites = sites if sites is not None else {DEFAULT_SITE: (client, policy.account_reference)}
        self.callback_url = callback_url
        self.policy = policy
        #: why a new payment could not be recorded safely now (disk nearly full), or None
        self.storage_problem = storage_problem
        #: called after a payment turns successful and its session is committed (router login)
        self.on_success = on_success
        #: rows left ``created`` from before this are a stopped process's (see _settle_unsent)
        self.started_at = clock.now()
        #: a :class:`hotspotd.metrics.Metrics` (or None): told of results, callbacks, Daraja errors
        self.metrics = metrics
        #: a rate limit refused a query: reconciliation asks no more until then (clock.now())
        self.queries_paused_until = 0.0

    # --- starting a payment -------------------------------------------------------------
    def initiate(self, phone: Any, package_id: Any, mac: Any = None, client_ip: str | None = None,
                 login_context: dict | None = None, site: str = DEFAULT_SITE,
                 lang: str | None = None) -> tuple[Payment, bool]:
        """Send an STK push for ``package_id`` to ``phone``, for time at venue ``site`` (paid to
        its M-Pesa account); ``lang``, the page's language, is the one its SMS speak. Returns ``(payment, reused)``: ``reused`` is True when the device
        already had a pending payment, which is returned instead of prompting the customer twice.
        Raises :class:`PaymentRefused`."""
        if site not in self.sites:
            log.error("refusing a payment: the router's login page names site %r, which no [[sites]] entry has",
                      str(site)[:40])
            raise PaymentRefused(UNKNOWN_SITE)
        try:
            phone = normalize_phone(phone)
        except InvalidPhone as exc:
            raise PaymentRefused(exc.code, "phone") from None
        try:
            mac = normalize_mac(mac) if mac not in (None, "") else None
        except InvalidMac:
            raise PaymentRefused(BAD_MAC, "macAddress") from None
        try:
            package = self._package(package_id, site)
        except (pw.OperationalError, pw.InterfaceError) as exc:
            raise self._unrecordable(exc) from None
        if not MIN_AMOUNT <= package.price <= MAX_AMOUNT:
            raise PaymentRefused(AMOUNT_OUT_OF_RANGE, "packageId")
        problem = self.storage_problem() if self.storage_problem else None
        if problem:
            log.error("refusing a payment: %s", problem)
            raise PaymentRefused(CANNOT_RECORD)
        try:
            payment, reused = self._create(phone, package, mac, client_ip, login_context, site, lang)
        except (pw.OperationalError, pw.InterfaceError) as exc:
            # the row is committed before anyone is asked for money: no row, no prompt
            raise self._unrecordable(exc) from None
        if reused:
            return payment, True
        faults.crash_point("payment_created")
        self._push(payment, package)
        return Payment.get_by_id(payment.id), False

    @staticmethod
    def _unrecordable(exc: Exception) -> PaymentRefused:
        """The refusal of a payment the database cannot take now: ``storage_busy`` ("try again")
        for a lock held too long (SQLite's "database is locked", PostgreSQL's "lock timeout"), else
        ``cannot_record`` ("tell the staff": a full disk, a server that is down)."""
        reason = _root_cause(exc)
        log.error("refusing a payment: the database could not record it (%s)", reason.splitlines()[0] if reason else exc)
        busy = any(word in reason.lower() for word in ("locked", "busy", "lock timeout"))
        return PaymentRefused(STORAGE_BUSY if busy else CANNOT_RECORD)

    def _create(self, phone: str, package: Package, mac: str | None, client_ip: str | None,
                login_context: dict | None, site: str, lang: str | None = None) -> tuple[Payment, bool]:
        """The device's open payment (reused), or a new one committed in state ``created``."""
        now = clock.now()
        with database.atomic():
            if mac:
                # pending only: a created one has no CheckoutRequestID to follow (in flight, or stranded).
                # The same device, phone and package only: a stranger's open prompt for this MAC (a
                # typed-in or spoofed address) is theirs, and a prompt for another package is another sale
                open_one = (Payment.select().where(Payment.mac == mac, Payment.phone == phone,
                                                   Payment.package == package.id,
                                                   Payment.status == "pending", Payment.site == site,
                                                   Payment.created_at > now - self.policy.prompt_lifetime)
                            .order_by(Payment.created_at.desc()).first())
                if open_one:
                    return open_one, True
            payment = Payment.create(phone=phone, amount=package.price, package=package.id, mac=mac,
                                     client_ip=client_ip, status="created", created_at=now, site=site,
                                     lang=lang if lang in ("en", "sw") else None,
                                     login_context=json.dumps(login_context) if login_context else None)
            event("created", payment, f"KES {package.price} for {package.name} to {mask_phone(phone)}", mac, now)
        log.info("payment %s created: KES %s for %s to %s", payment.id, package.price, package.name, mask_phone(phone),
                 extra={"payment_id": payment.id})
        return payment, False

    def _package(self, package_id: Any, site: str) -> Package:
        try:
            pid = int(package_id)
        except (TypeError, ValueError, OverflowError):   # OverflowError: JSON's Infinity
            raise PaymentRefused(CHOOSE_PACKAGE, "packageId") from None
        # beyond 64 bits the database driver raises instead of finding nothing
        package = (Package.get_or_none((Package.id == pid) & Package.active & Package.sold_at([site]))
                   if 0 < pid < 2**63 else None)
        if package is None:
            raise PaymentRefused(NOT_ON_OFFER, "packageId")
        return package

    def _push(self, payment: Payment, package: Package) -> None:
        desc = f"Wi-Fi {package.name}"[:13]
        client, reference = self.sites[payment.site]
        try:
            accepted = client.stk_push(payment.phone, payment.amount, self.callback_url, reference, desc)
        except DarajaError as exc:
            # Refused, or unreachable before anything was accepted: no prompt can be on the phone
            # that we would not hear about; a timeout is the exception (see ARCHITECTURE.md).
            state = "failed" if isinstance(exc, DarajaRejected) else "error"
            Payment.update(status=state, last_error=f"{exc.code or exc.http_status or ''} {exc.message}".strip(),
                           result_desc=MPESA + exc.reason, resolved_by="push", completed_at=clock.now()
                           ).where(Payment.id == payment.id).execute()
            event("push_failed", payment, f"{exc.code or exc.http_status}: {exc.message}")
            log.warning("STK push for payment %s failed: %s %s", payment.id, exc.code, exc.message,
                        extra={"payment_id": payment.id})
            if self.metrics:
                self.metrics.daraja_error("stk_push", exc)
                self.metrics.payment_final(state)
            raise PaymentRefused(MPESA + exc.reason) from exc
        faults.crash_point("push_accepted")
        now = clock.now()
        with database.atomic():
            Payment.update(checkout_request_id=accepted.checkout_request_id,
                           merchant_request_id=accepted.merchant_request_id, status="pending", pushed_at=now,
                           next_query_at=now + self.policy.query_after
                           ).where(Payment.id == payment.id, Payment.status == "created").execute()
            event("pushed", payment, f"STK push accepted: {accepted.checkout_request_id}", at=now)
        log.info("STK push accepted %s (payment %s, %s)", accepted.checkout_request_id, payment.id,
                 mask_phone(payment.phone), extra=_ids(payment.id, accepted.checkout_request_id))
        # A callback may have beaten our commit: apply it now.
        for early in Callback.select().where(Callback.checkout_request_id == accepted.checkout_request_id,
                                             Callback.state == "unmatched"):
            self.process_callback(early.id)

    # --- callbacks ----------------------------------------------------------------------
    def record_callback(self, body: bytes, source_ip: str | None, path: str) -> Callback:
        """Store the raw body first, before any parsing: the audit trail loses nothing."""
        text = body.decode("utf-8", errors="replace")
        checkout_id = None
        try:
            checkout_id = _storable(json.loads(text)["Body"]["stkCallback"]["CheckoutRequestID"], 64)
        except Exception:  # noqa: BLE001 - anything unparsable is handled by process_callback
            pass
        return Callback.create(received_at=clock.now(), source_ip=source_ip, path=path[:255], body=text,
                               checkout_request_id=checkout_id, state="received")

    def process_callback(self, callback_id: int) -> str:
        """Match a stored callback to its payment and apply it. Returns the callback's new state."""
        faults.crash_point("callback_stored")
        cb = Callback.get_by_id(callback_id)
        if cb.state not in ("received", "unmatched", "unverified"):
            return cb.state
        try:
            parsed = parse_callback(cb.body)
        except ValueError as exc:
            return self._mark(cb, "malformed", str(exc))
        payment = Payment.get_or_none(Payment.checkout_request_id == parsed["checkout_request_id"])
        if payment is None:
            try:
                payment = self._adopt(cb, parsed)
            except _Unverified:
                if clock.now() < cb.received_at + self.policy.prompt_lifetime:
                    if cb.state == "unverified":     # asked again: counted once
                        Callback.update(processed_at=clock.now()).where(Callback.id == cb.id).execute()
                        return "unverified"
                    return self._mark(cb, "unverified", "unknown CheckoutRequestID from an unvouched source; "
                                      "waiting for M-Pesa's STK query to confirm it")
                payment = None
        if payment is None:
            log.warning("callback %s for unknown CheckoutRequestID %s", cb.id, parsed["checkout_request_id"],
                        extra={"checkout_request_id": parsed["checkout_request_id"]})
            return self._mark(cb, "unmatched", "no payment with this CheckoutRequestID (yet)")
        event("callback", payment, f"ResultCode {parsed['result_code']}: {parsed['result_desc']}")
        log.info("callback %s for %s: ResultCode %s", cb.id, payment.checkout_request_id, parsed["result_code"],
                 extra=_ids(payment.id, payment.checkout_request_id))
        # push accepted → callback received (an adopted payment's push time is its creation)
        delay = cb.received_at - payment.pushed_at if payment.pushed_at else None
        doubt = self._doubt(cb, payment, parsed)
        if doubt:
            # Never trusted alone: ask Daraja before anything is granted.
            Payment.update(next_query_at=clock.now()).where(Payment.id == payment.id,
                                                          Payment.status.in_(OPEN_STATES + ("timeout",))).execute()
            event("callback_flagged", payment, doubt)
            log.warning("callback %s for %s flagged: %s", cb.id, payment.checkout_request_id, doubt,
                        extra=_ids(payment.id, payment.checkout_request_id))
            return self._mark(cb, "flagged", doubt, delay)
        changed = self.apply_result(payment.id, parsed["result_code"], parsed["result_desc"], via="callback",
                                    receipt=parsed.get("receipt"), paid_phone=parsed.get("phone"),
                                    transaction_date=parsed.get("transaction_date"))
        if not changed and self._add_receipt(payment, parsed):
            return self._mark(cb, "applied", "receipt of a payment the STK query settled", delay)
        return self._mark(cb, "applied" if changed else "duplicate",
                          None if changed else f"payment already {Payment.get_by_id(payment.id).status}",
                          delay if changed else None)

    def _add_receipt(self, payment: Payment, parsed: dict) -> bool:
        """The STK query carries no receipt: a payment it settled gets its receipt (and the paying
        phone, the transaction date) from the success callback that comes after it, so the code in
        the customer's SMS works for "Already paid?". Only once, only for a success without one."""
        if codes.outcome(parsed["result_code"]) != "success" or not parsed.get("receipt"):
            return False
        if not Payment.update(receipt=parsed["receipt"], paid_phone=parsed.get("phone"),
                              transaction_date=parsed.get("transaction_date")
                              ).where(Payment.id == payment.id, Payment.status == "success",
                                      Payment.receipt.is_null()).execute():
            return False
        event("receipt", payment, f"receipt {parsed['receipt']} from the callback after the STK query", payment.mac)
        log.info("payment %s: receipt recorded from its callback (the STK query had settled it)",
                 payment.checkout_request_id, extra=_ids(payment.id, payment.checkout_request_id))
        return True

    def _adopt(self, cb: Callback, parsed: dict) -> Payment | None:
        """The payment a paid callback for an unknown CheckoutRequestID belongs to, when Daraja's
        answer to its push never reached the database (the process was killed in between, or the
        push timed out): the latest one of the callback's phone and amount without a
        CheckoutRequestID, ``error`` or ``created`` by a stopped process, made within a prompt's
        lifetime before the callback. It takes the CheckoutRequestID and is ``pending`` again: the
        usual checks (and, in doubt, the STK query) decide, never the match alone. A failure
        callback carries no phone number; its payment stays unpaid, as it should.

        Adoption rests on Safaricom's word, never on a body alone: a callback that came without
        the install's secret token (the seed path) or from outside the allowlist adopts only when
        the STK query confirms its CheckoutRequestID is a paid push of this account. Otherwise a
        forged callback with the victim's phone and the price would take the payment over, and the
        real callback would then match nothing (the customer paid and stays offline)."""
        if codes.outcome(parsed["result_code"]) != "success" or parsed.get("amount") is None:
            return None
        try:
            phone = normalize_phone(parsed.get("phone") or "")
        except InvalidPhone:
            return None
        checkout = parsed["checkout_request_id"]
        candidate = self._stranded(phone, parsed["amount"], cb.received_at)
        if candidate is None:
            return None
        doubt = self._source_doubt(cb)
        if doubt and not self._daraja_confirms(checkout, candidate):
            if cb.state != "unverified":
                event("adoption_refused", candidate, f"callback {cb.id} for {checkout} {doubt}, and M-Pesa does "
                      "not confirm that push (yet): not adopted")
                log.warning("callback %s for unknown %s %s and M-Pesa does not confirm it (yet): payment %s not "
                            "adopted", cb.id, checkout, doubt, candidate.id)
            # asked again by the reconcile job while a prompt could still be open (Daraja's query says
            # "being processed" for a while, and for an id it never issued)
            raise _Unverified()
        with database.atomic():
            found = Payment.get_or_none(Payment.checkout_request_id == checkout)
            if found is not None:       # a copy of this callback adopted it meanwhile
                return found
            payment = self._stranded(phone, parsed["amount"], cb.received_at)
            if payment is None:
                return None
            Payment.update(checkout_request_id=checkout, merchant_request_id=parsed["merchant_request_id"] or None,
                           status="pending", pushed_at=payment.pushed_at or payment.created_at, result_desc=None,
                           resolved_by=None, completed_at=None, next_query_at=clock.now()
                           ).where(Payment.id == payment.id, Payment.checkout_request_id.is_null()).execute()
            event("adopted", payment, f"callback {cb.id} for {checkout} matched by phone and amount (was {payment.status})")
        log.warning("callback %s: %s was unknown; matched to payment %s (%s) by phone and amount", cb.id, checkout,
                    payment.id, payment.status)
        return Payment.get_by_id(payment.id)

    def _stranded(self, phone: str, amount: int, received_at: float) -> Payment | None:
        """The latest payment of ``phone`` and ``amount`` whose push's answer was lost (see _adopt)."""
        return (Payment.select().where(
            Payment.checkout_request_id.is_null(), Payment.phone == phone, Payment.amount == amount,
            (Payment.status == "error") | ((Payment.status == "created") & (Payment.created_at < self.started_at)),
            Payment.created_at.between(received_at - self.policy.prompt_lifetime, received_at))
            .order_by(Payment.created_at.desc()).first())

    def _daraja_confirms(self, checkout: str, payment: Payment) -> bool:
        """Whether the STK query says ``checkout`` is a successful push of ``payment``'s account."""
        try:
            result = self.client_for(payment.site).stk_query(checkout)
        except DarajaError as exc:
            log.warning("STK query of unknown %s failed: %s", checkout, exc)
            return False
        return not result.pending and codes.outcome(result.result_code) == "success"

    def _source_doubt(self, cb: Callback) -> str | None:
        return self.source_doubt(cb.path, cb.source_ip)

    def source_doubt(self, path: str, source_ip: str | None) -> str | None:
        """Why a callback's path or source does not vouch for it (None: the token path, allowed source)."""
        if self.policy.callback_token and self.policy.callback_token not in path:
            return "arrived without the install's secret token in the path"
        if self.policy.allowlist and not _allowed(source_ip, self.policy.allowlist):
            return f"source {source_ip} is not in the callback allowlist"
        return None

    def _doubt(self, cb: Callback, payment: Payment, parsed: dict) -> str | None:
        source = self._source_doubt(cb)
        if source:
            return source
        if codes.outcome(parsed["result_code"]) == "success":
            if parsed.get("amount") is None:
                return "success without an Amount"
            if parsed["amount"] != payment.amount:
                return f"amount {parsed['amount']} differs from the {payment.amount} asked"
            if not parsed.get("receipt"):
                return "success without a receipt number"
            if Payment.select().where(Payment.receipt == parsed["receipt"], Payment.id != payment.id).exists():
                return f"receipt {parsed['receipt']} already belongs to another payment"
        return None

    def _mark(self, cb: Callback, state: str, note: str | None, delay: float | None = None) -> str:
        Callback.update(state=state, note=note, processed_at=clock.now()).where(Callback.id == cb.id).execute()
        if self.metrics:
            self.metrics.callback(state, delay)
        return state

    # --- results --------------------------------------------------------------------------
    def apply_result(self, payment_id: int, result_code: Any, result_desc: str, *, via: str,
                     receipt: str | None = None, paid_phone: str | None = None,
                     transaction_date: str | None = None) -> bool:
        """Move a payment to the final state ``result_code`` means. Idempotent: returns False
        when the payment was already final (nothing changed). Success creates the session."""
        code = str(result_code).strip()
        outcome = codes.outcome(code)
        if outcome == "pending":
            return False
        now = clock.now()
        allowed_from = OPEN_STATES + (("timeout", "error") if outcome == "success" else ())
        with database.atomic():
            updated = (Payment.update(status=outcome, result_code=code, result_desc=result_desc,
                                      receipt=receipt if outcome == "success" else None,
                                      paid_phone=paid_phone, transaction_date=transaction_date,
                                      resolved_by=via, completed_at=now,
                                      next_query_at=None)
                       .where(Payment.id == payment_id, Payment.status.in_(allowed_from)).execute())
            if not updated:
                return False
            payment = Payment.get_by_id(payment_id)
            event("resolved", payment, f"{outcome} by {via} ({code} {result_desc})", payment.mac, now)
            ent = access.grant_for_payment(payment, now) if outcome == "success" else None
        faults.crash_point("result_applied")
        if self.metrics:
            self.metrics.payment_final(outcome, code, prompt_seconds=now - payment.pushed_at if payment.pushed_at else None,
                                       entitlement_id=ent.id if ent else None)
        log.info("payment %s %s by %s (ResultCode %s)", payment.checkout_request_id, outcome, via, code,
                 extra=_ids(payment.id, payment.checkout_request_id))
        if outcome == "success":
            self.after_paid(payment)
        return True

    def record_paid(self, *, phone: str, amount: int, package: Package, mac: str | None, receipt: str, site: str,
                    via: str, desc: str, now: float, transaction_date: str | None = None) -> Payment:
        """A payment M-Pesa confirmed outside the STK flow (a menu payment, a Transaction Status
        answer), successful at once, with its session. Call inside the caller's transaction (the
        receipt is unique: a second one raises IntegrityError); then :meth:`after_paid`."""
        payment = Payment.create(phone=phone, amount=amount, package=package.id, mac=mac, status="success",
                                 result_code="0", result_desc=desc, receipt=receipt, transaction_date=transaction_date,
                                 resolved_by=via, created_at=now, completed_at=now, site=site)
        access.grant_for_payment(payment, now)
        return payment

    def after_paid(self, payment: Payment) -> None:
        """The hooks after a payment turned successful and its session is committed (router login,
        receipt SMS): a failure of theirs is logged, never the payment's."""
        if self.on_success:
            try:
                self.on_success(payment)
            except Exception:  # noqa: BLE001 - the session exists; the browser login still works
                log.exception("after-payment hook failed for %s", payment.checkout_request_id or payment.receipt)

    # --- reconciliation -----------------------------------------------------------------
    def reconcile_due(self, limit: int = 50) -> int:
        """Query every payment whose next query is due; returns how many were asked."""
        now = clock.now()
        due = list(Payment.select().where(Payment.next_query_at <= now,
                                          Payment.status.in_(("pending", "timeout")))
                   .order_by(Payment.next_query_at).limit(limit))
        for payment in due:
            if clock.now() < self.queries_paused_until:
                break       # a rate limit: the rest stay due for a later run
            self.query(payment)
        self._settle_unsent(now)
        self._retry_stranded(now)
        return len(due)

    def _settle_unsent(self, now: float) -> None:
        """Payments a stopped process left ``created`` (killed after committing the row, before
        committing Daraja's answer to the push) can never be asked about: Daraja's query needs the
        CheckoutRequestID. Whether a prompt reached the phone is unknown, so they end as ``error``;
        a success callback that still comes finds them by phone and amount (:meth:`_adopt`)."""
        # and older than a push can take here (token, push, one retry): not another process's in flight
        stale = min(self.started_at, now - 4 * self.client.timeout)
        for payment in Payment.select().where(Payment.status == "created", Payment.created_at < stale).limit(100):
            with database.atomic():     # the state and its event together: a reader sees both or neither
                settled = Payment.update(status="error", last_error="the process stopped while the STK push was "
                                         "being sent", result_desc=UNSENT, resolved_by="push", completed_at=now
                                         ).where(Payment.id == payment.id, Payment.status == "created").execute()
                if settled:
                    event("push_unknown", payment, "hotspotd stopped while sending the STK push; outcome unknown")
            if settled:
                log.warning("payment %s: hotspotd stopped while sending its STK push; marked error", payment.id,
                            extra={"payment_id": payment.id})
                if self.metrics:
                    self.metrics.payment_final("error")

    def query(self, payment: Payment) -> str:
        """Ask Daraja about one payment and act on the answer; returns the payment's status."""
        now = clock.now()
        attempts = payment.query_attempts + 1
        try:
            result = self.client_for(payment.site).stk_query(payment.checkout_request_id)
        except DarajaError as exc:
            if isinstance(exc, DarajaBusy):
                self.queries_paused_until = now + self.policy.query_interval
            event("query", payment, f"error {exc.code or exc.http_status}: {exc.message}")
            log.warning("STK query %s failed: %s", payment.checkout_request_id, exc,
                        extra=_ids(payment.id, payment.checkout_request_id))
            if self.metrics:
                self.metrics.daraja_error("stk_query", exc)
            self._reschedule(payment, attempts, now, f"{exc.code or exc.http_status} {exc.message}")
            return Payment.get_by_id(payment.id).status
        event("query", payment, "still processing" if result.pending else f"ResultCode {result.result_code}: {result.result_desc}")
        log.log(logging.DEBUG if result.pending else logging.INFO, "STK query %s: %s", payment.checkout_request_id,
                "still processing" if result.pending else f"ResultCode {result.result_code} {result.result_desc}",
                extra=_ids(payment.id, payment.checkout_request_id))
        if not result.pending and self.apply_result(payment.id, result.result_code, result.result_desc, via="query"):
            return Payment.get_by_id(payment.id).status
        if not result.pending:
            Payment.update(next_query_at=None, query_attempts=attempts).where(Payment.id == payment.id).execute()
            return Payment.get_by_id(payment.id).status
        self._reschedule(payment, attempts, now, None)
        return Payment.get_by_id(payment.id).status

    def _reschedule(self, payment: Payment, attempts: int, now: float, error: str | None) -> None:
        p = self.policy
        age = now - (payment.pushed_at or payment.created_at)
        if age > p.give_up:
            Payment.update(next_query_at=None, query_attempts=attempts, last_error=error or payment.last_error
                           ).where(Payment.id == payment.id).execute()
            event("query_stopped", payment, f"no final answer after {int(age)} s")
            return
        interval = min(p.query_interval * (2 ** min(attempts - 1, 10)), p.query_max_interval)
        if age > p.prompt_lifetime:
            interval = max(interval, p.query_max_interval)
        Payment.update(next_query_at=now + interval, query_attempts=attempts, last_error=error or payment.last_error
                       ).where(Payment.id == payment.id).execute()
        if age > p.prompt_lifetime:
            if Payment.update(status="timeout", result_desc=NO_ANSWER, resolved_by="timeout",
                              completed_at=now).where(Payment.id == payment.id, Payment.status == "pending").execute():
                event("timeout", payment, f"no final answer {int(age)} s after the push; still checking for a late payment")
                log.info("payment %s timed out (still queried for a late success)", payment.checkout_request_id,
                         extra=_ids(payment.id, payment.checkout_request_id))
                if self.metrics:
                    self.metrics.payment_final("timeout")

    def _retry_stranded(self, now: float) -> None:
        """Callbacks stored but never processed (a crash in between) are processed now, and so
        are "unmatched" ones whose payment has turned up since: a callback can be matched in the
        instant between Daraja accepting our push and our commit of its CheckoutRequestID, after
        :meth:`_push` looked for early callbacks."""
        stored = Callback.select(Callback.id).where(Callback.state == "received", Callback.received_at < now - 2)
        late = (Callback.select(Callback.id).join(Payment, on=(Callback.checkout_request_id ==
                                                               Payment.checkout_request_id))
                .where(Callback.state == "unmatched", Payment.status.in_(OPEN_STATES + ("timeout",))))
        # unknown CheckoutRequestIDs from the seed path with a stranded payment to match: asked again (see _adopt)
        unverified = Callback.select(Callback.id).where(Callback.state == "unverified",
                                                         Callback.processed_at < now - self.policy.query_interval)
        for cb in list(stored.limit(100)) + list(late.limit(100)) + list(unverified.limit(5)):
            try:
                self.process_callback(cb.id)
            except Exception as exc:  # noqa: BLE001 - one bad body must not block the others for ever
                # its payment is still settled by the STK query; the body stays stored for the owner
                log.exception("callback %s cannot be processed; set aside", cb.id)
                Callback.update(state="error", note=f"{type(exc).__name__}: {exc}"[:500],
                                processed_at=clock.now()).where(Callback.id == cb.id).execute()
                if self.metrics:
                    self.metrics.callback("error")

    def client_for(self, site: str) -> DarajaClient:
        """The Daraja client of ``site``'s M-Pesa account (a venue no longer configured: the
        default account's; its queries fail and say so, nothing is granted on a guess)."""
        return self.sites.get(site, (self.client, ""))[0]

    # --- reading ------------------------------------------------------------------------
    def status(self, checkout_request_id: str) -> Payment | None:
        return Payment.get_or_none(Payment.checkout_request_id == checkout_request_id)


def on_sale(site: str) -> list[Package]:
    """The packages customers can buy at venue ``site``, in the order the splash page shows them."""
    return list(Package.select().where(Package.active, Package.sold_at([site]))
                .order_by(Package.position, Package.price))


def _ids(payment_id: int, checkout_request_id: str | None) -> dict:
    """A log record's ``extra``: the JSON log carries them as fields (see :mod:`hotspotd.logs`)."""
    return {"payment_id": payment_id, "checkout_request_id": checkout_request_id}


def _root_cause(exc: BaseException) -> str:
    """The first error of a chain: when SQLite rolls back by itself (disk full), peewee's own
    rollback then fails with "no transaction is active", which says nothing useful."""
    while exc.__context__ is not None and "no transaction is active" in str(exc):
        exc = exc.__context__
    return str(exc)


def _allowed(ip: str | None, networks: tuple) -> bool:
    try:
        addr = ipaddress.ip_address(ip or "")
    except ValueError:
        return False
    return any(addr in net for net in networks)


def _storable(value: Any, limit: int) -> str:
    """``value`` as text the database takes: at most ``limit`` characters, a lone surrogate (what
    JSON's ``"\\ud800"`` decodes to, which no UTF-8 column accepts) replaced by ``?``."""
    return str(value)[:limit].encode("utf-8", "replace").decode("utf-8")


def parse_callback(body: str | bytes) -> dict:
    """Read an stkCallback body (items by Name, never by position). Raises ValueError; every
    string it returns is short and storable."""
    try:
        data = json.loads(body)
        cb = data["Body"]["stkCallback"]
        checkout = cb["CheckoutRequestID"]
        code = cb["ResultCode"]
    except (ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"not an stkCallback body ({type(exc).__name__}: {exc})") from None
    if not isinstance(checkout, str) or not checkout or len(checkout) > 64 or _storable(checkout, 64) != checkout:
        raise ValueError("CheckoutRequestID missing or not a string")
    if isinstance(code, bool) or not isinstance(code, (int, str)) or len(str(code)) > 32:
        raise ValueError("ResultCode is not a number or code")
    out: dict[str, Any] = {"checkout_request_id": checkout, "result_code": _storable(code, 32).strip(),
                           "result_desc": _storable(cb.get("ResultDesc", ""), 500),
                           "merchant_request_id": _storable(cb.get("MerchantRequestID", ""), 64)}
    meta = cb.get("CallbackMetadata") or {}
    items = (meta.get("Item") or []) if isinstance(meta, dict) else None
    if not isinstance(items, list):
        raise ValueError("CallbackMetadata.Item is not a list")
    values = {i["Name"]: i.get("Value") for i in items if isinstance(i, dict) and isinstance(i.get("Name"), str)}
    amount = values.get("Amount")
    if amount is not None:
        try:
            amount_f = float(amount) if not isinstance(amount, bool) else math.nan
        except (TypeError, ValueError, OverflowError):
            raise ValueError(f"Amount {amount!r:.40} is not a number") from None
        if not math.isfinite(amount_f):
            raise ValueError(f"Amount {amount!r:.40} is not a number")
        out["amount"] = int(amount_f) if amount_f == int(amount_f) else amount_f
    for name, key, limit in (("MpesaReceiptNumber", "receipt", 32), ("PhoneNumber", "phone", 12),
                             ("TransactionDate", "transaction_date", 14)):
        if values.get(name) is not None:
            out[key] = _storable(values[name], limit)
    return out
