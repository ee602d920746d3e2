"""openNDS as hotspotd's gateway: its FAS query (checked against openNDS's own PHP/OpenSSL), the
authmon and deauth-agent protocol over the real portal, strict entries, config and router-config."""
from __future__ import annotations

import base64
import shutil
import subprocess
import threading

import pytest

from hotspotd.config import ConfigError, from_dict
from hotspotd.disconnects import Target
from hotspotd.router_config import opennds_config
from hotspotd.routers import RouterUnavailable
from hotspotd.routers import opennds
from tests.helpers import give_time, make_config_dict, wait_for

FASKEY = "0123456789abcdef0123456789abcdef"
MAC = "02:31:01:00:00:10"
HID = "a" * 64


def plain(level: int, **fields) -> str:
    """The text openNDS 9.10 encodes (http_microhttpd.c construct_querystring)."""
    values = {"hid": HID, "clientip": "10.231.1.10", "clientmac": MAC, "client_type": "cpd_can",
              "gatewayname": "venue-1", "gatewayurl": "http%3a%2f%2f10.231.1.1", "version": "9.10.0",
              "gatewayaddress": "10.231.1.1:2050", "gatewaymac": "023101000001"}
    if level == 3:
        values["authdir"] = "opennds_auth"
    values.update(originurl="http%3a%2f%2f10.231.2.2%2fpage%3fx%3d1", clientif="lan0", themespec="(null)")
    values.update(fields)
    return "".join(f"{k}={v}, " for k, v in values.items())


def php_encrypt(text: str, key: str, iv: str) -> str:
    """What openNDS does on the gateway: PHP's openssl_encrypt (options 0: base64), base64 again."""
    code = "echo base64_encode(openssl_encrypt($argv[1], 'aes-256-cbc', $argv[2], 0, $argv[3]));"
    return subprocess.run(["php", "-r", code, text, key, iv], capture_output=True, text=True, check=True,
                          timeout=20).stdout


@pytest.mark.skipif(shutil.which("php") is None, reason="php-cli is installed by scripts/bootstrap --test")
@pytest.mark.parametrize("key", [FASKEY, "labsecret0123456"])
def test_level3_query_matches_openndss_php(key):
    iv = "3f2a9c0d1e4b5a6f"
    text = plain(3)
    assert opennds.aes_encrypt(text, key, iv) == php_encrypt(text, key, iv)
    assert opennds.aes_decrypt(php_encrypt(text, key, iv), key, iv) == text


def test_parse_redirect_levels_1_and_3():
    b64 = base64.b64encode(plain(1).encode()).decode()
    visit = opennds.parse_redirect(f"fas={b64}", FASKEY, 1)
    assert (visit.clientmac, visit.clientip, visit.gatewayname, visit.gatewayaddress) == (
        MAC, "10.231.1.10", "venue-1", "10.231.1.1:2050")
    assert visit.originurl == "http://10.231.2.2/page?x=1"
    iv = "0123456789abcdef"
    visit3 = opennds.parse_redirect(f"fas={opennds.aes_encrypt(plain(3), FASKEY, iv)}&iv={iv}", FASKEY, 3)
    assert visit3 == visit
    with pytest.raises(opennds.InvalidRedirect):      # another gateway's key
        opennds.parse_redirect(f"fas={opennds.aes_encrypt(plain(3), 'x' * 32, iv)}&iv={iv}", FASKEY, 3)


@pytest.mark.parametrize("field", [{"clientmac": "02:31:01:00:00:10;reboot"}, {"hid": "zz"},
                                   {"clientip": "10.231.1.10$(id)"}, {"gatewayname": "a b"}])
def test_parse_redirect_refuses_what_is_not_openndss(field):
    b64 = base64.b64encode(plain(1, **field).encode()).decode()
    with pytest.raises(opennds.InvalidRedirect):
        opennds.parse_redirect(f"fas={b64}", FASKEY, 1)


