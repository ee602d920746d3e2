"""The pay-to-connect flow end to end: real HTTP to the portal, the portal to the Daraja simulator,
the simulator's callbacks back over HTTP."""
import json

import pytest

from hotspotd import access, clock
from hotspotd.storage.models import Callback, Entitlement, Event, Package, Payment

from tests.helpers import (INSTANT, REALISTIC, REALISTIC_LONGEST_PAYMENT, final_status, forged, pay, patience,
                           realistic_timing, wait_for)

#: run again on PostgreSQL by scripts/test (-m postgres), and in the simulator's realistic timing (-m daraja_timing)
pytestmark = [pytest.mark.postgres, pytest.mark.daraja_timing]

MAC = "AA:BB:CC:00:11:22"


def test_packages_listed(hotspot, http):
    body = http.get(f"{hotspot.portal_url}/api/portal/packages").json()
    assert body["success"] is True
    assert [(p["name"], p["price"], p["durationSeconds"]) for p in body["packages"]] == [
        ("30 minutes", 5, 1800), ("1 hour", 10, 3600), ("24 hours", 50, 86400)]


def test_success_number_gets_a_session_of_the_package_length(hotspot, http):
    r = pay(http, hotspot, "0708374149")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["success"] is True and body["amount"] == 10 and body["packageName"] == "1 hour"
    status = final_status(http, hotspot, body["checkoutRequestId"])
    assert status["status"] == "success"
    session = status["session"]
    assert 3590 <= session["remainingSeconds"] <= 3600
    assert session["packageName"] == "1 hour" and session["expiresAt"].endswith("Z")
    payment = Payment.get(Payment.checkout_request_id == body["checkoutRequestId"])
    assert payment.phone == "254708374149"
    tx = hotspot.simulator.transactions[payment.checkout_request_id]
    if not REALISTIC:
        assert payment.resolved_by == "callback" and payment.receipt == tx.receipt
    elif tx.deliver_callback:        # the callback comes, maybe after the query settled it: its receipt too
        wait_for(lambda: Payment.get_by_id(payment.id).receipt == tx.receipt, patience(5))
    else:                            # lost: the query settled it, and the query carries no receipt
        assert payment.resolved_by == "query" and payment.receipt is None
    grant = access.authorize(MAC)
    assert grant is not None and grant.remaining_seconds <= 3600
    assert Entitlement.select().count() == 1


def test_cancel_number_is_cancelled_with_its_reason(hotspot, http):
    body = pay(http, hotspot, "254700001032").json()
    status = final_status(http, hotspot, body["checkoutRequestId"])
    assert status["status"] == "cancelled"
    assert status["resultCode"] == "1032" and status["reason"] == "cancelled"
    assert "cancel" in status["message"].lower()
    assert status["session"] is None
    assert access.authorize(MAC) is None


@pytest.mark.parametrize("phone, status, reason", [
    ("254700000001", "failed", "insufficient_funds"),
    ("254700002001", "failed", "wrong_pin"),
    ("254700001037", "timeout", "no_response"),
    ("254700001019", "timeout", "expired"),      # nobody answered: realistic timing, at the prompt's end (1-3 min)
])
def test_failure_numbers(hotspot, http, phone, status, reason):
    body = pay(http, hotspot, phone).json()
    result = final_status(http, hotspot, body["checkoutRequestId"])
    assert (result["status"], result["reason"]) == (status, reason)
    assert Entitlement.select().count() == 0


def test_lost_callback_is_resolved_by_reconciliation(hotspot, http):
    body = pay(http, hotspot, "254799999999").json()
    status = final_status(http, hotspot, body["checkoutRequestId"], timeout=20)
    assert status["status"] == "success"
    payment = Payment.get(Payment.checkout_request_id == body["checkoutRequestId"])
    assert payment.resolved_by == "query"
    assert Callback.select().count() == 0
    assert Entitlement.select().where(Entitlement.payment == payment.id).count() == 1
    assert access.authorize(MAC) is not None


