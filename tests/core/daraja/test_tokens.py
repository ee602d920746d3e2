"""One Daraja token per consumer key across Hotspots, processes and ``hotspotd check``: the simulator
invalidates a token when it issues the next (daraja.md, "Hosts and auth"), as Daraja may."""
from __future__ import annotations

import subprocess
import sys
import textwrap
import threading

import pytest
import requests

from hotspotd.config import SANDBOX_PASSKEY, from_dict
from hotspotd.daraja.client import DarajaClient, PushAccepted
from hotspotd.daraja.tokens import DatabaseTokens
from hotspotd.health import install
from hotspotd.storage import db as db_mod
from hotspotd.testing.daraja import DarajaSimulator
from tests.helpers import REPO, final_status, make_config_dict

#: run again on PostgreSQL by scripts/test (-m postgres)
pytestmark = pytest.mark.postgres


@pytest.fixture
def sim():
    with DarajaSimulator(callback_delay=0.05, final_after=0.05) as simulator:
        yield simulator


def sandbox(sim) -> dict:
    """``[mpesa]`` on "Daraja's sandbox" (the simulator at its URL): real OAuth with a consumer key."""
    return {"environment": "sandbox", "base_url": sim.url, "consumer_key": "simulator",
            "consumer_secret": "simulator", "passkey": SANDBOX_PASSKEY, "callback_url": "http://127.0.0.1:9"}


def oauth_calls(sim) -> int:
    return sum(1 for _, path, _ in sim.calls if path == "/oauth/v1/generate")


def business(sim) -> list[int]:
    return [status for _, path, status in sim.calls if path.startswith("/mpesa")]


