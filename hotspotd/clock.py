"""The one place hotspotd reads the time, so tests and the clock-jump guard can steer it."""
from __future__ import annotations

import time
from datetime import datetime, timezone


def now() -> float:
    """Seconds since the epoch, UTC."""
    return time.time()


def iso(ts: float | None) -> str | None:
    """An epoch timestamp as ISO 8601 in UTC (what the API returns)."""
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")
