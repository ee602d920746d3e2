"""What several test modules share: one module, so that no test module imports another.

conftest.py holds the fixtures; this holds the plain helpers and constants they and the tests use.
"""
from __future__ import annotations

import html
import json
import io
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from pyrad import packet
from pyrad.client import Client

from hotspotd import clock, router_login
from hotspotd.service import cli
from hotspotd.storage.models import Package
from radius.server import load_dictionary

#: the checkout this suite tests
REPO = Path(__file__).resolve().parents[1]
RADIUS_MAC = "AA:BB:CC:DD:EE:01"
PAY_MAC = "AA:BB:CC:00:11:22"


# --- databases, waiting, a session to test with ------------------------------------------------
#: a PostgreSQL server's URL (e.g. postgresql://postgres@127.0.0.1:5432/postgres): the tests that
#: run a Hotspot then run it on a fresh database of their own there instead of SQLite
POSTGRES_ENV = "HOTSPOTD_TEST_POSTGRES"

def sqlite_only(why: str):
    """Mark a test that fakes a fault of SQLite itself (its file, its pragmas): skipped in the
    PostgreSQL pass, where a test of that fault's PostgreSQL counterpart runs instead."""
    return pytest.mark.skipif(bool(os.environ.get(POSTGRES_ENV)), reason=f"SQLite only: {why}")


def postgres_only(why: str):
    """Mark a test of a PostgreSQL server's own fault: it runs in the PostgreSQL pass of
    scripts/test (``HOTSPOTD_TEST_POSTGRES`` set), and is skipped in the SQLite one."""
    return pytest.mark.skipif(not os.environ.get(POSTGRES_ENV),
                              reason=f"PostgreSQL only ({POSTGRES_ENV} unset): {why}")


def fresh_postgres_database(admin_url: str) -> tuple[str, "callable"]:
    """A new, empty database on the server of ``admin_url``: its URL and a function dropping it."""
    import uuid

    import psycopg2
    name = f"hotspotd_test_{uuid.uuid4().hex[:12]}"
    admin = psycopg2.connect(admin_url)
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{name}"')

    def drop() -> None:
        # connections left open by the test's threads go with the database
        with admin.cursor() as c:
            c.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,))
            c.execute(f'DROP DATABASE IF EXISTS "{name}"')
        admin.close()
    return admin_url.rsplit("/", 1)[0] + "/" + name, drop


def make_config_dict(tmp_path, database_url: str | None = None, **tables) -> dict:
    """A config for tests: everything on loopback port 0, short delays, generous rate limits."""
    data = {
        "portal": {"listen": "127.0.0.1:0", "pay_limit_per_client": "1000/minute",
                   "pay_limit_per_phone": "1000/minute", "pay_limit_per_device": "1000/minute"},
        "database": {"url": database_url or f"sqlite:///{tmp_path}/hotspotd.db"},
        "mpesa": {"query_after_seconds": 1, "query_interval_seconds": 1, "query_max_interval_seconds": 2},
        "simulator": {"callback_delay_seconds": 0.05, "final_after_seconds": 0.05},
        "scheduler": {"reconcile_every_seconds": 0.2, "expire_every_seconds": 0.2},
        "radius": {"enabled": False},
    }
    for table, values in tables.items():
        if isinstance(values, list):      # arrays of tables: [[routers]]
            data[table] = values
        else:
            data.setdefault(table, {}).update(values)
    return data