def test_a_callback_after_the_query_settled_still_records_the_receipt(make_hotspot, http):
    # daraja.md "STK push query": the query carries no receipt; the callback that follows it does
    # (realistic timing: success on the query after 15-30 s, the callback some seconds later)
    hs = make_hotspot(simulator={"callback_delay_seconds": 60, "final_after_seconds": 0.05})
    checkout = pay(http, hs, "0708374149").json()["checkoutRequestId"]
    assert final_status(http, hs, checkout)["status"] == "success"
    payment = Payment.get()
    assert payment.resolved_by == "query" and payment.receipt is None
    ent = Entitlement.get()
    hs.simulator.set_delays(callback_delay=0)
    receipt = hs.simulator.transactions[checkout].receipt
    wait_for(lambda: Payment.get().receipt == receipt)
    assert Payment.get().paid_phone == "254708374149" and Payment.get().resolved_by == "query"
    assert Callback.get().state == "applied"
    assert Entitlement.select().count() == 1 and Entitlement.get().expires_at == ent.expires_at
    # the code in the customer's SMS works: "Already paid?" on another device
    r = http.post(f"{hs.portal_url}/api/portal/receipt",
                  json={"receipt": receipt, "phone": "0708374149", "macAddress": "AA:BB:CC:00:11:33"})
    assert r.status_code == 200, r.text
    hs.simulator.resend_callback(checkout)
    wait_for(lambda: Callback.select().where(Callback.state == "duplicate").count() == 1)
    assert Entitlement.select().count() == 1


def test_a_success_callback_after_the_payment_timed_out_still_pays_once(make_hotspot, http):
    # the "callbacks ... arrive after hotspotd's 180 s timeout" (here 1 s): the customer paid
    hs = make_hotspot(simulator={"callback_delay_seconds": 60, "final_after_seconds": 60},
                      mpesa={"prompt_lifetime_seconds": 1, "query_after_seconds": 0.2, "query_interval_seconds": 0.2})
    checkout = pay(http, hs, "0708374149").json()["checkoutRequestId"]
    assert final_status(http, hs, checkout)["status"] == "timeout"
    assert access.authorize(MAC) is None
    hs.simulator.set_delays(callback_delay=0)
    assert wait_for(lambda: final_status(http, hs, checkout)["status"] == "success")
    payment = Payment.get()
    assert payment.resolved_by == "callback" and payment.receipt == hs.simulator.transactions[checkout].receipt
    assert access.authorize(MAC) is not None
    hs.simulator.set_delays(final_after=0)              # the reconcile job's query agrees: nothing more
    wait_for(lambda: Payment.get().next_query_at is None)
    assert Entitlement.select().count() == 1


def test_the_realistic_simulator_follows_the_config(make_hotspot, http):
    hs = make_hotspot(simulator={"timing": "realistic", "seed": 3, "time_scale": 10, "lost_callback_rate": 0.2},
                      mpesa={"prompt_lifetime_seconds": 18, "query_after_seconds": 1, "query_interval_seconds": 0.5,
                             "query_max_interval_seconds": 6})
    model = hs.simulator.realistic
    assert (model.seed, model.time_scale, model.lost_rate, model.late_rate) == (3, 10, 0.2, 0.1)
    assert model.late_after == 18                       # late means: after this install's payment timeout
    checkout = pay(http, hs, "0708374149").json()["checkoutRequestId"]
    assert 1.5 <= hs.simulator.transactions[checkout].final_after <= 3
    assert final_status(http, hs, checkout)["status"] == "success"
    assert Entitlement.select().count() == 1


def test_many_customers_in_realistic_timing_each_end_as_they_paid(make_hotspot, http):
    # daraja.md "Timing seen in sandbox" and "Callback" at a time scale of 20 (hotspotd's own payment
    # timings alike), with a third of the callbacks lost and a third after hotspotd's timeout: money
    # follows what the customer did, whichever of the query and the callback comes first, or none
    scale = 20
    hs = make_hotspot(**realistic_timing(scale, lost_callback_rate=0.3, late_callback_rate=0.3))
    codes = ["0"] * 12 + ["1032"] * 3 + ["1037"] * 3 + ["1019"] * 3 + ["1"] * 3
    paid = {}
    for i, code in enumerate(codes):
        phone = f"2547081{i:05d}"              # one customer each: no rule-17 limits between them
        hs.simulator.set_outcome(phone, code)
        mac = f"AA:BB:CC:00:77:{i:02X}"
        checkout = pay(http, hs, phone, mac=mac).json()["checkoutRequestId"]
        paid[checkout] = (code, mac)
    expected = {"0": "success", "1032": "cancelled", "1037": "timeout", "1019": "timeout", "1": "failed"}
    txs = hs.simulator.transactions
    assert {tx.callback_fate for tx in txs.values()} == {"on_time", "late", "lost"}
    for checkout, (code, mac) in paid.items():
        assert final_status(http, hs, checkout, timeout=REALISTIC_LONGEST_PAYMENT / scale)["status"] == expected[code]
    # every callback that comes has come (the late ones after hotspotd's payment timeout)
    wait_for(lambda: all(tx.callback_attempts for tx in txs.values() if tx.deliver_callback),
             timeout=(180 + 60 + 20) / scale)
    wait_for(lambda: Callback.select().where(Callback.state.in_(("received", "unmatched"))).count() == 0)
    for checkout, (code, mac) in paid.items():
        payment, tx = Payment.get(Payment.checkout_request_id == checkout), txs[checkout]
        assert payment.status == expected[code], (checkout, tx)
        grants = Entitlement.select().where(Entitlement.payment == payment.id).count()
        if code == "0":
            assert grants == 1 and access.authorize(mac) is not None
            assert payment.receipt == (tx.receipt if tx.deliver_callback else None), tx
        else:
            assert grants == 0 and access.authorize(mac) is None
    assert Entitlement.select().count() == codes.count("0")


