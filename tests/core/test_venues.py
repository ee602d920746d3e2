"""Venues (sites) on one hotspotd: each venue's routers, packages, prices, splash branding and
M-Pesa account; time bought at a venue works there only, unless its package roams.

RADIUS requests come from each venue's NAS address (127.0.0.2 and 127.0.0.3 on loopback), the
splash page and the API are asked over HTTP, payments go through the Daraja simulator, which keeps
each paybill's transactions to itself (a query with another shortcode finds nothing)."""
import shutil
import subprocess

import peewee as pw
import pytest
from pyrad import packet
from pyrad.client import Client

from hotspotd import access, clock, config, disconnects, vouchers
from hotspotd.storage import db
from hotspotd.storage.models import AcctSession, Disconnect, Entitlement, Package, Payment, Setting

from tests.helpers import (ask_radius, DEFAULT_NAS, DICT, final_status, KISUMU_NAS, mac_request, SECRETS, send,
                           start_venues, wait_for, WESTLANDS_NAS)

#: run again on PostgreSQL by scripts/test (-m postgres)
pytestmark = pytest.mark.postgres

MAC = "AA:BB:CC:00:51:01"
@pytest.fixture
def venues(make_hotspot):
    return start_venues(make_hotspot)


def pay_at(http, hs, site, package, phone="0708374149", mac=MAC):
    return http.post(f"{hs.portal_url}/api/portal/pay", json={
        "phone": phone, "packageId": hs.packages[package].id if isinstance(package, str) else package,
        "macAddress": mac, "site": site})


def paid(http, hs, site, package, **kw):
    r = pay_at(http, hs, site, package, **kw)
    assert r.status_code == 200, r.text
    assert final_status(http, hs, r.json()["checkoutRequestId"])["status"] == "success"
    return Payment.get(Payment.checkout_request_id == r.json()["checkoutRequestId"])


def test_each_venue_sells_its_own_packages_under_its_own_name(venues, http):
    def names(site):
        body = http.get(f"{venues.portal_url}/api/portal/packages", params={"site": site}).json()
        assert body["site"] == site
        return [p["name"] for p in body["packages"]]
    every = ["30 minutes", "1 hour", "24 hours"]            # the seeded packages: every venue's
    assert names("westlands") == every + ["Westlands hour", "Roaming day"]
    assert names("kisumu") == every + ["Kisumu hour", "Roaming day"]
    assert names("default") == every + ["Roaming day"]
    r = http.get(f"{venues.portal_url}/api/portal/packages", params={"site": "nairobi-cbd"})
    assert r.status_code == 404 and "unknown venue" in r.json()["message"]

    page = http.get(f"{venues.portal_url}/", params={"site": "westlands", "mac": MAC}).text
    assert "Java House Westlands" in page and "Westlands hour" in page and "Kisumu hour" not in page
    assert "#7a1f5c" in page                                  # the venue's colour
    page = http.get(f"{venues.portal_url}/", params={"site": "kisumu", "mac": MAC}).text
    assert "Kisumu Stage Wi-Fi" in page and "Kisumu hour" in page and "Westlands hour" not in page
    assert "#7a1f5c" not in page
    r = http.get(f"{venues.portal_url}/", params={"site": "nairobi-cbd", "mac": MAC})
    assert r.status_code == 400 and "unknown venue" in r.text and "Pay with M-Pesa" not in r.text


def test_a_payment_goes_to_the_venues_own_paybill_and_its_time_works_there_only(venues, http):
    payment = paid(http, venues, "westlands", "westlands")
    assert (payment.site, payment.amount) == ("westlands", 20)
    tx = venues.simulator.transactions[payment.checkout_request_id]
    assert (tx.shortcode, tx.account_reference) == ("600100", "JAVAWEST")
    ent = Entitlement.get(Entitlement.payment == payment.id)
    assert (ent.site, ent.roams) == ("westlands", False)
    assert ask_radius(venues, WESTLANDS_NAS) == packet.AccessAccept
    assert ask_radius(venues, KISUMU_NAS) == packet.AccessReject
    assert ask_radius(venues, DEFAULT_NAS) == packet.AccessReject
    assert access.authorize(MAC, site="westlands") and access.authorize(MAC, site="kisumu") is None


