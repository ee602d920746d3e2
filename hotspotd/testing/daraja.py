"""A Daraja stand-in for tests, the demo and ``hotspotd simulate daraja``: the same HTTP API, faithful
to shared/reference/daraja.md, on the standard library's ``http.server``.

* ``GET /oauth/v1/generate?grant_type=client_credentials`` with Basic auth → ``{"access_token",
  "expires_in": "3599"}`` (a string, as Daraja sends it); a bad grant type → 400 ``400.008.02``
  (daraja.md, "Hosts and auth"). Wrong credentials → HTTP 400 with an EMPTY body (issue 16's audit of
  the live API; the reference documents no body for it).
* Issuing a token invalidates every earlier one of the consumer key (daraja.md, "Hosts and auth":
  "a new token may invalidate the previous one"; Safaricom's Authorization FAQ). Default on;
  ``set_quirks(single_token=False)`` lets tokens live side by side.
* ``POST /mpesa/stkpush/v1/processrequest`` checks the bearer (404 ``404.001.03`` otherwise) and every
  field as Daraja does (400 ``400.002.02 Bad Request - Invalid <Field>``; a Password that is not
  base64(shortcode + passkey + timestamp) → 500 ``500.001.1001 Wrong credentials``), then answers
  the Accepted body with fresh opaque MerchantRequestID and CheckoutRequestID (daraja.md, "STK push").
* A push to a number whose earlier push is not final yet → 500 ``500.001.1001`` "Unable to lock
  subscriber, a transaction is already in process for the current subscriber" (daraja.md, "STK push"
  errors and "More result and error codes": wait a minute). Default on; ``set_quirks(lock_subscriber=False)``.
* Rule 17 "Rule limited.": a push of the same amount from the same phone to the same shortcode within
  ``rule_limit_seconds`` (120; 0 = off) of an earlier one is accepted, and its callback and query give
  ResultCode 17 (daraja.md, "More result and error codes": "within about 2 minutes"; the reference
  lists 17 as a result code, so the push itself is not refused). An earlier push counts whatever its
  outcome (a cancel too), unless it was rule-limited itself: a choice, the reference does not say.
* ``POST /mpesa/stkpushquery/v1/query``: 500 ``500.001.1001`` "being processed" until ``final_after``
  seconds after the push, then 200 with ResultCode as a STRING (and Daraja's "successsfully").
  The FIRST query after the final state is known answers 500.001.1001 "being processed" once more,
  for every transaction (daraja.md, "STK push query": 500.001.1001 "now and then after the final state
  was known"; deterministic here so that every test meets it). ``set_quirks(relapse=False)`` turns it off.
* Rate limits (daraja.md, "More result and error codes"): more than ``spike_limit`` business calls
  (push, query) in one second per consumer key → HTTP 500 ``500.003.02`` "Spike arrest violation", in
  Daraja's envelope ``{requestId, errorCode, errorMessage}``. The gateway's own fault text says
  "Allowed rate : 1ps"; the default here, 100 a second, is a choice high enough for the test suite's
  bursts (0 = no limit). :meth:`refuse_next` gives any envelope code on demand (``500.003.02``,
  ``500.003.03`` quota violation, ...); :meth:`fail_next` a gateway ``fault`` body.
* One callback per push, POSTed once ``callback_delay`` seconds after it, never retried; ResultCode
  is a NUMBER there, as on the wire (daraja.md, "Callback").
* Wrong path or method (issue 16's audit): under the API prefixes ``/mpesa/`` and ``/oauth/`` an
  unknown path answers 404 ``{"errorCode": "404.001.01", "errorMessage": "Resource not found"}`` and
  a known path with the wrong method 405 ``405.001`` "Method not allowed", in the envelope; any other
  path answers the gateway ``fault`` body daraja.md ("STK push") describes for unknown paths. The
  reference and the audit disagree on unknown paths; this is how the simulator reconciles them.
* The SMS gateways hotspotd sends through are served here too (:mod:`.sms_gateway`): what they
  deliver joins the phone's inbox.
* ``timing="realistic"`` draws each push's delays instead, seeded, from the reference's sandbox
  timings, with lost and late callbacks (:mod:`hotspotd.testing.daraja_timing`).

The outcome is chosen by phone number: ``2547000NNNNN`` where NNNNN is a known failure code gives
that code (``254700001032`` cancelled, ``254700001037`` no response, ``254700000001`` no balance,
``254700002001`` wrong PIN, ...); ``254799999999`` succeeds but its callback never comes (only the
query tells); any other number (``254708374149`` included) succeeds. :meth:`DarajaSimulator.set_outcome`
overrides by number. Where Daraja's behaviour is not documented the simulator makes a plain choice,
said where it is made; the reference's "(unconfirmed)" items are switches of :meth:`set_quirks`
(``pending_4999`` off by default; the others on, as the issue asks the simulator to be as hard as
the real thing).
"""
from __future__ import annotations

import base64
import binascii
import json
import logging
import random
import re
import secrets
import socket
import socketserver
import string
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import requests

from ..config import SANDBOX_PASSKEY
from ..identifiers import mask_phone
from ..daraja.client import NAIROBI, nairobi_timestamp, stk_password
from .daraja_timing import INSTANT, REALISTIC, TIMINGS, Delays, RealisticTiming, instant
from .c2b_desk import C2BDesk
from .pull import PullDesk, Row
from .status_desk import StatusDesk
from .sms_gateway import Raw, Sms, SmsGateway

