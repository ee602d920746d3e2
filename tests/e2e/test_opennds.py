"""A real browser behind a real openNDS: Debian's Chromium, started inside the client network
namespace, follows openNDS's redirect to hotspotd, buys a package on the splash page and then
reaches the upstream server (tests/helpers.py OpenNDSLab; needs root and network namespaces)."""
from __future__ import annotations

import json
import os
import time

import pytest
from playwright.sync_api import expect

from tests.e2e.conftest import CHROMIUM, TIMEOUT_MS
from tests.helpers import (NDS_CLIENT, NDS_GW_LAN, NDS_ORIGIN, NDS_UP_IP, UPSTREAM_BODY, buy, opennds_lab,
                           patience_ms, start_opennds, wait_for)

#: run again in the Daraja simulator's realistic timing by scripts/test (-m daraja_timing)
pytestmark = [pytest.mark.slow, pytest.mark.daraja_timing]


@pytest.fixture
def lab(tmp_path):
    yield from opennds_lab(tmp_path)


def test_chromium_behind_opennds_pays_and_gets_online(lab, browser, make_hotspot, tmp_path):
    hs, public = start_opennds(lab, make_hotspot, tmp_path, 3)
    wrapper = tmp_path / "chromium-in-client-netns"
    wrapper.write_text(f'#!/bin/sh\nexec ip netns exec {NDS_CLIENT} {CHROMIUM} "$@"\n')
    wrapper.chmod(0o755)
    profile = tmp_path / "profile"
    (profile / "Default").mkdir(parents=True)
    # no preconnect: a connection opened before the login stays DNAT-ed to openNDS for its life
    (profile / "Default" / "Preferences").write_text(json.dumps({"net": {"network_prediction_options": 2}}))
    args = ["--no-sandbox"] if os.geteuid() == 0 else []
    args.append(f"--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE {NDS_UP_IP}, EXCLUDE {NDS_GW_LAN}")
    context = browser.browser_type.launch_persistent_context(
        str(profile), executable_path=str(wrapper), headless=True, args=args, ignore_https_errors=True)
    try:
        context.set_default_timeout(TIMEOUT_MS)
        page = context.pages[0] if context.pages else context.new_page()
        for attempt in range(3):               # bounded: a gateway reloading its rules refuses for a moment
            try:
                page.goto(NDS_ORIGIN)          # openNDS 307 → hotspotd's FAS → the splash page
                break
            except Exception:                  # noqa: BLE001 - playwright's Error: connection refused
                if attempt == 2:
                    raise
                time.sleep(2)
        assert page.url.startswith(f"{public}/?mac="), page.url
        buy(page, "254708374149")
        expect(page.get_by_text("You are online")).to_be_visible(timeout=patience_ms(20))
        wait_for(lambda: not hs.opennds.by_name["venue-1"].pending(), 20, 0.3)   # authmon took it
        wait_for(lambda: lab.client_state() == "Authenticated", 10, 0.3)
        page.goto(NDS_ORIGIN)
        expect(page.get_by_text(UPSTREAM_BODY)).to_be_visible()
    finally:
        context.close()
