"""hotspotd as the FAS of a real openNDS (Debian's 9.10) in network namespaces: client, gateway,
upstream (hotspotd, its Daraja simulator and the "internet" live in the upstream namespace).

The gateway runs exactly what ``hotspotd router-config opennds`` prints (``--format debian`` and
``--format agent``). Needs root and network namespaces (CI has both); without them these tests fail
and say so. Every wait is bounded; the namespaces and processes are removed afterwards, also on failure."""
from __future__ import annotations

import json
import os
from urllib.parse import unquote

import pytest

from hotspotd import access, clock
from hotspotd.routers import opennds
from hotspotd.storage.models import Disconnect, Entitlement, Package
from tests.helpers import (NDS_CLIENT_MAC, NDS_FASKEY, NDS_GW_LAN, NDS_ORIGIN, give_time, opennds_lab,
                           start_opennds, wait_for)

pytestmark = pytest.mark.slow
FASKEY, ORIGIN = NDS_FASKEY, NDS_ORIGIN


@pytest.fixture
def lab(tmp_path):
    yield from opennds_lab(tmp_path)


def to_splash(lab, public: str) -> str:
    """Client → upstream: openNDS's redirect to the FAS, and the FAS's to the splash page."""
    code, fas_url, _ = lab.curl(ORIGIN)
    assert code == 307, (code, fas_url)
    assert fas_url.startswith(f"{public}/opennds/venue-1/?fas="), fas_url
    code, splash, _ = lab.curl(fas_url)
    assert code == 303 and f"mac={NDS_CLIENT_MAC}" in splash, (code, splash)
    return splash


def test_level3_redirect_payment_and_expiry_on_time(lab, make_hotspot, tmp_path):
    hs, public = start_opennds(lab, make_hotspot, tmp_path, 3)
    assert not lab.online()
    splash = to_splash(lab, public)
    code, _, page = lab.curl(splash)
    assert code == 200 and "M-Pesa" in page, page
    package = Package.create(name="1 minute", price=10, duration_seconds=60, active=True, created_at=clock.now())
    body = json.dumps({"phone": "254708374149", "packageId": package.id, "macAddress": NDS_CLIENT_MAC})
    code, _, answer = lab.curl(f"{public}/api/portal/pay", "-H", "Content-Type: application/json", "-d", body)
    assert code == 200, answer
    wait_for(lab.online, 20, 0.3)          # Daraja simulator → callback → authmon → ndsctl auth
    assert lab.client_state() == "Authenticated"
    assert hs.opennds.by_name["venue-1"].pending() == []           # acknowledged by authmon
    ent = Entitlement.select().order_by(Entitlement.id.desc()).get()
    wait_for(lambda: not lab.online(), ent.expires_at - clock.now() + 15, 0.5)
    ended = clock.now()
    assert ent.expires_at - 2 <= ended <= ent.expires_at + 12, ended - ent.expires_at
    assert lab.client_state() != "Authenticated"


def test_level3_returning_device_and_owners_disconnect(lab, make_hotspot, tmp_path):
    hs, public = start_opennds(lab, make_hotspot, tmp_path, 3)
    # its own PID namespace: its start and stop kill every authmon they can see (reference P4)
    assert os.readlink(f"/proc/{lab.gateway_pid}/ns/pid") != os.readlink("/proc/self/ns/pid")
    ent = give_time(NDS_CLIENT_MAC, seconds=3600)
    splash = to_splash(lab, public)
    code, _, page = lab.curl(splash)          # "welcome back": queued for authmon
    assert code == 200, page
    wait_for(lab.online, 20, 0.3)
    state = json.loads(lab.ndsctl("json", NDS_CLIENT_MAC).stdout)
    assert state["state"] == "Authenticated" and 3540 <= int(state["session_end"]) - int(state["session_start"]) <= 3600 + 60
    macs = access.revoke(ent.id, "owner test")                       # what the dashboard's Disconnect does
    hs.cut_off(macs, ent.id, "owner")
    wait_for(lambda: not lab.online(), 20, 0.3)                       # the agent's ndsctl deauth
    assert lab.client_state() != "Authenticated"
    wait_for(lambda: hs.opennds.by_name["venue-1"].deauth_list() == "none", 10)


def test_level1_redirect_and_authorisation_by_the_browser(lab, make_hotspot, tmp_path):
    hs, public = start_opennds(lab, make_hotspot, tmp_path, 1)
    to_splash(lab, public)
    give_time(NDS_CLIENT_MAC, seconds=600)
    code, fas_url, _ = lab.curl(ORIGIN)
    code, auth_url, _ = lab.curl(fas_url)          # time left: straight to the gateway's authdir
    assert code == 302 and auth_url.startswith(f"http://{NDS_GW_LAN}:2050/opennds_auth/?tok="), auth_url
    query = fas_url.split("?", 1)[1]
    hid = opennds.parse_redirect(query, FASKEY, 1).hid
    assert f"tok={opennds.rhid(hid, FASKEY)}" in auth_url
    code, redir, _ = lab.curl(auth_url)
    assert code == 307 and unquote(redir) == ORIGIN, (code, redir)
    wait_for(lab.online, 10, 0.3)
    assert lab.client_state() == "Authenticated"


def test_level3_read_back_lets_a_dropped_device_in_again_and_cuts_one_revoked_behind_its_back(lab, make_hotspot,
                                                                                             tmp_path):
    hs, public = start_opennds(lab, make_hotspot, tmp_path, 3)
    ent = give_time(NDS_CLIENT_MAC, seconds=3600)
    lab.curl(to_splash(lab, public))                                  # "welcome back": authmon
    wait_for(lab.online, 20, 0.3)
    assert hs.read_back() == 0                                        # the agent's list agrees
    assert hs.readback.last["venue-1"].online == 1
    lab.ndsctl("deauth", NDS_CLIENT_MAC)                              # the gateway drops it, hotspotd not told
    assert not lab.online()                                           # ... and its next request makes it
    wait_for(lambda: lab.client_state() == "Preauthenticated", 10, 0.3)  # Preauthenticated (a new token)
    assert hs.read_back() == 1
    assert hs.readback.last["venue-1"].logged_in == [NDS_CLIENT_MAC]
    wait_for(lab.online, 20, 0.3)                                     # authmon's ndsctl auth, by MAC
    assert lab.client_state() == "Authenticated"
    access.revoke(ent.id, "ended in the database, no cut sent")       # behind the gateway's back
    assert lab.online()
    assert hs.read_back() == 1                                        # found: cut through the agent
    assert hs.readback.last["venue-1"].cut == [NDS_CLIENT_MAC]
    wait_for(lambda: not lab.online(), 20, 0.3)
    assert lab.client_state() != "Authenticated"
    # (the expire job may be the one running the cut: it marks it done when the agent answered)
    wait_for(lambda: Disconnect.get(Disconnect.mac == NDS_CLIENT_MAC).status == "done", 10, 0.2)