def wait_for(predicate, timeout: float = 10.0, interval: float = 0.05):
    """Poll ``predicate`` until it returns something truthy; fail the test on timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout} s")


def give_time(mac: str | None, *, seconds: int = 3600, price: int = 10, data_cap: int | None = None,
              rate: str | None = None, devices: int = 1, phone: str = "254708374149", login=None):
    """A paid entitlement for ``mac`` as a successful payment would leave it (for RADIUS tests)."""
    from hotspotd import access, clock
    from hotspotd.storage.models import Package, Payment, database

    now = clock.now()
    with database.atomic():
        package = Package.create(name=f"test {seconds}s", price=price, duration_seconds=seconds, data_cap_bytes=data_cap,
                                 rate_limit=rate, devices=devices, created_at=now, active=False)
        payment = Payment.create(phone=phone, amount=price, package=package.id, mac=mac, status="success",
                                 created_at=now, completed_at=now, resolved_by="test")
        ent = access.grant_for_payment(payment, now)
        if login:
            ent.login_user, ent.login_password = login
            ent.save()
    return ent


# --- a NAS talking RADIUS to a running hotspot -------------------------------------------------
RADIUS = {"enabled": True, "listen": "127.0.0.1", "auth_port": 0, "acct_port": 0, "idle_timeout": 600,
          "interim_interval": 120}

DICT = load_dictionary()

def client(hs, secret=b"testing123"):
    c = Client(server="127.0.0.1", authport=hs.radius.auth_address[1], acctport=hs.radius.acct_address[1],
               secret=secret, dict=DICT, retries=1, timeout=1, enforce_ma=True)
    return c


def mac_request(c, user=RADIUS_MAC, password="", calling=RADIUS_MAC, ma=True):
    req = c.CreateAuthPacket(code=packet.AccessRequest, message_authenticator=ma)
    req["User-Name"] = user
    req["User-Password"] = req.PwCrypt(password)
    if calling:
        req["Calling-Station-Id"] = calling
    req["NAS-Identifier"] = "venue1"
    req["NAS-Port-Type"] = 19
    if ma:
        req.add_message_authenticator()
    return req


def send(c, req):
    try:
        return c.SendPacket(req)
    finally:
        for sock in (c._socket,) if getattr(c, "_socket", None) else ():
            sock.close()
        c._socket = None


def acct(c, status, session="81000001", in_oct=0, out_oct=0, in_giga=0, ent=None):
    req = c.CreateAcctPacket()
    req["Acct-Status-Type"] = status
    req["Acct-Session-Id"] = session
    req["User-Name"] = RADIUS_MAC
    req["Calling-Station-Id"] = RADIUS_MAC
    req["Acct-Input-Octets"] = in_oct
    req["Acct-Output-Octets"] = out_oct
    req["Acct-Input-Gigawords"] = in_giga
    req["Acct-Session-Time"] = 60
    if ent:
        req["Class"] = f"hotspotd:{ent.id}".encode()
    return req


# --- paying through the API --------------------------------------------------------------------
def pay(http, hs, phone, mac=PAY_MAC, package=None):
    package = package or Package.get(Package.name == "1 hour").id
    return http.post(f"{hs.portal_url}/api/portal/pay", json={"phone": phone, "packageId": package, "macAddress": mac})


def final_status(http, hs, checkout, timeout=15):
    def done():
        body = http.get(f"{hs.portal_url}/api/portal/status/{checkout}").json()
        return body if body["status"] != "pending" else None
    return wait_for(done, timeout)


def forged(checkout, code=0, amount=10, receipt="QWE1234567"):
    cb = {"MerchantRequestID": "1-2-3", "CheckoutRequestID": checkout, "ResultCode": code, "ResultDesc": "x"}
    if code == 0:
        cb["CallbackMetadata"] = {"Item": [{"Name": "Amount", "Value": amount},
                                           {"Name": "MpesaReceiptNumber", "Value": receipt},
                                           {"Name": "Balance"},
                                           {"Name": "PhoneNumber", "Value": 254708374149}]}
    return {"Body": {"stkCallback": cb}}


# --- the dashboard -----------------------------------------------------------------------------
PASSWORD = "correct horse battery"

def token(page: str) -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert match, page[:2000]
    return match[1]


def sign_in(hs, http, username="owner", password=PASSWORD, **extra):
    page = http.get(f"{hs.portal_url}/admin/login").text
    return http.post(f"{hs.portal_url}/admin/login",
                     data={"csrf_token": token(page), "username": username, "password": password, **extra})


def post(hs, http, page_path: str, action: str, **data):
    """Submit a form as a browser would: the CSRF token from the page the form is on."""
    page = http.get(f"{hs.portal_url}{page_path}").text
    return http.post(f"{hs.portal_url}{action}", data={"csrf_token": token(page), **data})


def attr(page: str, element_id: str, name: str) -> str:
    match = re.search(rf'<[^>]*id="{element_id}"[^>]*>', page)
    assert match, f"no #{element_id}"
    value = re.search(rf'\s{name}="([^"]*)"', match[0])
    assert value, f"#{element_id} has no {name}"
    return html.unescape(value[1])


def flashes(page: str) -> list[str]:
    return [html.unescape(m) for m in re.findall(r'data-flash="\w+"[^>]*>([^<]*)<', page)]


# --- the command line -------------------------------------------------------------------------
def run_cli(tmp_path, capsys, monkeypatch, *args, stdin=None, config=""):
    """``hotspotd admin ARGS`` on a config of its own (``config``: more TOML for it)."""
    (tmp_path / "h.toml").write_text(f'[database]\nurl = "sqlite:///{tmp_path}/cli.db"\n' + config)
    if stdin is not None:
        monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
    code = cli.main(["--config", str(tmp_path / "h.toml"), "admin", *args])
    out = capsys.readouterr()
    return code, out.out, out.err


# --- running hotspotd as systemd does ----------------------------------------------------------
#: Exec the command with what the unit's hardening does to the process itself: umask,
#: no_new_privs, refuse writable+executable memory; optionally as another uid/gid (argv[1:3]).
LAUNCHER = """
import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
uid, gid, argv = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3:]
if gid >= 0:
    os.setgroups([]); os.setgid(gid)
if uid >= 0:
    os.setuid(uid)
