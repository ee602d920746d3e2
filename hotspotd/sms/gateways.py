"""The SMS gateways hotspotd sends through: Africa's Talking (its ``africastalking`` SDK) and a
Kenyan bulk-SMS reseller's HTTP API described by a template (``[sms] provider = "http"``).

``send(phone, text)`` returns the gateway's message id, or raises :class:`SmsFailed`, whose
``permanent`` says whether trying again can help. What each gateway answers (public evidence;
the simulator, :mod:`hotspotd.testing.sms_gateway`, answers the same):

* Africa's Talking, ``POST /version1/messaging`` (form: username, to, message, from): HTTP 201 and
  ``{"SMSMessageData": {"Message", "Recipients": [{"statusCode", "number", "status", "cost",
  "messageId"}]}}``; the status of each recipient is in ``statusCode``, not in the HTTP status
  (rapidpro/rapidpro#359): 100 Processed, 101 Sent, 102 Queued are sent; 500 InternalServerError
  and 501 GatewayError are worth another try; 401 RiskHold, 402 InvalidSenderId, 403
  InvalidPhoneNumber, 404 UnsupportedNumberType, 405 InsufficientBalance, 406 UserInBlacklist, 407
  CouldNotRoute, 409 DoNotDisturbRejection, 502 RejectedByGateway are not. No valid recipient at all:
  an empty ``Recipients`` and the reason in ``Message``. A wrong key: HTTP 401, text "The supplied
  authentication is invalid". The SDK returns a ``dict`` only for a Content-Type of exactly
  ``application/json`` (else the body as text) and raises ``AfricasTalkingException(body)`` for any
  other HTTP status.
* A reseller (Advanta's documented API as the example): HTTP 200 whatever happened, the outcome in
  the body (``"response-code": 200`` sent; 1006 "Invalid credentials", ...): ``http_success`` is
  the pattern that says "sent".
"""
from __future__ import annotations

import json
import logging
import re
from typing import Protocol
from urllib.parse import quote, quote_plus

import requests

log = logging.getLogger(__name__)

#: Africa's Talking's per-recipient status codes
AT_SENT = {100, 101, 102}
AT_TRANSIENT = {500, 501}
#: the placeholders of an HTTP template
PLACEHOLDER = re.compile(r"\{(phone|phone_plus|phone_local|message|sender_id|api_key|username)\}")


class SmsFailed(Exception):
    """A send that did not go out: ``permanent`` when trying again cannot help (a number the
    gateway refuses), not for a gateway that is down or misconfigured (the owner may fix it)."""

    def __init__(self, reason: str, permanent: bool = False):
        super().__init__(reason)
        self.permanent = permanent


class Gateway(Protocol):
    name: str

    def send(self, phone: str, text: str) -> str:
        """Send ``text`` to ``phone`` (``2547…``); the gateway's message id. Raises :class:`SmsFailed`."""


class AfricasTalking:
    """Africa's Talking through its SDK. ``username = "sandbox"`` is its sandbox (the SDK picks
    the host by the username); ``base_url`` points the SDK elsewhere (the simulator)."""
    name = "africastalking"

    def __init__(self, username: str, api_key: str, sender_id: str = "", base_url: str = "", timeout: float = 10.0):
        from africastalking.SMS import SMSService
        self._service = SMSService(username, api_key)
        if base_url:
            # the SDK has no setting for its host: _baseUrl is private (pinned in tests/test_library_internals.py)
            self._service._baseUrl = base_url.rstrip("/") + "/version1"
        self.sender_id = sender_id or None
        self.timeout = (min(3.05, timeout), timeout)

    @property
    def url(self) -> str:
        return self._service._baseUrl + "/messaging"

    def send(self, phone: str, text: str) -> str:
        from africastalking.Service import AfricasTalkingException
        try:
            answer = self._service.send(text, ["+" + phone], sender_id=self.sender_id, timeout=self.timeout)
        except ValueError as exc:                # the SDK's own check of the number
            raise SmsFailed(str(exc), permanent=True) from None
        except AfricasTalkingException as exc:   # an HTTP status other than 2xx: the body is the reason
            raise SmsFailed(f"Africa's Talking refused the request: {str(exc)[:200]}") from None
        except requests.RequestException as exc:
            raise SmsFailed(f"Africa's Talking unreachable: {type(exc).__name__}") from None
        if isinstance(answer, str):              # JSON under another Content-Type
            try:
                answer = json.loads(answer)
            except ValueError:
                raise SmsFailed(f"Africa's Talking answered something else than JSON: {answer[:120]!r}") from None
        try:
            data = answer["SMSMessageData"]
            recipients = data.get("Recipients") or []
        except (KeyError, TypeError, AttributeError):
            raise SmsFailed(f"Africa's Talking answered without SMSMessageData: {str(answer)[:120]}") from None
        if not recipients:
            raise SmsFailed(f"Africa's Talking sent nothing: {data.get('Message')}", permanent=True)
        first = recipients[0]
        code = first.get("statusCode")
        if code in AT_SENT:
            return str(first.get("messageId") or "")
        raise SmsFailed(f"Africa's Talking: {first.get('status')} ({code})", permanent=code not in AT_TRANSIENT)