log = logging.getLogger(__name__)

#: ResultDesc for each code, as Daraja words them.
RESULT_DESCS = {
    "0": "The service request is processed successfully.",
    "1": "The balance is insufficient for the transaction.",
    "17": "Rule limited.",
    "26": "System busy. The service request is rejected.",
    "1001": "Unable to lock subscriber, a transaction is already in process for the current subscriber",
    "1019": "Transaction has expired.",
    "1025": "An error occurred while sending a push request.",
    "1032": "Request cancelled by user",
    "1036": "SMSC ACK timeout.",
    "1037": "DS timeout user cannot be reached",
    "2001": "The initiator information is invalid.",
    "9999": "An error occurred while sending a push request.",
    "SFC_IC0003": "The operator does not exist.",
}
#: Failure codes a ``2547000NNNNN`` number selects.
PHONE_CODES = {1, 17, 26, 1001, 1019, 1025, 1032, 1036, 1037, 2001, 9999}
SILENT_SUCCESS_PHONE = "254799999999"
PHONE_RE = re.compile(r"254[17]\d{8}")
SHORTCODE_RE = re.compile(r"\d{5,7}")
TRANSACTION_TYPES = ("CustomerPayBillOnline", "CustomerBuyGoodsOnline")
CALLBACK_REFUSED_WORDS = ("mpesa", "m-pesa", "safaricom")
#: Seconds a callback delivery may take (connect, read) before it counts as failed.
CALLBACK_TIMEOUT = (3.0, 10.0)
#: How often the serve loop looks for a stop request (what stop() may wait; tests stop it a lot).
POLL_INTERVAL = 0.01

#: the simulated phones' SMS inboxes (issue 17's contract for the demo and the acceptance checks)
PHONE_INBOX = re.compile(r"/simulator/phones/(254[17]\d{8})/messages")
DEFAULT_BUSINESS_NAME = "HOTSPOTD SIMULATOR"
PROCESSING = "The transaction is being processed"
NOT_FOUND = "The transaction does not Exist"
#: Seconds within which the same amount from the same phone to the same shortcode is rule-limited (17).
RULE_LIMIT_SECONDS = 120.0
#: Business calls a second per consumer key before spike arrest (a choice: see the module docstring).
SPIKE_LIMIT = 100
#: errorCode → (HTTP status, errorMessage) of the envelope errors :meth:`DarajaSimulator.refuse_next` gives.
ENVELOPE_ERRORS = {
    "500.003.02": (500, "Spike arrest violation"),
    "500.003.03": (500, "Quota violation"),
    "500.001.1001": (500, PROCESSING),
    "404.001.01": (404, "Resource not found"),
    "404.001.03": (404, "Invalid Access Token"),
    "405.001": (405, "Method not allowed"),
}
#: The API's paths and the method each takes; other paths under API_PREFIXES are 404.001.01.
API_PATHS = {"/oauth/v1/generate": "GET", "/mpesa/stkpush/v1/processrequest": "POST",
             "/mpesa/stkpushquery/v1/query": "POST", "/mpesa/c2b/v1/registerurl": "POST",
             "/mpesa/c2b/v2/registerurl": "POST", "/pulltransactions/v1/register": "POST",
             "/pulltransactions/v1/query": "POST", "/mpesa/transactionstatus/v1/query": "POST"}
PHONE_PAYS = re.compile(r"/simulator/phones/(254[17]\d{8})/pay")
API_PREFIXES = ("/mpesa/", "/oauth/", "/pulltransactions/")
GATEWAY_FAULTS = {
    404: ("Unable to identify proxy for host: default and url: {path}",
          "messaging.adaptors.http.flow.ApplicationNotFound"),
    429: ("Spike arrest violation. Allowed rate : 1ps", "policies.ratelimit.SpikeArrestViolation"),
    500: ("Internal Server Error", "messaging.runtime.ServerError"),
    502: ("Bad Gateway", "messaging.adaptors.http.flow.ErrorResponseCode"),
    503: ("The Service is temporarily unavailable", "messaging.adaptors.http.flow.ServiceUnavailable"),
    504: ("Gateway Timeout", "messaging.adaptors.http.flow.GatewayTimeout"),
}


@dataclass
class Transaction:
    """One accepted push, as the simulator remembers it (read it; change it only through the controls)."""
    checkout_request_id: str
    merchant_request_id: str
    phone: str
    amount: int
    shortcode: str
    callback_url: str
    account_reference: str
    result_code: str
    result_desc: str
    deliver_callback: bool
    receipt: str | None
    transaction_date: int
    pushed_at: float                      # time.monotonic()
    final_after: float = 0.0              # seconds after the push the query gives the result
    callback_delay: float | None = None   # seconds after the push the callback goes; None: never
    callback_fate: str = "on_time"        # on_time | late | lost | none (see daraja_timing.Delays)
    relapse_due: bool = True              # the first query after the final state answers "being processed"
    callback_status: int | None = None    # HTTP status of the last delivery; None before or on no answer
    callback_error: str | None = None     # why the last delivery got no HTTP answer
    callback_attempts: int = 0
    callback_bodies: list[dict] = field(default_factory=list, repr=False)
    transaction_type: str = "CustomerPayBillOnline"
    pushed_wall: float = 0.0              # time.time() of the push, for the payer's SMS

    @property
    def callback_body(self) -> dict:
        """The stkCallback JSON Daraja would post for this transaction."""
        cb: dict[str, Any] = {"MerchantRequestID": self.merchant_request_id,
                              "CheckoutRequestID": self.checkout_request_id,
                              "ResultCode": int(self.result_code) if self.result_code.isdigit() else self.result_code,
                              "ResultDesc": self.result_desc}
        if self.result_code == "0":
            # Items in the classic order, with the valueless Balance item some payloads carry.
            cb["CallbackMetadata"] = {"Item": [
                {"Name": "Amount", "Value": float(self.amount)},
                {"Name": "MpesaReceiptNumber", "Value": self.receipt},
                {"Name": "Balance"},
                {"Name": "TransactionDate", "Value": self.transaction_date},
                {"Name": "PhoneNumber", "Value": int(self.phone)},
            ]}
        return {"Body": {"stkCallback": cb}}


