"""DarajaClient against the Daraja simulator (and a few tiny misbehaving servers), over real HTTP."""
from __future__ import annotations

import json
import socket
import threading
import time
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from hotspotd.config import SANDBOX_PASSKEY
from hotspotd.daraja import client as client_mod
from hotspotd.daraja.client import (BASE_URLS, DarajaAuthError, DarajaBusy, DarajaClient, DarajaConfigError,
                                    DarajaError, DarajaRejected, DarajaUnavailable, PushAccepted, QueryResult,
                                    nairobi_timestamp, stk_password)
from hotspotd.daraja.tokens import Token, Tokens
from hotspotd.testing.daraja import DarajaSimulator
from portal_web import i18n

PHONE = "254708374149"
CALLBACK = "http://127.0.0.1:9/cb/test-token"   # discard port: nobody listens, the simulator shrugs


def said(exc: DarajaError) -> str:
    """What the customer reads about a failed push: the error's reason word, in the portal's catalogue."""
    return i18n.t(i18n.REFUSALS["mpesa_" + exc.reason], "en")


@pytest.fixture
def sim():
    with DarajaSimulator(callback_delay=0.05, final_after=0.05) as simulator:
        yield simulator


@pytest.fixture
def make_client():
    made: list[DarajaClient] = []

    def make(base_url: str, key: str = "simulator", secret: str = "simulator", **kwargs) -> DarajaClient:
        kwargs.setdefault("timeout", 2.0)
        shortcode = kwargs.pop("shortcode", "174379")
        passkey = kwargs.pop("passkey", SANDBOX_PASSKEY)
        c = DarajaClient(base_url, key, secret, shortcode, passkey, **kwargs)
        made.append(c)
        return c

    yield make
    for c in made:
        c.close()


@pytest.fixture
def client(sim, make_client):
    return make_client(sim.url)


def oauth_calls(sim: DarajaSimulator) -> int:
    return sum(1 for _, path, _ in sim.calls if path == "/oauth/v1/generate")


def push(c: DarajaClient, phone: str = PHONE, amount: int = 10) -> PushAccepted:
    return c.stk_push(phone, amount, CALLBACK, "WIFI", "Wi-Fi 1 hour")


def final_query(c: DarajaClient, checkout_request_id: str, timeout: float = 5.0) -> QueryResult:
    deadline = time.monotonic() + timeout
    while True:
        result = c.stk_query(checkout_request_id)
        if not result.pending or time.monotonic() > deadline:
            return result
        time.sleep(0.02)


class Canned:
    """A tiny HTTP server that answers every request with one fixed status and body."""

    def __init__(self, status: int, body: bytes, content_type: str = "text/html"):
        answer = (status, body, content_type)

        class Handler(BaseHTTPRequestHandler):
            def _reply(self):
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                self.send_response(answer[0])
                self.send_header("Content-Type", answer[2])
                self.send_header("Content-Length", str(len(answer[1])))
                self.send_header("Connection", "close")
                self.end_headers()
                self.wfile.write(answer[1])

            do_GET = do_POST = _reply

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = "http://127.0.0.1:%d" % self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.thread.join()
        self.server.server_close()


@pytest.fixture
def canned():
    made: list[Canned] = []

    def make(status: int, body: bytes, content_type: str = "text/html") -> Canned:
        made.append(Canned(status, body, content_type))
        return made[-1]

    yield make
    for c in made:
        c.close()


# --- password and timestamp ---------------------------------------------------------------------

def test_password_reference_vector():
    assert stk_password("174379", "bfb279f9aa9bdbcf158e97dd71a467cd2e0c893059b10f78e6b72ada1ed2c919",
                        "20160216165627") == (
        "MTc0Mzc5YmZiMjc5ZjlhYTliZGJjZjE1OGU5N2RkNzFhNDY3Y2QyZTBjODkzMDU5YjEwZjc4ZTZiNzJhZGExZWQyYzkx"
        "OTIwMTYwMjE2MTY1NjI3")
    assert SANDBOX_PASSKEY == "bfb279f9aa9bdbcf158e97dd71a467cd2e0c893059b10f78e6b72ada1ed2c919"


def test_timestamp_is_nairobi_time():
    utc = datetime(2016, 2, 16, 13, 56, 27, tzinfo=timezone.utc)
    assert nairobi_timestamp(utc) == "20160216165627"
    assert nairobi_timestamp(utc.replace(tzinfo=None)) == "20160216165627"      # naive means UTC
    assert nairobi_timestamp(utc.astimezone(timezone(timedelta(hours=-5)))) == "20160216165627"
    assert nairobi_timestamp(datetime(2024, 12, 31, 22, 0, tzinfo=timezone.utc)) == "20250101010000"
    now = nairobi_timestamp()
    assert len(now) == 14 and now.isdigit()


