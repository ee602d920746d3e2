import time

import pytest

from hotspotd.service import cli
from hotspotd.storage import db as db_mod


def run(capsys, tmp_path, *args):
    code = cli.main(["--config", str(tmp_path / "h.toml"), *args])
    out = capsys.readouterr()
    return code, out.out, out.err


def write_config(tmp_path):
    (tmp_path / "h.toml").write_text(f'[database]\nurl = "sqlite:///{tmp_path}/h.db"\n')


def test_packages_add_list_disable_edit(tmp_path, capsys):
    write_config(tmp_path)
    code, out, _ = run(capsys, tmp_path, "packages", "add", "--name", "Week", "--price", "250", "--minutes", "10080",
                       "--rate", "2M/5M", "--devices", "2")
    assert code == 0 and "added package 4: Week, KES 250" in out
    code, out, _ = run(capsys, tmp_path, "packages", "disable", "1")
    assert code == 0 and "disabled" in out
    code, out, _ = run(capsys, tmp_path, "packages", "edit", "2", "--price", "12")
    assert code == 0 and "KES 12" in out
    code, out, _ = run(capsys, tmp_path, "packages", "list")
    lines = out.splitlines()
    assert any("30 minutes" in l and "disabled" in l for l in lines)
    assert any("1 hour" in l and " 12 " in l for l in lines)
    assert any("Week" in l and "10080" in l for l in lines)
    code, _, err = run(capsys, tmp_path, "packages", "disable", "99")
    assert code == 1 and "no package 99" in err
    code, _, err = run(capsys, tmp_path, "packages", "add", "--name", "x", "--price", "0", "--minutes", "1")
    assert code == 2


def test_db_migrate_payments_sessions_check(tmp_path, capsys):
    write_config(tmp_path)
    code, out, _ = run(capsys, tmp_path, "db", "migrate")
    assert code == 0 and f"schema version {db_mod.LATEST}" in out
    code, out, _ = run(capsys, tmp_path, "payments", "list")
    assert code == 0 and out.startswith("created (UTC)")
    code, out, _ = run(capsys, tmp_path, "sessions", "list")
    assert code == 0 and "package" in out
    code, out, _ = run(capsys, tmp_path, "check")
    assert code == 0 and "ok    daraja             simulator environment" in out and "all checks passed" in out


def test_simulate_routeros_serves_the_api_until_sigterm(tmp_path):
    import signal
    import subprocess
    import sys

    from hotspotd.config import Router
    from hotspotd.disconnects import Target
    from hotspotd.routers.mikrotik import MikroTikRouter

    proc = subprocess.Popen([sys.executable, "-m", "hotspotd.service.cli", "simulate", "routeros", "--listen", "127.0.0.1:0",
                             "--user", "api", "--password", "pw"], stdout=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        assert line.startswith("RouterOS API simulator listening on 127.0.0.1:"), line
        port = int(line.split("127.0.0.1:")[1].split()[0])
        router = Router(name="sim", kind="mikrotik", address="127.0.0.1", api_port=port, user="api", password="pw",
                        tls=False, timeout_seconds=5.0, tls_ca="", disconnect="auto", coa_port=3799, secret="", uamsecret="")
        with MikroTikRouter(router, timeout=5) as r:
            assert r.ping()["version"]
            from hotspotd.routers import RouterError
            with pytest.raises(RouterError, match="unknown host IP 10.5.50.30"):   # not seen yet, as at a venue
                r.login("AA:BB:CC:DD:EE:30", "10.5.50.30", "hs1", "pw")
            time.sleep(0.4)                                                   # the device has sent traffic
            r.login("AA:BB:CC:DD:EE:30", "10.5.50.30", "hs1", "pw")      # no --radius: any login passes
            assert r.is_online("AA:BB:CC:DD:EE:30")
            assert r.cut(Target("AA:BB:CC:DD:EE:30")) is True and not r.is_online("AA:BB:CC:DD:EE:30")
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=10)
        proc.stdout.close()                    # closed whatever the code, or a later test meets its ResourceWarning
        assert code == 0


