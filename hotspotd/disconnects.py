"""Cutting devices off at the routers, and making sure it happened.

When an entitlement ends, :func:`enqueue` writes one :class:`~hotspotd.storage.models.Disconnect` row
per (device, router) in the same transaction; :func:`run_due` (a scheduler job) works through
the due rows with each router's :class:`Cutter`. A row is done only when the router confirms the
device is gone (for a router cut by Disconnect-Request, an accounting Stop already recorded is
proof enough: CoovaChilli ends sessions itself and then answers a bare NAK). While a router cannot be reached the row is retried with backoff; after
``FAILING_AFTER`` failed attempts it is marked ``failing`` so the owner sees it, and it is still
retried until ``GIVE_UP_SECONDS``. Every attempt leaves an :class:`~hotspotd.storage.models.Event`.

RADIUS already refuses an ended entitlement and the Session-Timeout we sent bounds the router's
session, so a slow router delays the cut; it never extends paid time.
"""
from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass
from typing import Iterable, Mapping, Protocol

from . import access, clock, faults
from .routers import RouterUnavailable
from .storage.models import AcctSession, Disconnect, Event, chunks, database, execute, execute_many, marks

log = logging.getLogger(__name__)

FIRST_RETRY_SECONDS = 5
MAX_RETRY_SECONDS = 300
FAILING_AFTER = 3
GIVE_UP_SECONDS = 24 * 3600


@dataclass(frozen=True)
class Target:
    """What a router needs to find the device's session."""
    mac: str
    username: str | None = None          # the User-Name the NAS used, from accounting
    acct_session_id: str | None = None
    ip: str | None = None
    #: what accounting from this router says: "open" (a session of the device is online),
    #: "stopped" (its sessions there all ended with a Stop) or None (no accounting from it)
    accounting: str | None = None


class Cutter(Protocol):
    """One router's way of ending a device's session."""
    name: str
    address: str     #: the router's address: its accounting comes from there (``acct_session.nas``)

    def cut(self, target: Target) -> bool:
        """End ``target``'s sessions. True when the router confirms none is left; False when
        one is still there. Raises :class:`hotspotd.routers.RouterUnavailable` when the router cannot be asked."""


def enqueue(mac: str, routers: Iterable[str], *, entitlement_id: int | None, reason: str,
            now: float | None = None) -> int:
    """Queue ``mac`` to be cut off at each of ``routers`` now (the owner's "Disconnect now", a
    session moved to another device). A cut already pending is not doubled, but it is due now
    even if it was waiting in backoff: the owner is not kept waiting behind an older retry."""
    return enqueue_many([(mac, entitlement_id)], routers, reason=reason, now=now, asap=True)


def enqueue_many(devices: Iterable[tuple[str, int | None]], routers: Iterable[str], *, reason: str,
                 now: float | None = None, asap: bool = False) -> int:
    """:func:`enqueue` for many ``(mac, entitlement_id)`` at once: one lookup of the cuts already
    pending and one insert per 500 devices. Returns the number of cuts queued. With ``asap`` a
    cut already pending is brought forward to ``now``."""
    now = clock.now() if now is None else now
    routers = list(routers)
    devices = list(devices)
    rows = []
    with database.atomic():
        for chunk in chunks(devices):
            chunk_macs = [mac for mac, _ in chunk]
            pending = set(execute(f'SELECT mac, router FROM "disconnect" WHERE status IN (\'pending\', \'failing\')'
                                  f' AND mac IN ({marks(chunk_macs)})', chunk_macs))
            if asap and pending and routers:
                execute(f'UPDATE "disconnect" SET next_at = ? WHERE status IN (\'pending\', \'failing\')'
                        f' AND next_at > ? AND mac IN ({marks(chunk_macs)}) AND router IN ({marks(routers)})',
                        (now, now, *chunk_macs, *routers))
            for mac, entitlement_id in chunk:
                for router in routers:
                    if (mac, router) not in pending:
                        pending.add((mac, router))
                        rows.append((mac, router, entitlement_id, reason, "pending", now, now, 0))
        execute_many('INSERT INTO "disconnect" (mac, router, entitlement_id, reason, status, created_at, next_at,'
                     ' attempts) VALUES (?, ?, ?, ?, ?, ?, ?, ?)', rows)
    return len(rows)


