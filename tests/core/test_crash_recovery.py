"""Killed with SIGKILL anywhere in the payment flow and started again: nothing lost, doubled or given away.

The end-to-end part runs ``scripts/crash_harness`` (loaded from its file: the harness is a script,
not part of the package) on real ``hotspotd run`` processes, once per crash point and with random
kills. The other tests pin down, in process, each recovery the harness needed.
"""
import importlib.machinery
import importlib.util
import io
import os
import subprocess
import sys

import pytest
import requests

from hotspotd import access, clock, faults
from hotspotd.storage.models import Callback, Entitlement, Event, Package, Payment

from tests.helpers import REPO, final_status, forged, pay, PAY_MAC as MAC, wait_for

#: run again on PostgreSQL by scripts/test (-m postgres)
pytestmark = pytest.mark.postgres

HARNESS = REPO / "scripts" / "crash_harness"


def load_harness():
    if "crash_harness" not in sys.modules:
        loader = importlib.machinery.SourceFileLoader("crash_harness", str(HARNESS))
        module = importlib.util.module_from_spec(importlib.util.spec_from_loader("crash_harness", loader))
        sys.modules["crash_harness"] = module      # before running it: its dataclasses look themselves up
        loader.exec_module(module)
    return sys.modules["crash_harness"]


# --- the crash points themselves ---------------------------------------------------------------

def test_crash_at_is_parsed_and_typos_refused():
    assert faults.parse("grant_mid") == ("grant_mid", 1)
    assert faults.parse("disconnect_mid:3") == ("disconnect_mid", 3)
    for bad in ("grant-mid", "grant_mid:0", "grant_mid:x", ""):
        with pytest.raises(ValueError, match=faults.ENV):
            faults.parse(bad)


