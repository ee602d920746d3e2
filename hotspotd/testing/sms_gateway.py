"""The simulated SMS gateways, served by the Daraja simulator on its own address: what hotspotd
sends lands in the simulated phone's inbox (``GET /simulator/phones/<2547…>/messages``) beside
M-Pesa's confirmations. Two APIs, each as public evidence shows it (:mod:`hotspotd.sms.gateways`
cites it):

* Africa's Talking, ``POST /version1/messaging`` (form ``username``, ``to`` comma-separated
  ``+254…``, ``message``, ``from``; header ``apiKey``): HTTP 201, Content-Type exactly
  ``application/json`` (the SDK reads JSON only then), ``{"SMSMessageData": {"Message": "Sent to
  1/1 Total Cost: KES 0.8000", "Recipients": [{"statusCode": 101, "number", "status": "Success",
  "cost": "KES 0.8000", "messageId": "ATXid_…"}]}}``. A wrong username or key: HTTP 401, text/plain
  "The supplied authentication is invalid". No valid number: ``"Message": "InvalidPhoneNumber"`` and
  no recipients. The sender is ``from``, else ``AFRICASTKNG`` (Africa's Talking's shared sender ID;
  a choice where the evidence is thin).
* A reseller in Advanta's documented shape, ``GET|POST /api/services/sendsms/`` (``apikey``,
  ``partnerID``, ``message``, ``shortcode``, ``mobile``; JSON body or query): HTTP 200 always,
  ``{"responses": [{"response-code": 200, "response-description": "Success", "mobile", "messageid",
  "networkid": "1"}]}``; wrong credentials ``{"response-code": 1006, "response-description": "Invalid
  credentials"}``, a bad number 1003 "Invalid mobile number".

:meth:`SmsGateway.fail_next` makes the next sends fail as the gateway would when it is in trouble
(an HTTP status, or an Africa's Talking recipient status such as 500 InternalServerError).
"""
from __future__ import annotations

import json
import re
import secrets
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from urllib.parse import parse_qs

AT_PATH = "/version1/messaging"
RESELLER_PATH = re.compile(r"/api/services/sendsms/?")
AT_DEFAULT_SENDER = "AFRICASTKNG"
AT_STATUS = {100: "Processed", 101: "Success", 102: "Queued", 401: "RiskHold", 402: "InvalidSenderId",
             403: "InvalidPhoneNumber", 404: "UnsupportedNumberType", 405: "InsufficientBalance",
             406: "UserInBlacklist", 407: "CouldNotRoute", 409: "DoNotDisturbRejection",
             500: "InternalServerError", 501: "GatewayError", 502: "RejectedByGateway"}
KENYAN_MOBILE = re.compile(r"\+?254([17]\d{8})")


@dataclass(frozen=True)
class Raw:
    """A reply that is not the simulator's usual JSON: its own body and Content-Type."""
    body: bytes
    content_type: str