class _Refusal(Exception):
    """An error answer: HTTP status and JSON body (None: an empty body)."""

    def __init__(self, status: int, body: dict | None):
        super().__init__(status)
        self.status, self.body = status, body


class _Server(ThreadingHTTPServer):
    # Handler threads are joined on close; stop() first wakes those idling on keep-alive connections.
    daemon_threads = False
    block_on_close = True
    # Daraja takes a burst of connections; socketserver's default backlog of 5 refuses the sixth
    request_queue_size = 128

    def __init__(self, sim: "DarajaSimulator", address):
        self.sim = sim
        self.open_sockets: set[socket.socket] = set()
        self.sockets_lock = threading.Lock()
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind would look the host up in DNS (getfqdn): slow where there is none.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = self.server_address[:2]

    def process_request(self, request, client_address) -> None:
        with self.sockets_lock:
            self.open_sockets.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request) -> None:
        with self.sockets_lock:
            self.open_sockets.discard(request)
        super().shutdown_request(request)

    def handle_error(self, request, client_address) -> None:
        log.warning("request from %s failed", client_address[0], exc_info=True)

    def wake_connections(self) -> None:
        with self.sockets_lock:
            for sock in list(self.open_sockets):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "hotspotd-daraja-simulator"
    sys_version = ""
    timeout = 30  # idle keep-alive connections are closed after this
    disable_nagle_algorithm = True  # headers and body go in two writes: no 40 ms delayed-ACK stall
    server: _Server

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    def _dispatch(self, method: str) -> None:
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = 0
        raw = self.rfile.read(length) if length > 0 else b""
        status, body = self.server.sim._handle(method, self.path, self.headers, raw)
        if isinstance(body, Raw):
            data, content_type = body.body, body.content_type
        else:
            data, content_type = b"" if body is None else json.dumps(body).encode(), "application/json;charset=UTF-8"
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args) -> None:
        log.debug("%s " + format, self.address_string(), *args)


