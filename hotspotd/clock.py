"""The one place hotspotd reads the time, so tests and the clock-jump guard can steer it."""
from __future__ import annotations

import time
from datetime import date, datetime, timezone
from zoneinfo import ZoneInfo

#: the venue's day: revenue "today" and the daily chart count Nairobi days (UTC+3, no DST)
LOCAL = ZoneInfo("Africa/Nairobi")


def now() -> float:
    """Seconds since the epoch, UTC."""
    return time.time()


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
