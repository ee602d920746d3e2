"""Secrets never reach the log, and phone numbers appear there only masked."""
import logging

import pytest

from hotspotd import admins, vouchers
from hotspotd.identifiers import mask_phone
from hotspotd.storage.models import Entitlement, Package, Payment

from tests.helpers import client, mac_request, PHONE_FORMS, RADIUS, send, wait_for

#: run again on PostgreSQL by scripts/test (-m postgres)
pytestmark = pytest.mark.postgres


def test_a_day_of_work_logs_no_secret_and_no_full_phone(make_hotspot, http, caplog):
    caplog.set_level(logging.DEBUG)
    hs = make_hotspot(radius=RADIUS)
    api = f"{hs.portal_url}/api/portal"
    r = http.post(f"{api}/pay", json={"phone": "0708374149", "packageId": 2, "macAddress": "AA:BB:CC:DD:EE:90",
                                      "login": {"ip": "10.5.50.90"}})
    checkout = r.json()["checkoutRequestId"]
    wait_for(lambda: http.get(f"{api}/status/{checkout}").json()["status"] == "success")
    wait_for(lambda: "AA:BB:CC:DD:EE:90" in hs.routeros_sim.active_macs())
    http.post(f"{api}/pay", json={"phone": "254700001032", "packageId": 1, "macAddress": "AA:BB:CC:DD:EE:91"})
    code = vouchers.generate(Package.get().id, 1)[0].code
    http.post(f"{api}/voucher", json={"code": code, "macAddress": "AA:BB:CC:DD:EE:92"})
    http.post(f"{api}/voucher", json={"code": "WRONG-CODE1", "macAddress": "AA:BB:CC:DD:EE:93"})
    admins.create("owner", "correct horse battery")
    page = http.get(f"{hs.portal_url}/admin/login").text
    token = page.split('name="csrf_token" value="')[1].split('"')[0]
    http.post(f"{hs.portal_url}/admin/login", data={"username": "owner", "password": "wrong password!!", "csrf_token": token})
    http.post(f"{hs.portal_url}/admin/login", data={"username": "owner", "password": "correct horse battery",
                                                    "csrf_token": token})
    ent = Entitlement.get(Entitlement.payment == Payment.get(Payment.checkout_request_id == checkout).id)
    c = client(hs)
    send(c, mac_request(c, user=ent.login_user, password=ent.login_password, calling="AA:BB:CC:DD:EE:90"))
    hs.expire_sessions()

    text = "\n".join(f"{r.getMessage()} {r.exc_text or ''}" for r in caplog.records)
    assert mask_phone("254708374149") in text                 # phones do appear, masked
    secrets = {
        "callback token": hs.callback_token,
        "session password": ent.login_password,
        "voucher code": code,
        "admin password": "correct horse battery",
        "wrong admin password": "wrong password!!",
        "router API password": hs.routers[0].password,
        "RADIUS secret": "testing123",
        "Daraja passkey": hs.config.mpesa.passkey or "bfb279f9aa9bdbcf158e97dd71a467cd2e0c893059b10f78e6b72ada1ed2c919",
    }
    for what, secret in secrets.items():
        assert secret not in text, f"{what} was logged"
    for form in PHONE_FORMS:
        assert form not in text, f"a full phone number was logged ({form})"
