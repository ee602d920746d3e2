"""The one place hotspotd reads the time: a timeline that a clock jump cannot bend.

A Raspberry Pi has no battery clock: it boots with a stale time and jumps when NTP syncs, and
anyone can set the clock by hand. Paid time must survive both, so :func:`now` is not the wall
clock: it is the wall clock as read at start (never earlier than the last time this install
saw, see :func:`start`) advanced by the monotonic clock, which jumps never move.

Jumps are dealt with by :meth:`hotspotd.timekeeping.Timekeeper.keep` (the expire job): when the wall
clock has jumped ahead of the timeline, the live sessions are moved forward by the jump in the
same step as the timeline is re-anchored (a correction costs nobody paid time); when it has
jumped back, the timeline keeps going (nobody's time left grows). :func:`synchronized` says
whether the kernel believes its clock (NTP), for the warning while it does not.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import threading
import time
from datetime import date, datetime, timezone
from zoneinfo import ZoneInfo

#: the venue's day: revenue "today" and the daily chart count Nairobi days (UTC+3, no DST)
LOCAL = ZoneInfo("Africa/Nairobi")


#: what is read; tests replace these to make the clock jump
_wall = time.time
_mono = time.monotonic
_lock = threading.Lock()
_anchor_wall = _wall()
_anchor_mono = _mono()
TIME_ERROR = 5      # adjtimex(2): the clock is not synchronised


def now() -> float:
    """Seconds since the epoch, UTC, on hotspotd's timeline: never runs backwards."""
    return _anchor_wall + (_mono() - _anchor_mono)


def start(high_water: float | None = None) -> float:
    """Anchor the timeline at the wall clock, or at ``high_water`` (the latest time this install
    recorded) when the wall clock is behind it: a box that booted with a stale clock does not
    travel back. Returns how far the wall clock was behind (0 when it was not)."""
    global _anchor_wall, _anchor_mono
    with _lock:
        wall, _anchor_mono = _wall(), _mono()
        _anchor_wall = max(wall, high_water or 0.0)
        return _anchor_wall - wall


def drift() -> float:
    """Wall clock minus timeline: > 0 when the wall clock jumped ahead, < 0 when it jumped back."""
    return _wall() - now()


def advance(seconds: float) -> None:
    """Move the timeline forward (after the live sessions were moved by the same amount)."""
    global _anchor_wall
    if seconds < 0:
        raise ValueError("the timeline never moves back")
    with _lock:
        _anchor_wall += seconds


def synchronized() -> bool | None:
    """True when the kernel says the clock is NTP-synchronised, False when it says it is not,
    None when it cannot be asked (not Linux)."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        buf = ctypes.create_string_buffer(512)     # struct timex, modes = 0: read only
        state = libc.adjtimex(buf)
    except (OSError, AttributeError):
        return None
    if state < 0:
        return None
    return state != TIME_ERROR


def iso(ts: float | None) -> str | None:
    """An epoch timestamp as ISO 8601 in UTC (what the API returns)."""
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


def local(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, LOCAL)


def local_stamp(ts: float) -> str:
    """``2026-11-29 21:05`` in Nairobi time (batch names, screens)."""
    return local(ts).strftime("%Y-%m-%d %H:%M")


def day_start(day: date) -> float:
    """Epoch seconds of 00:00 Nairobi time on ``day``."""
    return datetime(day.year, day.month, day.day, tzinfo=LOCAL).timestamp()
