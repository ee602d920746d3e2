"""The M-Pesa statement: what Safaricom recorded on the shortcode (Pull Transactions, the last 48
hours), set against what hotspotd knows (../shared/reference/daraja.md, "Pull Transactions").

Each line is kept once (:class:`~hotspotd.storage.models.MpesaTransaction`) with what it did (an
``unmatched`` one is asked again at each pull while Pull lists it):

* a payment already has its receipt: ``known``;
* a payment the STK query settled has none (the query carries no receipt): it gets the line's
  (``receipt_added``), so its customer's SMS code works in "Already paid?" and the owner can match
  the statement;
* a payment nobody told hotspotd of (killed between Daraja taking the push and our commit of its
  CheckoutRequestID, and its one callback lost too): found by phone, amount and time and settled
  (``settled``): the customer who paid gets the time;
* a payment from the M-Pesa menu whose confirmation never came: passed to :mod:`hotspotd.c2b`
  (``c2b``);
* anything else: ``unmatched``, for the owner.

A phone matches only when exactly one payment fits (a masked number can fit several): a guess
never moves money or time.
"""
from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal, InvalidOperation

from . import c2b, clock
from .daraja.client import NAIROBI, DarajaError
from .payments import event
from .storage.models import C2BTransaction, MpesaTransaction, Payment

log = logging.getLogger(__name__)

#: how far back each pull reaches (Pull keeps 48 hours)
WINDOW = timedelta(hours=48)
#: a line belongs to a payment made this long before it at most (its prompt's life) or after (clocks)
BEFORE, AFTER = 600.0, 120.0
MENU_KINDS = ("pay bill", "buy goods", "paybill", "buygoods", "customer pay bill", "customer buy goods")


@dataclass(frozen=True)
class Line:
    trans_id: str
    at: float
    amount: int | None
    msisdn: str
    kind: str
    bill_ref: str


def parse(row: dict) -> Line | None:
    """One Pull row, read defensively (numbers or text, dates in the forms seen); None if unusable."""
    trans_id = str(row.get("transactionId") or "").strip().upper()
    if not re.fullmatch(r"[A-Z0-9]{6,32}", trans_id):
        return None
    at = _when(str(row.get("trxDate") or ""))
    if at is None:
        return None
    try:
        amount = Decimal(str(row.get("amount")))
        whole = int(amount) if amount.is_finite() and amount == amount.to_integral_value() and 0 < amount <= 10**7 \
            else None
    except InvalidOperation:
        whole = None
    return Line(trans_id, at, whole, str(row.get("msisdn") or row.get("sender") or "")[:80],
                str(row.get("transactiontype") or "")[:32], str(row.get("billreference") or "")[:32])


def _when(text: str) -> float | None:
    text = text.strip()
    for fmt in ("%Y-%m-%dT%H:%M:%S.%f%z", "%Y-%m-%dT%H:%M:%S%z", "%Y-%m-%d %H:%M:%S", "%Y%m%d%H%M%S"):
        try:
            stamp = datetime.strptime(text, fmt)
        except ValueError:
            continue
        return (stamp if stamp.tzinfo else stamp.replace(tzinfo=NAIROBI)).timestamp()
    return None


