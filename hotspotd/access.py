"""Who may be online, for how long and with what limits: the one owner of that answer.

An :class:`~hotspotd.models.Entitlement` is time (and data) bought by a payment or a voucher;
:class:`~hotspotd.models.Device` rows bind MACs to it. RADIUS and the portal both ask
:func:`authorize`; the scheduler calls :func:`expire_due`; nobody else decides.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import peewee as pw

from . import clock
from .models import Device, Entitlement, Event, Package, Payment, database

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Grant:
    """A live right to be online, as RADIUS needs it."""
    entitlement_id: int
    mac: str
    package_name: str
    expires_at: float
    remaining_seconds: int
    data_cap_bytes: int | None
    bytes_left: int | None
    rate_limit: str | None

    @property
    def session_class(self) -> str:
        """Opaque value for the RADIUS Class attribute; accounting echoes it back."""
        return f"hotspotd:{self.entitlement_id}"


class AccessError(Exception):
    """A request about access that cannot be honoured; ``str()`` is for the customer."""


def grant_for_payment(payment: Payment, now: float | None = None) -> Entitlement:
    """The entitlement bought by a successful payment: created once, returned ever after.

    Call inside the transaction that marks the payment successful. Time bought while the
    same device still has time left starts when that time ends (purchases stack).
    """
    existing = Entitlement.get_or_none(Entitlement.payment == payment.id)
    if existing:
        return existing
    now = clock.now() if now is None else now
    package = Package.get_by_id(payment.package_id)
    start = now
    if payment.mac:
        latest = (Entitlement.select(pw.fn.MAX(Entitlement.expires_at))
                  .join(Device).where(Device.mac == payment.mac, Device.active,
                                      Entitlement.status == "active", Entitlement.expires_at > now).scalar())
        start = max(now, latest or now)
    ent = Entitlement.create(
        payment=payment.id, package=package.id, phone=payment.phone, started_at=start,
        expires_at=start + package.duration_seconds, data_cap_bytes=package.data_cap_bytes,
        rate_limit=package.rate_limit, devices=package.devices, status="active")
    if payment.mac:
        Device.create(mac=payment.mac, entitlement=ent.id, bound_at=now)
    Event.create(at=now, kind="session_created", payment=payment.id, entitlement=ent.id, mac=payment.mac,
                 message=f"{package.name} until {clock.iso(ent.expires_at)}")
    log.info("session %s created for payment %s (%s, %ss)", ent.id, payment.checkout_request_id,
             package.name, package.duration_seconds)
    return ent


def _grant(ent: Entitlement, mac: str, package_name: str, now: float) -> Grant:
    left = None if ent.data_cap_bytes is None else max(ent.data_cap_bytes - ent.bytes_used, 0)
    return Grant(entitlement_id=ent.id, mac=mac, package_name=package_name, expires_at=ent.expires_at,
                 remaining_seconds=max(int(ent.expires_at - now), 0), data_cap_bytes=ent.data_cap_bytes,
                 bytes_left=left, rate_limit=ent.rate_limit)


def authorize(mac: str, now: float | None = None) -> Grant | None:
    """The grant that lets ``mac`` (normalised) online now, or None. One indexed lookup."""
    now = clock.now() if now is None else now
    row = (Entitlement.select(Entitlement, Package.name.alias("package_name"))
           .join_from(Entitlement, Device).join_from(Entitlement, Package)
           .where(Device.mac == mac, Device.active, Entitlement.status == "active",
                  Entitlement.started_at <= now, Entitlement.expires_at > now)
           .order_by(Entitlement.expires_at).limit(1).objects().first())
    if row is None:
        return None
    if row.data_cap_bytes is not None and row.bytes_used >= row.data_cap_bytes:
        return None
    grant = _grant(row, mac, row.package_name, now)
    return grant if grant.remaining_seconds > 0 else None


def entitlement_of(payment: Payment) -> Entitlement | None:
    return Entitlement.get_or_none(Entitlement.payment == payment.id)


def remaining_seconds(ent: Entitlement, now: float | None = None) -> int:
    now = clock.now() if now is None else now
    if ent.status != "active":
        return 0
    return max(int(ent.expires_at - now), 0)


def expire_due(now: float | None = None, limit: int = 5000) -> list[tuple[int, list[str]]]:
    """End entitlements whose time ran out or whose data cap is used up.

    Returns ``(entitlement_id, macs)`` of each one ended, for the caller to disconnect.
    """
    now = clock.now() if now is None else now
    ended = []
    with database.atomic():
        due = list(Entitlement.select(Entitlement.id, Entitlement.expires_at, Entitlement.data_cap_bytes,
                                      Entitlement.bytes_used)
                   .where(Entitlement.status == "active",
                          (Entitlement.expires_at <= now) |
                          (Entitlement.data_cap_bytes.is_null(False) & (Entitlement.bytes_used >= Entitlement.data_cap_bytes)))
                   .limit(limit))
        if not due:
            return []
        ids = [e.id for e in due]
        macs: dict[int, list[str]] = {i: [] for i in ids}
        for dev in Device.select(Device.entitlement, Device.mac).where(Device.entitlement.in_(ids), Device.active):
            macs[dev.entitlement_id].append(dev.mac)
        for e in due:
            reason = "expired" if e.expires_at <= now else "exhausted"
            Entitlement.update(status=reason, ended_at=now, end_reason=reason).where(
                Entitlement.id == e.id, Entitlement.status == "active").execute()
            ended.append((e.id, macs[e.id]))
        Event.insert_many([{"at": now, "kind": "session_ended", "entitlement": e.id,
                            "message": "expired" if e.expires_at <= now else "data cap reached"} for e in due]).execute()
    log.info("ended %d session(s)", len(ended))
    return ended
