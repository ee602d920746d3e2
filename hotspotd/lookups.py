"""M-Pesa codes hotspotd never saw, looked up with Transaction Status (../shared/reference/
daraja.md, "Transaction Status"): a customer types the code of their SMS into "Already paid?",
no payment, menu payment or statement line has it, so hotspotd asks M-Pesa. The answer comes
later, to the result URL (or the queue-timeout URL) under the secret callback path.

The device gets the time only when M-Pesa says the transaction is ``Completed``, credited to this
install's shortcode or till, for the price of a package sold at the venue, debited from the
number the customer typed, and nobody has claimed the code yet: then it is a payment like any
other (``resolved_by = "txn_status"``), made once (a receipt is unique).
"""
from __future__ import annotations

import json
import logging
import re
import secrets
from dataclasses import dataclass

import peewee as pw

from . import c2b, clock
from .daraja.client import DarajaError
from .payments import event
from .storage.models import C2BTransaction, Payment, ReceiptLookup, database

log = logging.getLogger(__name__)

#: an unanswered lookup is given up after this (the customer is told to try again)
ANSWER_SECONDS = 60
#: the portal's words for a refusal, by ``ReceiptLookup.reason``
NOT_FOUND = "not_found"              # M-Pesa has no such completed transaction
NOT_OURS = "not_ours"                # it went to another business
WRONG_PHONE = "wrong_phone"          # not from the number typed
NO_PACKAGE = "no_package"            # no package costs that amount
CLAIMED = "claimed"                  # someone claimed it already
UNAVAILABLE = "unavailable"          # M-Pesa did not answer


@dataclass(frozen=True)
class Initiator:
    name: str
    credential: str                  # the SecurityCredential


def result_parameters(result: dict) -> dict[str, str]:
    """``ResultParameters`` as ``{key: value}``, read defensively: a list or one item, values numbers
    or text or missing, keys spelled with spaces (daraja.md)."""
    params = (result.get("ResultParameters") or {}).get("ResultParameter") or []
    if isinstance(params, dict):
        params = [params]
    out: dict[str, str] = {}
    for item in params:
        if isinstance(item, dict) and "Key" in item:
            out[re.sub(r"\s+", "", str(item["Key"]))] = "" if item.get("Value") is None else str(item["Value"]).strip()
    return out


def _field(result: dict, name: str) -> str:
    for key, value in result.items():
        if re.sub(r"\s+", "", str(key)) == name:
            return "" if value is None else str(value)
    return ""


