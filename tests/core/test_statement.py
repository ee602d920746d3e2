"""The M-Pesa statement (Pull Transactions) against what hotspotd knows, over real HTTP with the
simulator: receipts for payments the STK query settled, payments nobody told hotspotd of, menu
payments whose confirmation was lost; each line taken once."""
from __future__ import annotations

import pytest
import requests

from hotspotd import access, c2b
from hotspotd.storage.models import C2BTransaction, Entitlement, MpesaTransaction, Package, Payment
from hotspotd.testing.daraja import SILENT_SUCCESS_PHONE

from tests.helpers import INSTANT, final_status, pay, wait_for

pytestmark = pytest.mark.postgres

MAC = "AA:BB:CC:00:0E:01"
SILENT = SILENT_SUCCESS_PHONE          # succeeds, but its callback never comes


@pytest.fixture
def hs(make_hotspot):
    # the pull is driven by hand here; its registration is the daemon's, at start
    return make_hotspot(mpesa={"pull_every_seconds": 3600}, simulator=INSTANT)


def settled_by_query(hs, http, phone=SILENT, mac=MAC) -> Payment:
    checkout = pay(http, hs, phone, mac=mac).json()["checkoutRequestId"]
    assert final_status(http, hs, checkout)["status"] == "success"
    return Payment.get(Payment.checkout_request_id == checkout)


def test_a_payment_the_query_settled_gets_its_receipt_and_already_paid_works(hs, http):
    payment = settled_by_query(hs, http)
    assert payment.receipt is None and payment.resolved_by == "query"        # the query carries none
    assert hs.statement.pull() == {"receipt_added": 1}
    receipt = hs.simulator.transactions[payment.checkout_request_id].receipt
    assert Payment.get_by_id(payment.id).receipt == receipt
    sms = requests.get(f"{hs.simulator.url}/simulator/phones/{SILENT}/messages", timeout=5).json()["messages"]
    assert sms[0]["receipt"] == receipt
    moved = http.post(f"{hs.portal_url}/api/portal/receipt",
                      json={"receipt": sms[0]["text"], "phone": "0799999999", "macAddress": "AA:BB:CC:00:0E:02"})
    assert moved.status_code == 200, moved.text
    assert hs.statement.pull() == {}                                          # each line once


def test_a_push_whose_answer_and_callback_were_both_lost_is_found_and_the_customer_gets_online(hs):
    # killed between Daraja taking the push and our commit of its CheckoutRequestID; no callback comes
    package = Package.get(Package.name == "1 hour")
    accepted = hs.client.stk_push(SILENT, package.price, hs.payments.callback_url, "WIFI", "Wi-Fi 1 hour")
    payment = Payment.create(phone=SILENT, amount=package.price, package=package.id, mac=MAC, status="created",
                             created_at=hs.payments.started_at - 1)
    wait_for(hs.simulator.ledger)                      # the customer approved it: the money moved
    assert hs.statement.pull() == {"settled": 1}
    paid = Payment.get_by_id(payment.id)
    assert paid.status == "success" and paid.resolved_by == "statement"
    assert paid.receipt == hs.simulator.transactions[accepted.checkout_request_id].receipt
    assert access.authorize(MAC) is not None and Entitlement.select().count() == 1


def test_a_menu_payment_whose_confirmation_never_came_is_granted_from_the_statement(hs):
    account = c2b.account_code(MAC)
    hs.simulator.c2b.registrations.clear()             # Safaricom has no URL to confirm it to
    r = requests.post(f"{hs.simulator.url}/simulator/phones/254712000222/pay", timeout=10,
                      json={"shortcode": "174379", "account": account, "amount": 10}).json()
    assert C2BTransaction.select().count() == 0 and access.authorize(MAC) is None
    assert hs.statement.pull() == {"c2b": 1}
    assert access.authorize(MAC) is not None
    assert Payment.get(Payment.receipt == r["receipt"]).resolved_by == "c2b"
    assert MpesaTransaction.get().state == "c2b"


