"""RADIUS load from FreeRADIUS's ``radclient`` (a peer nobody here wrote), as a MikroTik hotspot
sends it, and small pyrad probes for start-up and the payment path."""
from __future__ import annotations

import random
import re
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from pyrad import packet
from pyrad.client import Client, Timeout

from radius.testing.probe import ask

from .common import radius_dictionary

RADCLIENT = "/usr/bin/radclient"


def auth_request(mac: str, ip: str) -> str:
    """A MikroTik hotspot's MAC-authentication Access-Request (``mac-as-username``, empty password)."""
    return (f'User-Name = "{mac}"\nUser-Password = ""\nNAS-IP-Address = 127.0.0.1\nNAS-Identifier = "venue"\n'
            f'NAS-Port = 2149580801\nNAS-Port-Type = Wireless-802.11\nNAS-Port-Id = "bridge-hotspot"\n'
            f'Service-Type = Login-User\nCalling-Station-Id = "{mac}"\nCalled-Station-Id = "hotspot1"\n'
            f'Framed-IP-Address = {ip}\nMikrotik-Host-IP = {ip}\nMessage-Authenticator = 0x00\n')


def acct_request(mac: str, ip: str, session_id: str, status: str, seconds: int, octets: int) -> str:
    """A MikroTik Accounting-Request (Start or Interim-Update) with totals so far."""
    text = (f'Acct-Status-Type = {status}\nUser-Name = "{mac}"\nNAS-IP-Address = 127.0.0.1\n'
            f'NAS-Identifier = "venue"\nNAS-Port = 2149580801\nNAS-Port-Type = Wireless-802.11\n'
            f'NAS-Port-Id = "bridge-hotspot"\nService-Type = Login-User\nCalling-Station-Id = "{mac}"\n'
            f'Called-Station-Id = "hotspot1"\nFramed-IP-Address = {ip}\nAcct-Session-Id = "{session_id}"\n'
            f'Acct-Authentic = RADIUS\nAcct-Delay-Time = 0\n')
    if status != "Start":
        text += (f"Acct-Session-Time = {seconds}\nAcct-Input-Octets = {octets // 4}\nAcct-Output-Octets = {octets}\n"
                 f"Acct-Input-Gigawords = 0\nAcct-Output-Gigawords = 0\nAcct-Input-Packets = {octets // 1400}\n"
                 f"Acct-Output-Packets = {octets // 700}\n")
    return text


def ip_of(index: int) -> str:
    return f"10.5.{50 + index // 250 % 200}.{index % 250 + 2}"


def auth_file(path: Path, known: list[str], unknown: list[str], rng: random.Random) -> int:
    """Every MAC once, shuffled; returns the number of requests."""
    macs = known + unknown
    order = list(range(len(macs)))
    rng.shuffle(order)
    path.write_text("\n".join(auth_request(macs[i], ip_of(i)) for i in order))
    return len(macs)


def acct_file(path: Path, macs: list[str], status: str, step: int) -> int:
    """One Start or Interim-Update per MAC; ``step`` makes the counters grow from round to round."""
    path.write_text("\n".join(
        acct_request(mac, ip_of(i), f"8{i:07x}", status, 300 * step, 1_000_000 * step) for i, mac in enumerate(macs)))
    return len(macs)


@dataclass
class Run:
    requests: int
    wall: float
    accepted: int = 0
    rejected: int = 0
    lost: int = 0

    @property
    def per_second(self) -> float:
        return self.requests / self.wall if self.wall else 0.0


def radclient(path: Path, port: int, secret: str, kind: str, parallel: int = 64) -> Run:
    """Send every request of ``path`` (``kind`` auth or acct) with ``parallel`` in flight;
    each request is tried once more after 2 s without answer, then counted lost."""
    count = path.read_text().count("\n\n") + 1
    started = time.perf_counter()
    out = subprocess.run([RADCLIENT, "-q", "-s", "-p", str(parallel), "-r", "2", "-t", "2", "-f", str(path),
                          f"127.0.0.1:{port}", kind, secret], capture_output=True, text=True)
    wall = time.perf_counter() - started

    def figure(name: str) -> int:
        found = re.search(rf"{name}\s*:\s*(\d+)", out.stdout)
        return int(found.group(1)) if found else 0
    run = Run(requests=count, wall=wall, accepted=figure("Accepted"), rejected=figure("Rejected"),
              lost=figure("Lost"))
    if not re.search(r"Accepted\s*:", out.stdout):
        raise RuntimeError(f"radclient printed no summary (rc {out.returncode}): {out.stdout[-500:]} {out.stderr[-500:]}")
    return run


def _client(port: int, secret: str, timeout: float, retries: int) -> Client:
    return Client(server="127.0.0.1", authport=port, acctport=port, secret=secret.encode(), dict=radius_dictionary(),
                  retries=retries, timeout=timeout, enforce_ma=True)


def _send(client: Client, req) -> packet.Packet | None:
    try:
        return client.SendPacket(req)
    except Timeout:
        return None
    finally:
        sock = getattr(client, "_socket", None)
        if sock is not None:
            sock.close()
            client._socket = None


def mac_accepted(port: int, secret: str, mac: str, ip: str = "10.5.50.2", timeout: float = 1.0) -> bool | None:
    """One MAC-authentication request as a NAS asks (:func:`radius.testing.probe.ask`, empty password):
    True for Accept, False for Reject, None: no answer."""
    try:
        return ask(("127.0.0.1", port), secret, mac, "", mac, ip, timeout=timeout) is not None
    except Timeout:
        return None


def answers(port: int, secret: str, kind: str) -> bool:
    """Whether a RADIUS server answers on ``port`` now (an unknown MAC for auth, Accounting-On for acct)."""
    if kind == "auth":
        return mac_accepted(port, secret, "02:00:00:00:00:01", timeout=0.05) is not None
    client = _client(port, secret, 0.05, retries=1)
    req = client.CreateAcctPacket(code=packet.AccountingRequest)
    req["Acct-Status-Type"] = "Accounting-On"
    req["NAS-Identifier"] = "venue"
    return _send(client, req) is not None
