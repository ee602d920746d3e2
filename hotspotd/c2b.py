"""Payments from the M-Pesa menu (C2B): for the customer whose STK prompt never comes.

The splash page offers "or pay from your M-Pesa menu": Pay Bill with the venue's paybill and the
device's own short account code (:func:`account_code`), or Buy Goods with its till. Safaricom
then asks hotspotd's validation URL (when it has validation on for the shortcode) and posts the
confirmation (../shared/reference/daraja.md, "C2B, Pull Transactions, Transaction Status,
Reversal in detail"). :func:`validate` answers the first; :func:`match` says which device the
second is for: the account code first; else (a till, a mistyped code) the phone, which C2B no
longer sends in the clear (v1: a SHA-256 of the ``2547…`` number, v2: masked like ``2547 *****
126``), compared with the numbers hotspotd already knows, with the amount and the time. What
matches no device is kept ``unmatched``: its customer claims it with the receipt code in
"Already paid?" (:func:`phone_matches` checks the number they type). The grant itself, with the
payment row and its hooks, belongs to :class:`hotspotd.payments.PaymentService`.
"""
from __future__ import annotations

import hashlib
import json
import logging
import re
import secrets
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

import peewee as pw

from . import access, clock
from .payments import event, on_sale
from .storage.models import DEFAULT_SITE, C2BTransaction, ManualAccount, Package, Payment, database

log = logging.getLogger(__name__)

#: letters and digits that cannot be misread for one another when typed into the M-Pesa menu
ALPHABET = "ACDEFGHJKMNPQRTUVWXY34679"
CODE_LENGTH = 6
#: C2B validation answers (daraja.md): accepted, and the rejection codes hotspotd gives
ACCEPTED = ("0", "Accepted")
INVALID_ACCOUNT = ("C2B00012", "Invalid Account Number")
INVALID_AMOUNT = ("C2B00013", "Invalid Amount")
INVALID_SHORTCODE = ("C2B00015", "Invalid ShortCode")
#: how far back a phone's last payment may lie for a manual payment from it to go to that device
PHONE_MATCH_SECONDS = 24 * 3600
MASKED = re.compile(r"(\d{3,6})\s*\*+\s*(\d{2,4})")


@dataclass(frozen=True)
class Confirmation:
    """The fields of a C2B validation or confirmation that hotspotd reads."""
    trans_id: str
    trans_time: str
    amount: int | None          # None: not a whole number of shillings
    shortcode: str
    bill_ref: str
    msisdn: str
    kind: str                   # "Pay Bill" | "Buy Goods" (TransactionType)


def parse(body: bytes | str) -> Confirmation:
    """Read a C2B body; ValueError when it is not one."""
    data = json.loads(body)
    if not isinstance(data, dict):
        raise ValueError("not a JSON object")

    def text(key: str, limit: int) -> str:
        value = data.get(key)
        return "" if value is None else str(value).strip()[:limit]

    trans_id = text("TransID", 32)
    if not re.fullmatch(r"[A-Za-z0-9]{6,32}", trans_id):
        raise ValueError("no TransID")
    try:
        amount = Decimal(str(data.get("TransAmount")))
        finite = amount.is_finite()
    except InvalidOperation:
        raise ValueError("TransAmount is not a number") from None
    # whole shillings within what M-Pesa moves at all; anything else matches no package
    whole = int(amount) if finite and amount == amount.to_integral_value() and 0 < amount <= 10_000_000 else None
    return Confirmation(trans_id.upper(), text("TransTime", 14), whole, text("BusinessShortCode", 16),
                        text("BillRefNumber", 32), text("MSISDN", 80), text("TransactionType", 16))


def normalize_account(text: str) -> str:
    """What a customer typed as the account: capitals, no spaces or dashes."""
    return re.sub(r"[\s-]", "", text or "").upper()


def account_code(mac: str, site: str = DEFAULT_SITE, now: float | None = None) -> str:
    """The device's account code at ``site`` (made once, kept)."""
    found = ManualAccount.get_or_none(ManualAccount.mac == mac, ManualAccount.site == site)
    if found is not None:
        return found.code
    now = clock.now() if now is None else now
    for _ in range(20):
        code = "".join(secrets.choice(ALPHABET) for _ in range(CODE_LENGTH))
        try:
            with database.atomic():
                ManualAccount.create(code=code, mac=mac, site=site, created_at=now)
            return code
        except pw.IntegrityError:       # the code is taken, or another request made this device's
            found = ManualAccount.get_or_none(ManualAccount.mac == mac, ManualAccount.site == site)
            if found is not None:
                return found.code
    raise RuntimeError("no free account code")


