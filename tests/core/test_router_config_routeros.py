"""`hotspotd router-config mikrotik` run unchanged against the simulated router: the router it leaves
works with hotspotd the first time (RADIUS, CoA, profile, walled garden, the API user hotspotd logs in
as), and running it again changes nothing."""
import re

import pytest

from hotspotd import config as config_mod
from hotspotd.health import OK, install
from hotspotd.routers.mikrotik import MikroTikRouter
from hotspotd.service import cli
from hotspotd.testing.routeros import MENUS, RouterOSSimulator
from hotspotd.testing.routeros_script import ScriptError

MAC = "AA:BB:CC:00:00:01"
#: what /ip hotspot setup leaves: a hotspot whose profile knows nothing of RADIUS, no /radius entry
UNCONFIGURED = """
/radius remove [find]
/radius incoming set accept=no
/ip hotspot profile set [find] use-radius=no radius-accounting=no login-by=cookie,http-chap
/ip service set api address=""
"""


def toml(port: int, *, tls: bool = False) -> str:
    return f"""
[portal]
public_url = "http://192.168.88.2:8080"
[[radius.clients]]
address = "127.0.0.1"
secret = "mt-Secret.42"
kind = "mikrotik"
[[routers]]
name = "shop"
kind = "mikrotik"
address = "127.0.0.1"
api_port = {port}
user = "hotspotd"
password = "api-Pass.1"
tls = {str(tls).lower()}
"""


@pytest.fixture
def sim():
    with RouterOSSimulator() as router:
        router.run_script(UNCONFIGURED)
        yield router


def script(tmp_path, capsys, text: str, *args: str) -> str:
    (tmp_path / "h.toml").write_text(text)
    code = cli.main(["--config", str(tmp_path / "h.toml"), "router-config", "mikrotik",
                     "--radius-address", "192.168.88.2", *args])
    out = capsys.readouterr()
    assert code == 0 and out.err == ""
    return out.out


def tables(sim: RouterOSSimulator) -> dict:
    """Every menu's rows without their ids (a remove-then-add gives new ids, the same content)."""
    return {path: [{k: v for k, v in row.items() if k != ".id"} for row in sim.rows(path)]
            for path in MENUS if path not in ("/system/resource",)}


def test_the_printed_script_runs_unchanged_twice_and_hotspotd_can_work_the_router(sim, tmp_path, capsys):
    text = toml(sim.address[1])
    rsc = script(tmp_path, capsys, text)
    assert sim.run_script(rsc) == ["hotspotd: profile hsprof1 set; its html-directory is flash/hotspot"]
    first = tables(sim)
    sim.run_script(rsc)
    assert tables(sim) == first                                      # idempotent: one entry of each
    assert len(first["/radius"]) == 1 and first["/radius"][0]["timeout"] == "3000ms"
    assert [u["name"] for u in first["/user"]] == ["admin", "hotspotd"]
    assert [w["dst-host"] for w in first["/ip/hotspot/walled-garden"]] == ["192.168.88.2"]
    assert next(s for s in first["/ip/service"] if s["name"] == "api")["address"] == "192.168.88.2/32"

    cfg = config_mod.load(str(tmp_path / "h.toml"))
    shop = cfg.routers[0]
    sim.login(MAC, "10.5.50.20", "paid")
    with MikroTikRouter(shop, timeout=5) as api:                     # as the configured user, not admin
        assert api.ping()["identity"] == "hotspotd-sim"
        assert api.disconnect(MAC) == 1
        assert not api.is_online(MAC)
    assert sim.cookies_for(MAC) == []
    checks = [c for c in install.run(cfg, str(tmp_path / "h.toml")) if c.key.startswith("router shop")]
    assert [c.state for c in checks] == [OK, OK], [c.line() for c in checks]
    assert "API login as 'hotspotd' works" in checks[0].detail


def test_before_the_script_hotspotd_check_names_what_is_missing(sim, tmp_path, capsys):
    (tmp_path / "h.toml").write_text(toml(sim.address[1]))
    cfg = config_mod.load(str(tmp_path / "h.toml"))
    checks = [c for c in install.run(cfg, None) if c.key.startswith("router shop")]
    assert "invalid user name or password" in checks[0].detail      # no such user yet


def test_tls_and_a_box_behind_the_hotspot(sim, tmp_path, capsys):
    rsc = script(tmp_path, capsys, toml(8729, tls=True), "--hotspotd-mac", "aa:bb:cc:dd:ee:0f")
    sim.run_script(rsc)
    sim.run_script(rsc)
    ssl = next(s for s in sim.rows("/ip/service") if s["name"] == "api-ssl")
    assert ssl["disabled"] == "false" and ssl["address"] == "192.168.88.2/32" and ssl["port"] == "8729"
    bindings = sim.rows("/ip/hotspot/ip-binding")
    assert [(b["mac-address"], b["type"]) for b in bindings] == [("AA:BB:CC:DD:EE:0F", "bypassed")]


def test_a_user_the_script_did_not_make_keeps_its_rights(sim, tmp_path, capsys):
    rsc = script(tmp_path, capsys, toml(8728).replace('user = "hotspotd"', 'user = "admin"'))
    out = sim.run_script(rsc)
    assert any("the user admin was not made by this script and is left as it is" in line for line in out)
    assert next(u for u in sim.rows("/user") if u["name"] == "admin")["group"] == "full"


def test_a_changed_script_line_is_refused_where_the_console_would(sim, tmp_path, capsys):
    rsc = script(tmp_path, capsys, toml(8728))
    broken = rsc.replace(" timeout=3000ms require", " timeout=3000ms retries=3 require")
    line = next(i for i, text in enumerate(broken.splitlines(), 1) if "retries=3" in text)
    with pytest.raises(ScriptError, match=rf"^expected end of command \(line {line} column \d+\)$"):
        sim.run_script(broken)
    assert re.search(r"^/radius add .* timeout=3000ms ", rsc, re.M)


def test_on_routeros_before_7_15_the_script_stops_at_require_message_auth_as_the_router_would():
    # the option exists from 7.15 (routers.md): an older router refuses the /radius line, and the
    # script says beforehand what to do for it (require_message_authenticator = false)
    from hotspotd import config as config_mod, router_config
    from hotspotd.testing.routeros import RouterOSSimulator
    from hotspotd.testing.routeros_script import ScriptError
    clients = [{"address": "192.168.88.0/24", "secret": "a-long-secret-1", "kind": "mikrotik"}]
    strict = config_mod.from_dict({"radius": {"clients": clients}, "portal": {"public_url": "http://192.168.88.2:8080"}})
    script = router_config.mikrotik_script(strict, portal_url=None, radius_address="192.168.88.2", router=None)
    assert "require_message_authenticator = false" in script
    with RouterOSSimulator(version="7.14.3 (stable)") as old:
        with pytest.raises(ScriptError, match="expected end of command"):
            old.run_script(script)
    relaxed = config_mod.from_dict({"radius": {"clients": [{**clients[0], "require_message_authenticator": False}]},
                                    "portal": {"public_url": "http://192.168.88.2:8080"}})
    script = router_config.mikrotik_script(relaxed, portal_url=None, radius_address="192.168.88.2", router=None)
    with RouterOSSimulator(version="7.14.3 (stable)") as old:
        old.run_script(script)
        assert [r["address"] for r in old.rows("/radius") if r.get("comment") == "hotspotd"] == ["192.168.88.2"]