def test_second_pay_while_pending_returns_the_pending_one(make_hotspot, http):
    hs = make_hotspot(simulator={"callback_delay_seconds": 30, "final_after_seconds": 30})
    first = pay(http, hs, "0708374149").json()
    second = pay(http, hs, "0708374149").json()
    assert second["checkoutRequestId"] == first["checkoutRequestId"] and second["reused"] is True
    assert len(hs.simulator.transactions) == 1


def test_a_strangers_open_prompt_for_my_device_is_not_my_payment(make_hotspot, http):
    # someone typed my MAC and their number: my pay request prompts my phone, for my package
    hs = make_hotspot(simulator={"callback_delay_seconds": 30, "final_after_seconds": 30})
    one_hour, day = (Package.get(Package.name == n).id for n in ("1 hour", "24 hours"))
    theirs = pay(http, hs, "0708374150", package=one_hour).json()
    mine = pay(http, hs, "0708374149", package=day).json()
    assert mine["reused"] is False and mine["checkoutRequestId"] != theirs["checkoutRequestId"]
    assert mine["amount"] == 50 and mine["packageName"] == "24 hours"
    assert {tx.phone for tx in hs.simulator.transactions.values()} == {"254708374150", "254708374149"}
    # the same phone and device asking for another package: a new prompt (Daraja's lock decides), not the old one
    other = pay(http, hs, "0708374150", package=day).json()
    assert other.get("checkoutRequestId") != theirs["checkoutRequestId"] and other.get("reused") is not True


@pytest.mark.parametrize("payload, field", [
    ({"phone": "0733123456", "packageId": 1, "macAddress": MAC}, "phone"),
    ({"phone": "hello", "packageId": 1, "macAddress": MAC}, "phone"),
    ({"phone": "0708374149", "packageId": 999, "macAddress": MAC}, "packageId"),
    ({"phone": "0708374149", "packageId": "x", "macAddress": MAC}, "packageId"),
    ({"phone": "0708374149", "packageId": 1, "macAddress": "zz"}, "macAddress"),
])
def test_bad_input_is_refused_clearly(hotspot, http, payload, field):
    r = http.post(f"{hotspot.portal_url}/api/portal/pay", json=payload)
    assert r.status_code in (400, 404)
    body = r.json()
    assert body["success"] is False and body["field"] == field and body["message"]
    assert Payment.select().where(Payment.status != "created").count() == 0
    assert len(hotspot.simulator.transactions) == 0


def test_not_json_is_refused(hotspot, http):
    r = http.post(f"{hotspot.portal_url}/api/portal/pay", data="phone=0708374149")
    assert r.status_code == 400 and r.json()["success"] is False


def test_duplicate_callback_changes_nothing(make_hotspot, http):
    hotspot = make_hotspot(simulator=INSTANT)      # the callback settles it, then comes again
    body = pay(http, hotspot, "0708374149").json()
    checkout = body["checkoutRequestId"]
    assert final_status(http, hotspot, checkout)["status"] == "success"
    ent = Entitlement.get()
    hotspot.simulator.resend_callback(checkout)
    wait_for(lambda: Callback.select().where(Callback.checkout_request_id == checkout).count() == 2)
    wait_for(lambda: Callback.select().where(Callback.state == "duplicate").count() == 1)
    assert Entitlement.select().count() == 1
    assert Entitlement.get().expires_at == ent.expires_at
    assert Payment.get(Payment.checkout_request_id == checkout).status == "success"


