"""A customer at one venue of a multi-venue hotspotd, in headless Chromium on a phone: the venue's
name, colour and packages all the way through, and time that works at that venue's routers only."""
from urllib.parse import urlencode

import pytest
from playwright.sync_api import expect
from pyrad import packet

from hotspotd.storage.models import Entitlement, Payment

from tests.helpers import ask_radius, buy, KISUMU_NAS, patience_ms, start_venues, WESTLANDS_NAS

#: run again in the Daraja simulator's realistic timing by scripts/test (-m daraja_timing)
pytestmark = pytest.mark.daraja_timing

MAC = "AA:BB:CC:DD:EE:71"


def test_a_customer_at_westlands_sees_westlands_and_pays_for_westlands(make_hotspot, phone, screenshots):
    venues = start_venues(make_hotspot)
    phone.goto(f"{venues.portal_url}/?{urlencode({'mac': MAC, 'ip': '10.5.50.71', 'site': 'westlands'})}")
    expect(phone.locator("h1")).to_have_text("Java House Westlands")
    offered = phone.locator(".pkg").all_inner_texts()
    assert any("Westlands hour" in p for p in offered) and not any("Kisumu hour" in p for p in offered)
    assert [p for p in offered if "works at all our venues" in p] == [next(p for p in offered if "Roaming day" in p)]
    pay_button = phone.get_by_role("button", name="Pay with M-Pesa")
    assert pay_button.evaluate("b => getComputedStyle(b).backgroundColor") == "rgb(122, 31, 92)"   # #7a1f5c
    phone.screenshot(path=str(screenshots / "splash-phone-venue.png"), full_page=True)
    buy(phone, "0708374149", package="Westlands hour")
    phone.wait_for_selector('#status[data-status="success"]', timeout=patience_ms(15))
    expect(phone.locator("h1")).to_have_text("Java House Westlands")       # the site rode along
    payment = Payment.get()
    assert (payment.site, payment.amount) == ("westlands", 20)
    assert Entitlement.get(Entitlement.payment == payment.id).site == "westlands"
    assert ask_radius(venues, WESTLANDS_NAS, mac=MAC) == packet.AccessAccept
    assert ask_radius(venues, KISUMU_NAS, mac=MAC) == packet.AccessReject