def test_a_venue_without_its_own_account_pays_into_the_main_one(venues, http):
    payment = paid(http, venues, "kisumu", "kisumu")
    assert venues.simulator.transactions[payment.checkout_request_id].shortcode == "174379"
    assert ask_radius(venues, KISUMU_NAS) == packet.AccessAccept
    assert ask_radius(venues, WESTLANDS_NAS) == packet.AccessReject


def test_a_lost_callback_is_settled_by_a_query_with_the_venues_own_credentials(venues, http):
    # 254799999999: the simulator never calls back; only an STK query with the westlands shortcode
    # and passkey finds the payment (the main account's query would be told "not found")
    r = pay_at(http, venues, "westlands", "westlands", phone="254799999999")
    checkout = r.json()["checkoutRequestId"]
    assert final_status(http, venues, checkout, timeout=20)["status"] == "success"
    assert Payment.get(Payment.checkout_request_id == checkout).resolved_by == "query"
    assert ask_radius(venues, WESTLANDS_NAS) == packet.AccessAccept


def test_roaming_time_works_at_every_venue(venues, http):
    payment = paid(http, venues, "westlands", "roaming")
    assert Entitlement.get(Entitlement.payment == payment.id).roams is True
    for nas in (WESTLANDS_NAS, KISUMU_NAS, DEFAULT_NAS):
        assert ask_radius(venues, nas) == packet.AccessAccept, nas


def test_another_venues_package_cannot_be_bought_here(venues, http):
    r = pay_at(http, venues, "westlands", "kisumu")
    assert r.status_code == 404 and r.json()["field"] == "packageId"
    r = pay_at(http, venues, "nairobi-cbd", "westlands")
    assert r.status_code == 404 and "unknown venue" in r.json()["message"]
    assert Payment.select().count() == 0 and not venues.simulator.transactions


def test_time_stacks_only_behind_time_that_works_at_the_same_venue(venues, http):
    first = Entitlement.get(Entitlement.payment == paid(http, venues, "westlands", "westlands").id)
    again = Entitlement.get(Entitlement.payment == paid(http, venues, "westlands", "westlands", phone="0708374150").id)
    assert again.started_at == pytest.approx(first.expires_at)          # same venue: after the first hour
    elsewhere = Entitlement.get(Entitlement.payment == paid(http, venues, "kisumu", "kisumu", phone="0708374151").id)
    assert elsewhere.started_at < first.expires_at - 3000               # another venue: from now
    assert ask_radius(venues, KISUMU_NAS) == packet.AccessAccept


def test_receipt_and_voucher_work_at_their_own_venue_only(venues, http):
    payment = paid(http, venues, "westlands", "westlands")
    move = {"receipt": payment.receipt, "phone": "0708374149", "macAddress": "AA:BB:CC:00:51:02"}
    r = http.post(f"{venues.portal_url}/api/portal/receipt", json={**move, "site": "kisumu"})
    assert r.status_code == 404 and "another of our venues" in r.json()["message"]
    r = http.post(f"{venues.portal_url}/api/portal/receipt", json={**move, "site": "westlands"})
    assert r.status_code == 200, r.text
    assert ask_radius(venues, WESTLANDS_NAS, mac="AA:BB:CC:00:51:02") == packet.AccessAccept

    code = vouchers.generate(venues.packages["westlands"].id, 1)[0].code
    r = http.post(f"{venues.portal_url}/api/portal/voucher",
                  json={"code": code, "macAddress": "AA:BB:CC:00:51:03", "site": "kisumu"})
    assert r.status_code == 404 and "another of our venues" in r.json()["message"]
    r = http.post(f"{venues.portal_url}/api/portal/voucher",
                  json={"code": code, "macAddress": "AA:BB:CC:00:51:03", "site": "westlands"})
    assert r.status_code == 200, r.text
    assert Entitlement.get_by_id(int(r.json()["session"]["sessionId"])).site == "westlands"
    assert ask_radius(venues, WESTLANDS_NAS, mac="AA:BB:CC:00:51:03") == packet.AccessAccept
    assert ask_radius(venues, KISUMU_NAS, mac="AA:BB:CC:00:51:03") == packet.AccessReject