def test_wrong_amount_is_flagged_and_verified_by_query(make_hotspot, http):
    hs = make_hotspot(simulator={"callback_delay_seconds": 60, "final_after_seconds": 60})
    checkout = pay(http, hs, "254700001032").json()["checkoutRequestId"]  # the customer will cancel
    r = http.post(f"{hs.portal_url}/cb/{hs.callback_token}", json=forged(checkout, amount=1))
    assert r.json() == {"ResultCode": 0, "ResultDesc": "Accepted"}
    cb = Callback.get()
    assert cb.state == "flagged" and "amount" in cb.note
    assert Entitlement.select().count() == 0
    hs.simulator.set_delays(final_after=0)
    assert final_status(http, hs, checkout)["status"] == "cancelled"
    assert Entitlement.select().count() == 0


def test_seed_path_callback_is_never_trusted_alone(make_hotspot, http):
    hs = make_hotspot(simulator={"callback_delay_seconds": 60, "final_after_seconds": 60})
    checkout = pay(http, hs, "254700001032").json()["checkoutRequestId"]
    r = http.post(f"{hs.portal_url}/api/portal/mpesa/callback", json=forged(checkout))
    assert r.json() == {"ResultCode": 0, "ResultDesc": "Accepted"}
    assert Callback.get().state == "flagged"
    assert Payment.get().status == "pending" and Entitlement.select().count() == 0
    hs.simulator.set_delays(final_after=0)
    assert final_status(http, hs, checkout)["status"] == "cancelled"
    assert access.authorize(MAC) is None


def test_unknown_and_malformed_callbacks_are_stored_and_flagged(hotspot, http):
    url = f"{hotspot.portal_url}/cb/{hotspot.callback_token}"
    assert http.post(url, json=forged("ws_CO_unknown")).json()["ResultCode"] == 0
    assert http.post(url, data=b"{not json").json()["ResultCode"] == 0
    assert http.post(url, json={"Body": {"stkCallback": {"ResultCode": 0}}}).json()["ResultCode"] == 0
    states = [c.state for c in Callback.select().order_by(Callback.id)]
    assert states == ["unmatched", "malformed", "malformed"]
    assert Callback.select().where(Callback.body == "{not json").count() == 1
    assert Entitlement.select().count() == 0


def test_callback_with_a_wrong_token_is_refused_but_nothing_granted(hotspot, http):
    r = http.post(f"{hotspot.portal_url}/cb/not-the-token", json=forged("ws_CO_x"))
    assert r.status_code == 404
    assert Callback.select().count() == 0


def test_every_step_is_on_the_timeline(make_hotspot, http):
    hotspot = make_hotspot(simulator=INSTANT)      # in this order: the callback settles it
    checkout = pay(http, hotspot, "0708374149").json()["checkoutRequestId"]
    final_status(http, hotspot, checkout)
    kinds = [e.kind for e in Event.select().order_by(Event.id)]
    assert kinds[:5] == ["created", "pushed", "callback", "resolved", "session_created"]
    assert json.loads(Payment.get().login_context or "null") is None


# --- Daraja as hard as the real thing (issue 16): each behaviour from shared/reference/daraja.md ---

def test_the_querys_relapse_after_a_final_state_is_never_final(hotspot, http):
    # daraja.md, "STK push query": 500.001.1001 now and then after the final state was known
    lost = pay(http, hotspot, "254799999999").json()                  # no callback: the query settles it
    assert final_status(http, hotspot, lost["checkoutRequestId"], timeout=20)["status"] == "success"
    payment = Payment.get(Payment.checkout_request_id == lost["checkoutRequestId"])
    said = [e.message for e in Event.select().where(Event.payment == payment.id, Event.kind == "query")
            .order_by(Event.id)]
    assert said[0] == "still processing" and said[-1].startswith("ResultCode 0")   # the relapse came first
    settled = pay(http, hotspot, "0708374149", mac="AA:BB:CC:00:11:23").json()
    assert final_status(http, hotspot, settled["checkoutRequestId"])["status"] == "success"
    payment = Payment.get(Payment.checkout_request_id == settled["checkoutRequestId"])
    assert hotspot.payments.query(payment) == "success"              # the relapse flips nothing
    assert Payment.get_by_id(payment.id).status == "success"
    assert Entitlement.select().where(Entitlement.payment == payment.id).count() == 1


