"""hotspotd's SMS gateways against the simulated ones, over real sockets: Africa's Talking through
its own SDK, a reseller through the HTTP template."""
from __future__ import annotations

import pytest
import requests

from hotspotd.sms.gateways import AfricasTalking, HttpTemplate, SmsFailed, from_config
from hotspotd.testing.daraja import DarajaSimulator
from hotspotd.config import from_dict

PHONE = "254708374149"
ADVANTA_BODY = ('{"apikey": "{api_key}", "partnerID": "{username}", "message": "{message}", '
                '"shortcode": "{sender_id}", "mobile": "{phone}"}')


@pytest.fixture
def sim():
    with DarajaSimulator() as simulator:
        yield simulator


def inbox(sim, phone=PHONE) -> list[dict]:
    return requests.get(f"{sim.url}/simulator/phones/{phone}/messages", timeout=5).json()["messages"]


def test_africas_talking_through_its_sdk_lands_in_the_phones_inbox(sim):
    sim.sms.credentials("hostel", "k3y")
    gateway = AfricasTalking("hostel", "k3y", sender_id="MAMANJERI", base_url=sim.url)
    message_id = gateway.send(PHONE, 'Saa 1: "karibu" & 100% €')
    assert message_id.startswith("ATXid_")
    [sms] = inbox(sim)
    assert sms["from"] == "MAMANJERI" and sms["text"] == 'Saa 1: "karibu" & 100% €'
    assert sms["receipt"] is None and sms["amount"] is None
    # no sender ID: the gateway's default
    AfricasTalking("hostel", "k3y", base_url=sim.url).send(PHONE, "two")
    assert inbox(sim)[-1]["from"] == "AFRICASTKNG"


def test_a_wrong_key_is_a_failure_worth_retrying_once_the_owner_fixes_it(sim):
    with pytest.raises(SmsFailed, match="The supplied authentication is invalid") as failed:
        AfricasTalking("sandbox", "wrong", base_url=sim.url).send(PHONE, "x")
    assert not failed.value.permanent and inbox(sim) == []


@pytest.mark.parametrize("failure, permanent", [(503, False), (("at", 500), False), (("at", 501), False),
                                                (("at", 406), True), (("at", 405), True), (("at", 403), True)])
def test_a_refusal_says_whether_another_try_can_help(sim, failure, permanent):
    sim.sms.fail_next(failure)
    with pytest.raises(SmsFailed) as failed:
        AfricasTalking("sandbox", "simulator", base_url=sim.url).send(PHONE, "x")
    assert failed.value.permanent is permanent
    assert inbox(sim) == []


def test_africas_talking_with_no_valid_number_sends_nothing(sim):
    # the number passes the SDK's own check (+ and digits) but is no Kenyan mobile
    with pytest.raises(SmsFailed, match="InvalidPhoneNumber") as failed:
        AfricasTalking("sandbox", "simulator", base_url=sim.url).send("255612345678", "x")
    assert failed.value.permanent


def test_the_sdk_reaches_africas_talking_itself_unless_pointed_elsewhere():
    assert AfricasTalking("hostel", "k").url == "https://api.africastalking.com/version1/messaging"
    assert AfricasTalking("sandbox", "k").url == "https://api.sandbox.africastalking.com/version1/messaging"


def test_a_reseller_template_posts_json_with_its_placeholders_escaped(sim):
    gateway = HttpTemplate(f"{sim.url}/api/services/sendsms/", "POST", ADVANTA_BODY, "json",
                           success=r'"response-code":\s*200', api_key="simulator", username="1", sender_id="WIFI")
    gateway.send(PHONE, 'Paid "KES 10"\nthanks {phone}')
    [sms] = inbox(sim)
    assert sms["from"] == "WIFI" and sms["text"] == 'Paid "KES 10"\nthanks {phone}'


def test_a_reseller_that_answers_200_to_a_refusal_is_read_by_its_body(sim):
    gateway = HttpTemplate(f"{sim.url}/api/services/sendsms/", "POST", ADVANTA_BODY, "json",
                           success=r'"response-code":\s*200', api_key="wrong", username="1")
    with pytest.raises(SmsFailed, match="Invalid credentials") as failed:
        gateway.send(PHONE, "x")
    assert failed.value.permanent and inbox(sim) == []


def test_a_reseller_template_by_get_escapes_the_url(sim):
    url = (f"{sim.url}/api/services/sendsms/?apikey={{api_key}}&partnerID={{username}}&message={{message}}"
           "&shortcode={sender_id}&mobile={phone}")
    gateway = HttpTemplate(url, "GET", success=r'"response-code":\s*200', api_key="simulator", username="1",
                           sender_id="WIFI")
    gateway.send(PHONE, "a&b=c 100% #1")
    assert inbox(sim)[-1]["text"] == "a&b=c 100% #1"


def test_a_reseller_that_is_down_is_retried(sim):
    sim.sms.fail_next(502)
    gateway = HttpTemplate(f"{sim.url}/api/services/sendsms/", "POST", ADVANTA_BODY, "json",
                           api_key="simulator", username="1")
    with pytest.raises(SmsFailed, match="HTTP 502") as failed:
        gateway.send(PHONE, "x")
    assert not failed.value.permanent


def test_the_config_names_the_gateway(sim):
    off = from_dict({}, "t")
    assert from_config(off.sms) is None
    at = from_dict({"sms": {"provider": "africastalking"}}, "t")
    assert isinstance(from_config(at.sms, sim.url), AfricasTalking)
    assert from_config(at.sms, sim.url).url == f"{sim.url}/version1/messaging"
    http = from_dict({"sms": {"provider": "http", "http_url": "https://sms.example.co.ke/send"}}, "t")
    assert isinstance(from_config(http.sms), HttpTemplate)
