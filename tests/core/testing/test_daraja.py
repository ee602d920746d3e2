"""The Daraja simulator over real HTTP: OAuth, field checks, query states, callbacks, controls, main()."""
from __future__ import annotations

import base64
import itertools
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import types
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests

from hotspotd.config import SANDBOX_PASSKEY
from hotspotd.daraja.client import DarajaClient, nairobi_timestamp, stk_password
from hotspotd.testing.daraja import DarajaSimulator

SHORTCODE = "174379"
PHONE = "254708374149"
BASIC = "Basic " + base64.b64encode(b"simulator:simulator").decode()
#: a new number for each push that is not about one customer's pushes: two pushes from one number
#: meet the subscriber lock and rule 17, which the simulator has on by default
NUMBERS = (f"2547115{n:05d}" for n in itertools.count(1))


class Receiver:
    """A tiny callback endpoint: records every POST (path, headers, JSON body) and answers ``status``."""

    def __init__(self, status: int = 200):
        self.status = status
        self.received: list[tuple[str, dict, dict]] = []
        self.arrived = threading.Condition()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with receiver.arrived:
                    receiver.received.append((self.path, dict(self.headers), json.loads(raw)))
                    receiver.arrived.notify_all()
                data = json.dumps({"ResultCode": 0, "ResultDesc": "Accepted"}).encode()
                self.send_response(receiver.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = "http://127.0.0.1:%d/cb/s3cr3t-token" % self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True)
        self.thread.start()

    def wait(self, count: int, timeout: float = 5.0) -> list[tuple[str, dict, dict]]:
        with self.arrived:
            self.arrived.wait_for(lambda: len(self.received) >= count, timeout)
            return list(self.received)

    def close(self):
        self.server.shutdown()
        self.thread.join()
        self.server.server_close()


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.close()


@pytest.fixture
def sim():
    with DarajaSimulator(callback_delay=0.05, final_after=0.05) as simulator:
        yield simulator


@pytest.fixture
def web():
    with requests.Session() as session:
        yield session


@pytest.fixture
def client(sim):
    with DarajaClient(sim.url, "simulator", "simulator", SHORTCODE, SANDBOX_PASSKEY, timeout=2) as c:
        yield c


def token(sim, web) -> str:
    resp = web.get(sim.url + "/oauth/v1/generate", params={"grant_type": "client_credentials"},
                   headers={"Authorization": BASIC}, timeout=2)
    assert resp.status_code == 200
    return resp.json()["access_token"]


def push_body(**changes) -> dict:
    """A valid push from a new number (:data:`NUMBERS`); ``changes`` set or (None) drop fields."""
    ts = nairobi_timestamp()
    phone = next(NUMBERS)
    body = {"BusinessShortCode": SHORTCODE, "Password": stk_password(SHORTCODE, SANDBOX_PASSKEY, ts),
            "Timestamp": ts, "TransactionType": "CustomerPayBillOnline", "Amount": 10, "PartyA": phone,
            "PartyB": SHORTCODE, "PhoneNumber": phone, "CallBackURL": "https://wifi.example.co.ke/cb/tok",
            "AccountReference": "WIFI", "TransactionDesc": "Wi-Fi 1 hour"}
    for key, value in changes.items():
        if value is None:
            body.pop(key)
        else:
            body[key] = value
    return body


def post(sim, web, path: str, body, bearer: str | None) -> requests.Response:
    headers = {"Authorization": f"Bearer {bearer}"} if bearer else {}
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    return web.post(sim.url + path, data=data, headers={**headers, "Content-Type": "application/json"}, timeout=2)


PUSH = "/mpesa/stkpush/v1/processrequest"
QUERY = "/mpesa/stkpushquery/v1/query"


def final_result(client: DarajaClient, checkout_request_id: str, timeout: float = 3.0):
    """The query's answer once it is final (it says "being processed" once after the final state)."""
    deadline = time.monotonic() + timeout
    while True:
        result = client.stk_query(checkout_request_id)
        if not result.pending or time.monotonic() > deadline:
            return result
        time.sleep(0.02)


def query_body(checkout_request_id: str) -> dict:
    ts = nairobi_timestamp()
    return {"BusinessShortCode": SHORTCODE, "Password": stk_password(SHORTCODE, SANDBOX_PASSKEY, ts),
            "Timestamp": ts, "CheckoutRequestID": checkout_request_id}


# --- OAuth -----------------------------------------------------------------------------------

def test_oauth_gives_a_token_with_expires_in_as_text(sim, web):
    resp = web.get(sim.url + "/oauth/v1/generate?grant_type=client_credentials",
                   headers={"Authorization": BASIC}, timeout=2)
    assert resp.status_code == 200
    body = resp.json()
    assert set(body) == {"access_token", "expires_in"}
    assert body["expires_in"] == "3599"
    assert re.fullmatch(r"[A-Za-z0-9]{20,}", body["access_token"])


