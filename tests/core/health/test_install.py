"""``hotspotd check``: passes on the demo config, fails clearly on broken installations."""
import os
import socket
import sqlite3

import pytest

from hotspotd.service import cli
from hotspotd.storage import db
from hotspotd.testing.daraja import DarajaSimulator
from hotspotd.testing.routeros import RouterOSSimulator
from tests.helpers import REPO

DEMO = str(REPO / "config" / "hotspotd.toml")


def check(capsys, monkeypatch, tmp_path, config=DEMO, **env):
    monkeypatch.setenv("HOTSPOTD_DATABASE_URL", f"sqlite:///{tmp_path}/h.db")
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    code = cli.main(["--config", str(config), "check"])
    return code, capsys.readouterr().out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write(tmp_path, text: str):
    path = tmp_path / "hotspotd.toml"
    path.write_text(text)
    path.chmod(0o600)
    return path


def sandbox_config(sim, credentials: str) -> str:
    """A config on Daraja's sandbox environment (``sim``: the simulator standing in for it), with
    ``credentials`` as the consumer key and secret and RADIUS off."""
    return f"""
[portal]
listen = "127.0.0.1:{free_port()}"
[radius]
enabled = false
[mpesa]
environment = "sandbox"
base_url = "{sim.url}"
consumer_key = "{credentials}"
consumer_secret = "{credentials}"
passkey = "p"
callback_url = "https://wifi.example.co.ke"
"""


def test_demo_config_passes(capsys, monkeypatch, tmp_path):
    code, out = check(capsys, monkeypatch, tmp_path, HOTSPOTD_PORTAL_LISTEN=f"127.0.0.1:{free_port()}")
    assert code == 0, out
    lines = out.splitlines()
    assert lines[-1] == "all checks passed"
    names = {line[6:24].strip() for line in lines[:-1]}
    assert {"config", "database", "daraja", "callback URL", "portal", "radius auth", "radius acct"} <= names


def test_real_daraja_call_with_wrong_credentials_fails(capsys, monkeypatch, tmp_path):
    with DarajaSimulator() as sim:
        path = write(tmp_path, sandbox_config(sim, "wrong"))
        code, out = check(capsys, monkeypatch, tmp_path, config=path)
        assert code == 1 and "FAIL  daraja" in out and "1 problem(s)" in out
        assert "ok    callback URL       https://wifi.example.co.ke/cb/<token>" in out
        path.write_text(path.read_text().replace('"wrong"', '"simulator"'))
        code, out = check(capsys, monkeypatch, tmp_path, config=path)
        assert code == 0 and "accepted the consumer key and secret" in out


def test_router_login_and_busy_ports_are_checked(capsys, monkeypatch, tmp_path):
    with RouterOSSimulator(username="api", password="right") as sim, \
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("127.0.0.1", 0))
        address, port = sim.address
        path = write(tmp_path, f"""
[portal]
listen = "127.0.0.1:{free_port()}"
[radius]
listen = "127.0.0.1"
auth_port = {taken.getsockname()[1]}
acct_port = 0
[[routers]]
name = "gate"
address = "{address}"
api_port = {port}
user = "api"
password = "wrong"
""")
        code, out = check(capsys, monkeypatch, tmp_path, config=path)
        assert code == 1 and "2 problem(s)" in out
        assert "FAIL  router gate" in out and "refused" in out
        assert "FAIL  radius auth" in out and "Address already in use" in out
        path.write_text(path.read_text().replace('"wrong"', '"right"'))
        code, out = check(capsys, monkeypatch, tmp_path, config=path)
        assert "ok    router gate" in out and "RouterOS 7" in out


def test_damaged_and_newer_databases_fail(capsys, monkeypatch, tmp_path):
    (tmp_path / "h.db").write_bytes(b"this is not a database" * 100)
    code, out = check(capsys, monkeypatch, tmp_path, HOTSPOTD_PORTAL_LISTEN=f"127.0.0.1:{free_port()}")
    assert code == 1 and "FAIL  database" in out
    (tmp_path / "h.db").unlink()
    database = db.prepare(f"sqlite:///{tmp_path}/h.db")
    database.close()
    with sqlite3.connect(tmp_path / "h.db") as con:
        con.execute("UPDATE setting SET value = ? WHERE key = 'schema_version'", (str(db.LATEST + 1),))
    con.close()
    code, out = check(capsys, monkeypatch, tmp_path, HOTSPOTD_PORTAL_LISTEN=f"127.0.0.1:{free_port()}")
    assert code == 1 and "newer than this hotspotd" in out


