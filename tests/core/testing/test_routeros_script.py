"""The simulator runs RouterOS CLI scripts as the console does, and refuses what the console refuses."""
import librouteros
import pytest
from librouteros.exceptions import TrapError

from hotspotd.testing.routeros import RouterOSSimulator
from hotspotd.testing.routeros_script import ScriptError

SCRIPT = r"""
# comments, line joining, quoting, [find], :if/else, :foreach, :local, relative menus
/radius remove [find comment="hotspotd"]
/radius add service=hotspot address=192.168.88.10 secret="a\"b\$c" timeout=3000ms \
    comment="hotspotd"
:if ([:len [/radius find comment=hotspotd]] = 0) do={ :error "no entry" } else={
    :put ("entries: " . [:len [/radius find]])
}
:foreach srv in=[/ip hotspot find] do={
    :local prof [/ip hotspot get $srv profile]
    /ip hotspot profile set [find name=$prof] login-by=mac,http-chap use-radius=yes
    :put ("profile " . $prof . " in " . [/ip hotspot profile get [find name=$prof] html-directory])
}
/ip/service set api disabled=no address=192.168.88.10/32
/ip hotspot walled-garden
add dst-host="wifi.example" comment=hotspotd
"""


@pytest.fixture
def sim():
    with RouterOSSimulator() as router:
        yield router


def test_a_script_changes_the_menus(sim):
    assert sim.run_script(SCRIPT) == ["entries: 1", "profile hsprof1 in flash/hotspot"]
    radius = sim.rows("/radius")
    assert len(radius) == 1 and radius[0]["secret"] == 'a"b$c' and radius[0]["timeout"] == "3000ms"
    assert radius[0]["authentication-port"] == "1812"        # RouterOS's default, as add leaves it
    assert sim.rows("/ip/hotspot/walled-garden")[0]["dst-host"] == "wifi.example"
    api = next(r for r in sim.rows("/ip/service") if r["name"] == "api")
    assert api["address"] == "192.168.88.10/32" and api["disabled"] == "false"
    sim.run_script(SCRIPT)                                   # remove-then-add: still one entry
    assert len(sim.rows("/radius")) == 1


@pytest.mark.parametrize("line, message", [
    ("/radius add service=hotspot colour=blue", "expected end of command (line 1 column 29)"),
    ("/ip hotspot profile set [find] login-by=mac,telepathy", "invalid value for argument login-by (line 1 column 32)"),
    ("/radius add timeout=soon", "invalid value for argument timeout (line 1 column 13)"),
    ("/ip hotspot walled-garden ip add action=allow", "invalid value for argument action (line 1 column 34)"),
    ("/user group add name=x policy=read,fly", "invalid value for argument policy (line 1 column 24)"),
    ("\n/ip firewall nat add chain=srcnat", "bad command name firewall (line 2 column 5)"),
    ("/radius frobnicate", "bad command name frobnicate (line 1 column 9)"),
    ("/ip service add name=x", "bad command name add (line 1 column 13)"),
    (":iff (true) do={}", "bad command name iff (line 1 column 1)"),
    (':if (true) do={ /radius add secret="x" wat=1 }', "expected end of command (line 1 column 40)"),
    ('/user add name=admin group=full', "failure: item with such name already exists (line 1 column 7)"),
])
def test_what_the_console_refuses(sim, line, message):
    with pytest.raises(ScriptError) as caught:
        sim.run_script(line)
    assert str(caught.value) == message


def test_a_refused_line_stops_the_script_after_what_ran(sim):
    with pytest.raises(ScriptError, match=r"line 2 "):
        sim.run_script('/radius remove [find]\n/radius add bogus=1\n/radius add address=10.0.0.1 secret=s')
    assert sim.rows("/radius") == []


def test_a_user_made_by_script_logs_in_over_the_api_only_with_the_api_policy(sim):
    sim.run_script("/user group add name=ro policy=read,!api\n/user group add name=hs policy=read,write,api\n"
                   '/user add name=hs group=hs password="pw"\n/user add name=ro group=ro password="pw"')
    assert "password" not in sim.rows("/user")[-1]           # written, never printed
    host, port = sim.address
    api = librouteros.connect(host=host, port=port, username="hs", password="pw", timeout=5)
    assert list(api.path("system", "identity"))
    api.close()
    for user, password in (("ro", "pw"), ("hs", "wrong")):
        with pytest.raises(TrapError, match="invalid user name or password"):
            librouteros.connect(host=host, port=port, username=user, password=password, timeout=5)


@pytest.mark.parametrize("line", [
    "/ip hotspot walled-garden ip add action=accept dst-address=10.0.0.0/8 protocol=tcp dst-port=80,8000-8080",
    "/radius add service=hotspot,login address=10.0.0.1 secret=s timeout=1s500ms",
    "/ip hotspot profile set [find] radius-interim-update=5m login-by=mac,cookie mac-auth-mode=mac-as-username",
    '/user group add name=ops policy=read,api,!write,!policy',
    '/radius incoming set port=1700; /radius incoming set accept=yes',
])
def test_what_the_console_takes(sim, line):
    sim.run_script(line)
