"""A Daraja client: OAuth token, STK push, STK push query (shared/reference/daraja.md).

:class:`DarajaClient` is thread-safe: the portal's threads and the scheduler share one. Its token is
the consumer key's, shared through a :class:`~hotspotd.daraja.tokens.Tokens` with every other client
of the key (a new token may invalidate the previous one: daraja.md, "Hosts and auth"). Every
request has a timeout; nothing is retried except what the gateway refuses before a push reaches
M-Pesa: once after an "Invalid Access Token" (with the token someone else got meanwhile, or a new
one), and once, after a short pause, after a spike arrest ``500.003.02`` (daraja.md, "More result
and error codes"). A push is never repeated otherwise: Daraja has no idempotency, the same push twice
is two payments.

Failures raise a :class:`DarajaError` subclass, chosen on HTTP status and errorCode, never on text:
:class:`DarajaUnavailable` (no answer, 5xx, gateway fault; :class:`DarajaBusy` for the rate limits
``500.003.02``/``500.003.03``), :class:`DarajaRejected` (a business refusal: invalid field, wrong
credentials, subscriber locked), :class:`DarajaConfigError` (wrong path or method: the base URL is
wrong) and :class:`DarajaAuthError` (OAuth refused the consumer key and secret).
"""
from __future__ import annotations

import base64
import logging
import random
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any
from zoneinfo import ZoneInfo

import requests

from ..identifiers import mask_phone
from .tokens import Token, Tokens, account_of, credentials_of

log = logging.getLogger(__name__)

BASE_URLS = {"sandbox": "https://sandbox.safaricom.co.ke", "production": "https://api.safaricom.co.ke"}
NAIROBI = ZoneInfo("Africa/Nairobi")

#: errorCodes of a bad or expired bearer token on a business API.
INVALID_TOKEN_CODES = ("404.001.03", "401.003.01")
#: "No answer yet" from the query; also Daraja's code for business refusals of a push.
BUSY_CODE = "500.001.1001"
#: Seconds before a token's expiry at which it is refreshed (less for very short lifetimes).
REFRESH_MARGIN = 60.0
DEFAULT_TOKEN_LIFETIME = 3599
#: Rate limits: spike arrest (also "System is busy") and quota violation.
SPIKE_ARREST, QUOTA_VIOLATION = "500.003.02", "500.003.03"
#: Seconds (from, to) of the pause before the one retry of a call refused by spike arrest.
SPIKE_BACKOFF = (0.5, 1.5)
#: A path the gateway does not know (404.001.01) or a method it does not take there (405.001): the
#: base URL is wrong, never "still processing".
CONFIG_CODES = ("404.001.01", "405.001")


class DarajaError(Exception):
    """A Daraja call failed. ``code`` is Daraja's errorCode (or None), ``http_status`` the HTTP
    status (None when no answer came), ``message`` the technical text, ``reason`` a word for
    what the customer is told (``unavailable``, ``misconfigured``, ``rejected``, ``phone``,
    ``amount``, ``locked``: the boundaries' tables say it in words)."""

    default_reason = "rejected"

    def __init__(self, message: str, *, code: str | None = None, http_status: int | None = None,
                 reason: str | None = None):
        super().__init__(f"{code or http_status or '-'}: {message}")
        self.code, self.http_status, self.message = code, http_status, message
        self.reason = reason or self.default_reason


class DarajaUnavailable(DarajaError):
    """No usable answer: connection refused, timeout, 5xx, a gateway fault or a body that is not JSON."""

    default_reason = "unavailable"


class DarajaRejected(DarajaError):
    """Daraja understood the request and refused it (invalid field, wrong credentials, locked subscriber)."""


class DarajaBusy(DarajaUnavailable):
    """A rate limit refused the call (``500.003.02`` spike arrest, ``500.003.03`` quota violation):
    nothing reached M-Pesa; try again later."""

    default_reason = "busy"


class DarajaAuthError(DarajaError):
    """OAuth refused the consumer key and secret (Daraja answers an empty HTTP 400)."""

    default_reason = "misconfigured"