def test_accounting_is_filed_under_the_nas_venue(venues, http):
    paid(http, venues, "westlands", "westlands")
    c = Client(server="127.0.0.1", authport=venues.radius.auth_address[1], acctport=venues.radius.acct_address[1],
               secret=b"westlands-secret", dict=DICT, retries=1, timeout=2)
    c.bind((WESTLANDS_NAS, 0))
    req = c.CreateAcctPacket()
    req["Acct-Status-Type"] = "Start"
    req["Acct-Session-Id"] = "w-0001"
    req["Calling-Station-Id"] = MAC
    req["User-Name"] = MAC
    assert send(c, req).code == packet.AccountingResponse
    row = AcctSession.get(AcctSession.acct_session_id == "w-0001")
    assert (row.nas, row.site) == (WESTLANDS_NAS, "westlands") and row.entitlement_id is not None


radclient = shutil.which("radclient")


@pytest.mark.skipif(radclient is None, reason="radclient (freeradius-utils) is installed by scripts/test")
def test_radclient_from_each_venues_address(venues, http):
    paid(http, venues, "kisumu", "kisumu")
    port = venues.radius.auth_address[1]

    def ask(nas, secret):
        text = (f'User-Name = "{MAC}", User-Password = "", Calling-Station-Id = "{MAC}", '
                f"Packet-Src-IP-Address = {nas}, Message-Authenticator = 0x00\n")
        out = subprocess.run([radclient, "-x", "-r", "1", "-t", "2", f"127.0.0.1:{port}", "auth", secret],
                             input=text, capture_output=True, text=True, timeout=20)
        return out.stdout + out.stderr
    assert "Received Access-Accept" in ask(KISUMU_NAS, "kisumu-secret")
    assert "Received Access-Reject" in ask(WESTLANDS_NAS, "westlands-secret")
    out = ask(WESTLANDS_NAS, "kisumu-secret")                 # each venue's own secret
    assert "Received" not in out and "No reply" in out


def test_expired_time_is_cut_at_its_own_venues_routers_only(venues, http):
    here = Entitlement.get(Entitlement.payment == paid(http, venues, "westlands", "westlands").id)
    everywhere = Entitlement.get(Entitlement.payment == paid(
        http, venues, "kisumu", "roaming", phone="0708374150", mac="AA:BB:CC:00:51:09").id)
    routers = {"westlands-1": "westlands", "westlands-2": "westlands", "kisumu-1": "kisumu"}
    assert disconnects.routers_for([here.id, everywhere.id], routers, routers) == {
        here.id: ["westlands-1", "westlands-2"], everywhere.id: ["westlands-1", "westlands-2", "kisumu-1"]}
    later = everywhere.expires_at + 1
    assert disconnects.expire_and_queue(routers, now=later, sites=routers) == 2
    cuts = {(d.mac, d.router) for d in Disconnect.select()}
    assert cuts == {(MAC, "westlands-1"), (MAC, "westlands-2"), ("AA:BB:CC:00:51:09", "westlands-1"),
                    ("AA:BB:CC:00:51:09", "westlands-2"), ("AA:BB:CC:00:51:09", "kisumu-1")}