os.umask(0o077)
assert libc.prctl(38, 1, 0, 0, 0) == 0                   # PR_SET_NO_NEW_PRIVS
mdwe = libc.prctl(65, 1, 0, 0, 0) == 0                  # PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN
os.environ["TEST_MDWE"] = "1" if mdwe else "0"
os.execv(argv[0], argv)
"""

class NotifySocket:
    """The manager's end of ``$NOTIFY_SOCKET``: every datagram received, in order."""

    def __init__(self, path: str):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(path)
        if path.startswith("\0"):        # Linux's abstract namespace: "@name" in NOTIFY_SOCKET
            self.address = "@" + path[1:]
        else:
            os.chmod(path, 0o777)         # as /run/systemd/notify: any service user may send
            self.address = path
        self.messages: list[dict[str, str]] = []

    def expect(self, key: str, value: str | None = None, timeout: float = 30.0) -> dict[str, str]:
        """The next datagram carrying ``key`` (with ``value``); earlier ones are kept in ``messages``."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no {key}={value or '*'} within {timeout} s; got {self.messages}")
            self.sock.settimeout(left)
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                continue
            message = dict(line.split("=", 1) for line in data.decode().splitlines())
            self.messages.append(message)
            if key in message and (value is None or message[key] == value):
                return message

    def close(self) -> None:
        self.sock.close()


def launch(argv: list[str], env: dict[str, str], uid: int = -1, gid: int = -1, log: Path | None = None):
    """Start ``argv`` through :data:`LAUNCHER`, output to ``log``."""
    out = open(log, "wb") if log else subprocess.DEVNULL
    try:
        return subprocess.Popen([sys.executable, "-c", LAUNCHER, str(uid), str(gid), *argv], env=env,
                                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
    finally:
        if log:
            out.close()


def wait_log(log: Path, text: str, timeout: float = 10.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        content = log.read_text(errors="replace")
        if text in content:
            return content
        time.sleep(0.05)
    raise AssertionError(f"{text!r} not in the log within {timeout} s:\n{log.read_text(errors='replace')}")


# --- logs --------------------------------------------------------------------------------------
PHONE_FORMS = ("254708374149", "0708374149", "708374149")


# --- two venues (westlands, kisumu) and their NAS addresses -------------------------------------
VENUE_MAC = "AA:BB:CC:00:51:01"
WESTLANDS_NAS, KISUMU_NAS, DEFAULT_NAS = "127.0.0.2", "127.0.0.3", "127.0.0.1"
SITES = [
    {"id": "westlands", "name": "Java House Westlands", "color": "#7a1f5c", "shortcode": "600100",
     "account_reference": "JAVAWEST"},
    {"id": "kisumu", "name": "Kisumu Stage Wi-Fi"},
]
CLIENTS = [
    {"address": WESTLANDS_NAS, "secret": "westlands-secret", "site": "westlands"},
    {"address": KISUMU_NAS, "secret": "kisumu-secret", "site": "kisumu"},
    {"address": DEFAULT_NAS, "secret": "testing123"},
]
SECRETS = {WESTLANDS_NAS: b"westlands-secret", KISUMU_NAS: b"kisumu-secret", DEFAULT_NAS: b"testing123"}


def start_venues(make_hotspot, **tables):
    """A hotspotd with the two venues, their NAS addresses and a package of each (and a roaming one)."""
    hs = make_hotspot(sites=SITES, radius={**RADIUS, "clients": CLIENTS}, **tables)
    now = clock.now()
    hs.packages = {
        "westlands": Package.create(name="Westlands hour", price=20, duration_seconds=3600, site="westlands",
                                    created_at=now, position=10),
        "kisumu": Package.create(name="Kisumu hour", price=15, duration_seconds=3600, site="kisumu",
                                 created_at=now, position=11),
        "roaming": Package.create(name="Roaming day", price=100, duration_seconds=86400, roams=True,
                                  created_at=now, position=12),
    }
    return hs


def ask_radius(hs, nas, mac=VENUE_MAC):
    """An Access-Request for ``mac`` from the NAS at ``nas``: the reply's code, or None (no answer)."""
    c = Client(server="127.0.0.1", authport=hs.radius.auth_address[1], acctport=hs.radius.acct_address[1],
               secret=SECRETS[nas], dict=DICT, retries=1, timeout=2, enforce_ma=True)
    c.bind((nas, 0))
    return send(c, mac_request(c, user=mac, calling=mac)).code


# --- a router's login -------------------------------------------------------------------------
def chap_login(hs, username: str, answer_hex: str, mac: str, chap_id: str, challenge: str):
    """What a MikroTik sends after the browser posted ``answer_hex`` (hex MD5) to its login page:
    an Access-Request with CHAP-Password = chap-id + answer and the page's CHAP-Challenge."""
    c = client(hs)
    req = c.CreateAuthPacket(code=packet.AccessRequest, User_Name=username)
    req["CHAP-Password"] = router_login.unescape_octal(chap_id) + bytes.fromhex(answer_hex)
    req["CHAP-Challenge"] = router_login.unescape_octal(challenge)
    req["Calling-Station-Id"] = mac
    req.add_message_authenticator()
    return send(c, req)


# --- the splash page in a browser (Playwright) ---------------------------------------------------
def buy(page, phone_number, package="1 hour"):
    page.get_by_text(package, exact=False).first.click()
    page.fill("#phone", phone_number)
    page.get_by_role("button", name="Pay with M-Pesa").click()