class HttpTemplate:
    """A reseller's send API as ``[sms]`` describes it: URL, method, body template, headers and
    the pattern of a sent answer. Placeholders are escaped for where they stand."""
    name = "http"

    def __init__(self, url: str, method: str = "POST", body: str = "", content_type: str = "json",
                 headers: tuple[str, ...] = (), success: str = "", *, api_key: str = "", username: str = "",
                 sender_id: str = "", timeout: float = 10.0):
        self.url, self.method, self.body, self.content_type = url, method, body, content_type
        self.headers = tuple(headers)
        self.success = re.compile(success) if success else None
        self.values = {"api_key": api_key, "username": username, "sender_id": sender_id}
        self.timeout = timeout
        self._session = requests.Session()

    def _fill(self, template: str, values: dict[str, str], escape) -> str:
        return PLACEHOLDER.sub(lambda m: escape(values[m[1]]), template)

    def send(self, phone: str, text: str) -> str:
        values = dict(self.values, phone=phone, phone_plus="+" + phone, phone_local="0" + phone[3:], message=text)
        url = self._fill(self.url, values, lambda v: quote(v, safe=""))
        headers = {}
        for line in self.headers:
            name, _, value = line.partition(":")
            headers[name.strip()] = self._fill(value.strip(), values, str)
        data = None
        if self.method == "POST":
            if self.content_type == "json":
                data = self._fill(self.body, values, lambda v: json.dumps(v)[1:-1]).encode()
                headers.setdefault("Content-Type", "application/json")
            else:
                data = self._fill(self.body, values, quote_plus).encode()
                headers.setdefault("Content-Type", "application/x-www-form-urlencoded")
        try:
            resp = self._session.request(self.method, url, data=data, headers=headers, timeout=self.timeout)
        except requests.RequestException as exc:
            raise SmsFailed(f"SMS gateway unreachable: {type(exc).__name__}") from None
        body = resp.text[:2000]
        if not 200 <= resp.status_code < 300:
            raise SmsFailed(f"SMS gateway answered HTTP {resp.status_code}: {body[:200]}")
        if self.success and not self.success.search(body):
            # resellers answer 200 to every request: the body says a number or a key was refused
            raise SmsFailed(f"SMS gateway did not send it: {body[:200]}", permanent=True)
        found = re.search(r'"(?:messageid|messageId|message_id|id)"\s*:\s*"?([\w.-]{1,64})', body)
        return found[1] if found else ""


def from_config(sms, simulator_url: str | None = None) -> Gateway | None:
    """The gateway ``[sms]`` describes, or None when SMS are off. ``simulator_url``: the built-in
    simulator's address, used for Africa's Talking when ``base_url`` is empty (the simulator
    environment)."""
    if sms.provider == "africastalking":
        base = sms.base_url or (simulator_url or "")
        key = sms.api_key or ("simulator" if simulator_url and not sms.base_url else "")
        return AfricasTalking(sms.username, key, sms.sender_id, base, sms.timeout_seconds)
    if sms.provider == "http":
        return HttpTemplate(sms.http_url, sms.http_method, sms.http_body, sms.http_content_type,
                            tuple(sms.http_headers), sms.http_success, api_key=sms.api_key, username=sms.username,
                            sender_id=sms.sender_id, timeout=sms.timeout_seconds)
    return None