class DarajaConfigError(DarajaError):
    """Daraja does not know the path or method (``404.001.01``, ``405.001``, a 404 for OAuth): the
    configured base URL is wrong."""

    default_reason = "misconfigured"


@dataclass(frozen=True)
class PushAccepted:
    merchant_request_id: str
    checkout_request_id: str
    customer_message: str


@dataclass(frozen=True)
class QueryResult:
    """``pending`` means no final answer yet (ask again later); ``result_code`` is always text."""
    pending: bool
    result_code: str | None
    result_desc: str


def nairobi_timestamp(now: datetime | None = None) -> str:
    """``YYYYMMDDHHmmss`` in Africa/Nairobi time; a naive ``now`` is taken as UTC."""
    now = now or datetime.now(timezone.utc)
    if now.tzinfo is None:
        now = now.replace(tzinfo=timezone.utc)
    return now.astimezone(NAIROBI).strftime("%Y%m%d%H%M%S")


def stk_password(shortcode: str, passkey: str, timestamp: str) -> str:
    """The STK Password: base64(shortcode + passkey + timestamp)."""
    return base64.b64encode(f"{shortcode}{passkey}{timestamp}".encode()).decode("ascii")


class DarajaClient:
    """OAuth, STK push and STK query against ``base_url`` (see :data:`BASE_URLS`, or a simulator's url).

    ``party_b`` is the till number for ``CustomerBuyGoodsOnline``; PartyB is ``shortcode`` otherwise.
    A client made without ``session`` owns its own; :meth:`close` (or ``with``) releases it.
    ``tokens``: where the consumer key's token is shared (give every client of one process the same
    one; a :class:`~hotspotd.daraja.tokens.DatabaseTokens` shares it with other processes too);
    without it the client keeps its token to itself.
    """

    def __init__(self, base_url: str, consumer_key: str, consumer_secret: str, shortcode: str, passkey: str, *,
                 transaction_type: str = "CustomerPayBillOnline", party_b: str | None = None,
                 timeout: float = 10.0, session: requests.Session | None = None, tokens: Tokens | None = None,
                 spike_backoff: tuple[float, float] = SPIKE_BACKOFF):
        self.base_url = base_url.rstrip("/")
        self.shortcode = str(shortcode)
        self.transaction_type = transaction_type
        self.party_b = str(party_b) if party_b else self.shortcode
        self.timeout = timeout
        self._key, self._secret, self._passkey = consumer_key, consumer_secret, passkey
        self._session = session or requests.Session()
        self._owns_session = session is None
        self._tokens = tokens if tokens is not None else Tokens()
        self._account = account_of(self.base_url, consumer_key)
        self._credentials = credentials_of(self.base_url, consumer_key, consumer_secret)
        self.spike_backoff = spike_backoff

    def __repr__(self) -> str:
        return f"DarajaClient({self.base_url!r}, shortcode={self.shortcode!r})"

    def close(self) -> None:
        """Release pooled connections (only those of a session this client made)."""
        if self._owns_session:
            self._session.close()

    def __enter__(self) -> "DarajaClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # --- OAuth ---------------------------------------------------------------------------
    def token(self) -> str:
        """A valid access token of the consumer key: the shared one while it is fresh and came from
        this client's key and secret, else renewed (see :meth:`_renew`)."""
        token = self._tokens.cached(self._account)
        if self._usable(token):
            return token.value
        return self._renew(None)

    def check_credentials(self) -> None:
        """Prove the consumer key and secret without taking the key's token from anyone: a shared
        token fetched with these very credentials and not due for renewal is proof enough (nothing
        is fetched); otherwise a new one is fetched, and shared. Raises :class:`DarajaAuthError`
        (the key or secret is wrong), :class:`DarajaConfigError` or :class:`DarajaUnavailable`."""
        if not self._usable(self._tokens.load(self._account)):
            self._renew(None)

    def _usable(self, token: Token | None, refused: str | None = None) -> bool:
        return (token is not None and token.value != refused and token.credentials == self._credentials
                and time.time() < token.refresh_at)

    def _renew(self, refused: str | None) -> str:
        """A token other than ``refused`` (None: the current one is due for renewal). Looks at the
        shared token first: another thread or process may have replaced it already, and then no
        new one is fetched. One fetch at a time per key: this process's lock, and the row's lease
        between processes (a holder that dies lets it lapse)."""
        lease = self.timeout + 2.0
        with self._tokens.lock(self._account):
            deadline = time.monotonic() + lease
            while True:
                current = self._tokens.load(self._account)
                if self._usable(current, refused):
                    return current.value
                if self._tokens.claim(self._account, current.value if current else None, lease):
                    try:
                        token = self._fetch_token()
                    except BaseException:
                        self._tokens.abandon(self._account)
                        raise
                    self._tokens.save(self._account, token)
                    return token.value
                # another process is fetching: its token will do (meanwhile, the old one if alive)
                if (current is not None and refused is None and current.credentials == self._credentials
                        and time.time() < current.expires_at):
                    return current.value
                if time.monotonic() > deadline:
                    raise DarajaUnavailable("another process took too long to renew the access token")
                time.sleep(0.05)

    def _fetch_token(self) -> Token:
        resp = self._request("GET", "/oauth/v1/generate", "OAuth", params={"grant_type": "client_credentials"},
                             auth=(self._key, self._secret))
        body = _json(resp)
        if resp.status_code in (404, 405):
            # a path the gateway does not know: a fault body or 404.001.01; the base URL is wrong
            code, message = _envelope(body)
            log.error("Daraja OAuth: HTTP %s %s at %s (check the base URL)", resp.status_code, code, self.base_url)
            raise DarajaConfigError(f"{self.base_url} has no Daraja OAuth endpoint (HTTP {resp.status_code}"
                                    f"{' ' + code if code else ''}): check the base URL",
                                    code=code, http_status=resp.status_code)
        # 400/401/403 is Daraja refusing the key and secret (an empty 400); a gateway fault is not
        if resp.status_code in (400, 401, 403) and not (isinstance(body, dict) and "fault" in body):
            code, message = _envelope(body)
            log.error("Daraja OAuth refused: HTTP %s %s %s (check the consumer key and secret)",
                      resp.status_code, code, message)
            raise DarajaAuthError(message or "wrong consumer key or secret (OAuth refused them)",
                                  code=code, http_status=resp.status_code)
        token = body.get("access_token") if resp.status_code == 200 and isinstance(body, dict) else None
        if not token or not isinstance(token, str):
            code, message = _envelope(body)
            log.warning("Daraja OAuth gave no token: HTTP %s %s %s", resp.status_code, code, message)
            raise DarajaUnavailable(message or "OAuth answered without an access token",
                                    code=code, http_status=resp.status_code)
        try:
            lifetime = float(body.get("expires_in", DEFAULT_TOKEN_LIFETIME))  # a string on the wire
        except (TypeError, ValueError):
            lifetime = DEFAULT_TOKEN_LIFETIME
        now = time.time()
        log.debug("Daraja access token obtained, valid %.0f s", lifetime)
        return Token(token, now + lifetime - min(REFRESH_MARGIN, lifetime / 2), now + lifetime, self._credentials)

    # --- business calls --------------------------------------------------------------------
    def stk_push(self, phone: str, amount: int, callback_url: str, account_reference: str,
                 description: str) -> PushAccepted:
        """Send an STK push (the PIN prompt) to ``phone`` (``2547XXXXXXXX``) for ``amount`` whole shillings.

        Returns the ids Daraja gave the request; the result comes later by callback or query.
        ``account_reference`` is cut to 12 characters and ``description`` to 13.
        """
        if isinstance(amount, bool) or not isinstance(amount, int) or amount < 1:
            raise ValueError(f"amount must be a whole number of shillings >= 1, not {amount!r}")
        timestamp = nairobi_timestamp()
        payload = {
            "BusinessShortCode": self.shortcode,
            "Password": stk_password(self.shortcode, self._passkey, timestamp),
            "Timestamp": timestamp,
            "TransactionType": self.transaction_type,
            "Amount": amount,
            "PartyA": phone,
            "PartyB": self.party_b,
            "PhoneNumber": phone,
            "CallBackURL": callback_url,
            "AccountReference": account_reference[:12],
            "TransactionDesc": description[:13] or "Payment",
        }
        status, body = self._business("/mpesa/stkpush/v1/processrequest", payload, "STK push")
        if status != 200 or not isinstance(body, dict) or "fault" in body:
            raise _error(status, body, "STK push")
        if str(body.get("ResponseCode", "")).strip() != "0":
            code = str(body.get("ResponseCode"))
            message = str(body.get("ResponseDescription") or body.get("CustomerMessage") or "push not accepted")
            log.warning("STK push to %s not accepted: ResponseCode %s %s", mask_phone(phone), code, message)
            raise DarajaRejected(message, code=code, http_status=status)
        merchant, checkout = body.get("MerchantRequestID"), body.get("CheckoutRequestID")
        if not isinstance(checkout, str) or not checkout:
            raise DarajaUnavailable("accepted push without a CheckoutRequestID", http_status=status)
        # DEBUG: hotspotd.payments logs each step of a payment once, at INFO
        log.debug("STK push to %s for KES %s accepted: %s", mask_phone(phone), amount, checkout)
        return PushAccepted(str(merchant or ""), checkout, str(body.get("CustomerMessage") or ""))

    def register_c2b_urls(self, shortcode: str, confirmation_url: str, validation_url: str,
                          response_type: str = "Completed", version: str = "v2") -> str:
        """C2B Register URL (daraja.md, "C2B ... in detail"): where Safaricom sends the validation
        and confirmation of payments made from the M-Pesa menu to ``shortcode``. ``version``: v1
        (the payer's number as a SHA-256) or v2 (masked). In production it is one-time: changing
        the URLs takes two operators on the Daraja portal. Returns Daraja's ResponseDescription."""
        payload = {"ShortCode": shortcode, "ResponseType": response_type, "ConfirmationURL": confirmation_url,
                   "ValidationURL": validation_url}
        status, body = self._business(f"/mpesa/c2b/{version}/registerurl", payload, "C2B register URL")
        if status != 200 or not isinstance(body, dict) or "fault" in body:
            raise _error(status, body, "C2B register URL")
        if str(body.get("ResponseCode", "")).strip() not in ("0", "00000000"):
            raise DarajaRejected(str(body.get("ResponseDescription") or "not registered"),
                                 code=str(body.get("ResponseCode")), http_status=status)
        return str(body.get("ResponseDescription") or "Success")

    def transaction_status(self, receipt: str, initiator: str, credential: str, result_url: str, timeout_url: str,
                           occasion: str = "", party: str | None = None, identifier_type: str = "4") -> tuple[str, str]:
        """Ask M-Pesa about ``receipt`` (daraja.md, "Transaction Status"): of ``party`` (default this
        shortcode; a till with ``identifier_type`` "2"). The answer comes later to ``result_url`` (or
        ``timeout_url``). Returns (OriginatorConversationID, ConversationID)."""
        payload = {"Initiator": initiator, "SecurityCredential": credential, "CommandID": "TransactionStatusQuery",
                   "TransactionID": receipt, "PartyA": party or self.shortcode, "IdentifierType": identifier_type,
                   "ResultURL": result_url, "QueueTimeOutURL": timeout_url, "Remarks": "Already paid? lookup",
                   "Occasion": occasion[:100]}
        status, body = self._business("/mpesa/transactionstatus/v1/query", payload, "Transaction Status")
        if status != 200 or not isinstance(body, dict) or "fault" in body:
            raise _error(status, body, "Transaction Status")
        if str(body.get("ResponseCode", "")).strip() != "0":
            raise DarajaRejected(str(body.get("ResponseDescription") or "not accepted"),
                                 code=str(body.get("ResponseCode")), http_status=status)
        return str(body.get("OriginatorConversationID") or ""), str(body.get("ConversationID") or "")

    def pull_register(self, shortcode: str, nominated_number: str, callback_url: str) -> str:
        """Pull Transactions registration (daraja.md): once per shortcode; "already" is no error."""
        payload = {"ShortCode": shortcode, "RequestType": "Pull", "NominatedNumber": nominated_number,
                   "CallBackURL": callback_url}
        status, body = self._business("/pulltransactions/v1/register", payload, "Pull register")
        if status != 200 or not isinstance(body, dict) or "fault" in body:
            raise _error(status, body, "Pull register")
        code = str(body.get("ResponseCode", ""))
        if code not in ("1000", "1001"):            # registered, already registered
            raise DarajaRejected(str(body.get("ResponseMessage") or "not registered"), code=code, http_status=status)
        return str(body.get("ResponseMessage") or "Success")

    def pull_query(self, shortcode: str, start: datetime, end: datetime) -> list[dict]:
        """The shortcode's transactions from ``start`` to ``end`` (at most 48 hours), every page;
        each row as Daraja sends it (``transactionId``, ``trxDate``, ``msisdn``, ``amount``, …)."""
        rows: list[dict] = []
        for _ in range(1000):                      # bounded: 100 rows a page
            payload = {"ShortCode": shortcode, "StartDate": start.astimezone(NAIROBI).strftime("%Y-%m-%d %H:%M:%S"),
                       "EndDate": end.astimezone(NAIROBI).strftime("%Y-%m-%d %H:%M:%S"), "OffSetValue": str(len(rows))}
            status, body = self._business("/pulltransactions/v1/query", payload, "Pull query")
            if status != 200 or not isinstance(body, dict) or "fault" in body:
                raise _error(status, body, "Pull query")
            code = str(body.get("ResponseCode", ""))
            if code == "1001":                     # no (more) transactions
                return rows
            if code not in ("0", "1000"):
                raise DarajaRejected(str(body.get("ResponseMessage") or "Pull query refused"), code=code,
                                     http_status=status)
            page = body.get("Response") or []
            if page and isinstance(page[0], list):  # rows come wrapped in a list
                page = [row for group in page for row in group]
            page = [row for row in page if isinstance(row, dict)]
            if not page:
                return rows
            rows.extend(page)
        return rows

    def stk_query(self, checkout_request_id: str) -> QueryResult:
        """Ask for the state of a push. ``pending=True`` (ask again later) for "being processed",
        any 500.001.1001 and ResultCode 4999; otherwise the final ResultCode, as text."""
        timestamp = nairobi_timestamp()
        payload = {
            "BusinessShortCode": self.shortcode,
            "Password": stk_password(self.shortcode, self._passkey, timestamp),
            "Timestamp": timestamp,
            "CheckoutRequestID": checkout_request_id,
        }
        status, body = self._business("/mpesa/stkpushquery/v1/query", payload, "STK query")
        code, message = _envelope(body)
        if code == BUSY_CODE:
            # "Being processed", "does not Exist", an empty message, even after a final state: never final.
            log.debug("STK query %s: no answer yet (%s %s)", checkout_request_id, code, message)
            return QueryResult(True, None, message or "The transaction is being processed")
        if status != 200 or not isinstance(body, dict) or "fault" in body:
            raise _error(status, body, "STK query")
        result = body.get("ResultCode")
        desc = str(body.get("ResultDesc") or body.get("ResponseDescription") or "")
        if result is None or str(result).strip() == "":
            return QueryResult(True, None, desc)
        result_code = str(result).strip()
        if result_code == "4999":
            return QueryResult(True, result_code, desc)
        log.debug("STK query %s: ResultCode %s %s", checkout_request_id, result_code, desc)
        return QueryResult(False, result_code, desc)

    # --- plumbing ----------------------------------------------------------------------------
    def _business(self, path: str, payload: dict, what: str) -> tuple[int, Any]:
        """POST with the bearer token. The gateway's refusals before M-Pesa sees the call are
        retried: an "Invalid Access Token" with the key's newer token (another client's, or one
        fetched now: at most one fetch per call), a spike arrest once after a short pause."""
        token, refused, paused = self.token(), [], False
        while True:
            resp = self._request("POST", path, what, json=payload, headers={"Authorization": f"Bearer {token}"})
            body = _json(resp)
            code, message = _envelope(body)
            if _invalid_token(resp.status_code, body):
                refused.append(token)
                if len(refused) == 1:
                    log.info("Daraja refused the access token on %s (%s); renewing it, retrying", what, code)
                    token = self._renew(token)
                    continue
                newer = self._tokens.load(self._account)
                if len(refused) == 2 and self._usable(newer) and newer.value not in refused:
                    token = newer.value      # replaced again meanwhile, by someone else: no fetch of ours
                    continue
                # a fresh token refused too: Daraja's trouble, not the key and secret (OAuth took them)
                raise DarajaUnavailable(message or "Daraja refused a fresh access token", code=code,
                                        http_status=resp.status_code)
            if code == SPIKE_ARREST and not paused:
                paused = True
                pause = random.uniform(*self.spike_backoff)
                log.info("Daraja spike arrest on %s; retrying once in %.1f s", what, pause)
                time.sleep(pause)
                continue
            return resp.status_code, body

    def _request(self, method: str, path: str, what: str, **kwargs) -> requests.Response:
        try:
            return self._session.request(method, self.base_url + path, timeout=self.timeout, **kwargs)
        except requests.Timeout as exc:
            log.warning("Daraja %s: no answer within %s s", what, self.timeout)
            raise DarajaUnavailable(f"no answer within {self.timeout} s ({type(exc).__name__})") from exc
        except requests.RequestException as exc:
            log.warning("Daraja %s: cannot reach %s (%s)", what, self.base_url, type(exc).__name__)
            raise DarajaUnavailable(f"cannot reach {self.base_url} ({type(exc).__name__})") from exc


