"""portal_web/fastlane.py answers the status poll ahead of Flask: its answers must be the Flask
view's, byte for byte, in every state a payment can be in; and the pay endpoint's rate limits
still hold with Flask-Limiter's app-wide hook removed."""
import pytest
from werkzeug.test import Client

from hotspotd.storage.models import Payment

from tests.helpers import wait_for

#: run again on PostgreSQL by scripts/test (-m postgres)
pytestmark = pytest.mark.postgres

PHONES = {"success": "0708374149", "cancelled": "254700001032", "insufficient": "254700000001"}


def both(hs, path: str, **headers):
    """The fast lane's answer and Flask's own (the app without the middleware) to the device that paid, as
    (status, headers without Date, body)."""
    answers = []
    for app in (hs.app.wsgi_app, hs.app.wsgi_app.wsgi_app):
        r = Client(app).get(path, headers=headers, environ_base={"REMOTE_ADDR": "127.0.0.1"})
        answers.append((r.status, sorted((k, v) for k, v in r.headers.items() if k != "Date"), r.get_data()))
    return answers


def test_the_fast_lane_answers_as_the_flask_view_does(make_hotspot, http):
    # the first pair of answers is asked while pending: the outcome must not land between the two
    hs = make_hotspot(simulator={"callback_delay_seconds": 2.0, "final_after_seconds": 2.0})
    assert type(hs.app.wsgi_app).__name__ == "StatusFastLane"
    ids = []
    for i, phone in enumerate(PHONES.values()):
        r = http.post(f"{hs.portal_url}/api/portal/pay", json={
            "phone": phone, "packageId": 1, "macAddress": f"AA:BB:CC:00:00:0{i}",
            "login": {"ip": "10.5.50.20", "link-login-only": "http://10.5.50.1/login"}})
        assert r.status_code == 200, r.text
        ids.append(r.json()["checkoutRequestId"])
    paths = [f"/api/portal/status/{cid}" for cid in ids]
    pending = both(hs, paths[0])                       # asked at once: still pending
    wait_for(lambda: Payment.select().where(Payment.status == "pending").count() == 0)
    for answers in [pending] + [both(hs, p, **{"Accept-Language": lang})
                                for p in paths for lang in ("en-KE,en;q=0.9", "sw", "fr")] + \
                   [both(hs, "/api/portal/status/ws_CO_none"), both(hs, f"{paths[0]}?lang=sw")]:
        fast, flask = answers
        assert fast == flask
    assert b'"routerLogin":{' in both(hs, paths[0])[0][2]       # the paying device gets its login form


def test_pay_is_still_rate_limited_per_client(make_hotspot, http):
    hs = make_hotspot(portal={"pay_limit_per_client": "2/minute"})
    # a number each: one number's second push would meet the subscriber lock or rule 17, not the limit
    codes = [http.post(f"{hs.portal_url}/api/portal/pay", json={
        "phone": f"071100040{i}", "packageId": 1, "macAddress": f"AA:BB:CC:00:01:0{i}"}).status_code for i in range(3)]
    assert codes == [200, 200, 429]
