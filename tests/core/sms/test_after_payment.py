"""A payment through the portal ends with hotspotd's SMS on the customer's simulated phone, after
M-Pesa's own; a gateway that is down or hangs never holds the payment up."""
from __future__ import annotations

import socket
import threading

import pytest
import requests

from hotspotd.storage.models import Payment, SmsMessage

from tests.helpers import INSTANT, final_status, pay, wait_for

pytestmark = pytest.mark.postgres

PHONE = "254708374149"


def inbox(hs, phone=PHONE) -> list[dict]:
    return requests.get(f"{hs.simulator.url}/simulator/phones/{phone}/messages", timeout=5).json()["messages"]


def test_after_paying_the_phone_holds_m_pesas_sms_then_hotspotds_receipt(make_hotspot, http):
    hs = make_hotspot(sms={"provider": "africastalking", "sender_id": "CAFE"}, simulator=INSTANT,
                      portal={"site_name": "Mama Njeri Cafe"})
    answer = pay(http, hs, "0708374149").json()
    assert final_status(http, hs, answer["checkoutRequestId"])["status"] == "success"
    messages = wait_for(lambda: m if len(m := inbox(hs)) == 2 else None)
    receipt = Payment.get().receipt
    assert messages[0]["from"] == "MPESA" and messages[0]["receipt"] == receipt
    assert messages[1]["from"] == "CAFE"
    assert messages[1]["text"].startswith(f"Mama Njeri Cafe: paid KES 10, M-Pesa {receipt}. Your 1 hour of Wi-Fi")


def test_a_kiswahili_page_pays_and_gets_its_sms_in_kiswahili(make_hotspot, http):
    hs = make_hotspot(sms={"provider": "africastalking"}, simulator=INSTANT)
    package = http.get(f"{hs.portal_url}/api/portal/packages").json()["packages"][1]["id"]
    answer = http.post(f"{hs.portal_url}/api/portal/pay?lang=sw",
                       json={"phone": "0708374149", "packageId": package, "macAddress": "AA:BB:CC:00:00:05"}).json()
    assert final_status(http, hs, answer["checkoutRequestId"])["status"] == "success"
    sms = wait_for(lambda: [m for m in inbox(hs) if m["from"] != "MPESA"])
    assert "umelipa KES 10" in sms[0]["text"] and "Saa 1 yako ya Wi-Fi" in sms[0]["text"]


def test_a_gateway_that_hangs_holds_up_no_payment_and_the_sms_waits_its_turn(make_hotspot, http):
    # a gateway that takes the connection and never answers
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept():
        silent.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(silent.accept()[0])
            except OSError:
                continue

    threading.Thread(target=accept, daemon=True).start()
    try:
        hs = make_hotspot(sms={"provider": "africastalking", "api_key": "k",
                               "base_url": f"http://127.0.0.1:{silent.getsockname()[1]}", "timeout_seconds": 1},
                          simulator=INSTANT)
        answer = pay(http, hs, "0708374149").json()
        assert final_status(http, hs, answer["checkoutRequestId"], timeout=5)["status"] == "success"
        row = wait_for(lambda: SmsMessage.get_or_none(SmsMessage.attempts >= 1))
        assert row.status == "pending" and "unreachable" in row.last_error
        assert [m["from"] for m in inbox(hs)] == ["MPESA"]
    finally:
        stop.set()
        silent.close()
        for conn in held:
            conn.close()


def test_with_sms_off_nothing_is_queued(make_hotspot, http):
    hs = make_hotspot(simulator=INSTANT)
    answer = pay(http, hs, "0708374149").json()
    assert final_status(http, hs, answer["checkoutRequestId"])["status"] == "success"
    assert hs.sms_gateway is None and SmsMessage.select().count() == 0