def test_base_urls():
    assert BASE_URLS == {"sandbox": "https://sandbox.safaricom.co.ke", "production": "https://api.safaricom.co.ke"}


# --- OAuth ---------------------------------------------------------------------------------------

def test_token_is_cached(sim, client):
    token = client.token()
    assert client.token() == token
    push(client)
    client.stk_query("ws_CO_unknown")
    assert oauth_calls(sim) == 1


def test_token_refreshed_before_expiry(make_client):
    # Lifetime 1 s: the client refreshes after half of it (60 s before expiry for real tokens).
    with DarajaSimulator(token_lifetime=1) as sim:
        c = make_client(sim.url)
        first = c.token()
        assert c.token() == first
        time.sleep(0.6)
        second = c.token()
        assert second != first
        push(c)
        assert oauth_calls(sim) == 2


def test_refresh_margin_for_real_lifetime(sim, client, monkeypatch):
    now = [1000.0]
    monkeypatch.setattr(client_mod.time, "time", lambda: now[0])
    first = client.token()                       # expires_in "3599" arrives as a string
    now[0] += 3599 - 61
    assert client.token() == first
    now[0] += 2
    assert client.token() != first
    assert oauth_calls(sim) == 2


def test_one_token_fetch_at_a_time(sim, client):
    tokens: list[str] = []
    barrier = threading.Barrier(8)

    def grab():
        barrier.wait()
        tokens.append(client.token())

    threads = [threading.Thread(target=grab) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(tokens)) == 1 and len(tokens) == 8
    assert oauth_calls(sim) == 1


def test_revoked_token_is_replaced_and_the_call_retried_once(sim, client):
    old = client.token()
    sim.revoke_tokens()
    accepted = push(client)
    assert accepted.checkout_request_id in sim.transactions
    assert client.token() != old
    business = [status for _, path, status in sim.calls if path.startswith("/mpesa")]
    assert business == [404, 200]
    assert oauth_calls(sim) == 2
    sim.revoke_tokens()
    assert client.stk_query(accepted.checkout_request_id).result_desc


def test_clients_without_a_shared_store_survive_taking_each_others_token(sim, client, make_client):
    other = make_client(sim.url)
    client.token()
    other.token()                 # a new token invalidates client's (the simulator's default)
    push(client)
    assert oauth_calls(sim) == 3


def test_clients_sharing_tokens_fetch_one(sim, make_client):
    tokens = Tokens()
    venue_a, venue_b = make_client(sim.url, tokens=tokens), make_client(sim.url, tokens=tokens, shortcode="600200")
    sim.add_account("600200", SANDBOX_PASSKEY)
    push(venue_a, phone="254711000001")
    push(venue_b, phone="254711000002")
    assert oauth_calls(sim) == 1
    assert [s for _, p, s in sim.calls if p.startswith("/mpesa")] == [200, 200]