#: a low-cost Android phone, as most customers hold one
ANDROID_CHROME = ("Mozilla/5.0 (Linux; Android 13; SM-A145F) AppleWebKit/537.36 "
                  "(KHTML, like Gecko) Chrome/124.0.0.0 Mobile Safari/537.36")
PHONE = {"viewport": {"width": 360, "height": 740}, "is_mobile": True, "has_touch": True,
         "device_scale_factor": 2, "user_agent": ANDROID_CHROME, "locale": "en-KE"}
#: a laptop at the size most sold in Kenya
DESKTOP = {"viewport": {"width": 1366, "height": 768}, "locale": "en-KE"}


# --- a CoovaChilli (radius/testing/nas.py) talking to a running hotspot ----------------------------
COOVA_SECRET = "testing123"
COOVA_CLIENTS = [{"address": "127.0.0.1", "secret": COOVA_SECRET, "kind": "coova"}]


def coova_router(nas, name: str = "chilli", **overrides) -> dict:
    """The ``[[routers]]`` entry of the NAS simulator ``nas`` as a CoovaChilli."""
    address, port = nas.address
    return {"name": name, "kind": "coova", "address": address, "coa_port": port, "secret": COOVA_SECRET, **overrides}


def start_chilli(make_hotspot, **tables):
    """A started NAS simulator (stop it yourself) and a hotspotd whose RADIUS it sends accounting to,
    with the simulator as its CoovaChilli router."""
    from radius.testing.nas import NasSimulator

    nas = NasSimulator(secret=COOVA_SECRET).start()
    try:
        hs = make_hotspot(radius={**RADIUS, "clients": COOVA_CLIENTS}, routers=[coova_router(nas)],
                          scheduler={"enabled": False}, **tables)
    except BaseException:
        nas.stop()
        raise
    nas.radius_server = hs.radius.acct_address
    return nas, hs


# --- a MikroTik (hotspotd/testing/routeros.py with its RADIUS side, radius/testing/mikrotik.py) ---------
MIKROTIK_SECRET = "testing123"
MIKROTIK_CLIENTS = [{"address": "127.0.0.1", "secret": MIKROTIK_SECRET, "kind": "mikrotik"}]


class MikrotikVenue:
    """A simulated MikroTik (``router``: the RouterOS API; ``radius``: its hotspot's RADIUS client and
    ``/radius incoming`` on port 0) pointed at hotspotd ``hs``'s RADIUS server."""

    def __init__(self, hs, router, radius):
        self.hs, self.router, self.radius = hs, router, radius

    def router_entry(self, name: str = "gate", **overrides) -> dict:
        """Its ``[[routers]]`` entry: cut by Disconnect-Request, API credentials unless overridden."""
        address, port = self.router.address
        return {"name": name, "kind": "mikrotik", "address": "127.0.0.1", "api_port": port, "user": "hotspotd",
                "password": "pw", "disconnect": "coa", "coa_port": self.radius.incoming_address[1],
                "secret": MIKROTIK_SECRET, **overrides}

    def stop(self) -> None:
        self.radius.stop()
        self.router.stop()


def start_mikrotik(make_hotspot, *, version: str = "7.18.2 (stable)", router: dict | None = None,
                   timeout: float = 1.0, **tables) -> MikrotikVenue:
    """A hotspotd with RADIUS on port 0 and a ``[[radius.clients]]`` entry for the router, and a started
    simulated MikroTik at RouterOS ``version`` sending it RADIUS (stop it yourself). ``router``:
    overrides of its ``[[routers]]`` entry (None: hotspotd is told of no router). ``timeout``: its
    ``/radius`` timeout (RouterOS's 300 ms is tight for a loaded test machine)."""
    from hotspotd.testing.routeros import RouterOSSimulator
    from radius.testing.mikrotik import HotspotRadius

    sim = RouterOSSimulator(username="hotspotd", password="pw", version=version).start()
    side = HotspotRadius(sim, timeout=timeout).start()
    venue = MikrotikVenue(None, sim, side)
    try:
        routers = [venue.router_entry(**router)] if router is not None else []
        tables = {"scheduler": {"enabled": False}, **tables,
                  "radius": {**RADIUS, "clients": MIKROTIK_CLIENTS, **tables.get("radius", {})}}
        hs = make_hotspot(**({"routers": routers} if routers else {}), **tables)
    except BaseException:
        venue.stop()
        raise
    venue.hs = hs
    side.point_at(hs.radius.auth_address, hs.radius.acct_address, MIKROTIK_SECRET)
    return venue


# --- a real openNDS (Debian's 9.10) in network namespaces -------------------------------------
# Three namespaces only this suite uses (client, gateway, upstream); every address lives inside them.
# Two runs on one machine at once need their own names and addresses: HOTSPOTD_TEST_NDS_PREFIX (default
# "hnds": hndscl, hndsgw, hndsup) and HOTSPOTD_TEST_NDS_NET (the first two octets, default "10.231").
NDS_PREFIX = os.environ.get("HOTSPOTD_TEST_NDS_PREFIX", "hnds")
NDS_NET = os.environ.get("HOTSPOTD_TEST_NDS_NET", "10.231")
if not re.fullmatch(r"[a-z][a-z0-9]{0,7}", NDS_PREFIX) or not re.fullmatch(r"10\.(?:25[0-5]|2[0-4]\d|1?\d?\d)",
                                                                          NDS_NET):
    raise RuntimeError(f"HOTSPOTD_TEST_NDS_PREFIX={NDS_PREFIX!r} (1-8 lower-case letters and digits) or "
                       f"HOTSPOTD_TEST_NDS_NET={NDS_NET!r} (like 10.231) is not usable")