def pay_all(hotspots, count: int, first_phone: int) -> list[requests.Response]:
    """``count`` customers at once, each with their own phone and device, spread over ``hotspots``."""
    answers: list = [None] * count
    barrier = threading.Barrier(count)

    def customer(n: int) -> None:
        hs = hotspots[n % len(hotspots)]
        barrier.wait()
        with requests.Session() as http:
            number = first_phone + n           # a device per phone: a device's pending payment is reused
            answers[n] = http.post(f"{hs.portal_url}/api/portal/pay", timeout=30, json={
                "phone": f"2547{number:08d}", "packageId": 2,
                "macAddress": ":".join(f"{b:02X}" for b in (0xAA, 0xBB, *number.to_bytes(4, "big")))})

    threads = [threading.Thread(target=customer, args=(n,)) for n in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return answers


def test_two_hotspots_on_one_database_share_the_token_under_sixty_concurrent_pushes(sim, make_hotspot):
    # two hotspotd processes (here: two Hotspots) on one database and one consumer key
    first, second = make_hotspot(mpesa=sandbox(sim)), make_hotspot(mpesa=sandbox(sim))
    answers = pay_all([first, second], 60, 11_000_000)
    refused = [a.json().get("message") for a in answers if a.status_code != 200]
    assert refused == []
    assert len(sim.transactions) == 60 and oauth_calls(sim) == 1
    assert 404 not in business(sim)


def test_hotspotd_check_while_the_daemon_runs_takes_no_token_away(sim, make_hotspot, http, tmp_path, database_url):
    hs = make_hotspot(mpesa=sandbox(sim))
    before = pay_all([hs], 5, 11_100_000)
    assert [a.status_code for a in before] == [200] * 5
    cfg = from_dict(make_config_dict(tmp_path, database_url, mpesa=sandbox(sim)), "test")
    checks = {c.key: c for c in install.run(cfg, None)}
    assert checks["daraja"].state == "ok", checks["daraja"].detail
    after = pay_all([hs], 5, 11_200_000)
    assert [a.status_code for a in after] == [200] * 5 and len(sim.transactions) == 10
    assert final_status(http, hs, after[0].json()["checkoutRequestId"])["status"] == "success"
    # the check proved the key and secret with the daemon's own token: nothing fetched, nothing refused
    assert oauth_calls(sim) == 1 and 404 not in business(sim)


def test_hotspotd_check_with_a_wrong_secret_says_so_and_leaves_the_daemon_alone(sim, make_hotspot, tmp_path,
                                                                              database_url):
    hs = make_hotspot(mpesa=sandbox(sim))
    assert pay_all([hs], 1, 11_300_000)[0].status_code == 200
    cfg = from_dict(make_config_dict(tmp_path, database_url, mpesa={**sandbox(sim), "consumer_secret": "typo"}),
                    "test")
    check = {c.key: c for c in install.run(cfg, None)}["daraja"]
    assert check.state == "fail" and "wrong consumer key or secret" in check.detail
    assert "consumer_secret in [mpesa]" in check.detail
    assert pay_all([hs], 1, 11_400_000)[0].status_code == 200
    assert 404 not in business(sim)


SECOND_PROCESS = textwrap.dedent("""
    import sys, threading
    from hotspotd.config import SANDBOX_PASSKEY
    from hotspotd.daraja.client import DarajaClient, DarajaError
    from hotspotd.daraja.tokens import DatabaseTokens
    from hotspotd.storage import db as db_mod
    base, url, first = sys.argv[1], sys.argv[2], int(sys.argv[3])
    database = db_mod.unbound_database(url)
    client = DarajaClient(base, "simulator", "simulator", "174379", SANDBOX_PASSKEY, timeout=10,
                          tokens=DatabaseTokens(database))
    failed = []
    barrier = threading.Barrier(30)
    def customer(n):
        barrier.wait()
        try:
            client.stk_push(f"2547{first + n:08d}", 10, "http://127.0.0.1:9/cb/t", "WIFI", "Wi-Fi")
        except DarajaError as exc:
            failed.append(str(exc))
    threads = [threading.Thread(target=customer, args=(n,)) for n in range(30)]
    for t in threads: t.start()
    for t in threads: t.join()
    print(len(failed), failed[:3])
""")


def test_a_second_process_on_the_same_database_shares_the_token(sim, database_url):
    db_mod.prepare(database_url)
    try:
        other = subprocess.Popen([sys.executable, "-c", SECOND_PROCESS, sim.url, database_url, "11500000"],
                                 cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        database = db_mod.unbound_database(database_url)
        client = DarajaClient(sim.url, "simulator", "simulator", "174379", SANDBOX_PASSKEY, timeout=10,
                              tokens=DatabaseTokens(database))
        results: list = []

        def customer(n: int) -> None:
            try:
                results.append(client.stk_push(f"2547{11_600_000 + n:08d}", 10, "http://127.0.0.1:9/cb/t",
                                               "WIFI", "Wi-Fi"))
            except Exception as exc:  # noqa: BLE001 - the assertion below shows it
                results.append(exc)

        threads = [threading.Thread(target=customer, args=(n,)) for n in range(30)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        out, err = other.communicate(timeout=60)
        database.close()
        client.close()
    finally:
        db_mod.models.database.close()
    assert other.returncode == 0, err
    assert out.split()[0] == "0", out
    assert [r for r in results if not isinstance(r, PushAccepted)] == []
    assert len(sim.transactions) == 60
    # one fetcher at a time (the row's lease): the other process waited for its token
    assert oauth_calls(sim) == 1


def test_the_rows_lease_lets_one_process_fetch_and_lapses_if_it_dies(database_url):
    import time

    from hotspotd.daraja.tokens import Token
    db_mod.prepare(database_url)
    dbs = [db_mod.unbound_database(database_url) for _ in range(2)]
    try:
        one, two = DatabaseTokens(dbs[0]), DatabaseTokens(dbs[1])
        assert one.claim("acct", None, 0.3) and not two.claim("acct", None, 0.3)   # one fetcher at a time
        time.sleep(0.35)
        assert two.claim("acct", None, 5)                     # the first died: its lease lapsed
        fresh = Token("T1", time.time() + 60, time.time() + 120, "creds")
        two.save("acct", fresh)
        assert one.load("acct") == fresh                      # the other process sees it
        assert not one.claim("acct", None, 5)                 # replaced already: look again, no fetch
        assert one.claim("acct", "T1", 5)                     # T1 itself was refused: renew it
        one.abandon("acct")
        assert two.claim("acct", "T1", 5)
    finally:
        for db in dbs:
            db.close()
        db_mod.models.database.close()


def test_a_token_table_that_cannot_be_used_fails_no_payment(sim, tmp_path, caplog):
    broken = db_mod.unbound_database(f"sqlite:///{tmp_path}/empty.db")    # no daraja_token table
    try:
        client = DarajaClient(sim.url, "simulator", "simulator", "174379", SANDBOX_PASSKEY, timeout=2,
                              tokens=DatabaseTokens(broken))
        with client:
            accepted = client.stk_push("254711000701", 10, "http://127.0.0.1:9/cb/t", "WIFI", "Wi-Fi")
            client.stk_query(accepted.checkout_request_id)
    finally:
        broken.close()
    assert accepted.checkout_request_id in sim.transactions and oauth_calls(sim) == 1
    assert "cannot claim the shared Daraja token (no such table: daraja_token)" in caplog.text