class StatementService:
    """Pulls each account's statement and matches it (``pull``, the scheduler's ``pull`` job)."""

    def __init__(self, payments, c2b_service, accounts: dict[str, str]):
        """``accounts``: shortcode → the venue whose Daraja client pulls it."""
        self.payments = payments
        self.c2b = c2b_service
        self.accounts = accounts

    def pull(self, now: float | None = None) -> dict[str, int]:
        """Pull every account's last 48 hours and take each new line; counts by state."""
        now = clock.now() if now is None else now
        counts: dict[str, int] = {}
        # a minute ahead: Safaricom's clock and ours differ, and the window is to the second
        end = datetime.fromtimestamp(now + 60, NAIROBI)
        for shortcode, site in self.accounts.items():
            try:
                rows = self.payments.client_for(site).pull_query(shortcode, end - WINDOW, end)
            except DarajaError as exc:
                log.warning("Pull Transactions of %s failed: %s (hotspotd mpesa register-pull registers it)",
                            shortcode, exc)
                continue
            for row in rows:
                state = self.take(row, shortcode, site, now)
                if state:
                    counts[state] = counts.get(state, 0) + 1
        if any(k != "known" for k in counts):
            log.info("M-Pesa statement: %s", ", ".join(f"{n} {k}" for k, n in sorted(counts.items())))
        return counts

    def take(self, row: dict, shortcode: str, site: str, now: float) -> str | None:
        """Match one row; its state, or None when it was matched before or is unusable. A line
        that matched nothing is asked again at each pull while Pull still lists it: the payment it
        belongs to may not have been settled yet when it was first seen."""
        line = parse(row)
        if line is None:
            return None
        seen = MpesaTransaction.get_or_none(MpesaTransaction.trans_id == line.trans_id)
        if seen is not None and seen.state != "unmatched":
            return None
        payment, state, note = self._match(line, shortcode, site)
        if seen is not None:
            if state == "unmatched":
                return None
            MpesaTransaction.update(state=state, payment=payment, note=note, pulled_at=now).where(
                MpesaTransaction.id == seen.id, MpesaTransaction.state == "unmatched").execute()
            return state
        try:
            MpesaTransaction.create(trans_id=line.trans_id, at=line.at, amount=line.amount or 0, msisdn=line.msisdn,
                                    kind=line.kind, bill_ref=line.bill_ref, shortcode=shortcode, site=site,
                                    payment=payment, state=state, pulled_at=now, note=note)
        except Exception:  # noqa: BLE001 - another process took the same line meanwhile
            return None
        return state

    def _match(self, line: Line, shortcode: str, site: str) -> tuple[int | None, str, str | None]:
        known = Payment.get_or_none(Payment.receipt == line.trans_id)
        if known is not None:
            return known.id, "known", None
        if C2BTransaction.select().where(C2BTransaction.trans_id == line.trans_id).exists():
            return None, "known", "a payment from the menu hotspotd was told of"
        if line.amount is None:
            return None, "unmatched", "not a whole amount"
        near = Payment.select().where(Payment.amount == line.amount, Payment.site == site,
                                      Payment.created_at.between(line.at - BEFORE, line.at + AFTER),
                                      Payment.resolved_by.is_null() | (Payment.resolved_by != "c2b"))
        # a payment the STK query settled: it has no receipt
        unreceipted = [p for p in near.where(Payment.status == "success", Payment.receipt.is_null())
                       if c2b.phone_matches(line.msisdn, p.phone)]
        if len(unreceipted) == 1:
            p = unreceipted[0]
            if Payment.update(receipt=line.trans_id).where(Payment.id == p.id, Payment.receipt.is_null()).execute():
                event("receipt", p, f"receipt {line.trans_id} from the M-Pesa statement (the STK query had settled it)",
                      p.mac)
                return p.id, "receipt_added", None
        # a payment whose push's answer, and callback, never reached hotspotd (no CheckoutRequestID to
        # ask by), or that timed out unanswered; a pending one is its callback's and query's to settle
        unsettled = [p for p in near.where((Payment.status == "timeout") |
                                           (Payment.status.in_(("created", "error")) &
                                            Payment.checkout_request_id.is_null()))
                     if c2b.phone_matches(line.msisdn, p.phone)]
        if len(unsettled) == 1:
            p = unsettled[0]
            if self.payments.apply_result(p.id, "0", "found in the M-Pesa statement", via="statement",
                                          receipt=line.trans_id):
                event("statement", p, f"paid at M-Pesa ({line.trans_id}) and found in the statement", p.mac)
                return p.id, "settled", None
        if line.kind.strip().lower() in MENU_KINDS:
            body = json.dumps({"TransactionType": line.kind, "TransID": line.trans_id,
                               "TransTime": datetime.fromtimestamp(line.at, NAIROBI).strftime("%Y%m%d%H%M%S"),
                               "TransAmount": str(line.amount), "BusinessShortCode": shortcode,
                               "BillRefNumber": line.bill_ref, "MSISDN": line.msisdn})
            tx = self.c2b.confirmation(body.encode(), "", None, trusted=True)
            return tx.payment_id, "c2b", f"C2B {tx.state}"
        return None, "unmatched", None


def day_lines(day_start: float, day_end: float, site: str | None = None) -> list[MpesaTransaction]:
    """The statement lines of a Nairobi day (for the owner's statement)."""
    q = MpesaTransaction.select().where(MpesaTransaction.at >= day_start, MpesaTransaction.at < day_end)
    if site is not None:
        q = q.where(MpesaTransaction.site == site)
    return list(q.order_by(MpesaTransaction.at))


def total(lines: list[MpesaTransaction]) -> int:
    return sum(line.amount for line in lines)

