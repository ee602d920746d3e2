"""A :class:`~hotspotd.access.Grant` in each router's own words (reply attributes)."""
from __future__ import annotations

import re
import time
from datetime import timedelta, timezone
from decimal import Decimal

from hotspotd.access import Grant

NAIROBI = timezone(timedelta(hours=3))
_RATE = re.compile(r"^\s*(\d+(?:\.\d+)?)([kKmMgG]?)\s*$")
_UNITS = {"": 1, "k": 1_000, "m": 1_000_000, "g": 1_000_000_000}


def parse_rate(text: str | None) -> tuple[int, int] | None:
    """MikroTik ``rx/tx`` (rx = the client's upload) → (up, down) in bit/s; None if unset or unreadable."""
    if not text or "/" not in text:
        return None
    parts = text.split(" ")[0].split("/")[:2]
    values = []
    for part in parts:
        m = _RATE.match(part)
        if not m:
            return None
        values.append(int(Decimal(m.group(1)) * _UNITS[m.group(2).lower()]))   # exact: 4.35M is 4350000
    return values[0], values[1]


def split64(value: int) -> tuple[int, int]:
    """(low 32 bits, gigawords) of a 64-bit octet count."""
    value = max(int(value), 0)
    return value & 0xFFFFFFFF, min(value >> 32, 0xFFFFFFFF)


def terminate_time(expires_at: float) -> str:
    """WISPr-Session-Terminate-Time in the venue's time: ``YYYY-MM-DDThh:mm:ss+03:00``.
    (``time.strftime`` of the instant three hours on: datetime's strftime with a time zone
    was 7 % of an Access-Accept's cost.)"""
    seconds = int(round(expires_at, 6)) + 3 * 3600      # whole seconds as datetime rounds them
    return time.strftime("%Y-%m-%dT%H:%M:%S+03:00", time.gmtime(seconds))


def accept_attributes(grant: Grant, kind: str, idle_timeout: int, interim_interval: int) -> dict:
    """Attributes for an Access-Accept, keyed by dictionary name (pyrad's keyword form with dashes)."""
    attrs: dict = {
        "Session-Timeout": max(grant.remaining_seconds, 1),
        "Idle-Timeout": idle_timeout,
        "Acct-Interim-Interval": max(interim_interval, 60) if kind == "coova" else interim_interval,
        "Class": grant.session_class.encode(),
        "WISPr-Session-Terminate-Time": terminate_time(grant.expires_at),
    }
    rate = parse_rate(grant.rate_limit)
    if kind == "mikrotik":
        if grant.rate_limit:
            attrs["Mikrotik-Rate-Limit"] = grant.rate_limit
        if grant.bytes_left is not None:
            low, high = split64(grant.bytes_left)
            attrs["Mikrotik-Total-Limit"] = low
            attrs["Mikrotik-Total-Limit-Gigawords"] = high
    else:
        if rate:   # 32-bit attributes: a 5G rate is "as fast as you can" rather than no answer at all
            attrs["WISPr-Bandwidth-Max-Up"], attrs["WISPr-Bandwidth-Max-Down"] = (min(v, 0xFFFFFFFF) for v in rate)
        if grant.bytes_left is not None:
            low, high = split64(grant.bytes_left)
            attrs["ChilliSpot-Max-Total-Octets"] = low
            attrs["ChilliSpot-Max-Total-Gigawords"] = high
    return attrs