def test_a_cut_is_cancelled_only_where_the_device_has_time_again(make_hotspot, http):
    venues = start_venues(make_hotspot, scheduler={"enabled": False})    # the queue is worked here only
    first = Entitlement.get(Entitlement.payment == paid(http, venues, "westlands", "westlands").id)
    routers = {"westlands-1": "westlands", "kisumu-1": "kisumu"}

    class Router:
        def __init__(self, name):
            self.name, self.cuts = name, []

        def cut(self, target):
            self.cuts.append(target.mac)
            return True
    cutters = {name: Router(name) for name in routers}
    disconnects.enqueue(MAC, list(routers), entitlement_id=first.id, reason="test")
    access.revoke(first.id, "test")
    paid(http, venues, "kisumu", "kisumu", phone="0708374150")      # time again, at kisumu only
    assert disconnects.run_due(cutters, now=clock.now(), sites=routers) == {"done": 1, "cancelled": 1}
    assert cutters["westlands-1"].cuts == [MAC] and cutters["kisumu-1"].cuts == []


@pytest.mark.parametrize("data, key, words", [
    ({"sites": [{"id": "Westlands!", "name": "x"}]}, "id", "a-z"),
    ({"sites": [{"id": "a", "name": "x"}, {"id": "a", "name": "y"}]}, "id", "two [[sites]]"),
    ({"sites": [{"id": "a", "name": "x", "passkey": "p"}]}, "passkey", "set shortcode too"),
    ({"sites": [{"id": "a", "name": "x", "shortcode": "12"}]}, "shortcode", "paybill"),
    ({"sites": [{"id": "a", "name": "x", "color": "purple"}]}, "color", "#RRGGBB"),
    ({"sites": [{"id": "a", "name": "x", "shortcode": "600100"}],
      "mpesa": {"environment": "sandbox", "consumer_key": "k", "consumer_secret": "s", "passkey": "p",
                "callback_url": "https://wifi.example.co.ke"}}, "consumer_key", "its own consumer_key"),
    ({"radius": {"clients": [{"address": "10.0.0.1", "secret": "s", "site": "nowhere"}]}}, "site", "not a [[sites]] id"),
    ({"routers": [{"name": "r", "address": "10.0.0.1", "site": "nowhere"}]}, "site", "not a [[sites]] id"),
])
def test_site_configuration_errors_name_the_key(data, key, words):
    with pytest.raises(config.ConfigError) as err:
        config.from_dict(data, "venues.toml")
    assert err.value.key == key and words in str(err.value), str(err.value)


def test_upgrade_puts_existing_rows_at_the_default_venue(tmp_path, database_url):
    database = db.open_database(database_url or f"sqlite:///{tmp_path}/old.db")
    database.connect(reuse_if_open=True)
    with database.atomic():               # the schema as version 6 left it
        for version, _, step in db.MIGRATIONS[:6]:
            step(database)
        for table, column in db.V7_COLUMNS:
            for index in [i.name for i in database.get_indexes(table) if column in i.columns]:
                database.execute_sql(f'DROP INDEX "{index}"')
            database.execute_sql(f'ALTER TABLE "{table}" DROP COLUMN "{column}"')
        Setting.put("schema_version", "6")
        database.execute_sql('INSERT INTO "package" (name, price, duration_seconds, devices, active, position,'
                             " created_at) VALUES ('old hour', 10, 3600, 1, TRUE, 0, 1.0)")
        database.execute_sql('INSERT INTO "payment" (phone, amount, package_id, status, created_at, query_attempts)'
                             " VALUES ('254708374149', 10, 1, 'success', 1.0, 0)")
        database.execute_sql('INSERT INTO "entitlement" (payment_id, package_id, started_at, expires_at, bytes_used,'
                             " devices, status) VALUES (1, 1, 1.0, 3601.0, 0, 1, 'active')")
    assert db.migrate(database) == [7, 8, 9, 10, 11]
    assert database.table_exists("daraja_token")            # 8: the Daraja token every process shares
    assert [(p.site, p.roams) for p in Package.select()] == [(None, False)]        # still sold everywhere
    assert [p.site for p in Payment.select()] == ["default"]
    assert [(e.site, e.roams) for e in Entitlement.select()] == [("default", False)]
    with pytest.raises(pw.IntegrityError):
        with database.atomic():
            database.execute_sql('UPDATE "entitlement" SET site = NULL')
    database.close()