def test_sixty_concurrent_pushes_by_two_venues_on_one_consumer_key(sim, make_client):
    # two venues on one Daraja app; before the token was the key's, 20 of 60 failed "not set up correctly"
    sim.add_account("600200", SANDBOX_PASSKEY)
    tokens = Tokens()
    venues = [make_client(sim.url, tokens=tokens), make_client(sim.url, tokens=tokens, shortcode="600200")]
    results: list = []
    barrier = threading.Barrier(60)

    def customer(n: int) -> None:
        barrier.wait()
        try:
            results.append(push(venues[n % 2], phone=f"2547120{n:05d}"))
        except DarajaError as exc:
            results.append(exc)

    threads = [threading.Thread(target=customer, args=(n,)) for n in range(60)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [r for r in results if not isinstance(r, PushAccepted)] == []
    assert len(sim.transactions) == 60 and oauth_calls(sim) == 1


def test_a_refused_token_already_replaced_by_another_client_is_not_fetched_again(sim, make_client, tmp_path):
    from hotspotd.daraja.tokens import DatabaseTokens
    from hotspotd.storage import db as db_mod
    url = f"sqlite:///{tmp_path}/tokens.db"
    db_mod.prepare(url).close()
    dbs = [db_mod.unbound_database(url) for _ in range(2)]       # two processes' connections
    try:
        a = make_client(sim.url, tokens=DatabaseTokens(dbs[0]))
        b = make_client(sim.url, tokens=DatabaseTokens(dbs[1]))
        first = a.token()
        assert b.token() == first and oauth_calls(sim) == 1      # b read a's token from the table
        assert a._renew(first) != first and oauth_calls(sim) == 2   # a replaces it; Daraja drops the first
        push(b)                                                  # b's copy is refused: it reads a's new one
        assert oauth_calls(sim) == 2
        assert [s for _, p, s in sim.calls if p.startswith("/mpesa")] == [404, 200]
    finally:
        for db in dbs:
            db.close()


def test_token_refused_twice_is_unavailable_not_misconfigured(make_client):
    with DarajaSimulator(token_lifetime=0) as sim:     # every token is dead on arrival
        c = make_client(sim.url)
        with pytest.raises(DarajaUnavailable) as info:
            push(c)
        assert info.value.code == "404.001.03" and not isinstance(info.value, DarajaAuthError)
        assert "not set up correctly" not in said(info.value)     # OAuth took the key and secret
        assert [s for _, p, s in sim.calls if p.startswith("/mpesa")] == [404, 404]
        assert not sim.transactions


def test_bad_credentials(sim, make_client):
    c = make_client(sim.url, "simulator", "wrong")
    with pytest.raises(DarajaAuthError) as info:
        c.check_credentials()
    # Daraja's answer is an empty 400: no errorCode, the words are ours
    assert info.value.code is None and info.value.http_status == 400
    assert "wrong consumer key or secret" in info.value.message
    assert "staff" in said(info.value)
    with pytest.raises(DarajaAuthError):
        push(c)
    assert isinstance(info.value, DarajaError)


def test_check_credentials_reuses_the_token_of_the_same_key_and_secret(sim, make_client):
    tokens = Tokens()
    daemon = make_client(sim.url, tokens=tokens)
    daemon.token()
    check = make_client(sim.url, tokens=tokens)
    check.check_credentials()
    check.check_credentials()
    assert oauth_calls(sim) == 1
    wrong = make_client(sim.url, "simulator", "changed-in-the-config", tokens=tokens)
    with pytest.raises(DarajaAuthError):
        wrong.check_credentials()                  # not proven by a token of other credentials
    push(daemon)                                   # a refused OAuth took nothing away
    assert [s for _, p, s in sim.calls if p.startswith("/mpesa")] == [200]


def test_oauth_without_token_is_unavailable(canned, make_client):
    server = canned(200, b'{"expires_in": "3599"}', "application/json")
    with pytest.raises(DarajaUnavailable):
        make_client(server.url).token()


# --- STK push ------------------------------------------------------------------------------------

def test_push_accepted(sim, client):
    accepted = push(client, amount=25)
    assert accepted.checkout_request_id.startswith("ws_CO_")
    assert accepted.merchant_request_id
    assert accepted.customer_message == "Success. Request accepted for processing"
    tx = sim.transactions[accepted.checkout_request_id]
    assert (tx.phone, tx.amount, tx.callback_url, tx.shortcode) == (PHONE, 25, CALLBACK, "174379")


def test_push_truncates_reference_and_description(sim, client):
    accepted = client.stk_push(PHONE, 10, CALLBACK, "HOTSPOT-ACCOUNT-REF", "A description far too long")
    assert sim.transactions[accepted.checkout_request_id].account_reference == "HOTSPOT-ACCO"


@pytest.mark.parametrize("amount", [0, -5, 10.0, 9.5, "10", True])
def test_push_amount_must_be_a_whole_number(client, amount):
    with pytest.raises(ValueError):
        client.stk_push(PHONE, amount, CALLBACK, "WIFI", "Wi-Fi")


def test_invalid_phone_is_rejected(sim, client):
    with pytest.raises(DarajaRejected) as info:
        push(client, phone="0708374149")
    err = info.value
    assert (err.code, err.http_status) == ("400.002.02", 400)
    assert err.message == "Bad Request - Invalid PartyA"
    assert "Safaricom number" in said(err)


def test_forbidden_callback_url_is_rejected(client):
    with pytest.raises(DarajaRejected) as info:
        client.stk_push(PHONE, 10, "https://example.com/mpesa/callback", "WIFI", "Wi-Fi")
    assert info.value.code == "400.002.02"
    assert info.value.message == "Bad Request - Invalid CallBackURL"
    assert "staff" in said(info.value)


def test_wrong_passkey_is_rejected(sim, make_client):
    c = make_client(sim.url, passkey="not-the-passkey")
    with pytest.raises(DarajaRejected) as info:
        push(c)
    assert (info.value.code, info.value.http_status, info.value.message) == ("500.001.1001", 500, "Wrong credentials")


def test_locked_subscriber_is_rejected(sim, client):
    sim.set_delays(final_after=5)
    push(client)
    with pytest.raises(DarajaRejected) as info:
        push(client, amount=20)
    assert info.value.code == "500.001.1001" and info.value.reason == "locked"
    assert "Finish or cancel it there, or wait a minute" in said(info.value)
    assert "not set up correctly" not in said(info.value)


def test_buy_goods_sends_the_till_as_party_b(sim, make_client):
    c = make_client(sim.url, transaction_type="CustomerBuyGoodsOnline", party_b="600100")
    accepted = push(c)
    assert final_query(c, accepted.checkout_request_id).result_code == "0"


def test_gateway_503_is_unavailable_and_not_retried(sim, client):
    client.token()
    sim.fail_next(1, status=503)
    with pytest.raises(DarajaUnavailable) as info:
        push(client)
    assert info.value.http_status == 503
    assert said(info.value) == "M-Pesa is not answering right now, please try again in a minute."
    assert not sim.transactions
    push(client)
    assert len(sim.transactions) == 1


def test_connection_refused_is_unavailable(make_client):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    c = make_client(f"http://127.0.0.1:{port}")
    with pytest.raises(DarajaUnavailable) as info:
        push(c)
    assert info.value.http_status is None
    with pytest.raises(DarajaUnavailable):
        c.check_credentials()


def test_no_answer_is_unavailable_after_the_timeout(make_client):
    # Accepts connections (the kernel does, from the backlog) and never says a word.
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        c = make_client("http://127.0.0.1:%d" % listener.getsockname()[1], timeout=0.2)
        started = time.monotonic()
        with pytest.raises(DarajaUnavailable) as info:
            c.token()
        assert time.monotonic() - started < 2
        assert "no answer" in info.value.message
        c.close()


def test_non_json_error_page_is_unavailable(sim, canned, make_client):
    server = canned(502, b"<html><body>Bad gateway</body></html>")
    c = make_client(server.url)
    skip_oauth(c)                                             # the page answers everything
    with pytest.raises(DarajaUnavailable) as info:
        push(c)
    assert info.value.http_status == 502 and info.value.code is None


def skip_oauth(c: DarajaClient) -> None:
    """Give ``c`` a token without asking anyone (for servers that answer every path alike)."""
    c._tokens.save(c._account, Token("x", time.time() + 100, time.time() + 200, c._credentials))


def test_wrong_base_url_is_a_configuration_error(sim, make_client):
    for base in (sim.url + "/wrong-prefix", sim.url + "/mpesa"):   # a gateway fault; 404.001.01
        c = make_client(base)
        with pytest.raises(DarajaConfigError) as info:
            c.token()
        assert info.value.http_status == 404 and "base URL" in info.value.message
        assert "not set up correctly" in said(info.value)


@pytest.mark.parametrize("code,status", [("404.001.01", 404), ("405.001", 405)])
def test_wrong_path_or_method_on_business_calls_is_a_configuration_error(canned, make_client, code, status):
    server = canned(status, json.dumps({"requestId": "1-2-3", "errorCode": code,
                                        "errorMessage": "Resource not found"}).encode(), "application/json")
    c = make_client(server.url)
    skip_oauth(c)
    with pytest.raises(DarajaConfigError) as info:
        c.stk_query("ws_CO_1")                      # never "still processing"
    assert info.value.code == code
    with pytest.raises(DarajaConfigError):
        push(c)


def test_spike_arrest_is_retried_once_after_a_pause(sim, make_client):
    c = make_client(sim.url, spike_backoff=(0.1, 0.1))
    c.token()
    sim.refuse_next(1, "500.003.02")
    started = time.monotonic()
    accepted = push(c)
    assert time.monotonic() - started >= 0.1 and accepted.checkout_request_id in sim.transactions
    assert [s for _, p, s in sim.calls if p.startswith("/mpesa")] == [500, 200]
    sim.refuse_next(2, "500.003.02")
    with pytest.raises(DarajaBusy) as info:
        push(c, phone="254711000009")
    assert info.value.code == "500.003.02" and info.value.reason == "busy"
    assert said(info.value) == "M-Pesa is busy right now. Please try again in a minute."
    assert len(sim.transactions) == 1


def test_quota_violation_is_busy_and_not_retried(sim, make_client):
    c = make_client(sim.url, spike_backoff=(0.1, 0.1))
    accepted = push(c)
    sim.refuse_next(1, "500.003.03")
    with pytest.raises(DarajaBusy) as info:
        c.stk_query(accepted.checkout_request_id)
    assert info.value.code == "500.003.03" and "not set up" not in said(info.value)
    assert [s for _, p, s in sim.calls if p.startswith("/mpesa")] == [200, 500]


def test_real_spike_arrest_under_a_burst_loses_no_customer(sim, make_client):
    sim.spike_limit = 10
    c = make_client(sim.url, spike_backoff=(1.0, 1.2))
    c.token()
    results: list = []
    barrier = threading.Barrier(15)

    def customer(n: int) -> None:
        barrier.wait()
        try:
            results.append(push(c, phone=f"2547130{n:05d}"))
        except DarajaError as exc:
            results.append(exc)

    threads = [threading.Thread(target=customer, args=(n,)) for n in range(15)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert 500 in [s for _, p, s in sim.calls if p.startswith("/mpesa")]      # the limit was met
    assert [r for r in results if not isinstance(r, PushAccepted)] == [] and len(sim.transactions) == 15


# --- STK query -----------------------------------------------------------------------------------

def test_query_pending_then_final(sim, client):
    sim.set_delays(final_after=0.3)
    accepted = push(client)
    early = client.stk_query(accepted.checkout_request_id)
    assert early == QueryResult(True, None, "The transaction is being processed")
    time.sleep(0.35)
    # 500.001.1001 once after the final state: never final, whatever came before
    assert client.stk_query(accepted.checkout_request_id) == QueryResult(True, None, "The transaction is being processed")
    final = client.stk_query(accepted.checkout_request_id)
    assert final == QueryResult(False, "0", "The service request is processed successfully.")


def test_query_4999_is_pending(sim, client):
    sim.set_quirks(pending_4999=True)
    sim.set_delays(final_after=5)
    result = client.stk_query(push(client).checkout_request_id)
    assert result.pending and result.result_code == "4999"


def test_query_unknown_id_is_pending_never_final(client):
    result = client.stk_query("ws_CO_000000000000000000")
    assert result.pending and result.result_code is None
    assert result.result_desc == "The transaction does not Exist"


@pytest.mark.parametrize("phone,code,outcome", [
    ("254708374149", "0", "success"),
    ("254712345678", "0", "success"),
    ("254799999999", "0", "success"),
    ("254700000001", "1", "failed"),
    ("254700000017", "17", "failed"),
    ("254700000026", "26", "failed"),
    ("254700001001", "1001", "failed"),
    ("254700001019", "1019", "timeout"),
    ("254700001025", "1025", "failed"),
    ("254700001032", "1032", "cancelled"),
    ("254700001036", "1036", "timeout"),
    ("254700001037", "1037", "timeout"),
    ("254700002001", "2001", "failed"),
    ("254700009999", "9999", "failed"),
])
def test_query_final_result_per_phone(sim, client, phone, code, outcome):
    from hotspotd.daraja import codes
    result = final_query(client, push(client, phone=phone).checkout_request_id)
    assert not result.pending
    assert result.result_code == code and isinstance(result.result_code, str)
    assert codes.outcome(result.result_code) == outcome


def test_query_503_is_unavailable(sim, client):
    accepted = push(client)
    sim.fail_next(1, 503)
    with pytest.raises(DarajaUnavailable):
        client.stk_query(accepted.checkout_request_id)


def test_exceptions_carry_what_payments_needs():
    err = DarajaRejected("Bad Request - Invalid Amount", code="400.002.02", http_status=400)
    assert "400.002.02" in str(err) and said(err)
    assert said(DarajaUnavailable("x")).startswith("M-Pesa is not answering")
    for cls in (DarajaUnavailable, DarajaRejected, DarajaAuthError):
        assert issubclass(cls, DarajaError)


def test_secrets_never_logged(sim, make_client, caplog):
    caplog.set_level("DEBUG")
    c = make_client(sim.url, "simulator", "simulator")
    token = c.token()
    push(c, phone="254712345678")
    c2 = make_client(sim.url, "simulator", "s3cret-value")
    with pytest.raises(DarajaAuthError):
        c2.token()
    text = caplog.text
    assert token not in text and "s3cret-value" not in text and SANDBOX_PASSKEY not in text
    assert "254712345678" not in text and "2547****5678" in text
    assert json.dumps(caplog.messages)  # messages render (lazy %s args are well-formed)