def test_spike_arrest_on_the_push_is_retried_once_unseen(hotspot, http):
    # daraja.md, "More result and error codes": 500.003.02 spike arrest, back off
    hotspot.simulator.refuse_next(1, "500.003.02")
    r = pay(http, hotspot, "254711000021")
    assert r.status_code == 200, r.text
    assert final_status(http, hotspot, r.json()["checkoutRequestId"])["status"] == "success"
    hotspot.simulator.refuse_next(2, "500.003.02")
    r = pay(http, hotspot, "254711000022", mac="AA:BB:CC:00:11:23")
    assert r.status_code == 503
    assert r.json()["message"] == "M-Pesa is busy right now. Please try again in a minute."
    assert Payment.get(Payment.phone == "254711000022").result_desc == "mpesa_busy"


def test_rate_limited_queries_leave_the_payment_to_a_later_reconcile(hotspot, http):
    body = pay(http, hotspot, "254799999999").json()
    hotspot.simulator.refuse_next(3, "500.003.03")                    # the next calls: the reconcile's queries
    assert final_status(http, hotspot, body["checkoutRequestId"], timeout=25)["status"] == "success"
    payment = Payment.get(Payment.checkout_request_id == body["checkoutRequestId"])
    errors = Event.select().where(Event.payment == payment.id, Event.kind == "query",
                                  Event.message.contains("500.003.03")).count()
    assert errors == 3 and payment.resolved_by == "query"


def test_a_locked_subscriber_is_told_plainly_and_the_open_payment_goes_on(make_hotspot, http):
    # daraja.md, "STK push" errors: 500.001.1001 "Unable to lock subscriber": wait a minute
    hs = make_hotspot(simulator={"callback_delay_seconds": 4, "final_after_seconds": 4})
    first = pay(http, hs, "254711000023").json()
    second = pay(http, hs, "254711000023", mac="AA:BB:CC:00:11:23")     # another device, the same phone
    assert second.status_code == 400
    assert second.json()["message"] == ("Another M-Pesa payment is waiting on your phone. Finish or cancel it "
                                        "there, or wait a minute, then try again.")
    assert final_status(http, hs, first["checkoutRequestId"])["status"] == "success"
    assert [(p.status, p.result_desc) for p in Payment.select().order_by(Payment.id)] == [
        ("success", "The service request is processed successfully."), ("failed", "mpesa_locked")]
    assert access.authorize(MAC) is not None


def test_a_wrong_base_url_is_a_configuration_error_not_a_wait(make_hotspot, http):
    # issue 16's audit: 404.001.01 under /mpesa/ (daraja.md: a gateway fault elsewhere)
    hs = make_hotspot()
    wrong = make_hotspot(mpesa={"environment": "sandbox", "base_url": hs.simulator.url + "/mpesa/v9",
                                "consumer_key": "simulator", "consumer_secret": "simulator",
                                "passkey": "p", "callback_url": "http://127.0.0.1:9"})
    r = pay(http, wrong, "254711000024")
    assert r.status_code == 400
    assert r.json()["message"] == "M-Pesa payments are not set up correctly here. Please tell the staff."
    assert Payment.get(Payment.phone == "254711000024").result_desc == "mpesa_misconfigured"


def test_a_rate_limit_stops_the_reconcile_run_until_the_next_interval(make_hotspot, http):
    hs = make_hotspot(scheduler={"enabled": False})
    hs.simulator.set_outcome("254711000025", 0, deliver_callback=False)
    for phone, mac in (("254799999999", MAC), ("254711000025", "AA:BB:CC:00:11:23")):
        assert pay(http, hs, phone, mac=mac).status_code == 200
    wait_for(lambda: Payment.select().where(Payment.next_query_at <= clock.now()).count() == 2, 5)
    queries = lambda: sum(1 for _, path, _ in hs.simulator.calls if path == "/mpesa/stkpushquery/v1/query")
    hs.simulator.refuse_next(1, "500.003.03")
    hs.payments.reconcile_due()
    assert queries() == 1                             # the second was not asked into the rate limit
    hs.payments.reconcile_due()
    assert queries() == 1                             # nor right after
    wait_for(lambda: hs.payments.reconcile_due() and queries() >= 3, 5)
    assert {p.status for p in Payment.select()} <= {"pending", "success"}
