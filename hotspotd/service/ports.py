"""Who holds a port: read from ``/proc/net`` and ``/proc/<pid>/fd`` (Linux), for the one line a
daemon that cannot bind prints. Bounded: at most :data:`MAX_PROCESSES` processes are looked at,
and anything unreadable (another user's process when not root) is skipped."""
from __future__ import annotations

import os

from ..errors import PortInUse

MAX_PROCESSES = 4096
_LISTEN = "0A"   # TCP state LISTEN in /proc/net/tcp


def _inodes(proto: str, port: int) -> set[str]:
    found = set()
    for table in (proto, proto + "6"):
        try:
            with open(f"/proc/net/{table}", encoding="ascii") as f:
                rows = f.read().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            cols = row.split()
            if len(cols) < 10 or int(cols[1].rsplit(":", 1)[1], 16) != port:
                continue
            if proto == "tcp" and cols[3] != _LISTEN:
                continue
            found.add(cols[9])
    return found


def holder(proto: str, port: int) -> str | None:
    """``"pid 1234 (hotspotd run)"`` for the process listening on ``proto`` (tcp/udp) ``port``, or
    None when it cannot be told (no /proc, or a process this user may not look into)."""
    inodes = {f"socket:[{i}]" for i in _inodes(proto, port) if i != "0"}
    if not inodes:
        return None
    try:
        pids = [p for p in os.listdir("/proc") if p.isdigit()][:MAX_PROCESSES]
    except OSError:
        return None
    for pid in pids:
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
            if not any(os.readlink(f"/proc/{pid}/fd/{fd}") in inodes for fd in fds):
                continue
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:
            continue
        return f"pid {pid} ({cmd[:80] or '?'})"
    return None


def explain(exc: PortInUse) -> str:
    """The operator's line for ``exc``: which port, who holds it if known, how to choose another."""
    who = holder(exc.proto, exc.port)
    held = f", held by {who}" if who else ""
    return (f"{exc.what} cannot listen: {exc.proto.upper()} port {exc.port} on {exc.host or 'all addresses'} "
            f"is already in use{held}. Stop that program, or choose another port: {exc.setting}")
