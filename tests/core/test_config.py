import re
import tomllib

import pytest

from hotspotd import config
from hotspotd.service import cli
from hotspotd.config import ConfigError, SCHEMA, from_dict, load
from tests.helpers import REPO

SHIPPED = REPO / "config" / "hotspotd.toml"


def test_defaults_load_without_a_file():
    cfg = load(None, env={})
    assert cfg.portal.listen == "0.0.0.0:8080"
    assert cfg.database.url == "sqlite:////var/lib/hotspotd/hotspotd.db"
    assert cfg.mpesa.environment == "simulator"
    assert cfg.radius.auth_port == 1812 and cfg.radius.acct_port == 1813
    assert [(str(c.network), c.secret, c.kind) for c in cfg.radius_clients] == [("127.0.0.1/32", "testing123", "mikrotik")]


def test_shipped_file_documents_every_key_with_its_default():
    data = tomllib.loads(SHIPPED.read_text())
    text = SHIPPED.read_text()
    for table, options in SCHEMA.items():
        assert table in data, table
        for key, opt in options.items():
            assert data[table].get(key) == opt.default, f"[{table}] {key}"
            line = next(l for l in text.splitlines() if re.match(rf"{key}\s*=", l))
            assert "#" in line, f"[{table}] {key} has no comment"
    assert load(SHIPPED, env={}).mpesa.shortcode == "174379"


def test_env_overrides_file(tmp_path):
    cfg = load(SHIPPED, env={"MPESA_SHORTCODE": "600999", "MPESA_ENVIRONMENT": "sandbox",
                             "MPESA_CONSUMER_KEY": "k", "MPESA_CONSUMER_SECRET": "s", "MPESA_PASSKEY": "p",
                             "MPESA_CALLBACK_URL": "https://wifi.example.co.ke",
                             "HOTSPOTD_DATABASE_URL": f"sqlite:///{tmp_path}/x.db"})
    assert cfg.mpesa.shortcode == "600999"
    assert cfg.mpesa.environment == "sandbox"
    assert cfg.mpesa.callback_url == "https://wifi.example.co.ke"
    assert cfg.database.url.endswith("/x.db")


PROD = {"environment": "production", "consumer_key": "k", "consumer_secret": "s", "passkey": "p" * 20,
        "callback_url": "https://wifi.example.co.ke"}


@pytest.mark.parametrize("data, table, key, words", [
    ({"portal": {"lisen": "x"}}, "portal", "lisen", "unknown key"),
    ({"bogus": {}}, "bogus", None, "unknown table"),
    ({"radius": {"auth_port": "1812"}}, "radius", "auth_port", "whole number"),
    ({"radius": {"enabled": 1}}, "radius", "enabled", "true or false"),
    ({"mpesa": {"environment": "live"}}, "mpesa", "environment", "not one of"),
    ({"mpesa": {**PROD, "callback_url": "http://wifi.example.co.ke"}}, "mpesa", "callback_url", "HTTPS"),
    ({"mpesa": {"callback_url": "https://x.example/mpesa/cb"}}, "mpesa", "callback_url", "'mpesa'"),
    ({"mpesa": {"callback_url": "https://safaricom-pay.example/cb"}}, "mpesa", "callback_url", "'safaricom'"),
    ({"mpesa": {"callback_url": "https://x.example/c b"}}, "mpesa", "callback_url", "spaces"),
    ({"mpesa": {**PROD, "passkey": config.SANDBOX_PASSKEY}}, "mpesa", "passkey", "sandbox passkey"),
    ({"mpesa": {**PROD, "callback_url": ""}}, "mpesa", "callback_url", "required in production"),
    ({"mpesa": {"environment": "sandbox"}}, "mpesa", "consumer_key", "required"),
    ({"mpesa": {"transaction_type": "CustomerBuyGoodsOnline"}}, "mpesa", "till_number", "till"),
    ({"mpesa": {"account_reference": "THIRTEENCHARS"}}, "mpesa", "account_reference", "12"),
    ({"database": {"url": "sqlite:///relative.db"}}, "database", "url", "absolute"),
    ({"database": {"url": "mysql://x"}}, "database", "url", "postgresql"),
    ({"portal": {"listen": "8080"}}, "portal", "listen", "host:port"),
    ({"radius": {"clients": [{"address": "not-an-ip", "secret": "s"}]}}, "radius.clients", "address", "not an IP"),
    ({"radius": {"clients": [{"address": "10.0.0.0/24"}]}}, "radius.clients", "secret", "missing"),
    ({"routers": [{"name": "r", "address": "10.0.0.1", "api_port": "x"}]}, "routers", "api_port", "whole number"),
    ({"portal": {"pay_limit_per_client": "lots"}}, "portal", "pay_limit_per_client", "not a rate limit"),
    ({"portal": {"redeem_limit_per_client": ""}}, "portal", "redeem_limit_per_client", "not a rate limit"),
    ({"routers": [{"name": "c", "kind": "coova", "address": "10.0.0.1", "disconnect": "api"}]}, "routers",
     "disconnect", "no RouterOS API"),
    ({"simulator": {"timing": "slow"}}, "simulator", "timing", "not one of"),
    ({"simulator": {"time_scale": 0}}, "simulator", "time_scale", "greater than 0"),
    ({"simulator": {"lost_callback_rate": 10}}, "simulator", "lost_callback_rate", "fraction"),
    ({"simulator": {"late_callback_rate": -0.1}}, "simulator", "late_callback_rate", "fraction"),
])
def test_each_mistake_names_table_key_and_fix(data, table, key, words):
    with pytest.raises(ConfigError) as info:
        from_dict(data, "site.toml")
    err = info.value
    assert (err.table, err.key) == (table, key)
    message = str(err)
    assert message.startswith("site.toml: [")
    assert words in message
    assert "\n" not in message


def test_bad_toml_and_missing_file(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[portal\nlisten=")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load(bad, env={})
    with pytest.raises(ConfigError, match="file not found"):
        load(tmp_path / "none.toml", env={})


def test_cli_stops_with_one_clear_line(tmp_path, capsys):
    bad = tmp_path / "h.toml"
    bad.write_text('[mpesa]\nenvironment = "production"\npasskey = "%s"\nconsumer_key="k"\nconsumer_secret="s"\n'
                   'callback_url = "https://wifi.example.co.ke"\n' % config.SANDBOX_PASSKEY)
    assert cli.main(["--config", str(bad), "check"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert str(bad) in err[0] and "[mpesa] passkey" in err[0]


def test_networks_and_allowlist():
    cfg = from_dict({"radius": {"clients": [{"address": "10.5.50.0/24", "secret": "s", "kind": "coova"}]},
                     "mpesa": {**PROD}})
    assert str(cfg.radius_clients[0].network) == "10.5.50.0/24"
    assert any(str(n) == "196.201.214.200/32" for n in config.callback_allowlist(cfg))
    assert config.callback_allowlist(from_dict({})) == ()