def manual_payment(payee, mac: str | None, site: str) -> dict | None:
    """How a device pays ``payee`` (config.Payee) from the M-Pesa menu: ``{"kind", "shortcode",
    "account"}``, the paybill with the device's own account code, or the till with none; None for
    a paybill when the device is unknown (there is no code to give it)."""
    if payee.kind == "paybill" and mac is None:
        return None
    account = account_code(mac, site) if payee.kind == "paybill" else ""
    return {"kind": payee.kind, "shortcode": payee.number, "account": account}


def device_of(bill_ref: str, site: str) -> str | None:
    """The device whose account code ``bill_ref`` is, at ``site``."""
    code = normalize_account(bill_ref)
    if not code:
        return None
    found = ManualAccount.get_or_none(ManualAccount.code == code, ManualAccount.site == site)
    return found.mac if found else None


def package_for(amount: int | None, site: str) -> Package | None:
    """The package on sale at ``site`` that costs ``amount`` (the first in the owner's order)."""
    if amount is None:
        return None
    return next((p for p in on_sale(site) if p.price == amount), None)


def validate(c: Confirmation, site: str | None, till: bool) -> tuple[str, str]:
    """Safaricom's question before it takes the money: ``(ResultCode, ResultDesc)``. A paybill
    payment needs a known account code, any needs the price of a package sold there."""
    if site is None:
        return INVALID_SHORTCODE
    if not till and device_of(c.bill_ref, site) is None:
        return INVALID_ACCOUNT
    if package_for(c.amount, site) is None:
        return INVALID_AMOUNT
    return ACCEPTED


def phone_matches(msisdn: str, phone: str) -> bool:
    """Whether C2B's ``MSISDN`` (v1 SHA-256 hex, v2 masked, or plain) is ``phone`` (``2547…``)."""
    msisdn = (msisdn or "").strip()
    if not msisdn or not phone:
        return False
    if re.fullmatch(r"[0-9a-fA-F]{64}", msisdn):
        return secrets.compare_digest(msisdn.lower(), hashlib.sha256(phone.encode()).hexdigest())
    masked = MASKED.fullmatch(msisdn)
    if masked:
        return phone.startswith(masked[1]) and phone.endswith(masked[2])
    return re.sub(r"\D", "", msisdn) == phone


def device_by_phone(c: Confirmation, site: str, now: float) -> tuple[str, str] | None:
    """``(mac, phone)`` of the one known phone the confirmation's MSISDN is, by its latest payment
    at ``site`` with a device: None when none or more than one number fits (a masked number can)."""
    recent = (Payment.select(Payment.phone, Payment.mac)
              .where(Payment.site == site, Payment.mac.is_null(False), Payment.phone != "",
                     Payment.created_at > now - PHONE_MATCH_SECONDS)
              .order_by(Payment.created_at.desc()))
    found: dict[str, str] = {}
    for row in recent:
        if row.phone not in found and phone_matches(c.msisdn, row.phone):
            found[row.phone] = row.mac
    if len(found) != 1:
        return None
    (phone, mac), = found.items()
    return mac, phone