def test_rhid_and_gatewayhash():
    import hashlib
    assert opennds.rhid(HID, FASKEY) == hashlib.sha256((HID + FASKEY).encode()).hexdigest()
    assert opennds.gatewayhash("venue-1") == hashlib.sha256(b"venue-1").hexdigest()


def test_auth_entry_from_grant_is_strict():
    from hotspotd.access import Grant
    grant = Grant(1, MAC, "1 hour", 0.0, 3599, 10 * 2 ** 20, 5 * 2 ** 20, "2M/5M")
    assert opennds.auth_entry(MAC, grant) == f"{MAC} 60 2000 5000 5120 5120"
    short = grant._replace(remaining_seconds=5, bytes_left=None, rate_limit=None)
    assert opennds.auth_entry(MAC, short) == f"{MAC} 1 0 0 0 0"      # 0 minutes would mean the default
    with pytest.raises(ValueError):
        opennds.auth_entry("02:31:01:00:00:10;touch /tmp/x", short)


def test_authlist_never_sends_a_malformed_entry():
    gw = opennds.Gateway("venue-1", FASKEY, 3, "default")
    gw._auths["x"] = ("02:31:01:00:00:10 1 0 0 0 0;reboot", float("inf"))
    gw._auths[MAC] = (f"{MAC} 1 0 0 0 0", float("inf"))
    assert gw.authlist() == f"* {MAC}%201%200%200%200%200"
    assert gw.pending() == [MAC]


@pytest.fixture
def nds_hotspot(make_hotspot):
    return make_hotspot(routers=[{"name": "venue-1", "kind": "opennds", "address": "10.231.1.1",
                                  "faskey": FASKEY, "poll_seconds": 1, "timeout_seconds": 2}])


def authmon(http, hs, action, payload="none", name="venue-1"):
    body = {"auth_get": action, "gatewayhash": opennds.gatewayhash(name),
            "payload": base64.b64encode(payload.encode()).decode()}
    return http.post(f"{hs.portal_url}/opennds/{name}/", data=body,
                     headers={"User-Agent": "openNDS(authmon;NDS:9.10.0;)"})


def test_authmon_gets_a_paid_device_and_acks_it(nds_hotspot, http):
    give_time(MAC, seconds=600)
    assert authmon(http, nds_hotspot, "view").text.strip() == "*"
    assert nds_hotspot.opennds.admit(MAC, "default")
    assert authmon(http, nds_hotspot, "view").text.strip() == f"* {MAC}%2010%200%200%200%200"
    assert authmon(http, nds_hotspot, "view", f"* {MAC}").text.strip() == "ack"
    assert authmon(http, nds_hotspot, "view").text.strip() == "*"


def test_a_device_without_time_is_not_queued(nds_hotspot):
    assert not nds_hotspot.opennds.admit(MAC, "default")


def test_authmon_of_an_unknown_gateway_is_refused(nds_hotspot, http):
    r = http.post(f"{nds_hotspot.portal_url}/opennds/venue-1/",
                  data={"auth_get": "view", "gatewayhash": opennds.gatewayhash("other"), "payload": "bm9uZQ=="})
    assert r.status_code == 403
    assert http.post(f"{nds_hotspot.portal_url}/opennds/nope/", data={}).status_code == 404


def test_redirect_sends_the_device_to_the_splash_page(nds_hotspot, http):
    iv = "0123456789abcdef"
    r = http.get(f"{nds_hotspot.portal_url}/opennds/venue-1/?fas={opennds.aes_encrypt(plain(3), FASKEY, iv)}&iv={iv}",
                 allow_redirects=False)
    assert r.status_code == 303
    assert f"mac={MAC}" in r.headers["Location"] and "nasid=venue-1" in r.headers["Location"]
    assert http.get(f"{nds_hotspot.portal_url}/opennds/venue-1/?fas=junk&iv={iv}").status_code == 400


