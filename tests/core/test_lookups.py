"""M-Pesa codes hotspotd never saw, looked up with Transaction Status over real HTTP against the
simulator: granted only for a completed payment to this shortcode, for a package's price, from the
number typed, claimed once."""
from __future__ import annotations

import pytest
import requests

from hotspotd import access
from hotspotd.storage.models import Payment, ReceiptLookup

from tests.helpers import wait_for

pytestmark = pytest.mark.postgres

MAC, OTHER = "AA:BB:CC:00:0F:01", "AA:BB:CC:00:0F:02"
PAYER = "254712000444"


def paid_unseen(hs, amount=10, phone=PAYER) -> str:
    """A payment from the M-Pesa menu whose confirmation never reached hotspotd: its receipt."""
    hs.simulator.c2b.registrations.clear()
    r = requests.post(f"{hs.simulator.url}/simulator/phones/{phone}/pay", timeout=10,
                      json={"shortcode": "174379", "account": "WHATEVER", "amount": amount}).json()
    return r["receipt"]


def already_paid(hs, http, receipt, phone="0712000444", mac=MAC):
    return http.post(f"{hs.portal_url}/api/portal/receipt", json={"receipt": receipt, "phone": phone, "macAddress": mac})


def answer(hs, http, lookup_id, mac=MAC) -> requests.Response:
    url = f"{hs.portal_url}/api/portal/receipt/{lookup_id}"
    # (a list: a 404 Response is falsy, and wait_for waits for something truthy)
    return wait_for(lambda: (lambda r: [r] if r.status_code != 202 else None)(
        http.get(url, params={"macAddress": mac})))[0]


def test_a_code_nobody_told_hotspotd_of_is_confirmed_by_m_pesa_and_the_device_gets_the_time(hotspot, http):
    receipt = paid_unseen(hotspot)
    asked = already_paid(hotspot, http, receipt)
    assert asked.status_code == 202 and asked.json()["checking"] is True
    done = answer(hotspot, http, asked.json()["lookupId"])
    assert done.status_code == 200, done.text
    assert access.authorize(MAC) is not None
    payment = Payment.get(Payment.receipt == receipt)
    assert payment.resolved_by == "txn_status" and payment.phone == PAYER and payment.amount == 10
    # the same code again from another device: now a known payment, it moves as any "Already paid?"
    assert already_paid(hotspot, http, receipt, mac=OTHER).status_code == 200
    assert Payment.select().where(Payment.receipt == receipt).count() == 1


def test_a_code_from_another_number_or_unknown_to_m_pesa_is_refused(hotspot, http):
    receipt = paid_unseen(hotspot)
    asked = already_paid(hotspot, http, receipt, phone="0712000999")
    done = answer(hotspot, http, asked.json()["lookupId"])
    assert done.status_code == 404 and done.json()["reason"] == "wrong_phone" and access.authorize(MAC) is None
    asked = already_paid(hotspot, http, "ZZZZ999999")
    done = answer(hotspot, http, asked.json()["lookupId"])
    assert done.status_code == 404 and done.json()["reason"] == "not_found"
    assert "M-Pesa has no completed payment with that code" in done.json()["message"]


def test_an_amount_no_package_costs_is_refused(hotspot, http):
    receipt = paid_unseen(hotspot, amount=7)
    done = answer(hotspot, http, already_paid(hotspot, http, receipt).json()["lookupId"])
    assert done.status_code == 404 and done.json()["reason"] == "no_package"


def test_two_devices_asking_for_one_code_get_it_once(hotspot, http):
    receipt = paid_unseen(hotspot)
    first = already_paid(hotspot, http, receipt).json()["lookupId"]
    second = already_paid(hotspot, http, receipt, mac=OTHER).json()["lookupId"]
    results = sorted([answer(hotspot, http, first).status_code, answer(hotspot, http, second, mac=OTHER).status_code])
    assert results == [200, 404]
    assert {r.state for r in ReceiptLookup.select()} == {"granted", "refused"}
    assert Payment.select().where(Payment.receipt == receipt).count() == 1


def test_wrong_initiator_credentials_and_a_queue_timeout_say_try_again(hotspot, http):
    receipt = paid_unseen(hotspot)
    hotspot.simulator.status.initiator_password = "changed at the portal"
    done = answer(hotspot, http, already_paid(hotspot, http, receipt).json()["lookupId"])
    assert done.status_code == 503 and "try again" in done.json()["message"]
    assert ReceiptLookup.get().state == "error"
    hotspot.simulator.status.initiator_password = "Safaricom999!*!"
    hotspot.simulator.status.time_out_next()
    done = answer(hotspot, http, already_paid(hotspot, http, receipt, mac=OTHER).json()["lookupId"], mac=OTHER)
    assert done.status_code == 503 and access.authorize(OTHER) is None


def test_the_splash_page_checks_with_m_pesa_then_says_the_time_is_here(hotspot, http):
    receipt = paid_unseen(hotspot)
    r = http.post(f"{hotspot.portal_url}/paid", params={"mac": MAC, "lang": "en"},
                  data={"receipt": receipt, "phone": "0712000444"})
    assert r.history and "/paid/check/" in r.url
    assert "Checking with M-Pesa" in r.text or "M-Pesa confirmed your payment" in r.text
    page = wait_for(lambda: (lambda t: t if "Checking with M-Pesa" not in t else None)(http.get(r.url).text))
    assert "M-Pesa confirmed your payment" in page and receipt in page
    assert access.authorize(MAC) is not None
    # another device cannot read this lookup
    assert http.get(r.url.replace(MAC, OTHER)).history


def test_the_initiator_needs_its_password_and_a_readable_certificate_outside_the_simulator(tmp_path):
    from hotspotd.config import SANDBOX_PASSKEY, ConfigError, from_dict
    from hotspotd.testing.status_desk import StatusDesk
    base = {"environment": "sandbox", "consumer_key": "k", "consumer_secret": "s", "passkey": SANDBOX_PASSKEY,
            "initiator_name": "hotspotd"}
    with pytest.raises(ConfigError, match=r"\[mpesa\] initiator_password: required with initiator_name"):
        from_dict({"mpesa": base}, "t")
    with pytest.raises(ConfigError, match=r"\[mpesa\] certificate: required with initiator_name: the sandbox"):
        from_dict({"mpesa": {**base, "initiator_password": "pw"}}, "t")
    (tmp_path / "bad.cer").write_text("not a certificate")
    with pytest.raises(ConfigError, match=r"bad.cer: not a PEM or DER X.509 certificate"):
        from_dict({"mpesa": {**base, "initiator_password": "pw", "certificate": str(tmp_path / "bad.cer")}}, "t")
    with pytest.raises(ConfigError, match=r"cannot read .*missing.cer"):
        from_dict({"mpesa": {**base, "initiator_password": "pw", "certificate": str(tmp_path / "missing.cer")}}, "t")
    (tmp_path / "ok.cer").write_bytes(StatusDesk().certificate_pem)
    assert from_dict({"mpesa": {**base, "initiator_password": "pw", "certificate": str(tmp_path / "ok.cer")}},
                     "t").mpesa.initiator_name == "hotspotd"
