"""Paying from the M-Pesa menu when no prompt comes (C2B), end to end over real HTTP: the splash
API gives the device's paybill account code, the simulated customer pays from the menu, the
simulated Safaricom validates and confirms to hotspotd's registered URLs, the device is online."""
from __future__ import annotations

import json

import pytest
import requests

from hotspotd import access, c2b
from hotspotd.storage.models import C2BTransaction, Entitlement, Event, Payment, ReceiptLookup

from tests.helpers import INSTANT, final_status, pay, wait_for

pytestmark = pytest.mark.postgres

MAC = "AA:BB:CC:00:0C:01"
PHONE = "254708374149"
TILL = {"transaction_type": "CustomerBuyGoodsOnline", "till_number": "5678901"}


def menu_pay(hs, phone=PHONE, **body) -> dict:
    r = requests.post(f"{hs.simulator.url}/simulator/phones/{phone}/pay", json=body, timeout=20)
    assert r.status_code == 200, r.text
    return r.json()


def manual(hs, mac=MAC) -> dict:
    return requests.get(f"{hs.portal_url}/api/portal/packages", params={"macAddress": mac}, timeout=5).json()[
        "manualPayment"]


def inbox(hs, phone=PHONE) -> list[dict]:
    return requests.get(f"{hs.simulator.url}/simulator/phones/{phone}/messages", timeout=5).json()["messages"]


def test_the_packages_say_how_this_device_pays_from_the_menu(hotspot):
    first = manual(hotspot)
    assert first["kind"] == "paybill" and first["shortcode"] == "174379"
    assert len(first["account"]) == c2b.CODE_LENGTH and set(first["account"]) <= set(c2b.ALPHABET)
    assert manual(hotspot) == first                                  # one code per device, kept
    assert manual(hotspot, "AA:BB:CC:00:0C:02")["account"] != first["account"]
    assert "manualPayment" not in requests.get(f"{hotspot.portal_url}/api/portal/packages", timeout=5).json()
    bad = requests.get(f"{hotspot.portal_url}/api/portal/packages", params={"macAddress": "nope"}, timeout=5)
    assert bad.status_code == 400 and bad.json()["field"] == "macAddress"


def test_a_paybill_payment_with_the_devices_account_code_brings_it_online(hotspot):
    account = manual(hotspot)["account"]
    answer = menu_pay(hotspot, shortcode="174379", account=account.lower(), amount=10)    # typed in lower case
    assert answer["ResultCode"] == "0"
    ent = wait_for(lambda: access.authorize(MAC))
    payment = Payment.get(Payment.receipt == answer["receipt"])
    assert payment.status == "success" and payment.resolved_by == "c2b" and payment.mac == MAC
    assert payment.package.name == "1 hour" and ent.remaining_seconds > 3500
    assert C2BTransaction.get().state == "granted"
    assert "account" in Event.get(Event.kind == "c2b", Event.payment == payment.id).message
    [sms] = inbox(hotspot)
    assert sms["receipt"] == answer["receipt"] and sms["amount"] == 10
    assert f"for account {account.lower()}" in sms["text"]


def test_a_replayed_confirmation_grants_once(hotspot):
    account = manual(hotspot)["account"]
    menu_pay(hotspot, shortcode="174379", account=account, amount=10)
    wait_for(lambda: access.authorize(MAC))
    (_, url, body, _), = [p for p in hotspot.simulator.c2b.posts if p[0] == "confirmation"]
    assert requests.post(url, json=body, timeout=5).json()["ResultCode"] == 0
    assert Payment.select().count() == 1 and Entitlement.select().count() == 1


def test_with_validation_on_a_wrong_code_or_amount_is_declined_before_any_money_moves(hotspot):
    hotspot.simulator.c2b.validation = True
    account = manual(hotspot)["account"]
    wrong_code = menu_pay(hotspot, shortcode="174379", account="XXXXXX", amount=10)
    assert wrong_code["ResultCode"] == "C2B00012" and wrong_code["receipt"] is None
    wrong_amount = menu_pay(hotspot, shortcode="174379", account=account, amount=7)
    assert wrong_amount["ResultCode"] == "C2B00013"
    assert inbox(hotspot) == [] and C2BTransaction.select().count() == 0
    assert menu_pay(hotspot, shortcode="174379", account=account, amount=50)["ResultCode"] == "0"
    assert wait_for(lambda: access.authorize(MAC)).remaining_seconds > 23 * 3600      # the 24-hour package