def test_returning_device_is_let_in_again(nds_hotspot, http):
    give_time(MAC, seconds=600)
    page = http.get(f"{nds_hotspot.portal_url}/", params={"mac": MAC, "ip": "10.231.1.10", "nasid": "venue-1"})
    assert page.status_code == 200
    assert nds_hotspot.opennds.by_name["venue-1"].pending() == [MAC]


def test_cut_waits_for_the_agent(nds_hotspot, http):
    gw = nds_hotspot.opennds.by_name["venue-1"]
    result = []
    t = threading.Thread(target=lambda: result.append(gw.cut(Target(MAC))))
    t.start()
    wait_for(lambda: authmon(http, nds_hotspot, "custom", "deauth_poll").text.strip() == f"deauth {MAC}", 5)
    assert authmon(http, nds_hotspot, "custom", f"deauth_done {MAC}").text.strip() == "ok"
    t.join(5)
    assert result == [True]
    assert authmon(http, nds_hotspot, "custom", "deauth_poll").text.strip() == "none"


def test_cut_without_agent_is_router_unavailable(nds_hotspot):
    with pytest.raises(RouterUnavailable):
        nds_hotspot.opennds.by_name["venue-1"].cut(Target(MAC))


def routers_cfg(tmp_path, **router):
    entry = {"name": "venue-1", "kind": "opennds", "address": "10.231.1.1", "faskey": FASKEY, **router}
    return make_config_dict(tmp_path, routers=[entry], portal={"public_url": "https://10.231.2.2:8443"})


@pytest.mark.parametrize("bad", [{"faskey": "short"}, {"faskey": "x" * 16 + ";"}, {"name": "my router"},
                                 {"fas_secure_enabled": 2}, {"poll_seconds": 0}, {"fas_address": "gw.lan"}])
def test_config_refuses_unsafe_opennds_routers(tmp_path, bad):
    with pytest.raises(ConfigError):
        from_dict(routers_cfg(tmp_path, **bad), "t.toml")


def test_debian_config_never_names_an_option_in_a_comment(tmp_path):
    cfg = from_dict(routers_cfg(tmp_path), "t.toml")
    text = opennds_config(cfg, fmt="debian")
    options = [line.split()[0] for line in text.splitlines()
               if line and not line.startswith(("#", " ", "}", "FirewallRuleSet"))]
    assert {"fasremoteip", "fasport", "faspath", "faskey", "gatewayname"} <= set(options)
    for option in options + ["nat_traversal_poll_interval"]:       # the scripts: awk -F"<option> "
        assert sum(f"{option} " in line for line in text.splitlines()) == 1, option
    assert "faspath /opennds/venue-1/" in text and "fas_secure_enabled 3" in text
    uci = opennds_config(cfg, fmt="uci")
    assert "option faskey '" + FASKEY + "'" in uci and "config opennds" in uci
    agent = opennds_config(cfg, fmt="agent")
    assert "ndsctl deauth \"$mac\"" in agent and "send_to_fas_custom deauth_poll" in agent


def test_level3_needs_https(tmp_path):
    data = routers_cfg(tmp_path)
    data["portal"]["public_url"] = "http://10.231.2.2:8080"
    with pytest.raises(ValueError, match="https"):
        opennds_config(from_dict(data, "t.toml"), fmt="debian")


def test_level1_config_warns_that_hotspotd_cannot_end_sessions(tmp_path):
    data = routers_cfg(tmp_path, fas_secure_enabled=1)
    data["portal"]["public_url"] = "http://10.231.2.2:8080"
    cfg = from_dict(data, "t.toml")
    for fmt in ("debian", "uci"):
        text = opennds_config(cfg, fmt=fmt)
        assert "# WARNING: level 1" in text and "fas_secure_enabled" in text
    debian = opennds_config(cfg, fmt="debian")
    assert not any("sessiontimeout " in line for line in debian.splitlines())   # awk would read a comment