def test_lines_hotspotd_knows_are_known_and_a_stranger_is_unmatched(hs, http):
    checkout = pay(http, hs, "0708374149", mac=MAC).json()["checkoutRequestId"]
    assert final_status(http, hs, checkout)["status"] == "success"
    wait_for(lambda: Payment.get(Payment.checkout_request_id == checkout).receipt)
    # someone paid the paybill with an account that is nobody's code: the money is there, the owner sees it
    requests.post(f"{hs.simulator.url}/simulator/phones/254712000333/pay", timeout=10,
                  json={"shortcode": "174379", "account": "NOBODY", "amount": 10})
    counts = hs.statement.pull()
    assert counts == {"known": 2}                       # the STK payment; the menu one confirmed (unmatched there)
    assert C2BTransaction.get().state == "unmatched"
    assert {m.state for m in MpesaTransaction.select()} == {"known"}


def test_a_line_seen_before_its_payment_was_settled_is_matched_at_a_later_pull(make_hotspot, http):
    hs = make_hotspot(mpesa={"pull_every_seconds": 3600, "query_after_seconds": 2}, simulator=INSTANT)
    checkout = pay(http, hs, SILENT, mac=MAC).json()["checkoutRequestId"]
    wait_for(hs.simulator.ledger)                                  # paid at M-Pesa; hotspotd has not asked yet
    assert Payment.get(Payment.checkout_request_id == checkout).status == "pending"
    assert hs.statement.pull() == {"unmatched": 1}
    assert final_status(http, hs, checkout)["status"] == "success"     # the STK query settles it, no receipt
    assert hs.statement.pull() == {"receipt_added": 1}
    assert MpesaTransaction.get().state == "receipt_added" and Payment.get().receipt


def test_the_scheduler_pulls_by_itself(make_hotspot, http):
    hs = make_hotspot(mpesa={"pull_every_seconds": 0.3}, simulator=INSTANT)
    payment = settled_by_query(hs, http)
    wait_for(lambda: Payment.get_by_id(payment.id).receipt)
    assert hs.scheduler.has("pull")


def test_a_statement_row_is_read_as_daraja_writes_it():
    from hotspotd import statement
    line = statement.parse({"transactionId": "rb3ko122mi", "trxDate": "2026-12-03T17:15:00.000+03:00",
                            "msisdn": "2547 ***** 149", "transactiontype": "Pay Bill", "billreference": "X",
                            "amount": "10.00"})
    assert line.trans_id == "RB3KO122MI" and line.amount == 10 and line.msisdn == "2547 ***** 149"
    assert statement.parse({"transactionId": "RB3KO122MI", "trxDate": "2026-12-03 17:15:00", "amount": 10}).amount == 10
    assert statement.parse({"transactionId": "RB3KO122MI", "trxDate": "yesterday", "amount": 10}) is None
    assert statement.parse({"transactionId": "", "trxDate": "2026-12-03 17:15:00"}) is None
    assert statement.parse({"transactionId": "RB3KO122MI", "trxDate": "20261203171500", "amount": "NaN"}).amount is None


def test_register_pull_outside_the_simulator_names_the_owners_number(tmp_path, capsys):
    from hotspotd.config import SANDBOX_PASSKEY
    from hotspotd.service import cli
    from hotspotd.testing.daraja import DarajaSimulator
    with DarajaSimulator() as sim:
        path = tmp_path / "h.toml"
        path.write_text(f'[database]\nurl = "sqlite:///{tmp_path}/r.db"\n[mpesa]\nenvironment = "sandbox"\n'
                        f'base_url = "{sim.url}"\nconsumer_key = "simulator"\nconsumer_secret = "simulator"\n'
                        f'passkey = "{SANDBOX_PASSKEY}"\ncallback_url = "https://wifi.example.co.ke"\n')
        path.chmod(0o600)
        assert cli.main(["--config", str(path), "mpesa", "register-pull"]) == 2        # no number to name
        assert "--nominated" in capsys.readouterr().err
        assert cli.main(["--config", str(path), "mpesa", "register-pull", "--nominated", "0712 345 678"]) == 0
        assert "174379: Success" in capsys.readouterr().out
        assert sim.pull.registrations["174379"]["NominatedNumber"] == "254712345678"
        assert cli.main(["--config", str(path), "mpesa", "register-pull", "--nominated", "0712345678"]) == 0
        assert "already registered" in capsys.readouterr().out                # again: no error