def test_an_armed_point_kills_the_process_at_its_nth_pass_and_nothing_after_runs():
    code = ("import sys; from hotspotd import faults\n"
            "for i in range(5):\n"
            "    faults.crash_point('result_applied'); print('passed', i + 1, flush=True)\n")
    run = subprocess.run([sys.executable, "-c", code], env={faults.ENV: "result_applied:3", "PATH": ""},
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == -9
    assert run.stdout.split("\n")[:-1] == ["passed 1", "passed 2"]
    assert "crash point result_applied reached" in run.stderr


def test_unarmed_points_do_nothing():
    assert faults.ENV not in os.environ
    for name in faults.POINTS:
        faults.crash_point(name)


# --- recoveries, one at a time --------------------------------------------------------------------

def stranded(hs, phone: str, mac: str, *, age: float = 1.0) -> tuple[Payment, str]:
    """What a kill at ``push_accepted`` leaves: Daraja accepted the push (a prompt is on the phone, its
    callback will come), our row is still ``created`` from the process that died, no CheckoutRequestID."""
    package = Package.get(Package.name == "1 hour")
    accepted = hs.client.stk_push(phone, package.price, hs.payments.callback_url, "WIFI", "Wi-Fi 1 hour")
    payment = Payment.create(phone=phone, amount=package.price, package=package.id, mac=mac, status="created",
                             created_at=hs.payments.started_at - age)
    return payment, accepted.checkout_request_id


def test_a_push_whose_answer_died_with_the_process_still_pays_when_its_callback_comes(make_hotspot):
    hs = make_hotspot(simulator={"callback_delay_seconds": 60, "final_after_seconds": 60})
    payment, checkout = stranded(hs, "254708374149", MAC)
    hs.simulator.set_delays(callback_delay=0)          # the customer enters the PIN now
    wait_for(lambda: Payment.get_by_id(payment.id).status == "success")
    paid = Payment.get_by_id(payment.id)
    assert (paid.checkout_request_id, paid.resolved_by) == (checkout, "callback")
    assert paid.receipt == hs.simulator.transactions[checkout].receipt
    assert Entitlement.select().where(Entitlement.payment == payment.id).count() == 1
    assert access.authorize(MAC) is not None
    assert Callback.get().state == "applied"
    assert Event.select().where(Event.kind == "adopted", Event.payment == payment.id).count() == 1


def test_a_forged_seed_path_callback_cannot_take_a_stranded_payment_over(make_hotspot):
    # after a crash the payment waits for its callback; a forger posts one first, on the public seed
    # path, with the victim's phone and the price and a CheckoutRequestID of their own making
    hs = make_hotspot(simulator={"callback_delay_seconds": 60, "final_after_seconds": 60})
    payment, checkout = stranded(hs, "254708374149", MAC)
    r = requests.post(f"{hs.portal_url}/api/portal/mpesa/callback", timeout=10,
                      json=forged("ws_CO_FORGED0000000001", amount=10, receipt="FAKE000001"))
    assert r.status_code == 200
    taken = Payment.get_by_id(payment.id)
    assert taken.checkout_request_id is None and taken.status == "created"
    assert Event.select().where(Event.kind == "adoption_refused", Event.payment == payment.id).count() == 1
    assert Callback.get(Callback.checkout_request_id == "ws_CO_FORGED0000000001").state == "unverified"
    # the real callback, on the token path, still finds the payment: the customer who paid is online
    hs.simulator.set_delays(callback_delay=0)
    wait_for(lambda: Payment.get_by_id(payment.id).status == "success")
    paid = Payment.get_by_id(payment.id)
    assert paid.checkout_request_id == checkout and paid.receipt == hs.simulator.transactions[checkout].receipt
    assert access.authorize(MAC) is not None


def test_a_seed_path_callback_that_m_pesa_confirms_is_adopted(make_hotspot):
    # an install whose real callbacks still come on the old path: the STK query vouches for them
    hs = make_hotspot(simulator={"callback_delay_seconds": 60, "final_after_seconds": 0.05})
    payment, checkout = stranded(hs, "254708374149", MAC)
    tx = hs.simulator.transactions[checkout]
    wait_for(lambda: hs.simulator.transactions[checkout].result_code == "0")
    r = requests.post(f"{hs.portal_url}/api/portal/mpesa/callback", timeout=10,
                      json=forged(checkout, amount=10, receipt=tx.receipt))
    assert r.status_code == 200
    wait_for(lambda: Payment.get_by_id(payment.id).status == "success")
    assert Payment.get_by_id(payment.id).checkout_request_id == checkout


def test_a_stranded_push_ends_as_error_and_a_failure_callback_grants_nothing(make_hotspot):
    hs = make_hotspot(simulator={"callback_delay_seconds": 0.05, "final_after_seconds": 0.05})
    payment, checkout = stranded(hs, "254700001032", MAC, age=4 * hs.client.timeout + 1)   # the customer cancels
    wait_for(lambda: Callback.select().where(Callback.checkout_request_id == checkout).exists())
    wait_for(lambda: Payment.get_by_id(payment.id).status == "error")
    p = Payment.get_by_id(payment.id)
    assert p.checkout_request_id is None and "stopped" in p.last_error and p.completed_at is not None
    assert Callback.get(Callback.checkout_request_id == checkout).state == "unmatched"
    assert Entitlement.select().count() == 0 and access.authorize(MAC) is None
    assert Event.select().where(Event.kind == "push_unknown", Event.payment == payment.id).count() == 1


def test_a_young_created_row_of_a_live_push_is_left_alone(make_hotspot):
    hs = make_hotspot(simulator={"callback_delay_seconds": 60, "final_after_seconds": 60})
    package = Package.get(Package.name == "1 hour")
    live = Payment.create(phone="254708374149", amount=package.price, package=package.id, mac=MAC,
                          status="created", created_at=clock.now())          # this process's push, in flight
    hs.payments.reconcile_due()
    assert Payment.get_by_id(live.id).status == "created"


def test_paying_again_after_a_stranded_push_sends_a_new_prompt(make_hotspot, http):
    hs = make_hotspot(simulator={"callback_delay_seconds": 0.05, "final_after_seconds": 0.05})
    old, _ = stranded(hs, "254700001032", MAC)
    body = pay(http, hs, "0708374149").json()
    assert body["success"] is True and body["reused"] is False and body["checkoutRequestId"]
    assert final_status(http, hs, body["checkoutRequestId"])["status"] == "success"
    assert Payment.get_by_id(old.id).checkout_request_id is None


# --- the harness: real processes, real SIGKILLs ------------------------------------------------------

@pytest.mark.slow
@pytest.mark.timeout(420)
def test_killed_at_every_crash_point_and_at_random_nothing_is_lost_doubled_or_unpaid(tmp_path):
    harness = load_harness()
    plans = [harness.Plan(crash_at=f"{point}:1") for point in faults.POINTS]
    plans += [harness.Plan(kill_after=1.0), harness.Plan(kill_after=3.5)]
    tally = harness.run(len(plans), seed=5, chain=3, jobs=2, root=tmp_path, plans=plans)
    summary = io.StringIO()
    harness.report(tally, 5, 0, out=summary)
    assert tally.rounds == len(plans), summary.getvalue()
    assert not tally.violations, summary.getvalue()
    assert set(faults.POINTS) <= set(tally.fired), summary.getvalue()
    assert tally.payments["checked"] > 0 and tally.checks["radius"] > 0, summary.getvalue()