def test_a_till_payment_nobody_knows_is_claimed_with_its_receipt_and_the_payers_number(make_hotspot, http):
    hs = make_hotspot(mpesa=TILL)
    assert manual(hs) == {"kind": "till", "shortcode": "5678901", "account": ""}
    answer = menu_pay(hs, "254712000111", shortcode="5678901", account="", amount=10)
    tx = wait_for(lambda: C2BTransaction.get_or_none(C2BTransaction.trans_id == answer["receipt"]))
    assert tx.state == "unmatched" and tx.msisdn == "2547 ***** 111"         # v2: masked
    claim = {"receipt": answer["receipt"], "macAddress": MAC}
    # another number: not claimed (a code hotspotd knows is refused at once, M-Pesa is not asked)
    wrong = http.post(f"{hs.portal_url}/api/portal/receipt", json={**claim, "phone": "0712000999"})
    assert wrong.status_code == 404 and access.authorize(MAC) is None and ReceiptLookup.select().count() == 0
    right = http.post(f"{hs.portal_url}/api/portal/receipt", json={**claim, "phone": "0712000111"})
    assert right.status_code == 200, right.text
    assert access.authorize(MAC) is not None
    assert C2BTransaction.get_by_id(tx.id).state == "claimed"
    again = http.post(f"{hs.portal_url}/api/portal/receipt", json={**claim, "macAddress": "AA:BB:CC:00:0C:09",
                                                                      "phone": "0712000111"})
    # the same receipt again, from another device: the session moves (as any "Already paid?"), no second grant
    assert again.status_code == 200 and access.authorize("AA:BB:CC:00:0C:09") is not None
    assert access.authorize(MAC) is None
    assert Payment.select().where(Payment.receipt == answer["receipt"]).count() == 1 and Entitlement.select().count() == 1


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_a_till_payment_from_a_number_that_paid_here_before_goes_to_its_device(make_hotspot, http, version):
    hs = make_hotspot(mpesa=TILL, simulator=INSTANT)
    if version == "v1":                                   # the number as a SHA-256
        hs.client.register_c2b_urls("5678901", *hs.c2b_urls(), version="v1")
    checkout = pay(http, hs, "0708374149", mac=MAC).json()["checkoutRequestId"]
    assert final_status(http, hs, checkout)["status"] == "success"
    menu_pay(hs, PHONE, shortcode="5678901", account="", amount=50)
    wait_for(lambda: Payment.select().where(Payment.resolved_by == "c2b").exists())
    manual_paid = Payment.get(Payment.resolved_by == "c2b")
    assert manual_paid.mac == MAC and manual_paid.phone == PHONE and manual_paid.amount == 50
    tx = C2BTransaction.get()
    assert tx.state == "granted" and len(tx.msisdn) == (64 if version == "v1" else 14)


def test_a_confirmation_from_outside_the_allowlist_grants_nothing(make_hotspot):
    hs = make_hotspot(mpesa={"callback_allowlist": ["196.201.214.200"]})
    account = manual(hs)["account"]
    menu_pay(hs, shortcode="174379", account=account, amount=10)
    tx = wait_for(lambda: C2BTransaction.get_or_none())
    assert tx.state == "unverified" and access.authorize(MAC) is None


def test_an_amount_that_is_no_packages_price_is_kept_for_the_owner_and_grants_nothing(hotspot):
    account = manual(hotspot)["account"]
    menu_pay(hotspot, shortcode="174379", account=account, amount=7)        # validation off: the money moved
    tx = wait_for(lambda: C2BTransaction.get_or_none())
    assert tx.state == "refused" and "KES 7 is no package's price" in tx.note and access.authorize(MAC) is None
    assert json.loads(tx.body)["TransAmount"] == "7.00"


def test_the_phone_in_a_confirmation_is_compared_as_safaricom_sends_it():
    import hashlib
    assert c2b.phone_matches(hashlib.sha256(b"254708374149").hexdigest(), "254708374149")
    assert not c2b.phone_matches(hashlib.sha256(b"254708374149").hexdigest(), "254708374150")
    assert c2b.phone_matches("2547 ***** 149", "254708374149")
    assert not c2b.phone_matches("2547 ***** 149", "254708374150")
    assert c2b.phone_matches("254708374149", "254708374149") and not c2b.phone_matches("", "254708374149")


def test_register_urls_outside_the_simulator_shows_the_urls_and_asks_first_in_production(tmp_path, capsys):
    from hotspotd.config import SANDBOX_PASSKEY
    from hotspotd.service import cli
    from hotspotd.storage import db
    from hotspotd.testing.daraja import DarajaSimulator
    with DarajaSimulator() as sim:
        def config(environment: str) -> str:
            path = tmp_path / f"{environment}.toml"
            path.write_text(f'[database]\nurl = "sqlite:///{tmp_path}/r.db"\n[mpesa]\nenvironment = "{environment}"\n'
                            f'base_url = "{sim.url}"\nconsumer_key = "simulator"\nconsumer_secret = "simulator"\n'
                            f'passkey = "{"p" * 20 if environment == "production" else SANDBOX_PASSKEY}"\n'
                            'callback_url = "https://wifi.example.co.ke"\n')
            path.chmod(0o600)
            return str(path)
        assert cli.main(["--config", config("production"), "mpesa", "register-urls"]) == 2   # no tty, no --yes
        assert "one-time" in capsys.readouterr().err and sim.c2b.registrations == {}
        assert cli.main(["--config", config("sandbox"), "mpesa", "register-urls", "--version", "v1"]) == 0
        out = capsys.readouterr().out
        token = db.get_setting("callback_token")
        assert token and token not in out and "https://wifi.example.co.ke/cb/" in out    # the token masked
        reg = sim.c2b.registrations["174379"]
        assert reg.confirmation_url == f"https://wifi.example.co.ke/cb/{token}/c2b/confirmation"
        assert reg.validation_url.endswith("/c2b/validation") and reg.version == "v1"
        assert reg.response_type == "Completed"
