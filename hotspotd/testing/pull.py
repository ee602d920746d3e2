"""The Daraja simulator's Pull Transactions: the shortcode's M-Pesa transactions of the last 48
hours, as ../shared/reference/daraja.md ("C2B, Pull Transactions, Transaction Status, Reversal in
detail") describes them.

* ``POST /pulltransactions/v1/register`` ``{ShortCode, RequestType: "Pull", NominatedNumber,
  CallBackURL}`` (bearer token): ResponseCode ``1000`` registered, ``1001`` already registered.
* ``POST /pulltransactions/v1/query`` ``{ShortCode, StartDate, EndDate: "YYYY-MM-DD HH:MM:SS"
  (Nairobi), OffSetValue}``: the rows ``{transactionId, trxDate, msisdn, sender, transactiontype,
  billreference, amount, organizationname}`` of the window, oldest first, ``PAGE`` at a time from
  the offset; ResponseCode ``1001`` when there is none. A shortcode that never registered is
  refused. Choices where the reference is silent, said here: the envelope ``{ResponseRefID,
  ResponseCode, ResponseMessage, Response: [[rows]]}``, a page of 100 rows, trxDate as ISO 8601
  with the +03:00 offset, amount as text ("10.00"), msisdn masked like C2B v2 (``2547 *****
  126``), and a window wider than 48 hours refused.
"""
from __future__ import annotations

import secrets
import threading
from dataclasses import dataclass
from datetime import datetime, timedelta

from ..daraja.client import NAIROBI

PAGE = 100
WINDOW = timedelta(hours=48)


def masked(phone: str) -> str:
    """How Safaricom shows a payer's number now (C2B v2, the statement): ``2547 ***** 126``."""
    return f"{phone[:4]} ***** {phone[-3:]}"


@dataclass(frozen=True)
class Row:
    """One transaction on the shortcode."""
    transaction_id: str
    at: float                 # epoch seconds
    phone: str                # 2547…
    kind: str                 # "Pay Bill" | "Buy Goods" | "Pay Bill Online" (STK)
    bill_reference: str
    amount: int
    shortcode: str
    organization: str

    def as_json(self) -> dict:
        return {"transactionId": self.transaction_id,
                "trxDate": datetime.fromtimestamp(self.at, NAIROBI).isoformat(timespec="milliseconds"),
                "msisdn": masked(self.phone), "sender": masked(self.phone).replace(" ", ""),
                "transactiontype": self.kind, "billreference": self.bill_reference, "amount": f"{self.amount:.2f}",
                "organizationname": self.organization}


class PullDesk:
    def __init__(self):
        self._lock = threading.Lock()
        self.registrations: dict[str, dict] = {}

    def register(self, body: dict) -> tuple[int, dict]:
        shortcode = str(body.get("ShortCode") or "").strip()
        if not shortcode.isdigit() or body.get("RequestType") != "Pull" or not str(body.get("NominatedNumber") or ""):
            return 400, {"ResponseRefID": _ref(), "ResponseCode": "1002", "ResponseMessage": "Invalid request"}
        with self._lock:
            if shortcode in self.registrations:
                return 200, {"ResponseRefID": _ref(), "ResponseCode": "1001",
                             "ResponseMessage": "ShortCode already registered"}
            self.registrations[shortcode] = dict(body)
        return 200, {"ResponseRefID": _ref(), "ResponseCode": "1000", "ResponseMessage": "Success"}

    def query(self, body: dict, rows: list[Row]) -> tuple[int, dict]:
        shortcode = str(body.get("ShortCode") or "").strip()
        with self._lock:
            registered = shortcode in self.registrations
        if not registered:
            return 400, {"ResponseRefID": _ref(), "ResponseCode": "1003",
                         "ResponseMessage": "ShortCode not registered for Pull"}
        try:
            start = datetime.strptime(str(body.get("StartDate")), "%Y-%m-%d %H:%M:%S").replace(tzinfo=NAIROBI)
            end = datetime.strptime(str(body.get("EndDate")), "%Y-%m-%d %H:%M:%S").replace(tzinfo=NAIROBI)
            offset = int(str(body.get("OffSetValue", "0")))
        except ValueError:
            return 400, {"ResponseRefID": _ref(), "ResponseCode": "1002", "ResponseMessage": "Invalid date or offset"}
        if end < start or end - start > WINDOW or offset < 0:
            return 400, {"ResponseRefID": _ref(), "ResponseCode": "1002",
                         "ResponseMessage": "The window is at most 48 hours"}
        found = sorted((r for r in rows if r.shortcode == shortcode and start.timestamp() <= r.at < end.timestamp() + 1),
                       key=lambda r: (r.at, r.transaction_id))[offset:offset + PAGE]
        if not found:
            return 200, {"ResponseRefID": _ref(), "ResponseCode": "1001", "ResponseMessage": "No transactions found",
                         "Response": [[]]}
        return 200, {"ResponseRefID": _ref(), "ResponseCode": "1000", "ResponseMessage": "Success",
                     "Response": [[r.as_json() for r in found]]}


def _ref() -> str:
    return secrets.token_hex(8)
