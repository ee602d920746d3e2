"""MikroTikRouter against the RouterOS simulator over real sockets (plain and TLS)."""
from __future__ import annotations

import shutil
import socket
import ssl
import subprocess
import time

import pytest

from hotspotd.config import Router
from hotspotd.routers.mikrotik import MikroTikRouter, RouterError, RouterUnavailable
from hotspotd.testing.routeros import RouterOSSimulator

MAC1, MAC2 = "AA:BB:CC:DD:EE:01", "AA:BB:CC:DD:EE:02"


@pytest.fixture
def sim():
    with RouterOSSimulator(password="secret", identity="gate-1") as s:
        yield s


def router_config(address: tuple[str, int], **overrides) -> Router:
    values = dict(name="gate", kind="mikrotik", address=address[0], api_port=address[1], user="admin",
                  password="secret", tls=False, timeout_seconds=5.0, tls_ca="", disconnect="auto", coa_port=3799, secret="",
                  uamsecret="")
    return Router(**{**values, **overrides})


@pytest.fixture
def make_router():
    made: list[MikroTikRouter] = []

    def make(address, *, timeout=2.0, ssl_context=None, **overrides) -> MikroTikRouter:
        r = MikroTikRouter(router_config(address, **overrides), timeout=timeout, ssl_context=ssl_context)
        made.append(r)
        return r

    yield make
    for r in made:
        r.close()


@pytest.fixture
def router(sim, make_router):
    return make_router(sim.address)


def logins(sim) -> int:
    return sum(c.command == "/login" for c in sim.commands)


def test_ping(router):
    info = router.ping()
    assert info["identity"] == "gate-1" and info["version"].startswith("7.")
    assert set(info) == {"identity", "version", "uptime", "board_name"}


def test_active_for_and_is_online(sim, router):
    sim.login(MAC1, "10.5.50.11", "alice")
    assert router.is_online(MAC1) and not router.is_online(MAC2)
    [row] = router.active_for(MAC1)
    assert (row["user"], row["address"], row["mac-address"]) == ("alice", "10.5.50.11", MAC1)
    assert router.active_for(MAC2) == []
    assert logins(sim) == 1  # one connection for all of it


def test_disconnect_ends_the_session_and_deletes_cookies(sim, router):
    sim.login(MAC1, "10.5.50.11", "alice")
    sim.login(MAC2, "10.5.50.12", "bob")
    assert router.disconnect(MAC1) == 1
    assert not router.is_online(MAC1)
    assert sim.cookies_for(MAC1) == []
    assert sim.active_macs() == [MAC2] and len(sim.cookies_for(MAC2)) == 1  # the neighbour stays
    assert router.disconnect(MAC1) == 0


def test_login_puts_the_device_online(sim, router):
    sim.add_host(MAC1, "10.5.50.11")
    router.login(MAC1, "10.5.50.11", "0712345678", "pw")
    assert router.is_online(MAC1)
    assert router.active_for(MAC1)[0]["login-by"] == "api"


def test_refused_login_is_a_router_error_naming_the_router(sim, router):
    with pytest.raises(RouterError, match=r"router 'gate' \(127\.0\.0\.1:\d+\): login refused: unknown host IP 10\.5\.50\.11"):
        router.login(MAC1, "10.5.50.11", "alice", "pw")
    assert router.ping()["identity"] == "gate-1"  # a trap leaves the connection usable
    assert logins(sim) == 1


def test_wrong_api_password_is_a_router_error(sim, make_router):
    r = make_router(sim.address, password="wrong")
    with pytest.raises(RouterError, match="API login as 'admin' refused: invalid user name or password"):
        r.ping()


def test_reconnects_after_the_router_drops_the_connection(sim, router):
    sim.login(MAC1, "10.5.50.11", "alice")
    assert router.is_online(MAC1)
    sim.drop_connections()
    assert router.is_online(MAC1)
    assert logins(sim) == 2


def test_reconnects_after_the_router_restarts(make_router):
    first = RouterOSSimulator(password="secret").start()
    address = first.address
    r = make_router(address)
    try:
        r.ping()
    finally:
        first.stop()
    with pytest.raises(RouterUnavailable):
        r.ping()
    with RouterOSSimulator(*address, password="secret", identity="rebooted"):
        assert r.ping()["identity"] == "rebooted"


def test_closed_port_is_unavailable_quickly(make_router):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        address = s.getsockname()
    r = make_router(address)
    started = time.monotonic()
    with pytest.raises(RouterUnavailable, match=r"router 'gate' \(127\.0\.0\.1:\d+\): cannot connect"):
        r.ping()
    assert time.monotonic() - started < 1


def test_unreachable_router_then_back(sim, router):
    router.ping()
    sim.set_unreachable(True)
    with pytest.raises(RouterUnavailable):
        router.ping()
    sim.set_unreachable(False)
    assert router.ping()["identity"] == "gate-1"


def test_latency_over_the_timeout_is_unavailable(sim, make_router):
    r = make_router(sim.address, timeout=0.2)
    r.ping()
    sim.set_latency(1.0)
    started = time.monotonic()
    with pytest.raises(RouterUnavailable, match="no answer in time"):
        r.is_online(MAC1)
    assert time.monotonic() - started < 0.8
    sim.set_latency(0)
    assert not r.is_online(MAC1)  # a late reply on the old connection cannot be taken for this one


@pytest.fixture(scope="module")
def certificate(tmp_path_factory):
    if not shutil.which("openssl"):
        pytest.skip("openssl not installed")
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                    "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    return cert, key


def test_tls_api_ssl(certificate, make_router):
    cert, key = certificate
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(cert, key)
    with RouterOSSimulator(password="secret", ssl_context=server) as tls_sim:
        trusted = ssl.create_default_context(cafile=str(cert))
        assert make_router(tls_sim.address, tls=True, ssl_context=trusted).ping()["identity"] == "hotspotd-sim"
        with pytest.raises(RouterUnavailable, match="TLS.*certificate verify failed"):
            make_router(tls_sim.address, tls=True).ping()  # system CAs do not know this certificate