@dataclass(frozen=True)
class Sms:
    phone: str        # 2547…
    sender: str
    text: str
    at: float         # epoch seconds
    receipt: str | None = None     # M-Pesa's own confirmations carry these
    amount: int | None = None

    def as_message(self) -> dict:
        return {"from": self.sender, "text": self.text, "receipt": self.receipt, "amount": self.amount,
                "at": datetime.fromtimestamp(self.at, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")}


class SmsGateway:
    """The gateways' state: the credentials they take, what was delivered, injected failures."""

    def __init__(self, username: str = "sandbox", api_key: str = "simulator", partner_id: str = "1",
                 reseller_key: str = "simulator"):
        self.username, self.api_key = username, api_key
        self.partner_id, self.reseller_key = partner_id, reseller_key
        self._lock = threading.Lock()
        self._delivered: list[Sms] = []
        self._fail: list[int | tuple[str, int]] = []

    def credentials(self, username: str, api_key: str) -> None:
        """The Africa's Talking app the simulated account has (the daemon's own, in the demo)."""
        with self._lock:
            self.username, self.api_key = username, api_key

    def fail_next(self, *failures: int | tuple[str, int]) -> None:
        """The next sends fail, one each: an HTTP status (``503``: the gateway is down) or
        ``("at", code)``: Africa's Talking answers 201 with that recipient statusCode."""
        with self._lock:
            self._fail.extend(failures)

    def inbox(self, phone: str) -> list[Sms]:
        with self._lock:
            return [m for m in self._delivered if m.phone == phone]

    @property
    def delivered(self) -> list[Sms]:
        with self._lock:
            return list(self._delivered)

    def handles(self, path: str) -> bool:
        return path == AT_PATH or bool(RESELLER_PATH.fullmatch(path))

    def handle(self, method: str, path: str, query: str, headers, raw: bytes) -> tuple[int, dict | Raw]:
        with self._lock:
            fail = self._fail.pop(0) if self._fail else None
        if isinstance(fail, int):
            return fail, Raw(b"Service Unavailable", "text/plain")
        if path == AT_PATH:
            return self._africastalking(method, headers, raw, fail[1] if fail else None)
        return self._reseller(method, query, headers, raw)

    def _africastalking(self, method: str, headers, raw: bytes, status_code: int | None) -> tuple[int, dict | Raw]:
        if method != "POST":
            return 405, Raw(b"HTTP method not allowed, supported methods: POST", "text/plain")
        form = {k: v[0] for k, v in parse_qs(raw.decode("utf-8", "replace")).items()}
        if form.get("username") != self.username or headers.get("apiKey") != self.api_key:
            return 401, Raw(b"The supplied authentication is invalid", "text/plain")
        numbers = [n.strip() for n in form.get("to", "").split(",") if n.strip()]
        valid = [n for n in numbers if KENYAN_MOBILE.fullmatch(n)]
        if not valid or not form.get("message"):
            return 201, _json({"SMSMessageData": {"Message": "InvalidPhoneNumber", "Recipients": []}})
        recipients = []
        for number in valid:
            code = status_code or 101
            sent = code in (100, 101, 102)
            if sent:
                self._deliver("254" + KENYAN_MOBILE.fullmatch(number)[1], form.get("from") or AT_DEFAULT_SENDER,
                              form["message"])
            recipients.append({"statusCode": code, "number": number, "status": AT_STATUS.get(code, "Failed"),
                               "cost": "KES 0.8000" if sent else "0",
                               "messageId": "ATXid_" + secrets.token_hex(16) if sent else "None"})
        sent_count = sum(1 for r in recipients if r["statusCode"] in (100, 101, 102))
        total = f"KES {0.8 * sent_count:.4f}" if sent_count else "0"
        return 201, _json({"SMSMessageData": {"Message": f"Sent to {sent_count}/{len(numbers)} Total Cost: {total}",
                                              "Recipients": recipients}})

    def _reseller(self, method: str, query: str, headers, raw: bytes) -> tuple[int, dict | Raw]:
        if method == "GET":
            fields = {k: v[0] for k, v in parse_qs(query).items()}
        else:
            try:
                fields = json.loads(raw) if raw else {}
            except ValueError:
                fields = {k: v[0] for k, v in parse_qs(raw.decode("utf-8", "replace")).items()}
            if not isinstance(fields, dict):
                fields = {}
        if str(fields.get("apikey")) != self.reseller_key or str(fields.get("partnerID")) != self.partner_id:
            return 200, {"response-code": 1006, "response-description": "Invalid credentials"}
        number = KENYAN_MOBILE.fullmatch(str(fields.get("mobile", "")).strip())
        if not number:
            return 200, {"response-code": 1003, "response-description": "Invalid mobile number"}
        phone = "254" + number[1]
        self._deliver(phone, str(fields.get("shortcode") or "SIMULATOR"), str(fields.get("message", "")))
        return 200, {"responses": [{"response-code": 200, "response-description": "Success", "mobile": int(phone),
                                    "messageid": str(secrets.randbelow(10**10)), "networkid": "1"}]}

    def _deliver(self, phone: str, sender: str, text: str) -> None:
        self.deliver(Sms(phone, sender, text, time.time()))

    def deliver(self, sms: Sms) -> None:
        """Put ``sms`` in its phone's inbox (the simulator's own M-Pesa messages come this way too)."""
        with self._lock:
            self._delivered.append(sms)


def _json(body: dict) -> Raw:
    return Raw(json.dumps(body).encode(), "application/json")