def test_running_hotspotd_is_recognised(capsys, monkeypatch, tmp_path, make_hotspot):
    hs = make_hotspot()
    code, out = check(capsys, monkeypatch, tmp_path, HOTSPOTD_PORTAL_LISTEN=hs.portal_url.split("//")[1])
    assert "ok    portal" in out and "hotspotd is running there" in out


def test_broken_callback_url_is_refused_with_its_reason(capsys, monkeypatch, tmp_path):
    path = write(tmp_path, '[mpesa]\nenvironment = "sandbox"\nconsumer_key = "k"\nconsumer_secret = "s"\n'
                           'passkey = "p"\ncallback_url = "https://example.com/mpesa/callback"\n')
    monkeypatch.setenv("HOTSPOTD_DATABASE_URL", f"sqlite:///{tmp_path}/h.db")
    assert cli.main(["--config", str(path), "check"]) == 2
    err = capsys.readouterr().err
    assert "[mpesa] callback_url" in err and "mpesa" in err


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write anywhere")
def test_unwritable_database_folder_fails(capsys, monkeypatch, tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir(mode=0o500)
    monkeypatch.setenv("HOTSPOTD_DATABASE_URL", f"sqlite:///{folder}/h.db")
    assert cli.main(["--config", DEMO, "check"]) == 1


def test_each_venues_own_paybill_and_a_venue_without_routers_are_checked(capsys, monkeypatch, tmp_path):
    with DarajaSimulator() as sim:
        path = write(tmp_path, sandbox_config(sim, "simulator") + """[[sites]]
id = "westlands"
name = "Java House Westlands"
shortcode = "600100"
consumer_key = "wrong"
consumer_secret = "wrong"
passkey = "p2"
[[sites]]
id = "kisumu"
name = "Kisumu Stage Wi-Fi"
[[radius.clients]]
address = "10.77.0.11"
secret = "s"
site = "westlands"
[[radius.clients]]
address = "127.0.0.1"
secret = "s2"
""")
        code, out = check(capsys, monkeypatch, tmp_path, config=path)
        assert code == 1 and "1 problem(s)" in out, out
        assert "ok    daraja             sandbox" in out and "FAIL  daraja:westlands" in out
        assert 'warn  venue kisumu       no [[radius.clients]] entry has site = "kisumu"' in out
        path.write_text(path.read_text().replace('"wrong"', '"simulator"') + '[[radius.clients]]\naddress = "10.77.0.12"\n'
                        'secret = "s3"\nsite = "kisumu"\n')
        code, out = check(capsys, monkeypatch, tmp_path, config=path)
        assert code == 0, out
        assert "accepted the consumer key and secret of 600100" in out
        assert "ok    venues             default (hotspotd Wi-Fi), westlands (Java House Westlands), kisumu" in out


def _router_config(tmp_path, sim, relaxed: bool = False, disconnect: str = "api") -> str:
    address, port = sim.address
    return write(tmp_path, f"""
[portal]
listen = "127.0.0.1:{free_port()}"
[radius]
listen = "127.0.0.1"
auth_port = 0
acct_port = 0
[[radius.clients]]
address = "{address}"
secret = "testing123"
require_message_authenticator = {str(not relaxed).lower()}
[[routers]]
name = "gate"
address = "{address}"
api_port = {port}
user = "api"
password = "pw"
disconnect = "{disconnect}"
""")


def test_a_mikrotik_set_up_by_router_config_is_ready(capsys, monkeypatch, tmp_path):
    with RouterOSSimulator(username="api", password="pw") as sim:
        code, out = check(capsys, monkeypatch, tmp_path, config=_router_config(tmp_path, sim))
    assert code == 0 and "ok    router gate setup  RouterOS 7.18.2" in out, out


@pytest.mark.parametrize("change, expected", [
    # (what the owner has on the router, what hotspotd check says: the exact fix)
    ({"path": "/system/device-mode", "hotspot": "no"}, "/system device-mode update hotspot=yes"),
    ({"path": "/system/device-mode", "mode": "home", "drop": "hotspot"}, "/system device-mode update mode=enterprise"),
    ({"path": "/user", "group": "read"}, "/user group set [find name=read] policy=read,write,api"),
    ({"path": "/ip/hotspot/profile", "where": {"name": "hsprof1"}, "use_radius": "false"},
     "/ip hotspot profile set [find name=hsprof1] use-radius=yes"),
    ({"path": "/ip/hotspot/profile", "where": {"name": "hsprof1"}, "login_by": "cookie,http-chap"},
     "/ip hotspot profile set [find name=hsprof1] login-by=mac,http-chap,http-pap,cookie"),
])
def test_each_mikrotik_setting_hotspotd_needs_is_checked_with_its_fix(capsys, monkeypatch, tmp_path, change, expected):
    with RouterOSSimulator(username="api", password="pw") as sim:
        change = dict(change)
        path, where, drop = change.pop("path"), change.pop("where", None), change.pop("drop", None)
        sim.configure(path, where, **change)
        if drop:
            sim._tables[path][""].pop(drop)        # a RouterOS before per-feature device-mode flags
        code, out = check(capsys, monkeypatch, tmp_path, config=_router_config(tmp_path, sim))
    line = next(line for line in out.splitlines() if line.startswith("FAIL  router gate setup"))
    assert code == 1 and expected in line, out


def test_routeros_before_7_15_needs_message_authenticator_relaxed(capsys, monkeypatch, tmp_path):
    with RouterOSSimulator(username="api", password="pw", version="7.14.3 (stable)") as sim:
        code, out = check(capsys, monkeypatch, tmp_path, config=_router_config(tmp_path, sim))
        assert code == 1 and "FAIL  router gate setup  RouterOS 7.14.3 (stable) sends no Message-Authenticator" in out
        assert "require_message_authenticator = false" in out
        code, out = check(capsys, monkeypatch, tmp_path, config=_router_config(tmp_path, sim, relaxed=True))
        assert code == 0 and "warn  router gate setup" in out and "7.15 or later closes BlastRADIUS" in out


def test_radius_incoming_off_is_a_warning_where_cuts_go_over_the_api(capsys, monkeypatch, tmp_path):
    with RouterOSSimulator(username="api", password="pw") as sim:
        sim.configure("/radius/incoming", accept="false")
        code, out = check(capsys, monkeypatch, tmp_path, config=_router_config(tmp_path, sim))
    assert code == 0 and "warn  router gate setup  /radius incoming is off" in out
    assert "/radius incoming set accept=yes port=3799" in out


def test_radius_clients_of_this_machine_only_are_a_warning(capsys, monkeypatch, tmp_path):
    with DarajaSimulator() as sim:
        path = write(tmp_path, sandbox_config(sim, "simulator").replace("enabled = false", "enabled = true\n"
                                                                        "auth_port = 0\nacct_port = 0"))
        code, out = check(capsys, monkeypatch, tmp_path, config=path)
        assert code == 0 and "warn  radius clients     only 127.0.0.1/32 (this machine) may ask" in out
        path.write_text(path.read_text() + '[[radius.clients]]\naddress = "10.5.50.0/24"\nsecret = "s3cret-Long"\n')
        code, out = check(capsys, monkeypatch, tmp_path, config=path)
        assert "radius clients" not in out


def test_check_asks_for_the_business_name_outside_the_simulator(tmp_path):
    from hotspotd import config as config_mod
    from hotspotd.health import install
    base = {"mpesa": {"environment": "sandbox", "consumer_key": "k", "consumer_secret": "s", "passkey": "p"},
            "database": {"url": f"sqlite:///{tmp_path}/h.db"}}
    cfg = config_mod.from_dict(base)
    (payee,) = install._payees(cfg)
    assert payee.state == "warn" and "[mpesa] business_name" in payee.detail
    cfg = config_mod.from_dict({**base, "mpesa": {**base["mpesa"], "business_name": "MAMA MBOGA WIFI"}})
    assert [c.state for c in install._payees(cfg)] == ["ok"]
    assert install._payees(config_mod.from_dict({})) == []              # the simulator names nobody real