def test_simulator_keeps_each_paybills_transactions_to_itself(venues, http):
    payment = paid(http, venues, "kisumu", "kisumu")
    # Daraja's "does not exist" is its "still processing" code: never final, so never a wrong answer
    assert venues.site_clients["westlands"][0].stk_query(payment.checkout_request_id).pending is True
    # its own paybill's: the first query after the final state may say "being processed" (daraja.md)
    answers = [venues.site_clients["kisumu"][0].stk_query(payment.checkout_request_id) for _ in range(2)]
    assert [(a.pending, a.result_code) for a in answers] == [(True, None), (False, "0")]


def test_cli_sells_packages_per_venue_and_writes_each_routers_login_page(tmp_path, capsys):
    from hotspotd.service import cli
    (tmp_path / "h.toml").write_text(f"""\
[database]
url = "sqlite:///{tmp_path}/h.db"

[portal]
public_url = "https://wifi.example.co.ke"

[[sites]]
id = "westlands"
name = "Java House Westlands"

[[routers]]
name = "westlands-1"
address = "10.77.0.11"
site = "westlands"

[[routers]]
name = "main-1"
address = "10.77.0.12"
""")

    def run(*args):
        code = cli.main(["--config", str(tmp_path / "h.toml"), *args])
        out = capsys.readouterr()
        return code, out.out + out.err
    code, out = run("packages", "add", "--name", "Westlands hour", "--price", "20", "--minutes", "60",
                    "--site", "westlands")
    assert code == 0 and "venue westlands" in out
    code, out = run("packages", "add", "--name", "City day", "--price", "100", "--minutes", "1440", "--roams")
    assert code == 0 and "every venue; works at every venue" in out
    code, out = run("packages", "add", "--name", "x", "--price", "5", "--minutes", "5", "--site", "kisumu")
    assert code == 2 and "no venue 'kisumu'" in out and "westlands" in out
    code, out = run("packages", "edit", "4", "--site", "all", "--roams", "yes")
    assert code == 0 and "every venue; works at every venue" in out
    code, out = run("packages", "list")
    assert any("Westlands hour" in line and "every venue" in line and "yes" in line for line in out.splitlines())
    assert any("City day" in line and "every venue" in line for line in out.splitlines())
    assert Package.get(Package.name == "Westlands hour").roams is True

    for router, site in (("westlands-1", 'name="site" value="westlands"'), ("main-1", None)):
        page = tmp_path / f"{router}.html"
        code, out = run("router-config", "mikrotik", "--router", router, "--radius-address", "10.77.0.1",
                        "--login-html", str(page))
        assert code == 0, out
        assert (site in page.read_text()) if site else 'name="site"' not in page.read_text()


def test_the_daily_report_for_one_venue_or_all(venues, http, tmp_path, capsys):
    from hotspotd.service import cli
    paid(http, venues, "westlands", "westlands")
    paid(http, venues, "kisumu", "kisumu", phone="0708374150", mac="AA:BB:CC:00:51:04")
    venues.stop()
    config = tmp_path / "report.toml"
    config.write_text(f'[database]\nurl = "{venues.config.database.url}"\n[portal]\nsite_name = "Java Group"\n'
                      '[[sites]]\nid = "westlands"\nname = "Java House Westlands"\n'
                      '[[sites]]\nid = "kisumu"\nname = "Kisumu Stage Wi-Fi"\n')
    assert cli.main(["--config", str(config), "report"]) == 0
    out = capsys.readouterr().out
    assert "Java Group" in out and "Revenue: KES 35 from 2 payment(s)" in out
    assert cli.main(["--config", str(config), "report", "--site", "westlands", "--csv", str(tmp_path / "w.csv")]) == 0
    out = capsys.readouterr().out
    assert "Java House Westlands" in out and "Revenue: KES 20 from 1 payment(s)" in out
    assert "Sessions started: 1" in out
    rows = (tmp_path / "w.csv").read_text().splitlines()
    assert len(rows) == 2 and rows[0].endswith("venue") and rows[1].endswith("westlands")
    assert cli.main(["--config", str(config), "report", "--site", "mombasa"]) == 2
    assert "no venue 'mombasa'" in capsys.readouterr().err