@pytest.mark.parametrize("query", ["grant_type=password", ""])
def test_oauth_bad_grant_type(sim, web, query):
    resp = web.get(f"{sim.url}/oauth/v1/generate?{query}", headers={"Authorization": BASIC}, timeout=2)
    assert resp.status_code == 400
    body = resp.json()
    assert set(body) == {"requestId", "errorCode", "errorMessage"} and body["errorCode"] == "400.008.02"


@pytest.mark.parametrize("auth", ["Basic " + base64.b64encode(b"simulator:nope").decode(), "Basic !!!", ""])
def test_oauth_wrong_credentials_is_an_empty_400(sim, web, auth):
    # issue 16's audit of the live API: no envelope, no body at all
    resp = web.get(f"{sim.url}/oauth/v1/generate?grant_type=client_credentials",
                   headers={"Authorization": auth} if auth else {}, timeout=2)
    assert resp.status_code == 400 and resp.content == b""


def test_revoked_tokens_are_refused(sim, web):
    tok = token(sim, web)
    assert post(sim, web, PUSH, push_body(), tok).status_code == 200
    sim.revoke_tokens()
    resp = post(sim, web, PUSH, push_body(), tok)
    assert resp.status_code == 404
    assert resp.json() == {"requestId": "", "errorCode": "404.001.03", "errorMessage": "Invalid Access Token"}
    assert post(sim, web, QUERY, query_body("ws_CO_1"), tok).json()["errorCode"] == "404.001.03"
    assert post(sim, web, PUSH, push_body(), None).status_code == 404
    assert post(sim, web, PUSH, push_body(), token(sim, web)).status_code == 200


def test_expired_tokens_are_refused(web):
    with DarajaSimulator(token_lifetime=0) as sim:
        resp = post(sim, web, PUSH, push_body(), token(sim, web))
        assert (resp.status_code, resp.json()["errorCode"]) == (404, "404.001.03")


def test_a_new_token_invalidates_the_previous_one_by_default(sim, web):
    first = token(sim, web)
    second = token(sim, web)
    refused = post(sim, web, PUSH, push_body(), first)
    assert (refused.status_code, refused.json()["errorCode"]) == (404, "404.001.03")
    assert post(sim, web, PUSH, push_body(), second).status_code == 200


def test_tokens_side_by_side_when_switched_off(sim, web):
    sim.set_quirks(single_token=False)
    first, second = token(sim, web), token(sim, web)
    assert post(sim, web, PUSH, push_body(), first).status_code == 200
    assert post(sim, web, PUSH, push_body(), second).status_code == 200


# --- STK push ----------------------------------------------------------------------------------

def test_push_accepted_body(sim, web):
    tok = token(sim, web)
    bodies = [post(sim, web, PUSH, push_body(), tok).json() for _ in range(3)]
    for body in bodies:
        assert set(body) == {"MerchantRequestID", "CheckoutRequestID", "ResponseCode", "ResponseDescription",
                             "CustomerMessage"}
        assert body["ResponseCode"] == "0"
        assert body["ResponseDescription"] == body["CustomerMessage"] == "Success. Request accepted for processing"
        assert re.fullmatch(r"\d{5}-\d{8}-\d+", body["MerchantRequestID"])
        assert re.fullmatch(r"ws_CO_\d{18,}", body["CheckoutRequestID"])
    assert len({b["CheckoutRequestID"] for b in bodies}) == 3
    assert set(sim.transactions) == {b["CheckoutRequestID"] for b in bodies}


@pytest.mark.parametrize("changes,status,message", [
    ({"Amount": 10.5}, 400, "Bad Request - Invalid Amount"),
    ({"Amount": "9.99"}, 400, "Bad Request - Invalid Amount"),
    ({"Amount": 0}, 400, "Bad Request - Invalid Amount"),
    ({"Amount": None}, 400, "Bad Request - Invalid Amount"),
    ({"PhoneNumber": "0708374149"}, 400, "Bad Request - Invalid PhoneNumber"),
    ({"PhoneNumber": "+254708374149", "PartyA": "+254708374149"}, 400, "Bad Request - Invalid PartyA"),
    ({"PartyA": "25470837414"}, 400, "Bad Request - Invalid PartyA"),
    ({"PartyA": "254208374149"}, 400, "Bad Request - Invalid PartyA"),
    ({"PartyB": "abc"}, 400, "Bad Request - Invalid PartyB"),
    ({"BusinessShortCode": "12"}, 400, "Bad Request - Invalid BusinessShortCode"),
    ({"Timestamp": "2016-02-16 16:56"}, 400, "Bad Request - Invalid Timestamp"),
    ({"Timestamp": "20161316165627"}, 400, "Bad Request - Invalid Timestamp"),
    ({"TransactionType": "CustomerPayBill"}, 400, "Bad Request - Invalid TransactionType"),
    ({"CallBackURL": "https://example.com/MPesa/cb"}, 400, "Bad Request - Invalid CallBackURL"),
    ({"CallBackURL": "https://safaricom-callbacks.example.com/cb"}, 400, "Bad Request - Invalid CallBackURL"),
    ({"CallBackURL": "ftp://example.com/cb"}, 400, "Bad Request - Invalid CallBackURL"),
    ({"CallBackURL": "https://example.com/c b"}, 400, "Bad Request - Invalid CallBackURL"),
    ({"CallBackURL": None}, 400, "Bad Request - Invalid CallBackURL"),
    ({"AccountReference": "THIRTEEN-CHAR"}, 400, "Bad Request - Invalid AccountReference"),
    ({"TransactionDesc": "fourteen chars"}, 400, "Bad Request - Invalid TransactionDesc"),
    ({"TransactionDesc": ""}, 400, "Bad Request - Invalid TransactionDesc"),
    ({"Password": "d3Jvbmc="}, 500, "Wrong credentials"),
])
def test_push_field_checks(sim, web, changes, status, message):
    resp = post(sim, web, PUSH, push_body(**changes), token(sim, web))
    assert resp.status_code == status
    body = resp.json()
    assert set(body) == {"requestId", "errorCode", "errorMessage"}
    assert body["errorCode"] == ("400.002.02" if status == 400 else "500.001.1001")
    assert body["errorMessage"] == message
    assert not sim.transactions