class C2BService:
    """Takes Safaricom's C2B validations and confirmations and grants what they paid for.

    ``payments``: the :class:`~hotspotd.payments.PaymentService` whose hooks run after a grant
    (router login, receipt SMS); ``sites``: shortcode or till number → ``(site id, is_till)``.
    A confirmation is stored raw first (replays change nothing: one row per TransID), then
    settled; one from outside the callback allowlist grants nothing (``unverified``)."""

    def __init__(self, payments, sites: dict[str, tuple[str, bool]]):
        self.payments = payments
        self.sites = sites

    def validation(self, body: bytes) -> tuple[str, str]:
        try:
            c = parse(body)
        except ValueError:
            return INVALID_ACCOUNT
        site, till = self.sites.get(c.shortcode, (None, False))
        return validate(c, site, till)

    def confirmation(self, body: bytes, path: str, source_ip: str | None, trusted: bool = False) -> C2BTransaction:
        """Store and settle one confirmation; raises ValueError for a body that is not one.
        ``trusted``: it comes from Safaricom's own record (the statement hotspotd pulled), not
        from a post whose path and source must vouch for it."""
        c = parse(body)
        now = clock.now()
        site, _ = self.sites.get(c.shortcode, (None, False))
        with database.atomic():
            existing = C2BTransaction.get_or_none(C2BTransaction.trans_id == c.trans_id)
            if existing is not None:
                return existing                       # a replay: settled once
            tx = C2BTransaction.create(trans_id=c.trans_id, trans_time=c.trans_time or None, amount=c.amount or 0,
                                       shortcode=c.shortcode, bill_ref=c.bill_ref, msisdn=c.msisdn, kind=c.kind,
                                       site=site or DEFAULT_SITE, body=body.decode("utf-8", "replace")
                                       if isinstance(body, bytes) else body, received_at=now, state="received")
        doubt = None if trusted else self.payments.source_doubt(path, source_ip)
        if doubt:
            return self._mark(tx, "unverified", f"{doubt}: not granted")
        if site is None:
            return self._mark(tx, "refused", f"shortcode {c.shortcode} is not this install's")
        package = package_for(c.amount, site)
        if package is None:
            return self._mark(tx, "refused", f"KES {c.amount if c.amount is not None else '?'} is no package's price "
                              "here")
        mac, phone, how = device_of(c.bill_ref, site), "", f"account {normalize_account(c.bill_ref)}"
        if mac is None:
            by_phone = device_by_phone(c, site, now)
            if by_phone:
                (mac, phone), how = by_phone, "the payer's number"
        if mac is None:
            return self._mark(tx, "unmatched", "no device for its account or number: claimable with its receipt")
        self._grant(tx, package, mac, phone, how, "granted", now)
        log.info("C2B %s: KES %s granted to %s by %s", tx.trans_id, tx.amount, mac, how)
        return C2BTransaction.get_by_id(tx.id)

    def claim(self, receipt: str, phone: str, mac: str, site: str) -> bool:
        """"Already paid?" with the receipt of a payment from the M-Pesa menu that no device has:
        granted to ``mac`` when ``phone`` is the payer's number. False when there is none to claim."""
        if not (receipt.isascii() and receipt.isalnum()):      # M-Pesa receipts; other text goes to no SQL
            return False
        tx = C2BTransaction.get_or_none(C2BTransaction.trans_id == receipt.upper(), C2BTransaction.state == "unmatched",
                                        C2BTransaction.site == site)
        if tx is None or not phone_matches(tx.msisdn, phone):
            return False
        package = package_for(tx.amount, site)
        if package is None:
            return False
        return self._grant(tx, package, mac, phone, "its receipt, claimed", "claimed", clock.now())

    def already_paid(self, receipt: str, phone: str, mac: str, site: str):
        """"Already paid?": the session of ``receipt`` moves to ``mac`` (access.move_to_device); a
        receipt of a menu payment no device has yet is claimed first. Raises access.AccessError."""
        try:
            return access.move_to_device(receipt, phone, mac, site=site)
        except access.AccessError as exc:
            if exc.code != "receipt_not_found" or not self.claim(receipt, phone, mac, site):
                raise
        return access.move_to_device(receipt, phone, mac, site=site)

    def _grant(self, tx, package: Package, mac: str, phone: str, how: str, state: str, now: float) -> bool:
        with database.atomic():
            if not C2BTransaction.update(state=state).where(C2BTransaction.id == tx.id,
                                                            C2BTransaction.state.in_(("received", "unmatched"))
                                                            ).execute():
                return False                          # settled meanwhile (a claim racing a replay)
            payment = self.payments.record_paid(phone=phone, amount=tx.amount, package=package, mac=mac,
                                                receipt=tx.trans_id, site=tx.site, via="c2b",
                                                desc="paid from the M-Pesa menu (C2B)", now=now,
                                                transaction_date=tx.trans_time)
            C2BTransaction.update(payment=payment.id, note=f"for {mac} by {how}").where(
                C2BTransaction.id == tx.id).execute()
            event("c2b", payment, f"KES {tx.amount} from the M-Pesa menu ({tx.kind or 'C2B'}, receipt {tx.trans_id}), "
                  f"matched by {how}", mac, now)
        self.payments.after_paid(payment)
        return True

    @staticmethod
    def _mark(tx, state: str, note: str):
        C2BTransaction.update(state=state, note=note).where(C2BTransaction.id == tx.id).execute()
        return C2BTransaction.get_by_id(tx.id)
