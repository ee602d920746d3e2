"""Telling systemd how the daemon is doing: the ``sd_notify`` protocol, without a dependency.

systemd passes a datagram socket in ``$NOTIFY_SOCKET`` (a path, or ``@name`` for Linux's abstract
namespace) to a ``Type=notify`` service; the service sends it lines such as ``READY=1``. With
``WatchdogSec=`` it also sets ``$WATCHDOG_USEC`` (and ``$WATCHDOG_PID``, the process meant), and
kills the service when ``WATCHDOG=1`` does not come within that time.

Every function here is a no-op returning False when there is no socket (started by hand, in a
test, under another init): the daemon never has to ask whether systemd is there.
"""
from __future__ import annotations

import logging
import os
import socket
import time

log = logging.getLogger(__name__)


def notify(*lines: str) -> bool:
    """Send ``lines`` (``KEY=value``) in one datagram; True when a socket took it."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]
    elif not address.startswith("/"):
        log.warning("NOTIFY_SOCKET=%r is neither a path nor @abstract; not notifying", address)
        return False
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.sendto("\n".join(lines).encode(), address)
    except OSError as exc:
        # systemd gone or restarting: the service goes on, the manager will catch up
        log.warning("could not notify systemd at %s: %s", os.environ["NOTIFY_SOCKET"], exc)
        return False
    return True


def ready(status: str | None = None) -> bool:
    """Start-up (or a reload) finished: every port is bound and the service is usable."""
    return notify("READY=1", *([f"STATUS={status}"] if status else []))


def reloading(status: str = "reloading the configuration") -> bool:
    """A reload began; :func:`ready` ends it. ``MONOTONIC_USEC`` is what systemd 253's
    ``Type=notify-reload`` asks for; older managers ignore it."""
    usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    return notify("RELOADING=1", f"MONOTONIC_USEC={usec}", f"STATUS={status}")


def stopping(status: str = "stopping") -> bool:
    """Shutdown began: systemd stops expecting watchdog pings and waits for the exit."""
    return notify("STOPPING=1", f"STATUS={status}")


def status(text: str) -> bool:
    """A one-line state shown by ``systemctl status``."""
    return notify(f"STATUS={text}")


def watchdog() -> bool:
    """Tell systemd the service is alive (send only when it really is)."""
    return notify("WATCHDOG=1")


def watchdog_interval() -> float | None:
    """Seconds within which systemd expects :func:`watchdog`, or None when no watchdog is set
    for this process (as ``sd_watchdog_enabled``: ``$WATCHDOG_PID``, when given, must be us)."""
    usec = os.environ.get("WATCHDOG_USEC", "")
    pid = os.environ.get("WATCHDOG_PID", "")
    if not usec.isdigit() or int(usec) == 0:
        return None
    if pid and (not pid.isdigit() or int(pid) != os.getpid()):
        return None
    return int(usec) / 1_000_000