def test_the_real_openndss_lab_takes_its_names_and_addresses_from_the_environment():
    # two runs of the suite on one machine must not share namespaces (tests/helpers.py)
    import os
    import subprocess
    import sys
    code = "from tests import helpers as h; print(h.NDS_CLIENT, h.NDS_GATEWAY, h.NDS_UPSTREAM, h.NDS_CLIENT_IP, h.NDS_UP_IP)"
    env = {**os.environ, "HOTSPOTD_TEST_NDS_PREFIX": "hrb", "HOTSPOTD_TEST_NDS_NET": "10.233"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["hrbcl", "hrbgw", "hrbup", "10.233.1.10", "10.233.2.2"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("HOTSPOTD_TEST_NDS_")}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["hndscl", "hndsgw", "hndsup", "10.231.1.10", "10.231.2.2"]
    env["HOTSPOTD_TEST_NDS_PREFIX"] = "x; rm"
    assert subprocess.run([sys.executable, "-c", code], env=env, capture_output=True).returncode != 0


# --- the client list (the read-back) ---------------------------------------------------------
NONCE, OTHER = "0123456789abcdef", "02:31:01:00:00:11"


def signed(nonce: str, body: str, key: str = FASKEY) -> list[str]:
    """The agent's words after ``clients``."""
    import hashlib
    return [nonce, hashlib.sha256(f"{nonce} {body} {key}".encode()).hexdigest(), *body.split()]


def test_a_client_list_is_taken_only_signed_for_the_nonce_asked_and_all_macs():
    report = opennds.client_report(signed(NONCE, f"auth {MAC} pre {OTHER}"), NONCE, FASKEY)
    assert report == opennds.ClientList(frozenset([MAC]), frozenset([OTHER]))
    assert opennds.client_report(signed(NONCE, "auth pre"), NONCE, FASKEY) == opennds.ClientList(frozenset(), frozenset())
    refused = [signed(NONCE, f"auth {MAC} pre", key="0" * 32),          # not the faskey
               signed("fedcba9876543210", f"auth {MAC} pre"),            # not the question asked
               signed(NONCE, "auth 0A:31:01:00:00:12 pre"), signed(NONCE, f"auth {MAC};reboot pre"),
               signed(NONCE, f"auth $(reboot) pre"), signed(NONCE, f"auth {MAC}"), signed(NONCE, f"pre {MAC} auth"),
               signed(NONCE, f"auth pre {MAC} pre"), signed(NONCE, "auth " + " ".join([MAC] * 1501) + " pre"),
               signed(NONCE, f"auth {MAC} pre")[:1] + ["x" * 64] + [f"auth {MAC} pre"]]
    for words in refused:
        assert opennds.client_report(words, NONCE, FASKEY) is None, words
    assert opennds.client_report(signed(NONCE, "auth pre"), "", FASKEY) is None        # nothing was asked


def test_the_read_back_asks_at_the_next_poll_and_takes_the_agents_signed_answer(nds_hotspot, http):
    gw = nds_hotspot.opennds.by_name["venue-1"]
    assert authmon(http, nds_hotspot, "custom", "deauth_poll").text.strip() == "none"
    result = []
    t = threading.Thread(target=lambda: result.append(gw.clients()))
    t.start()
    asked = []
    wait_for(lambda: asked.append(authmon(http, nds_hotspot, "custom", "deauth_poll").text.strip())
             or asked[-1].startswith("list "), 5)
    nonce = asked[-1].split()[1]
    forged = signed(nonce, f"auth {MAC} pre", key="0" * 32)
    assert authmon(http, nds_hotspot, "custom", "clients " + " ".join(forged)).text.strip() == "refused"
    answer = "clients " + " ".join(signed(nonce, f"auth {MAC} pre {OTHER}"))
    assert authmon(http, nds_hotspot, "custom", answer).text.strip() == "ok"
    t.join(5)
    assert result == [opennds.ClientList(frozenset([MAC]), frozenset([OTHER]))]
    assert authmon(http, nds_hotspot, "custom", answer).text.strip() == "refused"    # a replay: nothing asked
    assert authmon(http, nds_hotspot, "custom", "deauth_poll").text.strip() == "none"


def test_no_client_list_is_router_unavailable(nds_hotspot):
    with pytest.raises(RouterUnavailable, match="no client list"):
        nds_hotspot.opennds.by_name["venue-1"].clients()


def test_deauths_go_before_the_list_request():
    gw = opennds.Gateway("venue-1", FASKEY, 3, "default")
    gw._deauths[MAC] = 0.0
    gw._nonce = NONCE
    assert gw.deauth_list() == f"deauth {MAC}"
    gw._deauths.clear()
    assert gw.deauth_list() == f"list {NONCE}"


NDSCTL_JSON = """{
  "client_list_length":"4",
  "clients":{
    "02:31:01:00:00:10":{
      "mac":"02:31:01:00:00:10",
      "ip":"10.231.1.10",
      "state":"Authenticated",
      "custom":"\\"mac\\":\\"06:00:00:00:00:01\\""
    },
    "02:31:01:00:00:11":{
      "mac":"02:31:01:00:00:11",
      "state":"Preauthenticated"
    },
    "x":{
      "mac":"02:31:01:00:00:1; reboot",
      "state":"Authenticated"
    },
    "y":{
      "mac":"0A:31:01:00:00:12",
      "state":"Authenticated"
    }
  }
}
"""


@pytest.mark.parametrize("shell", [s for s in ("dash", "busybox") if shutil.which(s)] or ["sh"])
def test_the_agent_sends_only_macs_from_ndsctl_json_signed(tmp_path, shell):
    """The agent router-config prints, with a stand-in for openNDS's library and ndsctl."""
    import hashlib
    cfg = from_dict(routers_cfg(tmp_path, poll_seconds=1), "t.toml")
    agent = opennds_config(cfg, fmt="agent")
    assert agent.count("lib=/usr/lib/opennds/libopennds.sh") == 1
    sent = tmp_path / "sent"
    lib = tmp_path / "lib.sh"
    lib.write_text(f"""#!/bin/sh
case "$2" in
  deauth_poll) if [ -e {tmp_path}/asked ]; then echo none; else touch {tmp_path}/asked; echo "list {NONCE}"; fi ;;
  *) printf '%s\\n' "$2" >> {sent} ;;
esac
""")
    lib.chmod(0o755)
    bin_ = tmp_path / "bin"
    bin_.mkdir()
    (bin_ / "ndsctl").write_text(f"#!/bin/sh\n[ \"$1\" = json ] && cat {tmp_path}/json\n")
    (bin_ / "ndsctl").chmod(0o755)
    (tmp_path / "json").write_text(NDSCTL_JSON)
    script = tmp_path / "agent.sh"
    script.write_text(agent.replace("lib=/usr/lib/opennds/libopennds.sh", f"lib={lib}"))
    argv = [shell, "sh", str(script)] if shell == "busybox" else [shell, str(script)]
    import os
    proc = subprocess.Popen(argv, env={**os.environ, "PATH": f"{bin_}:{os.environ['PATH']}"})
    try:
        wait_for(lambda: sent.exists() and sent.read_text().strip(), 5)
    finally:
        proc.kill()
        proc.wait(5)
    words = sent.read_text().split()
    assert words[0] == "clients" and words[3:] == ["auth", MAC, "0a:31:01:00:00:12", "pre", OTHER]
    assert words[1] == NONCE
    assert words[2] == hashlib.sha256(f"{NONCE} {' '.join(words[3:])} {FASKEY}".encode()).hexdigest()
    assert opennds.client_report(words[1:], NONCE, FASKEY) is not None
