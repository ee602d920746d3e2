"""A :class:`~hotspotd.access.Grant` in each router's own words (reply attributes)."""
from __future__ import annotations

import time

from hotspotd.access import Grant
from hotspotd.formatting import parse_rate  # the parser is the core's (the splash page shows the speed)



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


def change_attributes(grant: Grant, kind: str, idle_timeout: int, interim_interval: int,
                      session_use: tuple[float, int]) -> dict:
    """Attributes for a CoA-Request that gives a live session ``grant``'s limits. CoovaChilli
    compares Session-Timeout with the time since the session started and its octet caps with the
    octets since then, and resets whatever the CoA leaves out (``config_radius_session``), so the
    request carries every limit of an Accept, counted from the session's start (``session_use``:
    seconds and octets so far)."""
    elapsed, octets = session_use
    attrs = accept_attributes(grant, kind, idle_timeout, interim_interval)
    attrs["Session-Timeout"] = int(elapsed) + max(grant.remaining_seconds, 1)
    if grant.bytes_left is not None:
        low, high = split64(grant.bytes_left + octets)
        if kind == "mikrotik":
            attrs["Mikrotik-Total-Limit"], attrs["Mikrotik-Total-Limit-Gigawords"] = low, high
        else:
            attrs["ChilliSpot-Max-Total-Octets"], attrs["ChilliSpot-Max-Total-Gigawords"] = low, high
    return attrs