def test_a_device_with_time_at_another_venue_is_told_so(venues, http):
    paid(http, venues, "westlands", "westlands")

    def reply_message(nas, mac):
        c = Client(server="127.0.0.1", authport=venues.radius.auth_address[1], secret=SECRETS[nas], dict=DICT,
                   retries=1, timeout=2, enforce_ma=True)
        c.bind((nas, 0))
        reply = send(c, mac_request(c, user=mac, calling=mac))
        assert reply.code == packet.AccessReject
        return reply["Reply-Message"][0]
    assert "another of our venues" in reply_message(KISUMU_NAS, MAC)
    assert reply_message(KISUMU_NAS, "AA:BB:CC:00:51:77").startswith("No Wi-Fi time on this device")
    assert venues.radius.stats["access_reject_other_venue"] == 1


def test_each_venues_routers_log_its_customers_in_and_cut_them_off(make_hotspot, http):
    """Two venues, a (simulated) MikroTik each over the real RouterOS API: a payment at Westlands
    logs the device in at Westlands' router only; when its time runs out it is cut there, and no
    cut is queued at Kisumu's."""
    from hotspotd.storage.models import Event
    from hotspotd.testing.routeros import RouterOSSimulator

    with RouterOSSimulator(username="hotspotd", password="pw", auto_hosts=True) as west, \
            RouterOSSimulator(username="hotspotd", password="pw", auto_hosts=True) as kisumu:
        routers = [{"name": name, "address": sim.address[0], "api_port": sim.address[1], "user": "hotspotd",
                    "password": "pw", "site": site}
                   # Kisumu's first: a login tried at every router in turn would land there
                   for name, sim, site in (("kisumu-1", kisumu, "kisumu"), ("westlands-1", west, "westlands"))]
        hs = start_venues(make_hotspot, routers=routers, scheduler={"enabled": False})
        r = http.post(f"{hs.portal_url}/api/portal/pay", json={
            "phone": "0708374149", "packageId": hs.packages["westlands"].id, "macAddress": MAC,
            "login": {"ip": "10.5.50.40", "site": "westlands"}})
        assert r.status_code == 200, r.text
        assert final_status(http, hs, r.json()["checkoutRequestId"])["status"] == "success"
        wait_for(lambda: west.active_macs() == [MAC])
        wait_for(lambda: Event.get_or_none(Event.kind == "router_login"))
        assert kisumu.active_macs() == []
        assert "westlands-1" in Event.get(Event.kind == "router_login").message

        ent = Entitlement.get(Entitlement.payment == Payment.get().id)
        Entitlement.update(expires_at=clock.now() - 1).where(Entitlement.id == ent.id).execute()
        assert hs.expire_sessions() == 1
        assert west.active_macs() == []
        assert [(d.router, d.status) for d in Disconnect.select()] == [("westlands-1", "done")]


def test_uamsecret_is_chosen_by_nasid_then_address(tmp_path):
    from hotspotd.venues import Venues
    from tests.helpers import make_config_dict
    chillis = [{"name": f"chilli-{x}", "kind": "coova", "address": f"192.168.88.{n}", "secret": "s",
                "uamsecret": f"uam-{x}"} for n, x in ((2, "a"), (3, "b"))]
    cfg = config.from_dict(make_config_dict(tmp_path, routers=chillis), "test")
    venues = Venues(cfg, cfg.routers)
    # chilli's uamip is its LAN address (10.x.1.1), never the address hotspotd reaches it at
    assert venues.uamsecret_for({"nasid": "chilli-b", "uamip": "10.1.0.1"}) == "uam-b"
    assert venues.uamsecret_for({"nasid": "chilli-a", "uamip": "192.168.88.3"}) == "uam-a"
    assert venues.uamsecret_for({"uamip": "192.168.88.3"}) == "uam-b"
    assert venues.uamsecret_for({"nasid": "nas01", "uamip": "10.1.0.1"}) == ""