class LookupService:
    """Sends Transaction Status lookups and takes their answers."""

    def __init__(self, payments, c2b_service, initiator: Initiator | None, numbers: dict[str, tuple[str, bool]],
                 result_url: str, timeout_url: str, party_of=None):
        self.payments = payments
        self.c2b = c2b_service
        self.initiator = initiator
        self.numbers = numbers                 # shortcode or till → (site, is a till)
        #: site → (number, IdentifierType) M-Pesa is asked about (hotspotd.venues.Venues.party_of)
        self.party_of = party_of
        self.result_url, self.timeout_url = result_url, timeout_url

    @property
    def available(self) -> bool:
        return self.initiator is not None

    def worth_asking(self, receipt: str) -> bool:
        """Whether M-Pesa should be asked about ``receipt``: lookups are set up, it looks like an
        M-Pesa code, and hotspotd knows no payment with it (a known code typed with the wrong number
        is refused at once: M-Pesa would only say the same)."""
        if not (self.available and re.fullmatch(r"[A-Z0-9]{10}", receipt)):
            return False
        return not (Payment.select().where(Payment.receipt == receipt).exists()
                    or C2BTransaction.select().where(C2BTransaction.trans_id == receipt).exists())

    def ask(self, receipt: str, phone: str, mac: str, site: str) -> ReceiptLookup:
        """Start (or join) the lookup of ``receipt`` for this device; the row to watch."""
        now = clock.now()
        open_one = (ReceiptLookup.select().where(ReceiptLookup.receipt == receipt, ReceiptLookup.mac == mac,
                                                 ReceiptLookup.state == "asking",
                                                 ReceiptLookup.created_at > now - ANSWER_SECONDS).first())
        if open_one is not None:
            return open_one
        row = ReceiptLookup.create(receipt=receipt, phone=phone, mac=mac, site=site, created_at=now)
        party, identifier = self.party_of(site) if self.party_of else (None, "4")
        try:
            originator, conversation = self.payments.client_for(site).transaction_status(
                receipt, self.initiator.name, self.initiator.credential, self.result_url, self.timeout_url,
                occasion=f"lookup {row.id} {secrets.token_hex(4)}", party=party, identifier_type=identifier)
        except DarajaError as exc:
            log.warning("Transaction Status of %s could not be asked: %s", receipt, exc)
            self._finish(row.id, "error", UNAVAILABLE, str(exc))
            return ReceiptLookup.get_by_id(row.id)
        ReceiptLookup.update(originator_id=originator or None, conversation_id=conversation or None).where(
            ReceiptLookup.id == row.id).execute()
        event("lookup", None, f"Transaction Status asked for {receipt} (lookup {row.id})", mac, now)
        return ReceiptLookup.get_by_id(row.id)

    def status(self, lookup_id: int) -> ReceiptLookup | None:
        row = ReceiptLookup.get_or_none(ReceiptLookup.id == lookup_id)
        if row is not None and row.state == "asking" and clock.now() > row.created_at + ANSWER_SECONDS:
            self._finish(row.id, "timeout", UNAVAILABLE, "no answer from M-Pesa in time")
            row = ReceiptLookup.get_by_id(row.id)
        return row

    def answer(self, body: bytes, timed_out: bool = False) -> str:
        """A result (or queue time-out) posted by Daraja; the lookup's new state, or "unknown"."""
        try:
            result = json.loads(body).get("Result") or {}
        except (ValueError, AttributeError):
            return "unknown"
        if not isinstance(result, dict):
            return "unknown"
        ids = [v for v in (_field(result, "ConversationID"), _field(result, "OriginatorConversationID")) if v]
        row = (ReceiptLookup.select().where(ReceiptLookup.state == "asking",
                                            ReceiptLookup.conversation_id.in_(ids) |
                                            ReceiptLookup.originator_id.in_(ids)).first()) if ids else None
        if row is None:
            return "unknown"
        if timed_out:
            return self._finish(row.id, "timeout", UNAVAILABLE, "M-Pesa's queue timed out")
        code = _field(result, "ResultCode").strip()
        if code in ("2001", "8006"):      # outside STK: the initiator's credentials are wrong, or it is locked
            log.error("Transaction Status refused the initiator (ResultCode %s: %s): check [mpesa] initiator_name, "
                      "initiator_password and certificate", code, _field(result, "ResultDesc"))
            return self._finish(row.id, "error", UNAVAILABLE, f"ResultCode {code}: {_field(result, 'ResultDesc')}")
        params = result_parameters(result)
        if code != "0" or params.get("TransactionStatus", "").lower() != "completed":
            return self._finish(row.id, "refused", NOT_FOUND, f"ResultCode {code}: {_field(result, 'ResultDesc')}")
        credit = params.get("CreditPartyName", "")
        number = credit.split("-", 1)[0].strip()
        if number not in self.numbers or self.numbers[number][0] != row.site:
            return self._finish(row.id, "refused", NOT_OURS, f"credited to {credit!r}")
        debit = params.get("DebitPartyName", "").split("-", 1)[0].strip()
        if not c2b.phone_matches(debit, row.phone):
            return self._finish(row.id, "refused", WRONG_PHONE, "debited from another number")
        try:
            amount = int(float(params.get("Amount", "")))
        except ValueError:
            amount = None
        package = c2b.package_for(amount, row.site)
        if package is None:
            return self._finish(row.id, "refused", NO_PACKAGE, f"KES {params.get('Amount')} is no package's price")
        receipt = (params.get("ReceiptNo") or row.receipt).upper()
        return self._grant(row, receipt, package, amount)

    def _grant(self, row: ReceiptLookup, receipt: str, package, amount: int) -> str:
        try:
            return self._grant_once(row, receipt, package, amount)
        except pw.IntegrityError:        # another answer took the receipt between our check and our insert
            return self._finish(row.id, "refused", CLAIMED, "the code is claimed already")

    def _grant_once(self, row: ReceiptLookup, receipt: str, package, amount: int) -> str:
        now = clock.now()
        with database.atomic():
            taken = Payment.select().where(Payment.receipt == receipt).exists() or C2BTransaction.select().where(
                C2BTransaction.trans_id == receipt, C2BTransaction.state.in_(("granted", "claimed"))).exists()
            if taken:
                return self._finish(row.id, "refused", CLAIMED, "the code is claimed already")
            payment = self.payments.record_paid(phone=row.phone, amount=amount, package=package, mac=row.mac,
                                                receipt=receipt, site=row.site, via="txn_status",
                                                desc="confirmed by Transaction Status", now=now)
            event("lookup", payment, f"Transaction Status confirmed {receipt}: KES {amount} from the number typed",
                  row.mac, now)
            ReceiptLookup.update(state="granted", answered_at=now, payment=payment.id).where(
                ReceiptLookup.id == row.id).execute()
        log.info("Transaction Status confirmed %s; %s gets %s", receipt, row.mac, package.name)
        self.payments.after_paid(payment)
        return "granted"

    @staticmethod
    def _finish(lookup_id: int, state: str, reason: str, note: str) -> str:
        ReceiptLookup.update(state=state, reason=reason, note=note[:500], answered_at=clock.now()).where(
            ReceiptLookup.id == lookup_id, ReceiptLookup.state == "asking").execute()
        log.info("lookup %s: %s (%s)", lookup_id, state, note)
        return state
