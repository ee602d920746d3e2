"""The Daraja simulator's C2B side: payments a customer makes from the M-Pesa menu, as
../shared/reference/daraja.md ("C2B, Pull Transactions, Transaction Status, Reversal in detail")
describes them.

* ``POST /mpesa/c2b/v1/registerurl`` and ``/mpesa/c2b/v2/registerurl`` (bearer token):
  ``{ShortCode, ResponseType: "Completed"|"Cancelled", ConfirmationURL, ValidationURL}``; the URLs
  obey the callback URL rules (no "mpesa", "safaricom", …, nor "query"). Re-registering replaces the
  URLs, as the sandbox lets one (production's one-time rule is the operator's to respect:
  ``hotspotd mpesa register-urls`` asks first).
* ``POST /simulator/phones/<2547…>/pay`` ``{"shortcode", "account", "amount"}`` (account empty for a
  till): the customer pays from the menu. With validation on (:attr:`C2BDesk.validation`, off by
  default as Safaricom has it) the validation URL is asked first and must answer ``ResultCode "0"``
  within ``validation_timeout`` (8 s); no answer lets the payment through only with ResponseType
  ``Completed``. Then the confirmation is posted, MSISDN as a SHA-256 of the number (v1) or masked
  like ``2547 ***** 126`` (v2), TransAmount as text (``"10.00"``), and M-Pesa's SMS with the receipt
  joins the phone's inbox. The answer says what the phone would show: ``{"ResultCode", "ResultDesc",
  "receipt"}``.
"""
from __future__ import annotations

import hashlib
import threading
from dataclasses import dataclass
from datetime import datetime, timezone

import requests

from ..daraja.client import NAIROBI
from .pull import Row, masked

VALIDATION_TIMEOUT = 8.0
REFUSED_URL_WORDS = ("mpesa", "m-pesa", "safaricom", "exec", "exe", "cmd", "sql", "query")


@dataclass(frozen=True)
class Registration:
    confirmation_url: str
    validation_url: str
    response_type: str
    version: str


def hashed(phone: str) -> str:
    """v1's form: the SHA-256 hex digest of the ``2547…`` number."""
    return hashlib.sha256(phone.encode()).hexdigest()


class C2BDesk:
    """Registered URLs per shortcode and the payments made from the menu."""

    def __init__(self):
        self._lock = threading.Lock()
        self.registrations: dict[str, Registration] = {}
        #: Safaricom's validation for the shortcode: off unless it enabled it
        self.validation = False
        self.validation_timeout = VALIDATION_TIMEOUT
        #: what was posted: (kind, url, body, HTTP status or None)
        self.posts: list[tuple[str, str, dict, int | None]] = []
        self._ledger: list = []

    def register(self, body: dict, version: str) -> tuple[int, dict]:
        shortcode = str(body.get("ShortCode") or "").strip()
        response_type = str(body.get("ResponseType") or "")
        urls = [str(body.get("ConfirmationURL") or ""), str(body.get("ValidationURL") or "")]
        if not shortcode.isdigit():
            return 400, _error("400.002.02", "Bad Request - Invalid ShortCode")
        if response_type not in ("Completed", "Cancelled"):
            return 400, _error("400.002.02", "Bad Request - Invalid ResponseType")
        for name, url in zip(("ConfirmationURL", "ValidationURL"), urls):
            if not url.startswith(("http://", "https://")) or any(w in url.lower() for w in REFUSED_URL_WORDS):
                return 400, _error("400.002.02", f"Bad Request - Invalid {name}")
        with self._lock:
            self.registrations[shortcode] = Registration(urls[0], urls[1], response_type, version)
        return 200, {"OriginatorCoversationID": "", "ConversationID": "", "ResponseCode": "0",
                     "ResponseDescription": "Success"}

    def pay(self, phone: str, body: dict, receipt: str, business: str, now: float) -> tuple[int, dict, dict | None]:
        """The customer pays; ``(status, answer, sms)`` where ``sms`` is M-Pesa's confirmation
        message for the inbox (None when the payment did not go through)."""
        shortcode = str(body.get("shortcode") or "").strip()
        account = str(body.get("account") or "").strip()
        try:
            amount = int(body.get("amount"))
        except (TypeError, ValueError):
            return 400, {"ResultCode": "1", "ResultDesc": "amount must be whole shillings"}, None
        if not shortcode.isdigit() or amount < 1:
            return 400, {"ResultCode": "1", "ResultDesc": "shortcode and a positive amount, please"}, None
        with self._lock:
            reg = self.registrations.get(shortcode)
            validation = self.validation
        kind = "Pay Bill" if account else "Buy Goods"
        stamp = datetime.fromtimestamp(now, timezone.utc).astimezone(NAIROBI)
        fields = {"TransactionType": kind, "TransID": receipt, "TransTime": stamp.strftime("%Y%m%d%H%M%S"),
                  "TransAmount": f"{amount:.2f}", "BusinessShortCode": shortcode, "BillRefNumber": account,
                  "InvoiceNumber": "", "OrgAccountBalance": "", "ThirdPartyTransID": "",
                  "MSISDN": hashed(phone) if reg is None or reg.version == "v1" else masked(phone),
                  "FirstName": "JOHN", "MiddleName": "", "LastName": ""}
        if reg is not None and validation:
            verdict = self._post("validation", reg.validation_url, fields, self.validation_timeout)
            code = str((verdict or {}).get("ResultCode", "")) if verdict is not None else None
            if code is None and reg.response_type == "Cancelled" or code not in (None, "0"):
                return 200, {"ResultCode": code or "1", "ResultDesc": "The payment was declined by the business",
                             "receipt": None}, None
        with self._lock:
            self._ledger.append(Row(receipt, now, phone, kind, account, amount, shortcode, business))
        if reg is not None:
            self._post("confirmation", reg.confirmation_url, fields, 10.0)
        local = stamp
        when = f"{local.day}/{local.month}/{local.strftime('%y')} at {local.strftime('%I:%M %p').lstrip('0')}"
        what = (f"Ksh{amount:,.2f} sent to {business} for account {account}" if account
                else f"Ksh{amount:,.2f} paid to {business}.")
        sms = {"from": "MPESA", "text": f"{receipt} Confirmed. {what} on {when}. Transaction cost, Ksh0.00.",
               "receipt": receipt, "amount": amount}
        return 200, {"ResultCode": "0", "ResultDesc": "The service request is processed successfully.",
                     "receipt": receipt}, sms

    def ledger(self) -> list:
        """The payments made from the menu (pull.Row), whether anybody was told of them or not."""
        with self._lock:
            return list(self._ledger)

    def _post(self, kind: str, url: str, body: dict, timeout: float) -> dict | None:
        try:
            resp = requests.post(url, json=body, timeout=(3.0, timeout))
        except requests.RequestException:
            with self._lock:
                self.posts.append((kind, url, body, None))
            return None
        with self._lock:
            self.posts.append((kind, url, body, resp.status_code))
        try:
            answer = resp.json()
        except ValueError:
            return None
        return answer if isinstance(answer, dict) else None


def _error(code: str, message: str) -> dict:
    return {"requestId": "", "errorCode": code, "errorMessage": message}