@pytest.mark.parametrize("changes", [{"Amount": "10"}, {"Amount": 10.0}, {"BusinessShortCode": 174379},
                                     {"PartyA": 254708374149, "PhoneNumber": 254708374149},
                                     {"CallBackURL": "http://10.5.50.1:8080/cb/tok"},
                                     {"TransactionType": "CustomerBuyGoodsOnline", "PartyB": "600100"}])
def test_push_accepts_what_daraja_accepts(sim, web, changes):
    resp = post(sim, web, PUSH, push_body(**changes), token(sim, web))
    assert resp.status_code == 200, resp.text


def test_push_not_json(sim, web):
    resp = post(sim, web, PUSH, b"<xml/>", token(sim, web))
    assert resp.status_code == 400 and resp.json()["errorCode"] == "400.002.05"


def test_unknown_api_path_is_404_001_01(sim, web):
    for path in ("/mpesa/nothing/v1", "/mpesa/stkpush/v2/processrequest", "/oauth/v2/generate"):
        resp = web.post(sim.url + path, json={}, timeout=2)
        assert resp.status_code == 404
        body = resp.json()
        assert set(body) == {"requestId", "errorCode", "errorMessage"}
        assert (body["errorCode"], body["errorMessage"]) == ("404.001.01", "Resource not found")


def test_wrong_method_is_405_001(sim, web):
    for method, path in (("GET", PUSH), ("GET", QUERY), ("POST", "/oauth/v1/generate"), ("PUT", PUSH)):
        resp = web.request(method, sim.url + path, timeout=2)
        assert resp.status_code == 405
        assert resp.json()["errorCode"] == "405.001"
    assert not sim.transactions


def test_path_outside_the_api_is_a_gateway_fault(sim, web):
    for method, path in (("GET", "/nothing"), ("POST", "/v1/mpesa/stkpush/v1/processrequest")):
        resp = web.request(method, sim.url + path, timeout=2)
        assert resp.status_code == 404
        body = resp.json()
        assert set(body) == {"fault"} and body["fault"]["faultstring"] and body["fault"]["detail"]["errorcode"]


def test_fail_next(sim, web):
    tok = token(sim, web)
    sim.fail_next(2, status=503)
    assert post(sim, web, PUSH, push_body(), tok).status_code == 503
    assert "fault" in post(sim, web, QUERY, query_body("ws_CO_1"), tok).json()
    tok = token(sim, web)                                  # OAuth is not a business call
    assert post(sim, web, PUSH, push_body(), tok).status_code == 200
    sim.fail_next(1, status=500)
    assert post(sim, web, PUSH, push_body(), tok).status_code == 500
    assert len(sim.transactions) == 1


def test_paybill_with_a_foreign_party_b_ends_in_sfc_ic0003(sim, client, receiver):
    with DarajaClient(sim.url, "simulator", "simulator", SHORTCODE, SANDBOX_PASSKEY, party_b="600100",
                      timeout=2) as c:
        accepted = c.stk_push(PHONE, 10, receiver.url, "WIFI", "Wi-Fi")
    _, _, body = receiver.wait(1)[0]
    assert body["Body"]["stkCallback"]["ResultCode"] == "SFC_IC0003"
    assert final_result(client, accepted.checkout_request_id).result_code == "SFC_IC0003"


# --- STK query -----------------------------------------------------------------------------------

