"""The SMS queue: each SMS once, in the customer's language, retried while the gateway is down,
dropped when it is no longer true; sent to the simulated phone over real sockets."""
from __future__ import annotations

import pytest
import requests

from hotspotd import access, clock, vouchers
from hotspotd.sms import outbox
from hotspotd.storage.models import Entitlement, Event, Package, Payment, SmsMessage

from tests.helpers import give_time

pytestmark = pytest.mark.postgres

PHONE = "254708374149"


@pytest.fixture
def hs(make_hotspot):
    # the job is driven by hand here, at chosen times
    return make_hotspot(sms={"provider": "africastalking", "reminder_minutes": 10},
                        portal={"site_name": "Mama Njeri Cafe", "public_url": "http://192.168.88.2:8080"},
                        scheduler={"enabled": False})


def inbox(hs, phone=PHONE) -> list[str]:
    messages = requests.get(f"{hs.simulator.url}/simulator/phones/{phone}/messages", timeout=5).json()["messages"]
    return [m["text"] for m in messages]


def paid(hs, *, lang="en", receipt="TKL3ABC9XY", seconds=3600) -> Payment:
    ent = give_time("AA:BB:CC:00:00:01", seconds=seconds, phone=PHONE)
    Payment.update(receipt=receipt, lang=lang).where(Payment.id == ent.payment_id).execute()
    return Payment.get_by_id(ent.payment_id)


def send(hs, now=None) -> int:
    return outbox.send_due(hs.sms_gateway, hs.sms_composer, now=now)


def ends(payment) -> str:
    return clock.local(access.entitlement_of(payment).expires_at).strftime("%H:%M")


def test_the_receipt_is_sent_once_with_the_code_the_end_and_the_me_link(hs):
    payment = paid(hs)
    assert outbox.queue_receipt(payment) is True
    assert outbox.queue_receipt(payment) is False          # the same payment: never twice
    assert send(hs) == 1 and send(hs) == 0
    assert inbox(hs) == [f"Mama Njeri Cafe: paid KES 10, M-Pesa TKL3ABC9XY. Your test 3600s of Wi-Fi ends at "
                         f"{ends(payment)}. Time left, more time: http://192.168.88.2:8080/me"]
    row = SmsMessage.get()
    assert row.status == "sent" and row.provider_id.startswith("ATXid_") and row.text == inbox(hs)[0]
    assert Event.get(Event.kind == "sms_sent").message.endswith("via africastalking")


def test_a_kiswahili_payment_gets_its_receipt_in_kiswahili_with_the_kiswahili_package_name(hs):
    payment = paid(hs, lang="sw")
    Package.update(name_sw="Saa 1").where(Package.id == payment.package_id).execute()
    outbox.queue_receipt(payment)
    send(hs)
    assert inbox(hs) == [f"Mama Njeri Cafe: umelipa KES 10, M-Pesa TKL3ABC9XY. Saa 1 yako ya Wi-Fi inaisha saa "
                         f"{ends(payment)}. Muda uliobaki, muda zaidi: http://192.168.88.2:8080/me"]


def test_a_receipt_waits_a_minute_for_the_code_then_goes_without_it(hs):
    payment = paid(hs, receipt=None)
    now = clock.now()
    outbox.queue_receipt(payment, now=now)
    assert send(hs, now) == 0 and inbox(hs) == []           # the callback after the query may bring it
    assert send(hs, now + outbox.RECEIPT_WAIT_SECONDS + 1) == 1
    assert inbox(hs)[0].startswith("Mama Njeri Cafe: paid KES 10. Your test 3600s")


def test_a_gateway_that_is_down_is_retried_with_backoff_and_the_sms_still_goes(hs):
    payment = paid(hs)
    now = clock.now()
    outbox.queue_receipt(payment, now=now)
    hs.simulator.sms.fail_next(503, ("at", 500))
    assert send(hs, now) == 0
    row = SmsMessage.get()
    assert row.status == "pending" and row.attempts == 1 and row.next_at == pytest.approx(now + 30)
    assert "Service Unavailable" in row.last_error      # the SDK passes the body on, not the status
    assert send(hs, now + 29) == 0                          # not before its time
    assert send(hs, now + 31) == 0                          # the second failure: twice the wait
    assert SmsMessage.get().next_at == pytest.approx(now + 31 + 60)
    assert send(hs, now + 92) == 1 and len(inbox(hs)) == 1


