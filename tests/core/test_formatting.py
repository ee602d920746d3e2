"""hotspotd.formatting: one formatter per unit, and the same text for the same quantity on every screen."""
import html
import re

import pytest
from babel.units import format_unit

from hotspotd import admins, clock, formatting
from hotspotd.storage.models import Package

from tests.helpers import give_time, PASSWORD, sign_in

#: run again on PostgreSQL by scripts/test (-m postgres)
pytestmark = pytest.mark.postgres

MB = 1024 * 1024
CTX = {"mac": "AA:BB:CC:DD:EE:70", "ip": "10.5.50.70", "link-login-only": "http://10.5.50.1/login"}


@pytest.mark.parametrize("n, en, sw", [
    (None, "", ""), (0, "0 B", "B 0"), (900, "900 B", "B 900"), (2048, "2 KB", "KB 2"),
    (500 * MB, "500 MB", "MB 500"), (1536 * MB, "1.5 GB", "GB 1.5"), (1024 * MB, "1 GB", "GB 1"),
    (5000 * MB, "4.9 GB", "GB 4.9"), (20 * 1024 * MB, "20 GB", "GB 20")])
def test_sizes_step_by_1024_as_caps_are_stored(n, en, sw):
    assert formatting.size(n, "en") == en and formatting.size(n, "sw") == sw


@pytest.mark.parametrize("seconds, en, sw", [
    (1800, "30 minutes", "dakika 30"), (60, "1 minute", "dakika 1"), (3600, "1 hour", "saa 1"),
    (5400, "90 minutes", "dakika 90"), (86400, "1 day", "siku 1"), (7 * 86400, "7 days", "siku 7")])
def test_a_package_length_in_its_largest_whole_unit(seconds, en, sw):
    assert formatting.duration(seconds, "en") == en and formatting.duration(seconds, "sw") == sw


@pytest.mark.parametrize("seconds, en, sw", [
    (0, "0 min", "dakika 0"), (45 * 60, "45 min", "dakika 45"), (2 * 3600 + 300, "2 h 05 min", "saa 2 dakika 5"),
    (3600, "1 h", "saa 1 dakika 0"), (90000, "1 d 1 h", "siku 1 saa 1"), (-5, "0 min", "dakika 0")])
def test_time_left_to_the_minute(seconds, en, sw):
    assert formatting.time_left(seconds, "en") == en and formatting.time_left(seconds, "sw") == sw


@pytest.mark.parametrize("rate, en, sw", [
    ("2M/5M", "5 Mbps", "Mbps 5"), ("256k/512k", "512 kbps", "kbps 512"), ("1M/1.5M", "1.5 Mbps", "Mbps 1.5"),
    ("5M/10M 6M/12M", "10 Mbps", "Mbps 10"), (None, "", ""), ("fast", "", "")])
def test_speed_is_the_download_half_of_the_rate_limit(rate, en, sw):
    assert formatting.speed(rate, "en") == en and formatting.speed(rate, "sw") == sw


def test_money_and_an_unknown_language():
    assert formatting.money(1500) == "KES 1,500" == formatting.money(1500, "sw")
    assert formatting.money(None) == "KES 0"
    assert formatting.size(5000 * MB, "fr") == "4.9 GB" and formatting.duration(3600, None) == "1 hour"


def test_kiswahili_puts_the_unit_first_as_cldr_does():
    assert format_unit(500, "digital-megabyte", length="short", locale="sw").startswith("MB")
    assert not format_unit(500, "digital-megabyte", length="short", locale="en").startswith("MB")


def test_a_5000_mb_cap_reads_the_same_on_the_splash_page_and_the_dashboard(make_hotspot, http):
    hs = make_hotspot()
    admins.create("owner", PASSWORD)
    Package.create(name="Big data", price=1500, duration_seconds=7 * 86400, data_cap_bytes=5000 * MB,
                   rate_limit="2M/5M", devices=1, created_at=clock.now(), active=True)
    splash = html.unescape(http.get(hs.portal_url + "/", params={"lang": "en", **CTX}).text)
    line = re.search(r"Big data<small>(.*?)</small>", splash)[1]
    assert line == "7 days · 4.9 GB data · up to 5 Mbps" and "KES 1,500" in splash
    sw = html.unescape(http.get(hs.portal_url + "/", params={"lang": "sw", **CTX}).text)
    assert "GB 4.9" in sw and "hadi Mbps 5" in sw and "5M" not in sw
    assert sign_in(hs, http).status_code == 200
    row = html.unescape(http.get(f"{hs.portal_url}/admin/packages").text)
    assert re.search(r'data-label="Data">4\.9 GB<', row) and "KES 1,500" in row
    # time and data left: the online page and the dashboard's sessions agree too
    give_time("AA:BB:CC:DD:EE:71", data_cap=5000 * MB, seconds=2 * 3600 + 600)
    sessions = html.unescape(http.get(f"{hs.portal_url}/admin/sessions").text)
    assert "4.9 GB" in sessions and re.search(r"2 h 0\d min", sessions)
    online = html.unescape(http.get(hs.portal_url + "/", params={**CTX, "lang": "en", "mac": "AA:BB:CC:DD:EE:71"}).text)
    assert 'id="data-left">4.9 GB<' in online and re.search(r">2 h 0\d min<", online)