NDS_CLIENT, NDS_GATEWAY, NDS_UPSTREAM = f"{NDS_PREFIX}cl", f"{NDS_PREFIX}gw", f"{NDS_PREFIX}up"
NDS_CLIENT_IP, NDS_GW_LAN, NDS_GW_WAN, NDS_UP_IP = (f"{NDS_NET}.1.10", f"{NDS_NET}.1.1", f"{NDS_NET}.2.1",
                                                    f"{NDS_NET}.2.2")
NDS_CLIENT_MAC = "02:31:01:00:00:10"
NDS_FASKEY = "hnds0123456789abcdef0123456789ab"
NDS_ORIGIN = f"http://{NDS_UP_IP}/page?x=1"
UPSTREAM_BODY = "UPSTREAM-INTERNET-OK"
_CLONE_NEWNET = 0x40000000
_UPSTREAM_SERVER = (
    "import http.server\n"
    "class H(http.server.BaseHTTPRequestHandler):\n"
    "    def do_GET(self):\n"
    "        body = b'' if self.path == '/generate_204' else b'" + UPSTREAM_BODY + "'\n"
    "        self.send_response(204 if not body else 200); self.send_header('Content-Length', str(len(body)))\n"
    "        self.end_headers(); self.wfile.write(body)\n"
    "    def log_message(self, *a): pass\n"
    "http.server.ThreadingHTTPServer(('" + NDS_UP_IP + "', 80), H).serve_forever()\n")


def sh(*argv: str, timeout: float = 20, check: bool = True) -> subprocess.CompletedProcess:
    """Run a program (bounded); output captured as text."""
    return subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout, check=check)


def in_netns(name: str, fn):
    """Run ``fn`` on a thread that has joined network namespace ``name`` (setns affects that thread
    only, and every thread it starts, so a Hotspot started there listens inside it). Returns fn()."""
    import ctypes
    import threading
    result: list = []

    def run():
        libc = ctypes.CDLL(None, use_errno=True)
        with open(f"/run/netns/{name}") as fh:
            if libc.setns(fh.fileno(), _CLONE_NEWNET) != 0:
                result.append(OSError(ctypes.get_errno(), f"setns {name}"))
                return
        try:
            result.append(fn())
        except BaseException as exc:  # noqa: BLE001 - re-raised on the caller's thread
            result.append(exc)

    t = threading.Thread(target=run, name=f"netns-{name}")
    t.start()
    t.join(60)
    if not result:
        raise AssertionError(f"nothing came back from {name} within 60 s")
    if isinstance(result[0], BaseException):
        raise result[0]
    return result[0]


def tls_forwarder(listen: tuple[str, int], target: tuple[str, int], certfile: str, keyfile: str):
    """HTTPS in front of the portal (openNDS's level 3 wants an https FAS; in production a reverse
    proxy does this). Returns a stop() callable. Start it with :func:`in_netns`."""
    import ssl
    import threading

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(certfile, keyfile)
    server = socket.create_server(listen, reuse_port=False)
    server.settimeout(0.2)
    stopping = threading.Event()

    def handle(raw):
        # one thread per connection, reading and writing both sides itself: an SSL socket must not
        # be read and written from two threads at once
        import select
        try:
            raw.settimeout(10)
            tls = context.wrap_socket(raw, server_side=True)
        except (OSError, ssl.SSLError):
            raw.close()
            return
        try:
            back = socket.create_connection(target, timeout=10)
        except OSError:
            tls.close()
            return
        other = {tls: back, back: tls}
        try:
            idle = 0
            while not stopping.is_set() and idle < 30:
                ready = [tls] if tls.pending() else select.select([tls, back], [], [], 1)[0]
                idle = 0 if ready else idle + 1
                for sock in ready:
                    data = sock.recv(65536)
                    if not data:
                        return
                    other[sock].sendall(data)
        except (OSError, ssl.SSLError):
            pass
        finally:
            tls.close()
            back.close()

    def serve():
        while not stopping.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            except OSError:
                break
            threading.Thread(target=handle, args=(conn,), daemon=True).start()
        server.close()

    thread = threading.Thread(target=serve, name="tls-forwarder", daemon=True)
    thread.start()

    def stop():
        stopping.set()
        thread.join(5)
    return stop