def test_config_permissions_are_checked_at_start(tmp_path, capsys, caplog):
    write_config(tmp_path)
    cfg = tmp_path / "h.toml"
    cfg.write_text(cfg.read_text() + '[mpesa]\nconsumer_key = "k"\n')
    cfg.chmod(0o666)
    code, _, err = run(capsys, tmp_path, "run")              # refused before anything starts
    assert code == 2 and "can be changed by any user" in err and "chmod 600" in err
    code, out, _ = run(capsys, tmp_path, "check")
    assert code == 1 and "FAIL  config" in out and "can be changed by any user" in out
    cfg.chmod(0o644)
    code, out, _ = run(capsys, tmp_path, "check")
    assert "warn  config" in out and "other users can read it" in out
    cfg.chmod(0o600)
    code, out, _ = run(capsys, tmp_path, "check")
    assert "ok    config" in out


def test_packages_add_and_edit_follow_the_dashboards_rules(capsys, tmp_path):
    # one catalogue (hotspotd.catalogue) checks a package for the dashboard and the CLI alike
    write_config(tmp_path)
    code, _, err = run(capsys, tmp_path, "packages", "add", "--name", "Fast", "--price", "50", "--minutes", "60",
                       "--rate", "fast")
    assert code == 2 and "packages add: rate: upload/download such as 2M/5M" in err
    code, _, err = run(capsys, tmp_path, "packages", "add", "--name", "x" * 65, "--price", "50", "--minutes", "60")
    assert code == 2 and "packages add: name: at most 64 characters" in err
    code, _, err = run(capsys, tmp_path, "packages", "add", "--name", "Many", "--price", "50", "--minutes", "60",
                       "--devices", "11")
    assert code == 2 and "packages add: devices: a whole number from 1 to 10" in err
    code, out, _ = run(capsys, tmp_path, "packages", "add", "--name", "  Big   day ", "--price", "80", "--minutes",
                       "1440", "--data-mb", "5000", "--rate", "2M/5M")
    assert code == 0 and "added package" in out
    from hotspotd.storage.models import Package
    p = Package.select().order_by(Package.id.desc()).get()
    assert (p.name, p.data_cap_bytes, p.rate_limit) == ("Big day", 5000 * 1024 * 1024, "2M/5M")
    assert p.position > max(q.position for q in Package.select() if q.id != p.id)   # last, as the dashboard adds it
    code, _, err = run(capsys, tmp_path, "packages", "edit", str(p.id), "--price", "0")
    assert code == 2 and "packages edit: price in KES: a whole number from 1" in err
    code, out, _ = run(capsys, tmp_path, "packages", "edit", str(p.id), "--rate", "1M/2M", "--devices", "2")
    p = Package.get_by_id(p.id)
    assert code == 0 and (p.rate_limit, p.devices, p.data_cap_bytes, p.price) == ("1M/2M", 2, 5000 * 1024 * 1024, 80)


def test_packages_take_a_kiswahili_name(tmp_path, capsys):
    from hotspotd.storage.models import Package
    write_config(tmp_path)
    code, out, _ = run(capsys, tmp_path, "packages", "add", "--name", "Week", "--name-sw", "Wiki", "--price", "250",
                       "--minutes", "10080")
    assert code == 0
    assert Package.get(Package.name == "Week").name_sw == "Wiki"
    code, _, _ = run(capsys, tmp_path, "packages", "edit", "4", "--name-sw", "")
    assert code == 0 and Package.get(Package.name == "Week").name_sw is None     # the name in both languages
    code, _, err = run(capsys, tmp_path, "packages", "edit", "4", "--name-sw", "x" * 65)
    assert code == 2 and "name_sw" in err