def routers_for(entitlement_ids: list[int], routers: Iterable[str],
                sites: Mapping[str, str] | None) -> dict[int, list[str]]:
    """The routers each entitlement's devices are cut at: those of the venue it works at (every
    router for one that roams). ``sites`` maps router → venue; None: one venue, every router."""
    routers = list(routers)
    if sites is None:
        return {ent_id: routers for ent_id in entitlement_ids}
    places = access.where_usable(entitlement_ids)
    return {ent_id: [r for r in routers if places.get(ent_id) is None or sites.get(r) == places[ent_id]]
            for ent_id in entitlement_ids}


def expire_and_queue(routers: Iterable[str], now: float | None = None, sites: Mapping[str, str] | None = None) -> int:
    """End due entitlements (:func:`hotspotd.access.expire_due`) and queue their devices' cuts in
    the same transaction, so a crash in between cannot leave a device ended but never cut. Each
    is cut at its venue's routers (``sites``: router → venue; see :func:`routers_for`)."""
    routers = list(routers)
    with database.atomic():
        ended = access.expire_due(now)
        if ended:
            faults.crash_point("expire_mid")    # ended but not yet queued: the transaction must undo it
        where = routers_for([ent_id for ent_id, _ in ended], routers, sites)
        by_routers: dict[tuple[str, ...], list[tuple[str, int]]] = {}
        for ent_id, macs in ended:
            by_routers.setdefault(tuple(where[ent_id]), []).extend((mac, ent_id) for mac in macs)
        for at, devices in by_routers.items():
            enqueue_many(devices, at, reason="ended", now=now)
    return len(ended)


def target(mac: str, nas: str | None = None) -> Target:
    """What the router at ``nas`` needs to find ``mac``'s session, and what its accounting says:
    its own rows first (any router's when it has none, for the identifiers only)."""
    rows = AcctSession.select().where(AcctSession.mac == mac)
    order = (AcctSession.online.desc(), AcctSession.updated_at.desc())
    row = rows.where(AcctSession.nas == nas).order_by(*order).first() if nas else None
    if row is not None:
        accounting = "open" if row.online else "stopped"
    else:
        accounting, row = None, rows.order_by(*order).first()
    if row is None:
        return Target(mac)
    return Target(mac, username=row.username, acct_session_id=row.acct_session_id, ip=row.ip, accounting=accounting)


def session_use(mac: str, nas: str) -> tuple[float, int]:
    """(seconds since it started, octets so far) of ``mac``'s open session at the router at
    ``nas``, by accounting; (0, 0) without one. A CoA's limits count from the session's start."""
    row = (AcctSession.select().where(AcctSession.mac == mac, AcctSession.nas == nas, AcctSession.online)
           .order_by(AcctSession.updated_at.desc()).first())
    if row is None:
        return 0.0, 0
    now = clock.now()
    # the NAS's own count at its last report, carried on; a Start recorded late would say less
    elapsed = max(row.session_time + now - row.updated_at, now - row.started_at, 0.0)
    return elapsed, row.input_octets + row.output_octets


def _backoff(attempts: int) -> float:
    return min(FIRST_RETRY_SECONDS * 2 ** max(attempts - 1, 0), MAX_RETRY_SECONDS)


