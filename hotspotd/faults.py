"""Crash points: named places in the money and network paths where a test may kill the daemon.

``crash_point(name)`` does nothing unless ``HOTSPOTD_CRASH_AT`` was set when this module was
imported: ``name`` kills the process the first time the point is reached, ``name:N`` the N-th
time. The kill is a real ``SIGKILL`` sent to ourselves: no ``finally``, no atexit, no flush, no
rollback; what SQLite has committed (WAL, ``synchronous=FULL``) is all that survives, exactly
as after a power cut or the OOM killer. ``scripts/crash_harness`` arms one point per run and
checks that a restart loses, doubles and gives away nothing.

Unarmed (production), a call costs one dictionary lookup. An unknown name in the variable is
refused at import, so a typo cannot make a crash run silently test nothing.
"""
from __future__ import annotations

import os
import signal
import threading

#: ``payments.initiate``: the ``created`` row is committed, the STK push not sent yet.
PAYMENT_CREATED = "payment_created"
#: ``payments._push``: Daraja accepted the push (a prompt is on the phone), ``pending`` not committed:
#: the CheckoutRequestID exists only in this process's memory.
PUSH_ACCEPTED = "push_accepted"
#: the callback endpoint: the raw body is committed (``received``), not processed yet.
CALLBACK_STORED = "callback_stored"
#: ``access.grant``, inside the transaction that makes a payment successful: the Entitlement row
#: is inserted, its Device row and the commit are not.
GRANT_MID = "grant_mid"
#: ``payments.apply_result``: the result and the session are committed, the after-payment hook
#: (router login over the API) has not run.
RESULT_APPLIED = "result_applied"
#: ``disconnects.run_due``: the router confirmed the device gone, the Disconnect row is not done yet.
DISCONNECT_MID = "disconnect_mid"
#: ``disconnects.expire_and_queue``, inside its transaction: entitlements ended, cuts not queued.
EXPIRE_MID = "expire_mid"

POINTS = (PAYMENT_CREATED, PUSH_ACCEPTED, CALLBACK_STORED, GRANT_MID, RESULT_APPLIED, DISCONNECT_MID, EXPIRE_MID)
ENV = "HOTSPOTD_CRASH_AT"


def parse(value: str) -> tuple[str, int]:
    """``"name"`` or ``"name:N"`` → ``(name, N)``; ValueError for an unknown name or a bad N."""
    name, _, count = value.strip().partition(":")
    if name not in POINTS:
        raise ValueError(f"{ENV}={value!r}: unknown crash point {name!r}; known: {', '.join(POINTS)}")
    try:
        nth = int(count) if count else 1
    except ValueError:
        raise ValueError(f"{ENV}={value!r}: N in name:N must be a whole number") from None
    if nth < 1:
        raise ValueError(f"{ENV}={value!r}: N in name:N must be 1 or more")
    return name, nth


_armed: dict[str, int] = {}
_lock = threading.Lock()
if os.environ.get(ENV):
    _name, _nth = parse(os.environ[ENV])
    _armed[_name] = _nth


def crash_point(name: str) -> None:
    """Kill this process with SIGKILL here when ``name`` is the armed point and its turn has come."""
    if name not in _armed:
        return
    with _lock:
        _armed[name] -= 1
        due = _armed[name] == 0
    if due:
        # straight to the file descriptor: the harness reads which point fired from the log
        os.write(2, f"hotspotd: crash point {name} reached, SIGKILL\n".encode())
        os.kill(os.getpid(), signal.SIGKILL)