def test_query_states_on_the_wire(sim, web):
    sim.set_delays(final_after=0.3)
    tok = token(sim, web)
    cid = post(sim, web, PUSH, push_body(), tok).json()["CheckoutRequestID"]
    early = post(sim, web, QUERY, query_body(cid), tok)
    assert early.status_code == 500
    assert set(early.json()) == {"requestId", "errorCode", "errorMessage"}
    assert early.json()["errorCode"] == "500.001.1001"
    assert early.json()["errorMessage"] == "The transaction is being processed"
    unknown = post(sim, web, QUERY, query_body("ws_CO_404"), tok)
    assert (unknown.status_code, unknown.json()["errorMessage"]) == (500, "The transaction does not Exist")
    time.sleep(0.35)
    # the first query after the final state is known says "being processed" once more (daraja.md)
    relapse = post(sim, web, QUERY, query_body(cid), tok)
    assert (relapse.status_code, relapse.json()["errorCode"]) == (500, "500.001.1001")
    assert relapse.json()["errorMessage"] == "The transaction is being processed"
    final = post(sim, web, QUERY, query_body(cid), tok)
    assert final.status_code == 200
    assert final.json() == {
        "ResponseCode": "0", "ResponseDescription": "The service request has been accepted successsfully",
        "MerchantRequestID": sim.transactions[cid].merchant_request_id, "CheckoutRequestID": cid,
        "ResultCode": "0", "ResultDesc": "The service request is processed successfully."}


def test_query_checks_its_fields(sim, web):
    tok = token(sim, web)
    assert post(sim, web, QUERY, {**query_body("x"), "Password": "bad"}, tok).json()["errorMessage"] == \
        "Wrong credentials"
    resp = post(sim, web, QUERY, {**query_body("x"), "CheckoutRequestID": ""}, tok)
    assert (resp.status_code, resp.json()["errorMessage"]) == (400, "Bad Request - Invalid CheckoutRequestID")


# --- callbacks ---------------------------------------------------------------------------------------

def test_success_callback_shape(sim, client, receiver):
    accepted = client.stk_push("254712345678", 10, receiver.url, "WIFI", "Wi-Fi 1 hour")
    path, headers, body = receiver.wait(1)[0]
    assert path == "/cb/s3cr3t-token"
    assert headers["Content-Type"] == "application/json"
    cb = body["Body"]["stkCallback"]
    assert cb["MerchantRequestID"] == accepted.merchant_request_id
    assert cb["CheckoutRequestID"] == accepted.checkout_request_id
    assert cb["ResultCode"] == 0 and isinstance(cb["ResultCode"], int)
    assert cb["ResultDesc"] == "The service request is processed successfully."
    items = cb["CallbackMetadata"]["Item"]
    values = {i["Name"]: i.get("Value") for i in items}
    assert values["Amount"] == 10.0 and isinstance(values["Amount"], float)
    assert re.fullmatch(r"[A-Z0-9]{10}", values["MpesaReceiptNumber"])
    assert isinstance(values["TransactionDate"], int) and len(str(values["TransactionDate"])) == 14
    assert values["PhoneNumber"] == 254712345678
    assert {"Name": "Balance"} in items
    tx = sim.wait_for_callback(accepted.checkout_request_id, 2)
    assert tx.callback_status == 200 and tx.callback_attempts == 1 and tx.receipt == values["MpesaReceiptNumber"]


@pytest.mark.parametrize("phone,code,desc", [("254700001032", 1032, "Request cancelled by user"),
                                             ("254700001037", 1037, "DS timeout user cannot be reached"),
                                             ("254700000001", 1, "The balance is insufficient for the transaction."),
                                             ("254700002001", 2001, "The initiator information is invalid.")])
def test_failure_callback_shape(sim, client, receiver, phone, code, desc):
    client.stk_push(phone, 10, receiver.url, "WIFI", "Wi-Fi")
    cb = receiver.wait(1)[0][2]["Body"]["stkCallback"]
    assert cb["ResultCode"] == code and cb["ResultDesc"] == desc
    assert "CallbackMetadata" not in cb


def test_silent_success_has_no_callback_but_the_query_knows(sim, client, receiver):
    accepted = client.stk_push("254799999999", 10, receiver.url, "WIFI", "Wi-Fi")
    assert sim.wait_for_callback(accepted.checkout_request_id, 0.3) is None
    assert receiver.received == []
    result = final_result(client, accepted.checkout_request_id)
    assert (result.pending, result.result_code) == (False, "0")
    assert sim.transactions[accepted.checkout_request_id].receipt


def test_resend_callback_delivers_a_duplicate(sim, client, receiver):
    accepted = client.stk_push(PHONE, 10, receiver.url, "WIFI", "Wi-Fi")
    sim.wait_for_callback(accepted.checkout_request_id, 2)
    assert sim.resend_callback(accepted.checkout_request_id) == 200
    first, second = receiver.wait(2)
    assert first[2] == second[2]
    assert sim.transactions[accepted.checkout_request_id].callback_attempts == 2


def test_callbacks_are_single_shot(sim, client):
    failing = Receiver(status=500)
    try:
        accepted = client.stk_push(PHONE, 10, failing.url, "WIFI", "Wi-Fi")
        tx = sim.wait_for_callback(accepted.checkout_request_id, 2)
        assert tx.callback_status == 500
        time.sleep(0.2)
        assert len(failing.received) == 1 and tx.callback_attempts == 1
    finally:
        failing.close()
    unreachable = client.stk_push(PHONE, 10, "http://127.0.0.1:9/cb/x", "WIFI", "Wi-Fi")
    tx = sim.wait_for_callback(unreachable.checkout_request_id, 2)
    assert tx.callback_status is None and tx.callback_error