class DarajaSimulator:
    """Daraja on ``host:port`` (0 = any free port). ``start()`` serves in a daemon thread; ``stop()``
    shuts the server down, joins its threads and cancels callbacks not yet sent.

    Test and demo controls (thread-safe): :meth:`revoke_tokens`, :meth:`set_outcome`, :meth:`fail_next`,
    :meth:`refuse_next`, :meth:`set_delays`, :meth:`set_quirks`, :meth:`resend_callback`,
    :meth:`wait_for_callback`, :attr:`transactions`, :attr:`calls`; :attr:`rule_limit_seconds` and
    :attr:`spike_limit` may be set at any time.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, callback_delay: float = 2.0,
                 final_after: float = 2.0, consumer_key: str = "simulator", consumer_secret: str = "simulator",
                 passkey: str = SANDBOX_PASSKEY, token_lifetime: int = 3599, timing: str = INSTANT,
                 seed: int | None = None, time_scale: float = 1.0, lost_callback_rate: float = 0.1,
                 late_callback_rate: float = 0.1, late_callback_after: float | None = None,
                 rule_limit_seconds: float = RULE_LIMIT_SECONDS, spike_limit: int = SPIKE_LIMIT):
        """``timing``: ``instant`` (every push: ``final_after`` and ``callback_delay``) or ``realistic``
        (drawn per push with ``seed``, ``time_scale``, the rates of lost and late callbacks and
        ``late_callback_after``, wall-clock seconds: see :class:`~.daraja_timing.RealisticTiming`)."""
        if timing not in TIMINGS:
            raise ValueError(f"timing is one of {', '.join(TIMINGS)}, not {timing!r}")
        #: the realistic model, or None in instant timing
        self.realistic = RealisticTiming(seed, time_scale, lost_callback_rate, late_callback_rate,
                                         late_callback_after) if timing == REALISTIC else None
        self.consumer_key, self.consumer_secret, self.passkey = consumer_key, consumer_secret, passkey
        self._passkeys: dict[str, str] = {}           # shortcode → passkey, for accounts added by add_account
        self._business_names: dict[str, str] = {}     # shortcode → registered name (name_business)
        #: the SMS gateways on this address: hotspotd's SMS land in the phones' inboxes
        self.sms = SmsGateway()
        #: payments from the M-Pesa menu (C2B): registered URLs, validation, confirmations
        self.c2b = C2BDesk()
        #: Pull Transactions: the shortcodes' statements
        self.pull = PullDesk()
        #: Transaction Status: receipts looked up, answers posted later
        self.status = StatusDesk()
        self.token_lifetime = token_lifetime
        self.callback_delay, self.final_after = float(callback_delay), float(final_after)
        #: the rule-17 window in seconds (0: off); business calls a second before spike arrest (0: no limit)
        self.rule_limit_seconds, self.spike_limit = float(rule_limit_seconds), int(spike_limit)
        self._recent_calls: list[float] = []          # monotonic times of business calls in the last second
        self._refuse: list[str] = []                  # envelope errorCodes for the next business calls
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._tokens: dict[str, float] = {}          # token → monotonic expiry
        self._transactions: dict[str, Transaction] = {}
        self._receipts: set[str] = set()
        self._outcomes: dict[str, tuple[str, bool]] = {}
        self._fail: list[int] = []                   # HTTP statuses for the next business calls
        self._timers: dict[str, threading.Timer] = {}   # CheckoutRequestID → callback not yet sent
        self._delivering: set[threading.Thread] = set()
        self._calls: list[tuple[str, str, int]] = []
        self._sequence = 0
        self._single_token = True
        self._pending_4999 = False
        self._lock_subscriber = True
        self._relapse = True
        self._stopped = False
        self._server = _Server(self, (host, port))
        self._thread: threading.Thread | None = None

    # ---- lifecycle

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{port}"

    def start(self) -> "DarajaSimulator":
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": POLL_INTERVAL},
                                        name=f"daraja-sim:{self._server.server_address[1]}", daemon=True)
        self._thread.start()
        log.info("Daraja simulator listening on %s (%s)", self.url,
                 self.realistic.describe() if self.realistic else "instant timing")
        return self

    def stop(self) -> None:
        with self._lock:
            self._stopped = True
            timers, self._timers = list(self._timers.values()), {}
            delivering = list(self._delivering)
        for timer in timers:
            timer.cancel()
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join()
            self._thread = None
        self._server.wake_connections()
        self._server.server_close()
        for thread in delivering:
            thread.join(timeout=sum(CALLBACK_TIMEOUT))

    def __enter__(self) -> "DarajaSimulator":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # ---- test and demo controls

    def revoke_tokens(self) -> None:
        """Every token issued so far is refused from now on (404.001.03)."""
        with self._lock:
            self._tokens.clear()

    def set_outcome(self, phone: str, result_code: str | int, deliver_callback: bool = True) -> None:
        """Pushes to ``phone`` end with ``result_code`` (0 = success); ``deliver_callback=False``: no callback."""
        with self._lock:
            self._outcomes[str(phone)] = (str(result_code).strip(), deliver_callback)

    def fail_next(self, count: int, status: int = 503) -> None:
        """The next ``count`` push/query calls answer HTTP ``status`` with a gateway fault body."""
        with self._lock:
            self._fail.extend([status] * count)

    @property
    def timing(self) -> str:
        return REALISTIC if self.realistic else INSTANT

    def refuse_next(self, count: int, code: str = "500.003.02") -> None:
        """The next ``count`` push/query calls answer Daraja's error envelope with errorCode ``code``
        (one of :data:`ENVELOPE_ERRORS`: ``500.003.02`` spike arrest, ``500.003.03`` quota violation...)."""
        if code not in ENVELOPE_ERRORS:
            raise ValueError(f"code is one of {', '.join(ENVELOPE_ERRORS)}, not {code!r}")
        with self._lock:
            self._refuse.extend([code] * count)

    def set_delays(self, callback_delay: float | None = None, final_after: float | None = None) -> None:
        """Change the callback delay and when the query turns final, both counted from each push.

        Pushes still waiting are affected too: ``set_delays(final_after=0)`` makes every query final
        at once, and callbacks not sent yet are rescheduled (sent now if their new time has passed).
        A test that sets delays means them: realistic timing ends here (later pushes are instant).
        """
        with self._lock:
            if self.realistic:
                log.info("Daraja simulator: delays set, instant timing from now on")
                self.realistic = None
            if final_after is not None:
                self.final_after = float(final_after)
                for tx in self._transactions.values():
                    tx.final_after = self.final_after
            if callback_delay is not None:
                self.callback_delay = float(callback_delay)
                for cid, timer in list(self._timers.items()):
                    timer.cancel()
                    self._transactions[cid].callback_delay = self.callback_delay
                    self._schedule(self._transactions[cid])

    def set_quirks(self, *, single_token: bool | None = None, pending_4999: bool | None = None,
                   lock_subscriber: bool | None = None, relapse: bool | None = None) -> None:
        """Switch behaviours the reference reports (see the module docstring for each source).

        ``single_token`` (on): issuing a token invalidates the earlier ones. ``pending_4999`` (off): a
        query still pending answers 200 ResultCode "4999" instead of 500 "being processed".
        ``lock_subscriber`` (on): a second push to a number whose first is not final yet is refused
        with 500.001.1001 "Unable to lock subscriber...". ``relapse`` (on): the first query after
        the final state is known answers 500.001.1001 "being processed" once.
        """
        with self._lock:
            if single_token is not None:
                self._single_token = single_token
            if pending_4999 is not None:
                self._pending_4999 = pending_4999
            if lock_subscriber is not None:
                self._lock_subscriber = lock_subscriber
            if relapse is not None:
                self._relapse = relapse

    @property
    def transactions(self) -> dict[str, Transaction]:
        """Accepted pushes by CheckoutRequestID (a copy of the table; the records are live)."""
        with self._lock:
            return dict(self._transactions)

    @property
    def calls(self) -> list[tuple[str, str, int]]:
        """Every request served: (method, path without query string, HTTP status)."""
        with self._lock:
            return list(self._calls)

    def resend_callback(self, checkout_request_id: str) -> int | None:
        """Post the transaction's callback again, now (for duplicate tests); the HTTP status or None."""
        with self._lock:
            tx = self._transactions[checkout_request_id]
        self._deliver(tx)
        return tx.callback_status

    def wait_for_callback(self, checkout_request_id: str, timeout: float = 10.0) -> Transaction | None:
        """Block until the push's callback was delivered (or attempted); the record, or None on timeout."""
        deadline = time.monotonic() + timeout
        with self._changed:
            tx = self._transactions[checkout_request_id]
            while tx.callback_attempts == 0:
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self._changed.wait(left)
        return tx

    # ---- the HTTP API

    def _handle(self, method: str, target: str, headers, raw: bytes) -> tuple[int, dict | Raw | None]:
        """Answer one request: (HTTP status, JSON body or None for an empty one). Called by the server threads."""
        parts = urlsplit(target)
        try:
            if parts.path in API_PATHS and method != API_PATHS[parts.path]:
                raise _Refusal(405, _envelope("405.001", ENVELOPE_ERRORS["405.001"][1]))
            if parts.path == "/oauth/v1/generate":
                status, body = 200, self._oauth(parse_qs(parts.query), headers.get("Authorization", ""))
            elif parts.path == "/mpesa/stkpush/v1/processrequest":
                status, body = 200, self._push(self._business_body(headers, raw))
            elif parts.path == "/mpesa/stkpushquery/v1/query":
                status, body = 200, self._query(self._business_body(headers, raw))
            elif (inbox := PHONE_INBOX.fullmatch(parts.path)) and method == "GET":
                status, body = 200, {"messages": self.messages(inbox[1])}
            elif parts.path in ("/mpesa/c2b/v1/registerurl", "/mpesa/c2b/v2/registerurl"):
                status, body = self.c2b.register(self._business_body(headers, raw), parts.path.split("/")[3])
            elif parts.path == "/mpesa/transactionstatus/v1/query":
                status, body = self.status.query(self._business_body(headers, raw), self.ledger())
            elif parts.path == "/pulltransactions/v1/register":
                status, body = self.pull.register(self._business_body(headers, raw))
            elif parts.path == "/pulltransactions/v1/query":
                status, body = self.pull.query(self._business_body(headers, raw), self.ledger())
            elif (payer := PHONE_PAYS.fullmatch(parts.path)) and method == "POST":
                status, body = self._menu_payment(payer[1], raw)
            elif self.sms.handles(parts.path):
                status, body = self.sms.handle(method, parts.path, parts.query, headers, raw)
            elif parts.path.startswith(API_PREFIXES):
                raise _Refusal(404, _envelope("404.001.01", ENVELOPE_ERRORS["404.001.01"][1]))
            else:
                raise _Refusal(404, _fault(404, parts.path))
        except _Refusal as refusal:
            status, body = refusal.status, refusal.body
        with self._lock:
            self._calls.append((method, parts.path, status))
        return status, body

    def _oauth(self, query: dict[str, list[str]], authorization: str) -> dict:
        if query.get("grant_type") != ["client_credentials"]:
            raise _Refusal(400, _envelope("400.008.02", "Invalid grant type passed"))
        if not self._basic_ok(authorization):
            raise _Refusal(400, None)       # Daraja's answer to a wrong key or secret has no body
        token = "".join(secrets.choice(string.ascii_letters + string.digits) for _ in range(28))
        with self._lock:
            if self._single_token:
                self._tokens.clear()
            now = time.monotonic()
            self._tokens = {t: exp for t, exp in self._tokens.items() if exp > now}
            self._tokens[token] = now + self.token_lifetime
        return {"access_token": token, "expires_in": str(self.token_lifetime)}

    def _basic_ok(self, authorization: str) -> bool:
        scheme, _, encoded = authorization.partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            decoded = base64.b64decode(encoded.strip(), validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            return False
        key, sep, secret = decoded.partition(":")
        return bool(sep) and secrets.compare_digest(key, self.consumer_key) \
            and secrets.compare_digest(secret, self.consumer_secret)

    def _business_body(self, headers, raw: bytes) -> dict:
        """Gateway checks every business call passes first: injected faults, the bearer, a JSON body."""
        with self._lock:
            fail = self._fail.pop(0) if self._fail else None
            refuse = self._refuse.pop(0) if self._refuse and fail is None else None
            spiked = fail is None and refuse is None and self._spike_arrested()
        if fail is not None:
            raise _Refusal(fail, _fault(fail, ""))
        if refuse is not None or spiked:
            code = refuse or "500.003.02"
            status, message = ENVELOPE_ERRORS[code]
            raise _Refusal(status, _envelope(code, message))
        scheme, _, token = headers.get("Authorization", "").partition(" ")
        with self._lock:
            expiry = self._tokens.get(token.strip()) if scheme.lower() == "bearer" else None
        if expiry is None or expiry <= time.monotonic():
            raise _Refusal(404, _envelope("404.001.03", "Invalid Access Token", request_id=""))
        try:
            body = json.loads(raw)
        except ValueError:
            body = None
        if not isinstance(body, dict):
            raise _Refusal(400, _envelope("400.002.05", "Invalid Request Payload"))
        return body

    def _credentials(self, body: dict, fields: tuple[str, ...]) -> tuple[str, str]:
        """Check BusinessShortCode, Timestamp and the other ``fields``' presence, then the Password."""
        shortcode = _text(body.get("BusinessShortCode"))
        if not SHORTCODE_RE.fullmatch(shortcode):
            raise _invalid("BusinessShortCode")
        timestamp = _text(body.get("Timestamp"))
        if not (len(timestamp) == 14 and timestamp.isascii() and timestamp.isdigit()):
            raise _invalid("Timestamp")
        try:
            datetime.strptime(timestamp, "%Y%m%d%H%M%S")
        except ValueError:
            raise _invalid("Timestamp") from None
        for name in fields:
            if not _text(body.get(name)):
                raise _invalid(name)
        return shortcode, timestamp

    def _spike_arrested(self) -> bool:
        """Call with the lock held: is this business call one too many in the last second? (One
        consumer key per simulator: the limit is the key's.) Refused calls do not count."""
        if self.spike_limit <= 0:
            return False
        now = time.monotonic()
        self._recent_calls = [t for t in self._recent_calls if t > now - 1.0]
        if len(self._recent_calls) >= self.spike_limit:
            return True
        self._recent_calls.append(now)
        return False

    def ledger(self) -> list[Row]:
        """Every transaction that moved money to a shortcode here: STK payments once final, and
        payments from the menu (what Pull Transactions lists, and what a statement must total)."""
        now = time.monotonic()
        with self._lock:
            stk = [t for t in self._transactions.values() if t.result_code == "0" and now >= t.pushed_at + t.final_after]
            names = dict(self._business_names)
        rows = [Row(t.receipt, t.pushed_wall + t.final_after, t.phone, "Pay Bill Online", t.account_reference,
                    t.amount, t.shortcode, names.get(t.shortcode, DEFAULT_BUSINESS_NAME)) for t in stk]
        return rows + self.c2b.ledger()

    def _menu_payment(self, phone: str, raw: bytes) -> tuple[int, dict]:
        """``POST /simulator/phones/<phone>/pay``: the customer pays from the M-Pesa menu (:mod:`.c2b_desk`)."""
        try:
            body = json.loads(raw or b"{}")
        except ValueError:
            body = None
        if not isinstance(body, dict):
            return 400, {"ResultCode": "1", "ResultDesc": "send JSON {shortcode, account, amount}"}
        with self._lock:
            receipt = self._new_receipt()
            business = self._business_names.get(str(body.get("shortcode", "")), DEFAULT_BUSINESS_NAME)
        now = time.time()
        status, answer, sms = self.c2b.pay(phone, body, receipt, business, now)
        if sms is not None:
            self.sms.deliver(Sms(phone, sms["from"], sms["text"], now, sms["receipt"], sms["amount"]))
        return status, answer

    def name_business(self, shortcode: str, name: str) -> None:
        """The name Safaricom registered for ``shortcode``: the payer's confirmation SMS says it."""
        with self._lock:
            self._business_names[str(shortcode)] = name

    def messages(self, phone: str) -> list[dict]:
        """The SMS inbox of ``phone`` (``2547…``), newest last: M-Pesa's confirmation of each payment
        that went through, once the payer's M-Pesa has it (when the query turns final), and every
        SMS sent to it through the simulated gateways (:mod:`.sms_gateway`). Each is
        ``{"from", "text", "receipt", "amount", "at"}`` (``at`` UTC, ISO 8601). Served as
        ``GET /simulator/phones/<phone>/messages``: the demo's and the tests' customer's phone."""
        now = time.monotonic()
        with self._lock:
            done = [t for t in self._transactions.values()
                    if t.phone == phone and t.result_code == "0" and now >= t.pushed_at + t.final_after]
            names = dict(self._business_names)
        done.sort(key=lambda t: t.pushed_at + t.final_after)
        mpesa = [(t.pushed_wall + t.final_after, _confirmation(t, names.get(t.shortcode, DEFAULT_BUSINESS_NAME)))
                 for t in done]
        sent = [(m.at, m.as_message()) for m in self.sms.inbox(phone)]
        return [message for _, message in sorted(mpesa + sent, key=lambda pair: pair[0])]

    def add_account(self, shortcode: str, passkey: str) -> None:
        """Take pushes for another paybill or till, with its own passkey (a venue with its own
        M-Pesa account). Any other shortcode is checked against the simulator's passkey."""
        with self._lock:
            self._passkeys[str(shortcode)] = passkey

    def _check_password(self, body: dict, shortcode: str, timestamp: str) -> None:
        # Daraja answers a Password that does not match with a business error, not a 400.
        with self._lock:
            passkey = self._passkeys.get(shortcode, self.passkey)
        if _text(body.get("Password")) != stk_password(shortcode, passkey, timestamp):
            raise _Refusal(500, _envelope("500.001.1001", "Wrong credentials"))

    def _push(self, body: dict) -> dict:
        shortcode, timestamp = self._credentials(body, ("Password",))
        if body.get("TransactionType") not in TRANSACTION_TYPES:
            raise _invalid("TransactionType")
        amount = _whole_amount(body.get("Amount"))
        phone, party_a = _text(body.get("PhoneNumber")), _text(body.get("PartyA"))
        if not PHONE_RE.fullmatch(party_a):
            raise _invalid("PartyA")
        if not PHONE_RE.fullmatch(phone):
            raise _invalid("PhoneNumber")
        party_b = _text(body.get("PartyB"))
        if not SHORTCODE_RE.fullmatch(party_b):
            raise _invalid("PartyB")
        callback_url = _text(body.get("CallBackURL"))
        if not _callback_url_ok(callback_url):
            raise _invalid("CallBackURL")
        reference, desc = _text(body.get("AccountReference")), _text(body.get("TransactionDesc"))
        if not 1 <= len(reference) <= 12:
            raise _invalid("AccountReference")
        if not 1 <= len(desc) <= 13:
            raise _invalid("TransactionDesc")
        self._check_password(body, shortcode, timestamp)
        code, deliver = self._outcome_for(phone)
        # A paybill's PartyB is its own number; anything else names an operator that does not exist.
        # (A till's store and till numbers cannot be checked here: the simulator knows no tills.)
        if body["TransactionType"] == "CustomerPayBillOnline" and party_b != shortcode:
            code = "SFC_IC0003"
        now = time.monotonic()
        with self._lock:
            if self._lock_subscriber and any(t.phone == phone and now < t.pushed_at + t.final_after
                                             for t in self._transactions.values()):
                raise _Refusal(500, _envelope("500.001.1001", RESULT_DESCS["1001"]))
            if self._rule_limited(phone, amount, shortcode, now):
                code = "17"
            delays = self._delays(code, deliver)
            tx = Transaction(
                checkout_request_id=self._new_checkout_id(), merchant_request_id=self._new_merchant_id(),
                phone=phone, amount=amount, shortcode=shortcode, callback_url=callback_url,
                account_reference=reference, result_code=code,
                result_desc=RESULT_DESCS.get(code, "The transaction failed."),
                deliver_callback=delays.callback_delay is not None,
                receipt=self._new_receipt() if code == "0" else None,
                transaction_date=int(nairobi_timestamp()), pushed_at=now, pushed_wall=time.time(),
                transaction_type=body["TransactionType"], final_after=delays.final_after,
                callback_delay=delays.callback_delay, callback_fate=delays.fate)
            self._transactions[tx.checkout_request_id] = tx
            if tx.deliver_callback and not self._stopped:
                self._schedule(tx)
        log.info("STK push %s: %s KES %s → ResultCode %s%s", tx.checkout_request_id, mask_phone(phone), amount,
                 code, _timing_note(delays))
        return {"MerchantRequestID": tx.merchant_request_id, "CheckoutRequestID": tx.checkout_request_id,
                "ResponseCode": "0", "ResponseDescription": "Success. Request accepted for processing",
                "CustomerMessage": "Success. Request accepted for processing"}

    def _rule_limited(self, phone: str, amount: int, shortcode: str, now: float) -> bool:
        """Call with the lock held: did this phone push this amount to this shortcode within the window?"""
        window = self.rule_limit_seconds
        return window > 0 and any(t.phone == phone and t.amount == amount and t.shortcode == shortcode
                                  and t.result_code != "17" and now < t.pushed_at + window
                                  for t in self._transactions.values())

    def _query(self, body: dict) -> dict:
        shortcode, timestamp = self._credentials(body, ("Password", "CheckoutRequestID"))
        self._check_password(body, shortcode, timestamp)
        with self._lock:
            tx = self._transactions.get(_text(body["CheckoutRequestID"]))
            pending_4999, relapse = self._pending_4999, self._relapse
        if tx is None or tx.shortcode != shortcode:
            # a shortcode sees its own transactions only
            raise _Refusal(500, _envelope("500.001.1001", NOT_FOUND))
        answer = {"ResponseCode": "0", "ResponseDescription": "The service request has been accepted successsfully",
                  "MerchantRequestID": tx.merchant_request_id, "CheckoutRequestID": tx.checkout_request_id}
        if time.monotonic() < tx.pushed_at + tx.final_after:
            if not pending_4999:
                raise _Refusal(500, _envelope("500.001.1001", PROCESSING))
            return {**answer, "ResultCode": "4999", "ResultDesc": "The transaction is still under processing"}
        with self._lock:
            relapse, tx.relapse_due = relapse and tx.relapse_due, False
        if relapse:
            raise _Refusal(500, _envelope("500.001.1001", PROCESSING))
        return {**answer, "ResultCode": tx.result_code, "ResultDesc": tx.result_desc}

    # ---- outcomes, ids, callbacks

    def _outcome_for(self, phone: str) -> tuple[str, bool]:
        with self._lock:
            if phone in self._outcomes:
                return self._outcomes[phone]
        if phone == SILENT_SUCCESS_PHONE:
            return "0", False
        if phone.startswith("2547000") and int(phone[7:]) in PHONE_CODES:
            return str(int(phone[7:])), True
        return "0", True

    def _new_checkout_id(self) -> str:
        """Call with the lock held. Shaped like ``ws_CO_191220191020363925``: date, time, digits."""
        while True:
            self._sequence += 1
            stamp = datetime.now(timezone.utc).astimezone(NAIROBI).strftime("%d%m%Y%H%M%S")
            cid = f"ws_CO_{stamp}{random.randrange(100, 1000)}{self._sequence}"
            if cid not in self._transactions:
                return cid

    def _new_merchant_id(self) -> str:
        """Call with the lock held. Shaped like ``29115-34620561-1``."""
        return f"{random.randrange(10000, 100000)}-{random.randrange(10_000_000, 100_000_000)}-1"

    def _new_receipt(self) -> str:
        """Call with the lock held: ten upper-case letters and digits, never the same twice."""
        alphabet = string.ascii_uppercase + string.digits
        while True:
            receipt = secrets.choice(string.ascii_uppercase) + "".join(secrets.choice(alphabet) for _ in range(9))
            if receipt not in self._receipts:
                self._receipts.add(receipt)
                return receipt

    def _delays(self, code: str, deliver: bool) -> Delays:
        """Call with the lock held: a new push's timing, drawn (realistic) or fixed (instant)."""
        if self.realistic:
            return self.realistic.draw(code, deliver)
        return instant(self.final_after, self.callback_delay, deliver)

    def _schedule(self, tx: Transaction) -> None:
        """Call with the lock held: the callback goes ``tx.callback_delay`` after the push."""
        delay = max(0.0, tx.pushed_at + (tx.callback_delay or 0.0) - time.monotonic())
        timer = threading.Timer(delay, self._deliver_timed, args=(tx,))
        timer.daemon = True
        timer.name = f"daraja-sim-callback:{tx.checkout_request_id}"
        self._timers[tx.checkout_request_id] = timer
        timer.start()

    def _deliver_timed(self, tx: Transaction) -> None:
        current = threading.current_thread()
        with self._lock:
            # A timer cancelled too late (stop, or rescheduled by set_delays) must not send.
            if self._stopped or self._timers.get(tx.checkout_request_id) is not current:
                return
            del self._timers[tx.checkout_request_id]
            self._delivering.add(current)
        try:
            self._deliver(tx)
        finally:
            with self._lock:
                self._delivering.discard(current)

    def _deliver(self, tx: Transaction) -> None:
        """POST the callback once: no retry after an error or no answer, as Daraja does."""
        body = tx.callback_body
        status: int | None = None
        error: str | None = None
        try:
            resp = requests.post(tx.callback_url, data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"}, timeout=CALLBACK_TIMEOUT)
            status = resp.status_code
            resp.close()
        except requests.RequestException as exc:
            error = type(exc).__name__
        with self._changed:
            tx.callback_attempts += 1
            tx.callback_status, tx.callback_error = status, error
            tx.callback_bodies.append(body)
            self._changed.notify_all()
        if status is None:
            log.warning("callback for %s not delivered (%s); Daraja does not retry", tx.checkout_request_id, error)
        else:
            log.info("callback for %s delivered: HTTP %s", tx.checkout_request_id, status)


def _timing_note(delays: Delays) -> str:
    """What the push log line says of its timing."""
    when = f" (final after {delays.final_after:.1f} s, "
    if delays.callback_delay is None:
        return when + ("no callback)" if delays.fate == "none" else "callback lost)")
    return when + f"callback after {delays.callback_delay:.1f} s{', late' if delays.fate == 'late' else ''})"


def _confirmation(tx: Transaction, business: str) -> dict:
    """M-Pesa's confirmation SMS to the payer, in its usual words ("RLTPY5626F Confirmed. Ksh10.00
    sent to NAME for account WIFI on 3/12/26 at 2:15 PM. …"; a till's "paid to NAME")."""
    at = tx.pushed_wall + tx.final_after
    local = datetime.fromtimestamp(at, NAIROBI)
    when = f"{local.day}/{local.month}/{local.strftime('%y')} at {local.strftime('%I:%M %p').lstrip('0')}"
    if tx.transaction_type == "CustomerBuyGoodsOnline":
        what = f"Ksh{tx.amount:,.2f} paid to {business}."
    else:
        what = f"Ksh{tx.amount:,.2f} sent to {business} for account {tx.account_reference}"
    return {"from": "MPESA", "text": f"{tx.receipt} Confirmed. {what} on {when}. Transaction cost, Ksh0.00.",
            "receipt": tx.receipt, "amount": tx.amount,
            "at": datetime.fromtimestamp(at, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")}


def _envelope(code: str, message: str, *, request_id: str | None = None) -> dict:
    if request_id is None:
        request_id = f"{random.randrange(10000, 100000)}-{random.randrange(1_000_000, 10_000_000)}-1"
    return {"requestId": request_id, "errorCode": code, "errorMessage": message}


def _invalid(field_name: str) -> _Refusal:
    return _Refusal(400, _envelope("400.002.02", f"Bad Request - Invalid {field_name}"))


def _fault(status: int, path: str) -> dict:
    text, errorcode = GATEWAY_FAULTS.get(status, ("Gateway error", "messaging.adaptors.http.flow.ErrorResponseCode"))
    return {"fault": {"faultstring": text.format(path=path), "detail": {"errorcode": errorcode}}}


def _text(value: Any) -> str:
    """A field as text: Daraja takes numbers as JSON strings or numbers (not booleans)."""
    if isinstance(value, bool) or value is None:
        return ""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return str(value).strip() if isinstance(value, (str, int, float)) else ""


def _whole_amount(value: Any) -> int:
    """Whole shillings >= 1, as a number or a numeric string; a decimal is an Invalid Amount."""
    if isinstance(value, bool):
        raise _invalid("Amount")
    if isinstance(value, str) and re.fullmatch(r"\s*\d+(\.0*)?\s*", value):
        value = float(value)
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if not isinstance(value, int) or value < 1:
        raise _invalid("Amount")
    return value


def _callback_url_ok(url: str) -> bool:
    parts = urlsplit(url)
    if not url or any(ch.isspace() for ch in url) or parts.scheme not in ("http", "https") or not parts.hostname:
        return False
    return not any(word in url.lower() for word in CALLBACK_REFUSED_WORDS)