def run_due(cutters: dict[str, Cutter], now: float | None = None, limit: int = 200, metrics=None,
            sites: Mapping[str, str] | None = None) -> Counter:
    """Try every due cut once. A router that is down is not asked again in the same run:
    its other rows are pushed back without an attempt (one timeout, not one per device).
    A device that has time again at the router's venue (``sites``: router → venue; None: any
    venue) is not cut. ``metrics`` (a :class:`hotspotd.metrics.Metrics`, or None) counts each
    attempt."""
    now = clock.now() if now is None else now
    outcome: Counter = Counter()
    down: set[str] = set()
    due = list(Disconnect.select().where(Disconnect.status.in_(("pending", "failing")), Disconnect.next_at <= now)
               .order_by(Disconnect.next_at).limit(limit))
    for row in due:
        if access.authorize(row.mac, now, sites.get(row.router) if sites is not None else None) is not None:
            # bought more time (or moved a session here) before the cut went through
            _finish(row, "cancelled", now, "device has time again")
            outcome["cancelled"] += 1
            continue
        cutter = cutters.get(row.router)
        if cutter is None:
            _finish(row, "cancelled", now, f"router {row.router!r} is no longer configured")
            outcome["cancelled"] += 1
            continue
        if row.router in down:
            Disconnect.update(next_at=now + _backoff(row.attempts)).where(Disconnect.id == row.id).execute()
            outcome["deferred"] += 1
            continue
        target_ = target(row.mac, getattr(cutter, "address", None))
        try:
            gone = cutter.cut(target_)
            error = None if gone else "still online after the cut"
            attempt = "done" if gone else "still_online"
        except RouterUnavailable as exc:
            down.add(row.router)
            gone, error, attempt = False, str(exc), "router_down"
        except Exception as exc:  # noqa: BLE001 - one router's bug must not stop the others
            log.exception("cutting %s at %s failed", row.mac, row.router)
            gone, error, attempt = False, f"{type(exc).__name__}: {exc}", "error"
        if metrics is not None:
            metrics.disconnect_attempt(row.router, attempt)
        if gone:
            faults.crash_point("disconnect_mid")
            _finish(row, "done", now, "the router had ended the session (accounting Stop)"
                    if target_.accounting == "stopped" else None)
            outcome["done"] += 1
        else:
            _failed(row, now, error)
            outcome["failed"] += 1
    return outcome


def _finish(row: Disconnect, status: str, now: float, note: str | None) -> None:
    with database.atomic():
        fields = {"status": status, "done_at": now}
        if status == "done":
            fields["attempts"] = Disconnect.attempts + 1
        else:
            fields["last_error"] = note
        Disconnect.update(**fields).where(Disconnect.id == row.id).execute()
        kind = "disconnected" if status == "done" else "disconnect_cancelled"
        Event.create(at=now, kind=kind, entitlement=row.entitlement_id, mac=row.mac,
                     message=f"router {row.router}" + (f": {note}" if note else ""))
    log.info("disconnect %s at %s: %s%s", row.mac, row.router, status, f" ({note})" if note else "")


def _failed(row: Disconnect, now: float, error: str) -> None:
    attempts = row.attempts + 1
    if now - row.created_at >= GIVE_UP_SECONDS:
        status, next_at = "failed", now
    else:
        status, next_at = ("failing" if attempts >= FAILING_AFTER else "pending"), now + _backoff(attempts)
    with database.atomic():
        Disconnect.update(status=status, attempts=attempts, last_error=error, next_at=next_at,
                          done_at=now if status == "failed" else None).where(Disconnect.id == row.id).execute()
        Event.create(at=now, kind="disconnect_failed", entitlement=row.entitlement_id, mac=row.mac,
                     message=f"router {row.router}, attempt {attempts}: {error}")
    level = logging.WARNING if status != "pending" else logging.INFO
    log.log(level, "disconnect %s at %s: attempt %d failed (%s); %s", row.mac, row.router, attempts, error,
            "giving up" if status == "failed" else f"retry in {int(next_at - now)} s")


def problems() -> list[Disconnect]:
    """Cuts the owner should know about: still failing, or given up."""
    return list(Disconnect.select().where(Disconnect.status.in_(("failing", "failed")))
                .order_by(Disconnect.created_at.desc()))