def test_set_outcome_overrides_by_phone(sim, client, receiver):
    sim.set_outcome(PHONE, 2001, deliver_callback=False)
    sim.set_outcome("254711111111", "1032")
    silent = client.stk_push(PHONE, 10, receiver.url, "WIFI", "Wi-Fi")
    loud = client.stk_push("254711111111", 10, receiver.url, "WIFI", "Wi-Fi")
    assert sim.wait_for_callback(loud.checkout_request_id, 2).result_code == "1032"
    assert sim.wait_for_callback(silent.checkout_request_id, 0.2) is None
    assert final_result(client, silent.checkout_request_id).result_code == "2001"


def test_set_delays_reaches_pushes_already_waiting(sim, client, receiver):
    sim.set_delays(callback_delay=60, final_after=60)
    accepted = client.stk_push(PHONE, 10, receiver.url, "WIFI", "Wi-Fi")
    assert client.stk_query(accepted.checkout_request_id).pending
    sim.set_delays(final_after=0)
    assert final_result(client, accepted.checkout_request_id).result_code == "0"
    assert sim.wait_for_callback(accepted.checkout_request_id, 0.1) is None
    sim.set_delays(callback_delay=0)
    assert sim.wait_for_callback(accepted.checkout_request_id, 2).callback_status == 200
    time.sleep(0.05)
    assert len(receiver.received) == 1


def test_receipts_are_unique(sim, client):
    for _ in range(30):
        client.stk_push(next(NUMBERS), 10, "http://127.0.0.1:9/cb/x", "WIFI", "Wi-Fi")
    receipts = [tx.receipt for tx in sim.transactions.values()]
    assert len(set(receipts)) == 30


def test_subscriber_is_locked_while_a_push_is_open_by_default(sim, client, web):
    sim.set_delays(final_after=30)
    tok = token(sim, web)
    assert post(sim, web, PUSH, push_body(PartyA=PHONE, PhoneNumber=PHONE), tok).status_code == 200
    second = post(sim, web, PUSH, push_body(PartyA=PHONE, PhoneNumber=PHONE, Amount=20), tok)
    assert second.status_code == 500 and second.json()["errorCode"] == "500.001.1001"
    assert second.json()["errorMessage"] == ("Unable to lock subscriber, a transaction is already in process for "
                                             "the current subscriber")
    assert post(sim, web, PUSH, push_body(), tok).status_code == 200          # another number
    sim.set_delays(final_after=0)                                             # the first is final now
    assert post(sim, web, PUSH, push_body(PartyA=PHONE, PhoneNumber=PHONE, Amount=20), tok).status_code == 200
    assert len(sim.transactions) == 3


def test_subscriber_lock_switched_off(sim, web):
    sim.set_quirks(lock_subscriber=False)
    sim.set_delays(final_after=5)
    tok = token(sim, web)
    for amount in (10, 20):
        assert post(sim, web, PUSH, push_body(PartyA=PHONE, PhoneNumber=PHONE, Amount=amount), tok).status_code == 200


def test_rule_17_same_amount_phone_and_shortcode_within_the_window(sim, client, receiver):
    first = client.stk_push(PHONE, 10, receiver.url, "WIFI", "Wi-Fi")
    assert final_result(client, first.checkout_request_id).result_code == "0"
    again = client.stk_push(PHONE, 10, receiver.url, "WIFI", "Wi-Fi")     # accepted: 17 is a result code
    assert final_result(client, again.checkout_request_id).result_code == "17"
    cb = sim.wait_for_callback(again.checkout_request_id, 2).callback_body["Body"]["stkCallback"]
    assert (cb["ResultCode"], cb["ResultDesc"]) == (17, "Rule limited.")
    other_amount = client.stk_push(PHONE, 20, receiver.url, "WIFI", "Wi-Fi")
    assert final_result(client, other_amount.checkout_request_id).result_code == "0"
    other_phone = client.stk_push(next(NUMBERS), 10, receiver.url, "WIFI", "Wi-Fi")
    assert final_result(client, other_phone.checkout_request_id).result_code == "0"
    sim.add_account("600200", SANDBOX_PASSKEY)
    with DarajaClient(sim.url, "simulator", "simulator", "600200", SANDBOX_PASSKEY, timeout=2) as shop:
        other_shortcode = shop.stk_push(PHONE, 10, receiver.url, "WIFI", "Wi-Fi")
        assert final_result(shop, other_shortcode.checkout_request_id).result_code == "0"


def test_rule_17_counts_a_cancelled_push_and_ends_with_its_window(client):
    with DarajaSimulator(callback_delay=0.05, final_after=0.05, rule_limit_seconds=30) as sim, \
            DarajaClient(sim.url, "simulator", "simulator", SHORTCODE, SANDBOX_PASSKEY, timeout=2) as c:
        sim.set_outcome(PHONE, 1032)
        cancelled = c.stk_push(PHONE, 10, "http://127.0.0.1:9/cb/x", "WIFI", "Wi-Fi")
        assert final_result(c, cancelled.checkout_request_id).result_code == "1032"
        sim.set_outcome(PHONE, 0)
        retry = c.stk_push(PHONE, 10, "http://127.0.0.1:9/cb/x", "WIFI", "Wi-Fi")
        assert final_result(c, retry.checkout_request_id).result_code == "17"
        sim.rule_limit_seconds = 0.2              # the window ends: both pushes are older than that
        time.sleep(0.25)
        later = c.stk_push(PHONE, 10, "http://127.0.0.1:9/cb/x", "WIFI", "Wi-Fi")
        assert final_result(c, later.checkout_request_id).result_code == "0"