def test_a_number_the_gateway_refuses_is_not_retried_and_the_owner_sees_why(hs):
    payment = paid(hs)
    outbox.queue_receipt(payment)
    hs.simulator.sms.fail_next(("at", 406))
    assert send(hs) == 0
    row = SmsMessage.get()
    assert row.status == "failed" and "UserInBlacklist" in row.last_error
    assert "UserInBlacklist" in Event.get(Event.kind == "sms_failed").message
    assert "0708" not in Event.get(Event.kind == "sms_failed").message       # masked


def test_a_receipt_not_sent_within_the_hour_is_given_up(hs):
    payment = paid(hs)
    now = clock.now()
    outbox.queue_receipt(payment, now=now)
    hs.simulator.sms.fail_next(*[503] * 20)
    send(hs, now)
    assert send(hs, now + 3601) == 0
    row = SmsMessage.get()
    assert row.status == "failed" and row.last_error.startswith("gave up after 1 attempt(s)")
    assert inbox(hs) == []


def test_ten_minutes_before_the_end_a_reminder_goes_once(hs):
    payment = paid(hs, lang="sw")
    ent = access.entitlement_of(payment)
    early = ent.expires_at - 11 * 60
    assert outbox.queue_reminders(10, now=early) == 0
    at = ent.expires_at - 10 * 60
    assert outbox.queue_reminders(10, now=at) == 1
    assert outbox.queue_reminders(10, now=at + 15) == 0     # the next tick: the same one
    assert send(hs, at) == 1
    assert inbox(hs) == [f"Mama Njeri Cafe: muda wako wa Wi-Fi unaisha saa {ends(payment)}, baada ya dakika 10. "
                         "Nunua muda zaidi: http://192.168.88.2:8080/me"]


def test_time_added_after_the_reminder_was_queued_drops_it_and_gets_its_own(hs):
    payment = paid(hs)
    ent = access.entitlement_of(payment)
    at = ent.expires_at - 5 * 60
    outbox.queue_reminders(10, now=at)
    access.extend(ent.id, 3600, "bought more", now=at)
    assert send(hs, at) == 0
    assert SmsMessage.get().status == "dropped" and inbox(hs) == []
    later = Entitlement.get_by_id(ent.id).expires_at - 9 * 60
    assert outbox.queue_reminders(10, now=later) == 1 and send(hs, later) == 1


def test_no_reminder_for_a_package_shorter_than_twice_the_warning_or_a_voucher(hs):
    short = paid(hs, seconds=15 * 60)
    ent = access.entitlement_of(short)
    assert outbox.queue_reminders(10, now=ent.expires_at - 5 * 60) == 0
    package = Package.get_by_id(short.package_id)
    code = vouchers.generate(package.id, 1)[0].code
    voucher_ent = vouchers.redeem(code, "AA:BB:CC:00:00:09")
    assert outbox.queue_reminders(10, now=voucher_ent.expires_at - 5 * 60) == 0   # no phone: nobody to tell


def test_a_voucher_sms_carries_its_code_and_how_to_use_it(hs):
    package = Package.get(Package.name == "1 hour")
    code = vouchers.generate(package.id, 1)[0].code
    assert outbox.queue("voucher", f"voucher:{code}", PHONE, lang="sw", voucher=code)
    assert send(hs) == 1
    assert inbox(hs) == [f"Mama Njeri Cafe: vocha yako ya Wi-Fi ya Saa 1 ni {vouchers.display(code)}. Unganisha "
                         "kwenye Wi-Fi, fungua tovuti yoyote, gusa \"Una vocha?\" kisha uiweke."]