def _json(resp: requests.Response) -> Any:
    try:
        return resp.json()
    except ValueError:
        return None


def _envelope(body: Any) -> tuple[str | None, str]:
    """(errorCode, errorMessage) of Daraja's error envelope, or of a gateway ``fault``."""
    if not isinstance(body, dict):
        return None, ""
    if isinstance(body.get("fault"), dict):
        fault = body["fault"]
        detail = fault.get("detail") if isinstance(fault.get("detail"), dict) else {}
        return (str(detail["errorcode"]) if detail.get("errorcode") else None), str(fault.get("faultstring") or "")
    code = body.get("errorCode")
    return (str(code).strip() if code is not None else None), str(body.get("errorMessage") or "")


def _invalid_token(status: int, body: Any) -> bool:
    code, _ = _envelope(body)
    if code in INVALID_TOKEN_CODES:
        return True
    # The gateway's own wording for the same thing (keymanagement.service.invalid_access_token).
    return status == 401 and bool(code) and "access_token" in code.lower()


def _error(status: int, body: Any, what: str) -> DarajaError:
    """The exception for a non-success answer to a business call."""
    code, message = _envelope(body)
    if code in (SPIKE_ARREST, QUOTA_VIOLATION):
        log.warning("Daraja rate limit on the %s: HTTP %s %s %s", what, status, code, message)
        return DarajaBusy(message or "rate limit", code=code, http_status=status)
    if code in CONFIG_CODES:
        log.error("Daraja does not know the %s's path or method: HTTP %s %s %s (check the base URL)",
                  what, status, code, message)
        return DarajaConfigError(f"{message or 'Resource not found'} (check the base URL)", code=code,
                                 http_status=status)
    is_envelope = isinstance(body, dict) and "errorCode" in body
    if is_envelope and (400 <= status < 500 or code == BUSY_CODE):
        log.warning("Daraja refused the %s: HTTP %s %s %s", what, status, code, message)
        return DarajaRejected(message or "request refused", code=code, http_status=status,
                              reason=_refusal_reason(code, message))
    if body is None:
        message = "answer is not JSON"
    log.warning("Daraja %s failed: HTTP %s %s %s", what, status, code, message)
    return DarajaUnavailable(message or f"HTTP {status}", code=code, http_status=status)


def _refusal_reason(code: str | None, message: str) -> str:
    # The class of error was decided on the code; the wording only picks what the customer is told.
    lowered = message.lower()
    if "lock subscriber" in lowered:
        return "locked"
    if "phonenumber" in lowered or "partya" in lowered:
        return "phone"
    if "amount" in lowered:
        return "amount"
    if code in ("400.002.02", BUSY_CODE) or "credentials" in lowered or "merchant" in lowered:
        return "misconfigured"
    return "rejected"