def test_rule_17_off_with_a_zero_window(sim, client):
    sim.rule_limit_seconds = 0
    codes = []
    for _ in range(2):
        accepted = client.stk_push(PHONE, 10, "http://127.0.0.1:9/cb/x", "WIFI", "Wi-Fi")
        codes.append(final_result(client, accepted.checkout_request_id).result_code)
    assert codes == ["0", "0"]


def test_relapse_switched_off(sim, client):
    sim.set_quirks(relapse=False)
    accepted = client.stk_push(PHONE, 10, "http://127.0.0.1:9/cb/x", "WIFI", "Wi-Fi")
    time.sleep(0.1)
    assert client.stk_query(accepted.checkout_request_id).result_code == "0"


def test_spike_arrest_above_the_rate(sim, web):
    sim.spike_limit = 3
    tok = token(sim, web)
    answers = [post(sim, web, QUERY, query_body("ws_CO_1"), tok) for _ in range(4)]
    assert [a.status_code for a in answers] == [500, 500, 500, 500]
    assert [a.json()["errorCode"] for a in answers] == ["500.001.1001"] * 3 + ["500.003.02"]
    assert set(answers[3].json()) == {"requestId", "errorCode", "errorMessage"}
    assert answers[3].json()["errorMessage"] == "Spike arrest violation"
    tok = token(sim, web)                                      # OAuth is not counted
    time.sleep(1.0)
    assert post(sim, web, PUSH, push_body(), tok).status_code == 200


@pytest.mark.parametrize("code,message", [("500.003.02", "Spike arrest violation"),
                                          ("500.003.03", "Quota violation")])
def test_refuse_next_gives_rate_limit_envelopes(sim, web, code, message):
    tok = token(sim, web)
    sim.refuse_next(1, code)
    resp = post(sim, web, PUSH, push_body(), tok)
    assert resp.status_code == 500
    assert resp.json()["errorCode"] == code and resp.json()["errorMessage"] == message and resp.json()["requestId"]
    assert not sim.transactions
    assert post(sim, web, PUSH, push_body(), tok).status_code == 200
    with pytest.raises(ValueError):
        sim.refuse_next(1, "999.999")


# --- realistic timing (daraja.md "Timing seen in sandbox", "Callback") ---------------------------------

NOWHERE = "http://127.0.0.1:9/cb/x"     # callbacks are not the point here (and stop() cancels them)
SILENT = "254799999999"                 # a success whose callback never comes, whatever the timing


def realistic(**options) -> DarajaSimulator:
    """A realistic-timing simulator for the tests of its drawn times, which push one number many
    times in a row, hundreds a second: rule 17, the subscriber lock, the query's one relapse and
    spike arrest (each tested above) are off here, or they would answer in place of the timings."""
    sim = DarajaSimulator(timing="realistic", **{"seed": 7, "rule_limit_seconds": 0, "spike_limit": 0, **options})
    sim.set_quirks(lock_subscriber=False, relapse=False)
    return sim.start()


def push_each(sim, phones) -> list:
    with DarajaClient(sim.url, "simulator", "simulator", SHORTCODE, SANDBOX_PASSKEY, timeout=2) as c:
        ids = [c.stk_push(p, 10, NOWHERE, "WIFI", "Wi-Fi").checkout_request_id for p in phones]
    return [sim.transactions[cid] for cid in ids]


def test_realistic_timing_draws_the_sandbox_timings(caplog):
    caplog.set_level("INFO", "hotspotd.testing.daraja")
    sim = realistic(lost_callback_rate=0, late_callback_rate=0)
    try:
        assert "realistic timing, seed 7" in caplog.text          # a failing run can be replayed
        phones = {"0": PHONE, "1032": "254700001032", "1037": "254700001037", "1019": "254700001019",
                  "17": "254700000017"}
        drawn = {code: push_each(sim, [phone] * 15) for code, phone in phones.items()}
    finally:
        sim.stop()

    def finals(code):
        return [tx.final_after for tx in drawn[code]]

    def gaps(code):
        return [tx.callback_delay - tx.final_after for tx in drawn[code]]
    assert all(15 <= f <= 30 for f in finals("0")) and max(finals("0")) - min(finals("0")) > 5   # success ~17 s
    assert all(22 <= f <= 32 for f in finals("1032"))                                            # cancel ~27 s
    assert all(12 <= f <= 16 for f in finals("1037")) and all(10 <= g <= 14 for g in gaps("1037"))  # ~14, ~26 s
    assert all(60 <= f <= 180 for f in finals("1019"))                     # the prompt lives 1-3 minutes
    assert all(2 <= f <= 6 for f in finals("17"))                          # refused before any prompt
    assert all(1 <= g <= 12 for code in ("0", "1032", "1019", "17") for g in gaps(code))   # after the query
    assert {tx.callback_fate for txs in drawn.values() for tx in txs} == {"on_time"}