class OpenNDSLab:
    """Client, gateway and upstream namespaces, and the real openNDS on the gateway with the
    configuration and agent ``hotspotd router-config opennds`` printed (used unchanged).

    Debian's 9.10.0-1 needs upstream's iptables-nft fix (openNDS commit 9f623b2): it is applied to a
    private copy of libopennds.sh bind-mounted in the gateway's own mount namespace, next to its own
    /etc/opennds, /etc/hosts and /tmp (where a dnsmasq lease line for the client is written: openNDS
    only admits clients it finds in a lease file). Nothing of the host is changed."""

    def __init__(self, run: Path):
        self.run, self.gateway, self.gateway_pid = run, None, None
        self.agent = self.upstream = self.keepalive = self.stop_tls = None

    # --- namespaces ---------------------------------------------------------------------
    @staticmethod
    def require_netns() -> None:
        """Fail (never skip) where this cannot run: CI runs as root with network namespaces."""
        problems = []
        if os.geteuid() != 0:
            problems.append("not root")
        for prog in ("ip", "nsenter", "opennds", "ndsctl", "nft", "iptables", "php", "curl", "openssl"):
            if shutil.which(prog) is None and not Path(f"/usr/bin/{prog}").exists():
                problems.append(f"{prog} missing (scripts/bootstrap --test installs it)")
        if not problems:
            probe = sh("ip", "netns", "add", f"{NDS_PREFIX}probe", check=False)
            sh("ip", "netns", "del", f"{NDS_PREFIX}probe", check=False)
            if probe.returncode != 0:
                problems.append(f"network namespaces unavailable: {probe.stderr.strip()}")
        if problems:
            pytest.fail("the real openNDS test needs root and network namespaces: " + "; ".join(problems))

    def build(self) -> None:
        self.teardown()
        for ns in (NDS_CLIENT, NDS_GATEWAY, NDS_UPSTREAM):
            sh("ip", "netns", "add", ns)
            self.ns(ns, "ip", "link", "set", "lo", "up")
            self.ns(ns, "sysctl", "-q", "-w", "net.ipv6.conf.all.disable_ipv6=1")
        sh("ip", "link", "add", f"{NDS_PREFIX}c0", "netns", NDS_CLIENT, "address", NDS_CLIENT_MAC, "type", "veth",
           "peer", "name", "lan0", "netns", NDS_GATEWAY)
        sh("ip", "link", "add", "wan0", "netns", NDS_GATEWAY, "type", "veth", "peer", "name", f"{NDS_PREFIX}u0",
           "netns", NDS_UPSTREAM)
        for ns, dev, addr in ((NDS_CLIENT, f"{NDS_PREFIX}c0", f"{NDS_CLIENT_IP}/24"), (NDS_GATEWAY, "lan0", f"{NDS_GW_LAN}/24"),
                              (NDS_GATEWAY, "wan0", f"{NDS_GW_WAN}/24"), (NDS_UPSTREAM, f"{NDS_PREFIX}u0", f"{NDS_UP_IP}/24")):
            self.ns(ns, "ip", "addr", "add", addr, "dev", dev)
            self.ns(ns, "ip", "link", "set", dev, "up")
        self.ns(NDS_CLIENT, "ip", "route", "add", "default", "via", NDS_GW_LAN)
        self.ns(NDS_GATEWAY, "ip", "route", "add", "default", "via", NDS_UP_IP)
        self.ns(NDS_UPSTREAM, "ip", "route", "add", f"{NDS_NET}.1.0/24", "via", NDS_GW_WAN)
        self.ns(NDS_GATEWAY, "sysctl", "-q", "-w", "net.ipv4.ip_forward=1")
        self.upstream = subprocess.Popen(["ip", "netns", "exec", NDS_UPSTREAM, sys.executable, "-c", _UPSTREAM_SERVER],
                                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for(lambda: self.ns(NDS_GATEWAY, "curl", "-s", "-m", "2", f"http://{NDS_UP_IP}/", check=False).stdout
                 == UPSTREAM_BODY, 10, 0.2)
        # openNDS's watchdog (libopennds.sh gatewayroute) exits when the upstream gateway has no
        # REACHABLE/STALE/DELAY neighbour entry ("Unable to get routing configuration"): a real WAN
        # always has traffic; here a request a second keeps the entry fresh (no ping on this image)
        keep = f"while sleep 1; do curl -s -m 1 -o /dev/null http://{NDS_UP_IP}/generate_204; done"
        self.keepalive = subprocess.Popen(["ip", "netns", "exec", NDS_GATEWAY, "sh", "-c", keep],
                                          stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                          stderr=subprocess.DEVNULL)

    @staticmethod
    def ns(ns: str, *argv: str, timeout: float = 20, check: bool = True) -> subprocess.CompletedProcess:
        return sh("ip", "netns", "exec", ns, *argv, timeout=timeout, check=check)

    def certificate(self) -> tuple[str, str]:
        """A self-signed certificate for the portal's IP (the gateway's PHP is told to trust it)."""
        cert, key = self.run / "fas.pem", self.run / "fas.key"
        sh("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-keyout", str(key),
           "-out", str(cert), "-subj", f"/CN={NDS_UP_IP}", "-addext", f"subjectAltName=IP:{NDS_UP_IP}")
        return str(cert), str(key)

    # --- the gateway --------------------------------------------------------------------
    def start_gateway(self, conf: str, agent: str | None = None, ca: str | None = None) -> None:
        etc = self.run / "etc-opennds"
        etc.mkdir(exist_ok=True)
        (etc / "opennds.conf").write_text(conf)
        if agent is not None:
            (etc / "hotspotd-agent.sh").write_text(agent)
        if ca:
            shutil.copy(ca, etc / "fas-ca.pem")
        (self.run / "hosts").write_text("127.0.0.1 localhost\n")
        lib = Path("/usr/lib/opennds/libopennds.sh").read_text()
        # upstream 9f623b2 ("compatibility with iptables-nft v1.8.8"): no nft base chains before iptables
        fixed = lib.replace('if [ -z "$input_priority" ]; then', "if false; then").replace(
            'if [ -z "$forward_priority" ]; then', "if false; then")
        (self.run / "libopennds.sh").write_text(fixed)
        (self.run / "libopennds.sh").chmod(0o755)
        lease = f"{int(time.time()) + 86400} {NDS_CLIENT_MAC} {NDS_CLIENT_IP} {NDS_PREFIX}client *"
        script = (f"mount --bind {etc} /etc/opennds && mount --bind {self.run}/hosts /etc/hosts && "
                  f"mount --bind {self.run}/libopennds.sh /usr/lib/opennds/libopennds.sh && "
                  f"mount -t tmpfs tmpfs /tmp && echo '{lease}' > /tmp/dhcp.leases && cd / && exec /usr/bin/opennds -f")
        env = {**os.environ, **({"SSL_CERT_FILE": "/etc/opennds/fas-ca.pem"} if ca else {})}
        log = open(self.run / "opennds.log", "wb")
        # its own PID namespace too: openNDS's start and stop run `kill $(pgrep -f …authmon.sh)`, which
        # would otherwise end the authmon of every other openNDS on the machine (another test run's)
        self.gateway = subprocess.Popen(["ip", "netns", "exec", NDS_GATEWAY, "unshare", "--pid", "--fork",
                                         "--kill-child", "--mount-proc", "bash", "-c", script], env=env,
                                        stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        wait_for(lambda: self._gateway_pid() or self.gateway.poll() is not None, 10, 0.05)
        wait_for(lambda: self.gateway.poll() is not None or self.ndsctl("status", check=False).returncode == 0, 30, 0.3)
        if self.gateway.poll() is not None:
            raise AssertionError(f"openNDS exited:\n{(self.run / 'opennds.log').read_text(errors='replace')[-3000:]}")
        # ndsctl answers before openNDS's firewall rules are in: until then a client's request gets no
        # answer at all (curl's code 0); wait (bounded) until the gateway answers one
        # and it may reload them once more just after: ready is three redirects in a row, a second apart
        def redirects() -> bool:
            for _ in range(3):
                if self.gateway.poll() is not None:
                    return True
                if self.curl(NDS_ORIGIN)[0] not in (302, 307):
                    return False
                time.sleep(1)
            return True
        wait_for(redirects, 60, 0.5)
        if agent is not None:
            alog = open(self.run / "agent.log", "wb")
            self.agent = subprocess.Popen(["nsenter", "-t", str(self._gateway_pid()), "-m", "-n", "sh",
                                           "/etc/opennds/hotspotd-agent.sh"], env=env, stdin=subprocess.DEVNULL,
                                          stdout=alog, stderr=subprocess.STDOUT)
            alog.close()

    def _gateway_pid(self) -> int | None:
        """openNDS's pid as this host sees it: unshare's child (PID 1 of the gateway's namespace)."""
        if self.gateway_pid is None and self.gateway is not None:
            try:
                children = Path(f"/proc/{self.gateway.pid}/task/{self.gateway.pid}/children").read_text().split()
            except OSError:
                return None
            self.gateway_pid = int(children[0]) if children else None
        return self.gateway_pid

    def ndsctl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return sh("nsenter", "-t", str(self._gateway_pid()), "-m", "-n", "ndsctl", *args, check=check)

    def client_state(self) -> str | None:
        """The client's state in ``ndsctl json`` (Preauthenticated, Authenticated), or None."""
        import json
        out = self.ndsctl("json", NDS_CLIENT_MAC, check=False).stdout.strip()
        try:
            return json.loads(out).get("state") if out.startswith("{") else None
        except ValueError:
            return None

    def curl(self, url: str, *extra: str) -> tuple[int, str, str]:
        """(status, Location, body) of one request from the client, redirects not followed."""
        r = self.ns(NDS_CLIENT, "curl", "-sS", "-k", "-m", "8", "-o", "-", "-w", "\n%{http_code} %{redirect_url}",
                    *extra, url, check=False, timeout=15)
        body, _, tail = r.stdout.rpartition("\n")
        code, _, location = tail.partition(" ")
        if not int(code or 0):         # curl's own error instead of a body, for the assertion message
            body = f"curl exit {r.returncode}: {r.stderr.strip()}"
        return int(code or 0), location, body

    def online(self) -> bool:
        return self.curl(f"http://{NDS_UP_IP}/page?x=1")[2] == UPSTREAM_BODY

    def stop_gateway(self) -> None:
        for proc in (self.agent, self.gateway):
            if proc is not None and proc.poll() is None:
                if proc is self.gateway and self.gateway_pid:
                    try:               # openNDS itself (unshare would only kill it, with no clean-up)
                        os.kill(self.gateway_pid, 15)
                    except ProcessLookupError:
                        pass
                else:
                    proc.terminate()
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(5)
        self.agent = self.gateway = self.gateway_pid = None

    def teardown(self) -> None:
        """Idempotent: everything started or made above is gone afterwards."""
        self.stop_gateway()
        if self.stop_tls is not None:
            self.stop_tls()
            self.stop_tls = None
        for proc in (self.upstream, self.keepalive):
            if proc is not None:
                proc.kill()
                proc.wait(5)
        self.upstream = self.keepalive = None
        for ns in (NDS_CLIENT, NDS_GATEWAY, NDS_UPSTREAM):
            pids = sh("ip", "netns", "pids", ns, check=False).stdout.split()
            for pid in pids:
                try:
                    os.kill(int(pid), 9)
                except (ProcessLookupError, ValueError):
                    pass
            sh("ip", "netns", "del", ns, check=False)


def nds_router(level: int) -> dict:
    return {"name": "venue-1", "kind": "opennds", "address": NDS_GW_LAN, "faskey": NDS_FASKEY,
            "fas_secure_enabled": level, "gateway_interface": "lan0", "poll_seconds": 1}


def nds_router_config(tmp_path, level: int, public_url: str, fmt: str) -> str:
    """What `hotspotd router-config opennds --format FMT` prints, taken as it is."""
    r = nds_router(level)
    toml = tmp_path / "hotspotd.toml"
    toml.write_text(f'[portal]\npublic_url = "{public_url}"\n[database]\nurl = "sqlite:///{tmp_path}/cli.db"\n'
                    "[[routers]]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in r.items()))
    out = subprocess.run([sys.executable, "-c", "import sys; from hotspotd.service.cli import main; sys.exit(main())",
                          "--config", str(toml), "router-config", "opennds", "--format", fmt],
                         capture_output=True, text=True, timeout=60, check=True)
    return out.stdout


def start_opennds(lab, make_hotspot, tmp_path, level: int):
    """A Hotspot (and at level 3 an HTTPS forwarder) in the upstream namespace, and openNDS on the
    gateway with the Debian config (and agent) `hotspotd router-config opennds` prints. (Hotspot, portal URL)"""
    public = f"https://{NDS_UP_IP}:8443" if level == 3 else f"http://{NDS_UP_IP}:8080"
    hs = in_netns(NDS_UPSTREAM, lambda: make_hotspot(portal={"listen": f"{NDS_UP_IP}:8080", "public_url": public},
                                                      routers=[nds_router(level)]))
    ca = None
    if level == 3:
        cert, key = lab.certificate()
        lab.stop_tls = in_netns(NDS_UPSTREAM, lambda: tls_forwarder((NDS_UP_IP, 8443), (NDS_UP_IP, 8080), cert, key))
        ca = cert
    lab.start_gateway(nds_router_config(tmp_path, level, public, "debian"),
                      nds_router_config(tmp_path, level, public, "agent") if level == 3 else None, ca)
    return hs, public


def opennds_lab(tmp_path):
    """For a fixture (``yield from``): the lab built, torn down afterwards whatever happened."""
    OpenNDSLab.require_netns()
    lab = OpenNDSLab(tmp_path)
    try:
        lab.build()
        yield lab
    finally:
        lab.teardown()


class FakeNdsAgent:
    """hotspotd's openNDS agent as the FAS sees it, over the real portal: polls, cuts what it is told
    (answers ``deauth_done``) and answers a list request with ``listed`` (``auth … pre …``), signed."""

    def __init__(self, hs, name: str, faskey: str, listed: str):
        import threading
        import requests
        self.url, self.name, self.faskey, self.listed = f"{hs.portal_url}/opennds/{name}/", name, faskey, listed
        self.cut: list[str] = []
        self._session, self._stop = requests.Session(), threading.Event()
        self._thread = threading.Thread(target=self._run, name="fake-nds-agent", daemon=True)

    def post(self, payload: str) -> str:
        import base64
        from hotspotd.routers.opennds import gatewayhash
        body = {"auth_get": "custom", "gatewayhash": gatewayhash(self.name),
                "payload": base64.b64encode(payload.encode()).decode()}
        return self._session.post(self.url, data=body, timeout=5).text.strip()

    def _run(self):
        import hashlib
        while not self._stop.wait(0.05):
            words = self.post("deauth_poll").split()
            if words[:1] == ["deauth"]:
                self.cut += words[1:]
                self.post("deauth_done " + " ".join(words[1:]))
            elif words[:1] == ["list"]:
                sig = hashlib.sha256(f"{words[1]} {self.listed} {self.faskey}".encode()).hexdigest()
                self.post(f"clients {words[1]} {sig} {self.listed}")

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(5)
        self._session.close()
