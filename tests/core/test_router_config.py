import re
import shutil
import subprocess

import pytest

from hotspotd.service import cli
from hotspotd.config import from_dict
from hotspotd.router_config import MIKROTIK_LOGIN_VARS, coova_config, mikrotik_login_html, mikrotik_script

CONFIG = """
[portal]
public_url = "http://192.168.88.10:8080"

[[radius.clients]]
address = "192.168.88.0/24"
secret = "mt-Secret.42"
kind = "mikrotik"

[[radius.clients]]
address = "10.1.0.0/24"
secret = "coova-Secret.7"
kind = "coova"

[[routers]]
name = "shop"
kind = "mikrotik"
address = "192.168.88.1"
coa_port = 1700
secret = "mt-Secret.42"
user = "hotspotd"
password = "api-Pass.1"

[[routers]]
name = "kiosk"
kind = "coova"
address = "10.1.0.1"
coa_port = 3799
uamsecret = "uam-Secret.9"
"""


def run(capsys, tmp_path, *args, config=CONFIG):
    (tmp_path / "h.toml").write_text(config)
    code = cli.main(["--config", str(tmp_path / "h.toml"), "router-config", *args])
    out = capsys.readouterr()
    return code, out.out, out.err


def commands(script: str) -> list[str]:
    return [line.strip() for line in script.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def test_mikrotik_script_from_config(tmp_path, capsys):
    code, out, err = run(capsys, tmp_path, "mikrotik")
    assert code == 0 and err == ""
    assert "WARNING" not in out
    lines = commands(out)
    radius = [line for line in lines if line.startswith("/radius add ")]
    assert radius == ['/radius add service=hotspot address=192.168.88.10 secret="mt-Secret.42" '
                      'authentication-port=1812 accounting-port=1813 timeout=3000ms require-message-auth=yes '
                      'comment="hotspotd"']
    # Two [[routers]] of kind mikrotik do not exist, so "shop" was picked: its coa_port is used.
    assert "/radius incoming set accept=yes port=1700" in lines
    profile = next(line for line in lines if line.startswith("/ip hotspot profile set "))
    for flag in ("login-by=mac,http-chap,http-pap,cookie", "use-radius=yes", "radius-accounting=yes",
                 "radius-interim-update=received", "mac-auth-mode=mac-as-username",
                 "radius-mac-format=XX:XX:XX:XX:XX:XX"):
        assert f" {flag}" in profile
    assert '/ip hotspot walled-garden add dst-host="192.168.88.10" comment="hotspotd"' in lines
    assert ('/ip hotspot walled-garden ip add action=accept dst-address=192.168.88.10 protocol=tcp dst-port=8080 '
            'comment="hotspotd"') in lines
    assert re.search(r"^#.*M-Pesa.*mobile network", out, re.M | re.S)
    # Re-running replaces earlier entries instead of piling them up.
    assert lines.index('/radius remove [find comment="hotspotd"]') < lines.index(radius[0])


def test_mikrotik_script_is_routeros_shaped(tmp_path, capsys):
    _, out, _ = run(capsys, tmp_path, "mikrotik")
    depth = 0
    for line in commands(out):
        assert depth > 0 or line.startswith(("/", ":")), line
        depth += line.count("{") - line.count("}")
        assert depth >= 0, line
        unescaped_quotes = len(re.findall(r'(?<!\\)"', line))
        assert unescaped_quotes % 2 == 0, line
    assert depth == 0


def test_mikrotik_secret_is_escaped_for_routeros(tmp_path):
    cfg = from_dict({"radius": {"clients": [{"address": "192.168.88.0/24", "secret": 'a"b$c?d\\e f',
                                             "kind": "mikrotik"}]}})
    script = mikrotik_script(cfg, portal_url="http://192.168.88.10:8080")
    assert 'secret="a\\"b\\$c\\?d\\\\e f"' in script


def test_mikrotik_host_name_portal_and_radius_address(tmp_path, capsys):
    code, out, _ = run(capsys, tmp_path, "mikrotik", "--portal-url", "https://wifi.example.co.ke",
                       "--radius-address", "192.168.88.5", "--router", "shop")
    assert code == 0
    lines = commands(out)
    assert any(line.startswith("/radius add service=hotspot address=192.168.88.5 ") for line in lines)
    assert '/ip hotspot walled-garden add dst-host="wifi.example.co.ke" comment="hotspotd"' in lines
    assert ('/ip hotspot walled-garden ip add action=accept dst-host="wifi.example.co.ke" protocol=tcp dst-port=443 '
            'comment="hotspotd"') in lines
    assert ('/ip hotspot walled-garden ip add action=accept dst-address=192.168.88.5 protocol=tcp dst-port=443 '
            'comment="hotspotd"') in lines


def test_login_html_written_for_mikrotik(tmp_path, capsys):
    target = tmp_path / "login.html"
    code, out, _ = run(capsys, tmp_path, "mikrotik", "--login-html", str(target))
    assert code == 0 and out.startswith("# hotspotd: MikroTik")
    page = target.read_text()
    assert '<form name="hotspotd" action="http://192.168.88.10:8080/" method="get">' in page
    assert '<input type="hidden" name="router" value="mikrotik">' in page
    for name in ("mac", "ip", "link-login-only", "link-orig", "chap-id", "chap-challenge", "error"):
        assert f'<input type="hidden" name="{name}" value="$({name})">' in page
    assert '<button type="submit">' in page and ".submit()" in page
    assert not re.search(r"(src|href)=", page)  # nothing fetched from elsewhere
    assert MIKROTIK_LOGIN_VARS == ("mac", "ip", "link-login-only", "link-orig", "chap-id", "chap-challenge", "error")


def test_login_html_keeps_portal_path():
    page = mikrotik_login_html("https://wifi.example.co.ke/hs/")
    assert 'action="https://wifi.example.co.ke/hs/"' in page
    with pytest.raises(ValueError, match="portal URL"):
        mikrotik_login_html('http://x.example/"><script>')


def test_coova_config(tmp_path, capsys):
    code, out, err = run(capsys, tmp_path, "coova")
    assert code == 0 and err == "" and "WARNING" not in out
    lines = commands(out)
    for expected in ("HS_RADIUS=192.168.88.10", "HS_RADIUS2=192.168.88.10", "HS_RADSECRET=coova-Secret.7",
                     "HS_RADAUTH=1812", "HS_RADACCT=1813", "HS_MACAUTH=on", "HS_COAPORT=3799",
                     "HS_UAMSERVER=192.168.88.10", "HS_UAMFORMAT=http://192.168.88.10:8080/",
                     "HS_UAMSECRET=uam-Secret.9", "HS_UAMALLOW=192.168.88.10", "HS_NASID=kiosk",
                     "HS_RADCONF=off", "HS_UAMHOMEPAGE="):
        assert expected in lines
    for conf in ("radiusserver1 192.168.88.10", "radiussecret coova-Secret.7", "uamserver http://192.168.88.10:8080/",
                 "uamsecret uam-Secret.9", "macauth", "coaport 3799", "uamallowed 192.168.88.10"):
        assert f"#   {conf}\n" in out


@pytest.mark.skipif(shutil.which("sh") is None, reason="needs a POSIX shell")
def test_coova_config_is_read_by_sh_as_chilli_functions_do(tmp_path, capsys):
    code, out, _ = run(capsys, tmp_path, "coova", "--portal-url", "https://wifi.example.co.ke/hs",
                       "--radius-address", "10.1.0.5")
    assert code == 0
    (tmp_path / "config").write_text(out)
    # /etc/chilli/functions sources the file, then builds uamserver with `eval echo $HS_UAMFORMAT`.
    shown = subprocess.run(
        ["sh", "-c", '. ./config && printf "%s|" "$HS_RADIUS" "$HS_RADSECRET" "$HS_UAMSECRET" "$HS_UAMALLOW" '
                     '"$HS_UAMDOMAINS" "$HS_MACAUTH" "$HS_COAPORT" "$(eval echo $HS_UAMFORMAT)"'],
        cwd=tmp_path, capture_output=True, text=True, check=True).stdout
    assert shown == ("10.1.0.5|coova-Secret.7|uam-Secret.9|wifi.example.co.ke|wifi.example.co.ke|on|3799|"
                     "https://wifi.example.co.ke/hs/|")


def test_coova_without_uamsecret_gets_a_marked_random_one(tmp_path, capsys):
    config = CONFIG.replace('uamsecret = "uam-Secret.9"\n', "")
    code, out, err = run(capsys, tmp_path, "coova", config=config)
    assert code == 0
    secret = re.search(r"^HS_UAMSECRET=([0-9a-f]{32})$", out, re.M).group(1)
    assert ("# WARNING: no uamsecret in hotspotd.toml: HS_UAMSECRET below was generated just now; "
            f'put uamsecret = "{secret}"') in out
    assert "the [[routers]] entry \"kiosk\"" in out
    assert err.startswith("hotspotd: warning: no uamsecret") and secret in err
    _, again, _ = run(capsys, tmp_path, "coova", config=config)
    assert secret not in again


@pytest.mark.parametrize("login_html", [False, True])
def test_defaults_give_warnings_not_silence(tmp_path, capsys, login_html):
    config = '[[radius.clients]]\naddress = "10.5.50.0/24"\nsecret = "testing123"\nkind = "mikrotik"\n'
    extra = ["--login-html", str(tmp_path / "login.html")] if login_html else []
    code, out, err = run(capsys, tmp_path, "mikrotik", *extra, config=config)
    assert code == 0
    warnings = [line for line in out.splitlines() if line.startswith("# WARNING: ")]
    assert len(warnings) == 3
    # the sample portal is not 10.5.50.1, the router's own address after /ip hotspot setup
    assert "public_url is not set" in warnings[0] and "http://192.168.88.2:8080" in warnings[0]
    assert '"testing123"' in warnings[1]
    assert "no API password in hotspotd.toml" in warnings[2]
    password = re.search(r'^#   password = "([^"]+)"$', out, re.M).group(1)
    assert f'password="{password}"' in out             # in the script the owner pastes ...
    assert password not in err                          # ... never on stderr, which may end in a log
    assert err.count("hotspotd: warning: ") == 3       # each once, --login-html or not
    for warning in warnings:
        assert out.count(warning) == 1 and err.count(warning[len("# WARNING: "):]) == 1


def test_the_routers_own_hotspot_address_is_warned_about(tmp_path, capsys):
    config = CONFIG.replace("http://192.168.88.10:8080", "http://10.5.50.1:8080")
    code, out, _ = run(capsys, tmp_path, "mikrotik", config=config)
    assert code == 0
    assert out.count("# WARNING: the portal and RADIUS address 10.5.50.1 is the router's own") == 1
    code, out, _ = run(capsys, tmp_path, "mikrotik", "--radius-address", "10.5.50.9", config=config)
    assert "# WARNING: the portal address 10.5.50.1 is the router's own" in out
    assert "# WARNING: 10.5.50.9 is in the hotspot's network 10.5.50.0/24: if the hotspotd box sits behind" in out
    code, out, _ = run(capsys, tmp_path, "mikrotik", "--radius-address", "10.5.50.9",
                       "--hotspotd-mac", "aa-bb-cc-dd-ee-0f", config=config)
    assert "hotspot's network" not in out
    assert '/ip hotspot ip-binding add mac-address=AA:BB:CC:DD:EE:0F type=bypassed comment="hotspotd"' in out


def test_router_secret_mismatch_and_foreign_address_warn(tmp_path, capsys):
    config = CONFIG.replace('address = "192.168.88.1"\ncoa_port = 1700\nsecret = "mt-Secret.42"',
                            'address = "172.16.0.1"\ncoa_port = 1700\nsecret = "other"')
    code, out, _ = run(capsys, tmp_path, "mikrotik", "--router", "shop", config=config)
    assert code == 0
    assert 'secret="other"' in out
    assert '# WARNING: [[routers]] "shop" secret differs from its [[radius.clients]] secret' in out
    assert '# WARNING: hotspotd answers RADIUS from 192.168.88.0/24 only, not from "shop" at 172.16.0.1' in out


@pytest.mark.parametrize("args, config, message", [
    (["mikrotik", "--router", "nope"], CONFIG, "no [[routers]] entry named 'nope'"),
    (["mikrotik", "--router", "kiosk"], CONFIG, "'kiosk' is of kind coova, not mikrotik"),
    (["coova", "--login-html", "x.html"], CONFIG, "--login-html is for mikrotik"),
    (["coova", "--hotspotd-mac", "AA:BB:CC:DD:EE:FF"], CONFIG, "--hotspotd-mac is for mikrotik"),
    (["mikrotik", "--hotspotd-mac", "box"], CONFIG, "--hotspotd-mac 'box' is not a MAC address"),
    (["mikrotik"], CONFIG.replace('password = "api-Pass.1"', 'password = "api-Pass.1"\ntls = true'),
     "tls = true on port 8728, the plain api's: set api_port = 8729"),
    (["mikrotik", "--portal-url", "http://127.0.0.1:8080"], CONFIG, "cannot reach 127.0.0.1"),
    (["mikrotik", "--portal-url", "http://10.0.0.1/?a=1"], CONFIG, "without query"),
    (["mikrotik", "--radius-address", "hotspotd.lan"], CONFIG, "is not an IP address"),
    (["mikrotik", "--radius-address", "127.0.0.1"], CONFIG, "loopback"),
    (["mikrotik", "--portal-url", "https://wifi.example.co.ke"], CONFIG, "pass --radius-address"),
    (["coova"], '[[radius.clients]]\naddress = "10.0.0.0/8"\nsecret = "x"\n',
     "no [[radius.clients]] entry of kind coova"),
    (["coova"], CONFIG.replace('"coova-Secret.7"', '"has space"'), "the RADIUS secret has characters"),
    (["mikrotik"], CONFIG + '\n[[routers]]\nname = "b"\nkind = "mikrotik"\naddress = "192.168.88.2"\n',
     "several [[routers]] of kind mikrotik (shop, b)"),
])
def test_errors_are_one_line_and_exit_2(tmp_path, capsys, args, config, message):
    code, out, err = run(capsys, tmp_path, *args, config=config)
    assert code == 2 and out == ""
    assert err.startswith("hotspotd: router-config: ") and err.count("\n") == 1
    assert message in err


def test_coova_allows_loopback_radius():
    # chilli and hotspotd on one Linux box talk over loopback; MikroTik cannot.
    cfg = from_dict({"radius": {"listen": "127.0.0.1",
                                "clients": [{"address": "127.0.0.1", "secret": "s3cret", "kind": "coova"}]}})
    text = coova_config(cfg, portal_url="http://10.1.0.2:8080")
    assert "HS_RADIUS=127.0.0.1\n" in text
    assert "[radius] listen" in text


def test_a_config_that_answers_only_this_machine_is_warned_about(tmp_path, capsys):
    # the sample config's one [[radius.clients]] entry is 127.0.0.1: a real router would be ignored silently
    config = ('[portal]\npublic_url = "http://192.168.88.10:8080"\n[radius]\nlisten = "192.168.88.10"\n'
              '[[radius.clients]]\naddress = "127.0.0.1"\nsecret = "mt-Secret.42"\nkind = "mikrotik"\n')
    code, out, err = run(capsys, tmp_path, "mikrotik", config=config)
    assert code == 0 and "# WARNING: hotspotd answers RADIUS from 127.0.0.1/32 only (this machine)" in out
    assert "hotspotd: warning: hotspotd answers RADIUS from 127.0.0.1/32 only" in err
    code, out, _ = run(capsys, tmp_path, "mikrotik", config=CONFIG)
    assert code == 0 and "answers RADIUS from" not in out