def test_realistic_timing_loses_some_callbacks_and_delivers_some_late():
    sim = realistic(lost_callback_rate=0.1, late_callback_rate=0.1, late_callback_after=180)
    try:
        txs = push_each(sim, [PHONE] * 200) + push_each(sim, [SILENT] * 5)
    finally:
        sim.stop()
    fates = [tx.callback_fate for tx in txs[:200]]
    assert 8 <= fates.count("lost") <= 35 and 8 <= fates.count("late") <= 35
    for tx in txs[:200]:
        assert tx.deliver_callback == (tx.callback_fate != "lost")
        if tx.callback_fate == "late":                      # after hotspotd's payment timeout
            assert 185 <= tx.callback_delay <= 240
    assert {(tx.phone, tx.callback_fate, tx.deliver_callback) for tx in txs[200:]} == {(SILENT, "none", False)}


def test_a_seed_replays_the_same_timings():
    runs = []
    for seed in (42, 42, 43):
        sim = realistic(seed=seed)
        try:
            runs.append([(tx.final_after, tx.callback_delay, tx.callback_fate)
                         for tx in push_each(sim, [PHONE, "254700001032", PHONE, "254700001037"] * 5)])
        finally:
            sim.stop()
    assert runs[0] == runs[1] and runs[0] != runs[2]


def test_realistic_query_and_callback_keep_to_the_drawn_times(receiver):
    # time_scale 50: a success is final on the query after 0.3-0.6 s, its callback 0.02-0.24 s later
    sim = realistic(time_scale=50, lost_callback_rate=0, late_callback_rate=0)
    try:
        with DarajaClient(sim.url, "simulator", "simulator", SHORTCODE, SANDBOX_PASSKEY, timeout=2) as c:
            cid = c.stk_push(PHONE, 10, receiver.url, "WIFI", "Wi-Fi").checkout_request_id
            tx = sim.transactions[cid]
            assert 0.3 <= tx.final_after <= 0.6 and tx.final_after + 0.02 <= tx.callback_delay
            assert c.stk_query(cid).pending
            assert receiver.wait(1, 2)
            assert time.monotonic() >= tx.pushed_at + tx.callback_delay
            assert c.stk_query(cid).result_code == "0"
    finally:
        sim.stop()


def test_a_late_callback_comes_after_the_payment_timeout(receiver):
    sim = realistic(time_scale=100, lost_callback_rate=0, late_callback_rate=1, late_callback_after=2)
    try:
        with DarajaClient(sim.url, "simulator", "simulator", SHORTCODE, SANDBOX_PASSKEY, timeout=2) as c:
            cid = c.stk_push(PHONE, 10, receiver.url, "WIFI", "Wi-Fi").checkout_request_id
            tx = sim.transactions[cid]
            assert tx.callback_fate == "late" and 2.05 <= tx.callback_delay <= 2.6
            time.sleep(tx.final_after + 0.02)
            assert c.stk_query(cid).result_code == "0"           # the query knows long before
            assert receiver.received == []
            assert sim.wait_for_callback(cid, 5).callback_status == 200
            assert time.monotonic() >= tx.pushed_at + 2.05
    finally:
        sim.stop()


def test_set_delays_ends_realistic_timing(receiver):
    sim = realistic(time_scale=1, lost_callback_rate=0)
    try:
        with DarajaClient(sim.url, "simulator", "simulator", SHORTCODE, SANDBOX_PASSKEY, timeout=2) as c:
            cid = c.stk_push(PHONE, 10, receiver.url, "WIFI", "Wi-Fi").checkout_request_id
            assert c.stk_query(cid).pending                       # 15-30 s away
            sim.set_delays(final_after=0, callback_delay=0)
            assert sim.timing == "instant"
            assert c.stk_query(cid).result_code == "0"
            assert sim.wait_for_callback(cid, 2).callback_status == 200
            later = c.stk_push(PHONE, 10, receiver.url, "WIFI", "Wi-Fi").checkout_request_id
            assert (sim.transactions[later].final_after, sim.transactions[later].callback_delay) == (0, 0)
    finally:
        sim.stop()


@pytest.mark.parametrize("options", [{"timing": "slow"}, {"timing": "realistic", "time_scale": 0},
                                     {"timing": "realistic", "lost_callback_rate": 1.5}])
def test_bad_timing_options_are_refused(options):
    with pytest.raises(ValueError):
        DarajaSimulator(**options)


# --- lifecycle -----------------------------------------------------------------------------------------

def test_stop_cancels_callbacks_not_yet_sent(receiver):
    sim = DarajaSimulator(callback_delay=0.3, final_after=0.05).start()
    with DarajaClient(sim.url, "simulator", "simulator", SHORTCODE, SANDBOX_PASSKEY, timeout=2) as c:
        c.stk_push(PHONE, 10, receiver.url, "WIFI", "Wi-Fi")
    sim.stop()
    time.sleep(0.4)
    assert receiver.received == []


def test_stop_does_not_wait_for_idle_keep_alive_connections(web):
    sim = DarajaSimulator().start()
    token(sim, web)                      # the session keeps the connection open
    started = time.monotonic()
    sim.stop()
    assert time.monotonic() - started < 2
    with pytest.raises(requests.ConnectionError):
        token(sim, web)


def test_url_and_port(sim):
    assert re.fullmatch(r"http://127\.0\.0\.1:\d+", sim.url)


def test_hotspotd_simulate_daraja_runs_standalone():
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with subprocess.Popen([sys.executable, "-m", "hotspotd.service.cli", "simulate", "daraja", "--listen", "127.0.0.1:0",
                           "--callback-delay", "0.1", "--timing", "realistic", "--seed", "5"], stderr=subprocess.PIPE,
                          text=True, env=env) as proc:
        try:
            url = None
            deadline = time.monotonic() + 10
            while url is None and time.monotonic() < deadline:
                line = proc.stderr.readline()
                match = re.search(r"listening on (http://\S+) \(realistic timing, seed 5,", line)
                url = match.group(1) if match else None
            assert url, "the simulator did not log its URL"
            with requests.Session() as session:
                resp = session.get(url + "/oauth/v1/generate?grant_type=client_credentials",
                                   headers={"Authorization": BASIC}, timeout=2)
                assert resp.status_code == 200
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.stderr.read()
            assert proc.wait(timeout=10) == 0


def test_hotspotd_simulate_daraja_forgiving_and_without_rule_17():
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with subprocess.Popen([sys.executable, "-m", "hotspotd.service.cli", "simulate", "daraja", "--listen", "127.0.0.1:0",
                           "--final-after", "30", "--rule-limit", "0", "--forgiving"], stderr=subprocess.PIPE,
                          text=True, env=env) as proc:
        try:
            url = None
            deadline = time.monotonic() + 10
            while url is None and time.monotonic() < deadline:
                match = re.search(r"listening on (http://\S+)", proc.stderr.readline())
                url = match.group(1) if match else None
            assert url, "the simulator did not log its URL"
            sim = types.SimpleNamespace(url=url)          # what token() and post() need of a simulator
            with requests.Session() as web:
                first, second = token(sim, web), token(sim, web)
                body = push_body(PartyA=PHONE, PhoneNumber=PHONE)
                # the first token still works, and a second push to an open number is not locked
                assert post(sim, web, PUSH, body, first).status_code == 200
                assert post(sim, web, PUSH, body, second).status_code == 200
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.stderr.read()
            assert proc.wait(timeout=10) == 0


def test_hotspotd_simulate_daraja_rejects_a_bad_listen_address(capsys):
    from hotspotd.service.cli import main
    assert main(["simulate", "daraja", "--listen", "nonsense"]) == 2
    assert "host:port" in capsys.readouterr().err


def test_hotspotd_simulate_daraja_rejects_a_bad_timing_option(capsys):
    from hotspotd.service.cli import main
    assert main(["simulate", "daraja", "--listen", "127.0.0.1:0", "--timing", "realistic", "--time-scale", "0"]) == 2
    assert "time_scale" in capsys.readouterr().err


def test_the_payers_phone_gets_mpesas_confirmation_sms(sim, web):
    # issue 17's contract: GET /simulator/phones/<2547…>/messages → {"messages": [{from, text, receipt, amount, at}]}
    sim.name_business(SHORTCODE, "MAMA MBOGA WIFI")
    sim.set_delays(final_after=0)
    with DarajaClient(sim.url, "simulator", "simulator", SHORTCODE, SANDBOX_PASSKEY, timeout=2) as c:
        paid = c.stk_push("254711000101", 10, NOWHERE, "WIFI", "Wi-Fi").checkout_request_id
        c.stk_push("254711000102", 10, NOWHERE, "WIFI", "Wi-Fi")                  # another phone's
    sim.set_outcome("254700001032", 1032)
    with DarajaClient(sim.url, "simulator", "simulator", SHORTCODE, SANDBOX_PASSKEY, timeout=2) as c:
        c.stk_push("254700001032", 10, NOWHERE, "WIFI", "Wi-Fi")                  # cancelled: no SMS
    inbox = web.get(f"{sim.url}/simulator/phones/254711000101/messages").json()["messages"]
    receipt = sim.transactions[paid].receipt
    assert [(m["from"], m["receipt"], m["amount"]) for m in inbox] == [("MPESA", receipt, 10)]
    assert inbox[0]["text"].startswith(f"{receipt} Confirmed. Ksh10.00 sent to MAMA MBOGA WIFI for account WIFI on ")
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", inbox[0]["at"])
    assert web.get(f"{sim.url}/simulator/phones/254700001032/messages").json() == {"messages": []}
    assert web.get(f"{sim.url}/simulator/phones/0711000101/messages").status_code == 404   # not a 2547… number
