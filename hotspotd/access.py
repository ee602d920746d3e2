"""Who may be online, for how long and with what limits: the one owner of that answer.

An :class:`~hotspotd.storage.models.Entitlement` is time (and data) bought by a payment or a voucher;
:class:`~hotspotd.storage.models.Device` rows bind MACs to it. RADIUS and the portal both ask
:func:`authorize`; the scheduler calls :func:`expire_due`; nobody else decides.

Venues (sites): an entitlement works at the site it was bought at, or at every site when its
package roams. Callers that know where the device is (RADIUS: the NAS's site; the portal: the
router's ``site`` variable) pass ``site``; ``site=None`` asks about anywhere.
"""
from __future__ import annotations

import logging
import re
import secrets
from dataclasses import dataclass
from typing import NamedTuple

import peewee as pw

from . import clock, faults
from .errors import DomainError
from .storage.models import (DEFAULT_SITE, AcctSession, Device, Entitlement, Event, Package, Payment, chunks,
                             database, execute, execute_many, marks)

log = logging.getLogger(__name__)


class Grant(NamedTuple):
    """A live right to be online, as RADIUS needs it. (A NamedTuple: immutable, and made for
    every Access-Accept at about half what a frozen dataclass costs.)"""
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


class AccessError(DomainError):
    """A request about access that cannot be honoured; ``code`` says why: ``receipt_not_found``,
    ``time_used_up``, ``data_used_up``, ``other_venue`` ("Already paid?"), ``extend_out_of_range``,
    ``not_live`` (the owner's "extend")."""


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
    return grant(package, payment.mac, now, phone=payment.phone, payment=payment, site=payment.site)


def grant(package: Package, mac: str | None, now: float, *, phone: str | None, payment: Payment | None,
          site: str = DEFAULT_SITE) -> Entitlement:
    """A new entitlement for ``package`` (a payment's or a voucher's) bought at ``site``, bound to
    ``mac`` if known.

    It starts after the device's live time only where that time works everywhere the new one
    does (a roaming purchase after roaming time; a venue's after that venue's or roaming time):
    stacked behind time that does not work here, the customer would wait offline for it.

    Bought with no device known (the portal opened by its address, a bookmark, a poster's QR
    code: no router variables), it is ``held``: its clock does not run until the first device is
    bound to it (:func:`start_held`), by "Already paid?", a login with its credentials, or the
    same device coming back through the router (:func:`claim_held`)."""
    start = _start_for(package, mac, now, site) if mac else now
    ent = Entitlement.create(
        payment=payment.id if payment else None, package=package.id, phone=phone, started_at=start,
        expires_at=start + package.duration_seconds, data_cap_bytes=package.data_cap_bytes,
        rate_limit=package.rate_limit, devices=package.devices, status="active" if mac else HELD, site=site,
        roams=bool(package.roams))
    faults.crash_point("grant_mid")
    # credentials for the router login after payment (see router_login); the id keeps them unique
    ent.login_user, ent.login_password = f"hs{ent.id}", secrets.token_hex(5)
    ent.save(only=[Entitlement.login_user, Entitlement.login_password])
    if mac:
        Device.create(mac=mac, entitlement=ent.id, bound_at=now)
    Event.create(at=now, kind="session_created", payment=payment.id if payment else None, entitlement=ent.id,
                 mac=mac, message=f"{package.name} until {clock.iso(ent.expires_at)}" if mac else
                 f"{package.name}, held: its time starts when a device is let in with it")
    checkout = payment.checkout_request_id if payment else None
    log.info("session %s created (%s, %ss)%s", ent.id, package.name, package.duration_seconds,
             f" for {checkout}" if checkout else "", extra={"checkout_request_id": checkout, "entitlement_id": ent.id})
    return ent


#: the status of an entitlement bought with no device known: its clock waits for the first one
HELD = "held"
#: how long after the purchase the device that paid without router variables is recognised by
#: its address when it comes back through the router (later: "Already paid?" with the receipt)
CLAIM_BY_ADDRESS_SECONDS = 1800


def _start_for(package: Package, mac: str, now: float, site: str) -> float:
    usable_here = Entitlement.roams if package.roams else (Entitlement.roams | (Entitlement.site == site))
    latest = (Entitlement.select(pw.fn.MAX(Entitlement.expires_at))
              .join(Device).where(Device.mac == mac, Device.active, Entitlement.status == "active",
                                  Entitlement.expires_at > now, usable_here).scalar())
    return max(now, latest or now)


def start_held(ent: Entitlement, mac: str, now: float, why: str) -> Entitlement:
    """Bind the first device to a held entitlement and start its clock now (after that device's
    own live time, as :func:`grant` stacks). Returns the entitlement as it is now; one that is no
    longer held (another request bound it first) is returned unchanged."""
    with database.atomic():
        package = Package.get_by_id(ent.package_id)
        start = _start_for(package, mac, now, ent.site)
        updated = (Entitlement.update(status="active", started_at=start, expires_at=start + package.duration_seconds)
                   .where(Entitlement.id == ent.id, Entitlement.status == HELD).execute())
        if updated:
            Device.create(mac=mac, entitlement=ent.id, bound_at=now)
            Event.create(at=now, kind="device_bound", entitlement=ent.id, mac=mac,
                         message=f"{why}; its time starts now, until {clock.iso(start + package.duration_seconds)}")
    return Entitlement.get_by_id(ent.id)


def claim_held(address: str, mac: str, site: str, now: float | None = None) -> Entitlement | None:
    """The device at ``address`` came back through the router (which named its ``mac``): if a
    purchase with no device was paid from that same address at ``site`` in the last
    :data:`CLAIM_BY_ADDRESS_SECONDS`, it is this device's, and its time starts now. The caller
    makes sure ``address`` is the device's own (not a router's NAT address shared by many)."""
    now = clock.now() if now is None else now
    ent = (Entitlement.select(Entitlement).join(Payment, on=(Entitlement.payment == Payment.id))
           .where(Entitlement.status == HELD, Payment.client_ip == address, Payment.status == "success",
                  Payment.created_at >= now - CLAIM_BY_ADDRESS_SECONDS)
           .order_by(Payment.created_at.desc()).first())
    if ent is None or not usable_at(ent, site):
        return None
    ent = start_held(ent, mac, now, f"came back from {address} through the router")
    return ent if ent.status == "active" and is_bound(ent.id, mac) else None


def is_bound(entitlement_id: int, mac: str) -> bool:
    return Device.select().where(Device.entitlement == entitlement_id, Device.mac == mac, Device.active).exists()


def bind_device(ent: Entitlement, mac: str, now: float, why: str) -> list[str]:
    """Put ``mac`` on ``ent``. With every slot taken, the device bound longest ago gives its
    slot up (the customer's old MAC: a phone that changed its address). Returns the MACs unbound,
    for the caller to cut off at the routers."""
    with database.atomic():
        bound = list(Device.select().where(Device.entitlement == ent.id, Device.active).order_by(Device.bound_at))
        if any(d.mac == mac for d in bound):
            return []
        freed = bound[:max(len(bound) - ent.devices + 1, 0)]
        for d in freed:
            Device.update(active=False, unbound_at=now).where(Device.id == d.id).execute()
        Device.create(mac=mac, entitlement=ent.id, bound_at=now)
        Event.create(at=now, kind="device_moved" if freed else "device_bound", entitlement=ent.id, mac=mac,
                     message=why + (f"; replaces {', '.join(d.mac for d in freed)}" if freed else ""))
    return [d.mac for d in freed]


def move_to_device(receipt: str, phone: str, mac: str, now: float | None = None,
                   site: str | None = None) -> tuple[Entitlement, list[str]]:
    """"Already paid?": the session bought with M-Pesa receipt ``receipt`` from ``phone`` (both
    normalised) moves to ``mac`` (at ``site``), within the package's device limit. Returns the
    entitlement and the MACs that lost it. Raises :class:`AccessError` (its code says why)."""
    now = clock.now() if now is None else now
    payment = None
    if receipt.isascii() and receipt.isalnum():   # M-Pesa receipts; other text matches none (nor goes to SQL)
        payment = Payment.get_or_none((pw.fn.UPPER(Payment.receipt) == receipt.upper()) & (Payment.status == "success"))
    if payment is None or phone not in (payment.phone, payment.paid_phone):
        raise AccessError("receipt_not_found")
    ent = Entitlement.get_or_none(Entitlement.payment == payment.id)
    if ent is not None and ent.status == HELD:
        if not usable_at(ent, site):
            raise AccessError("other_venue")
        return start_held(ent, mac, now, f"receipt {payment.receipt}"), []
    if ent is None or ent.status != "active" or ent.expires_at <= now:
        raise AccessError("time_used_up")
    if ent.data_cap_bytes is not None and ent.bytes_used >= ent.data_cap_bytes:
        raise AccessError("data_used_up")
    if not usable_at(ent, site):
        raise AccessError("other_venue")
    return ent, bind_device(ent, mac, now, f"receipt {payment.receipt}")


def revoke(entitlement_id: int, why: str, now: float | None = None) -> list[str]:
    """End a session now (the owner's "disconnect"). Returns its MACs, to cut off at the routers."""
    now = clock.now() if now is None else now
    with database.atomic():
        updated = (Entitlement.update(status="revoked", ended_at=now, end_reason=why[:32])
                   .where(Entitlement.id == entitlement_id, Entitlement.status == "active").execute())
        if not updated:
            return []
        macs = [d.mac for d in Device.select(Device.mac).where(Device.entitlement == entitlement_id, Device.active)]
        end_bindings([entitlement_id])
        Event.create(at=now, kind="session_ended", entitlement=entitlement_id, message=f"revoked: {why}")
    return macs


def shift_active(seconds: float, now: float) -> int:
    """Move every live session ``seconds`` later (the wall clock jumped ahead: that time was not
    lived, so nobody pays for it). Call in the same step that advances the timeline."""
    with database.atomic():
        moved = (Entitlement.update(started_at=Entitlement.started_at + seconds,
                                    expires_at=Entitlement.expires_at + seconds)
                 .where(Entitlement.status == "active", Entitlement.expires_at > now).execute())
        Event.create(at=now + seconds, kind="clock_jump",
                     message=f"wall clock jumped {seconds:+.0f} s; {moved} live session(s) moved with it")
    return moved


def extend(entitlement_id: int, seconds: int, why: str, now: float | None = None) -> Entitlement:
    """Give a live session more time (the owner's "extend")."""
    now = clock.now() if now is None else now
    if not 0 < seconds <= 366 * 86400:
        raise AccessError("extend_out_of_range")
    with database.atomic():
        updated = (Entitlement.update(expires_at=Entitlement.expires_at + seconds)
                   .where(Entitlement.id == entitlement_id, Entitlement.status == "active").execute())
        if not updated:
            raise AccessError("not_live")
        Event.create(at=now, kind="session_extended", entitlement=entitlement_id,
                     message=f"+{seconds // 60} min: {why}")
    return Entitlement.get_by_id(entitlement_id)


def macs_of(entitlement_id: int) -> list[str]:
    """The devices bound to a session now."""
    return [d.mac for d in Device.select(Device.mac).where(Device.entitlement == entitlement_id, Device.active)]


def usable_at(ent: Entitlement, site: str | None) -> bool:
    """Whether ``ent`` works at ``site`` (None: anywhere)."""
    return site is None or ent.roams or ent.site == site


def bytes_left(ent: Entitlement) -> int | None:
    """Data the entitlement still has; None when its package has no cap."""
    return _left(ent.data_cap_bytes, ent.bytes_used)


def _left(cap: int | None, used: int) -> int | None:
    return None if cap is None else max(cap - used, 0)


#: an M-Pesa transaction code inside pasted text: ten capitals and digits, first a letter; as the
#: confirmation SMS says it ("WF0DMXF93V Confirmed. Ksh10.00 sent to …"), else any such word with a digit
_RECEIPT_IN_SMS = re.compile(r"(?<![A-Z0-9])((?=[A-Z0-9]*\d)[A-Z][A-Z0-9]{9})(?![A-Z0-9])")
_CONFIRMED = re.compile(r"(?<![A-Z0-9])([A-Z][A-Z0-9]{9})\s+CONFIRMED\b")


def normalize_receipt(text: str) -> str:
    """An M-Pesa receipt as typed (``skl2 abc3de``) → as stored (``SKL2ABC3DE``); from a pasted
    confirmation SMS, the code before "Confirmed", else the first code-shaped word with a digit."""
    text = str(text or "")[:1000].upper()
    typed = "".join(text.split())
    if re.fullmatch(r"[A-Z0-9]{10}", typed):        # the code, typed with or without spaces
        return typed
    # the code as M-Pesa's SMS says it: "<code> Confirmed." (a code may hold no digit at all),
    # else the first code-shaped word with a digit in it
    found = _CONFIRMED.search(text) or _RECEIPT_IN_SMS.search(text)
    return found.group(1) if found else typed[:20]


def _grant(ent_id: int, mac: str, package_name: str, expires_at: float, cap: int | None, used: int,
           rate_limit: str | None, now: float) -> Grant:
    return Grant(entitlement_id=ent_id, mac=mac, package_name=package_name, expires_at=expires_at,
                 remaining_seconds=max(int(expires_at - now), 0), data_cap_bytes=cap, bytes_left=_left(cap, used),
                 rate_limit=rate_limit)


# authorize() answers every RADIUS Access-Request and record_usage() every accounting report:
# hand-written statements (models.execute), pinned by tests/radius/test_server.py and tests/core/test_properties.py.
_AUTHORIZE_SQL = (
    'SELECT e.id, e.expires_at, e.data_cap_bytes, e.bytes_used, e.rate_limit, p.name'
    ' FROM "device" AS d JOIN "entitlement" AS e ON e.id = d.entitlement_id'
    ' JOIN "package" AS p ON p.id = e.package_id'
    " WHERE d.mac = ? AND d.active AND e.status = 'active' AND e.started_at <= ? AND e.expires_at > ?"
    '{site} ORDER BY e.expires_at LIMIT 1')
_AUTHORIZE_ANYWHERE = _AUTHORIZE_SQL.format(site="")
_AUTHORIZE_AT_SITE = _AUTHORIZE_SQL.format(site=" AND (e.site = ? OR e.roams)")


def authorize(mac: str, now: float | None = None, site: str | None = None) -> Grant | None:
    """The grant that lets ``mac`` (normalised) online now at ``site`` (None: anywhere), or None.
    One indexed lookup."""
    now = clock.now() if now is None else now
    if site is None:
        row = execute(_AUTHORIZE_ANYWHERE, (mac, now, now)).fetchone()
    else:
        row = execute(_AUTHORIZE_AT_SITE, (mac, now, now, site)).fetchone()
    if row is None:
        return None
    ent_id, expires_at, cap, used, rate_limit, package_name = row
    if cap is not None and used >= cap:
        return None
    grant = _grant(ent_id, mac, package_name, expires_at, cap, used, rate_limit, now)
    return grant if grant.remaining_seconds > 0 else None


def entitlement_of(payment: Payment) -> Entitlement | None:
    return Entitlement.get_or_none(Entitlement.payment == payment.id)


def remaining_seconds(ent: Entitlement, now: float | None = None) -> int:
    now = clock.now() if now is None else now
    if ent.status != "active":
        return 0
    return max(int(ent.expires_at - now), 0)


def expire_due(now: float | None = None, limit: int = 20000) -> list[tuple[int, list[str]]]:
    """End entitlements whose time ran out or whose data cap is used up.

    Returns ``(entitlement_id, macs)`` of each one ended, for the caller to disconnect. Works in
    set statements (one per 500 sessions), not one per session: after a power cut or a busy
    evening thousands fall due in the same minute (10,000 in well under 2 s, ``scripts/bench``).
    """
    now = clock.now() if now is None else now
    with database.atomic():
        due = list(Entitlement.select(Entitlement.id, Entitlement.expires_at)
                   .where(Entitlement.status == "active",
                          (Entitlement.expires_at <= now) |
                          (Entitlement.data_cap_bytes.is_null(False) & (Entitlement.bytes_used >= Entitlement.data_cap_bytes)))
                   .limit(limit).tuples())
        if not due:
            return []
        macs: dict[int, list[str]] = {ent_id: [] for ent_id, _ in due}
        for chunk in chunks(list(macs)):
            for ent_id, mac in execute(f'SELECT entitlement_id, mac FROM "device"'
                                       f' WHERE active AND entitlement_id IN ({marks(chunk)})', chunk):
                macs[ent_id].append(mac)
        reasons = {ent_id: "expired" if expires_at <= now else "exhausted" for ent_id, expires_at in due}
        for reason in ("expired", "exhausted"):
            for chunk in chunks([ent_id for ent_id, r in reasons.items() if r == reason]):
                execute(f'UPDATE "entitlement" SET status = ?, ended_at = ?, end_reason = ?'
                        f" WHERE status = 'active' AND id IN ({marks(chunk)})", (reason, now, reason, *chunk))
        end_bindings(list(reasons))
        execute_many('INSERT INTO "event" (at, kind, entitlement_id, message) VALUES (?, ?, ?, ?)',
                     [(now, "session_ended", ent_id, "expired" if reason == "expired" else "data cap reached")
                      for ent_id, reason in reasons.items()])
        ended = [(ent_id, macs[ent_id]) for ent_id, _ in due]
    log.info("ended %d session(s)", len(ended))
    return ended


def where_usable(entitlement_ids: list[int]) -> dict[int, str | None]:
    """The site each entitlement works at; None for one that roams (every site)."""
    places: dict[int, str | None] = {}
    for chunk in chunks(entitlement_ids):
        for ent_id, site, roams in execute(f'SELECT id, site, roams FROM "entitlement" WHERE id IN ({marks(chunk)})',
                                           chunk):
            places[ent_id] = None if roams else site
    return places


def end_bindings(entitlement_ids: list[int]) -> None:
    """The devices of ended entitlements stop being active bindings (``unbound_at`` stays empty:
    they held the session to its end, nobody took their slot). Only active bindings are what
    RADIUS looks up, so a regular customer's year of old sessions costs nothing per request."""
    for chunk in chunks(entitlement_ids):
        execute(f'UPDATE "device" SET active = FALSE WHERE active AND entitlement_id IN ({marks(chunk)})', chunk)


def authorize_login(username: str, password_ok, mac: str | None, now: float | None = None,
                    site: str | None = None) -> Grant | None:
    """A username/password login (voucher code, post-payment login) at ``site`` (None: anywhere).
    ``password_ok(secret)`` checks the stored password (PAP or CHAP, the caller knows which). The
    calling MAC is bound to the entitlement while it has a free device slot."""
    now = clock.now() if now is None else now
    ent = (Entitlement.select(Entitlement, Package.name.alias("package_name")).join(Package)
           .where(Entitlement.login_user == username).objects().first())
    if ent is None or ent.login_password is None or not password_ok(ent.login_password):
        return None
    if ent.status == HELD and mac and usable_at(ent, site):
        package_name = ent.package_name
        ent = start_held(ent, mac, now, "login")
        ent.package_name = package_name
    if ent.status != "active" or ent.expires_at <= now or ent.started_at > now or not usable_at(ent, site):
        return None
    if ent.data_cap_bytes is not None and ent.bytes_used >= ent.data_cap_bytes:
        return None
    if mac:
        with database.atomic():
            bound = {d.mac for d in Device.select(Device.mac).where(Device.entitlement == ent.id, Device.active)}
            if mac not in bound:
                if len(bound) >= ent.devices:
                    return None
                Device.create(mac=mac, entitlement=ent.id, bound_at=now)
                Event.create(at=now, kind="device_bound", entitlement=ent.id, mac=mac, message="login")
    return _grant(ent.id, mac or "", ent.package_name, ent.expires_at, ent.data_cap_bytes, ent.bytes_used,
                  ent.rate_limit, now)


@dataclass(frozen=True)
class Usage:
    """One accounting report, octet counts already 64-bit."""
    nas: str
    acct_session_id: str
    status: str                  # start | interim | stop
    mac: str | None
    entitlement_id: int | None   # from the Class we sent, when the NAS echoed it
    ip: str | None = None
    username: str | None = None
    site: str | None = None      # the NAS's venue
    input_octets: int = 0
    output_octets: int = 0
    session_time: int = 0
    terminate_cause: str | None = None


def end_nas_sessions(nas: str, cause: str, now: float | None = None) -> int:
    """The NAS at ``nas`` says it (re)started or is stopping (Accounting-On/Off): every session of
    it still open in accounting is over. Returns how many were ended."""
    now = clock.now() if now is None else now
    with database.atomic():
        return execute('UPDATE "acct_session" SET online = ?, stopped_at = ?, terminate_cause = ?'
                       ' WHERE nas = ? AND online', (False, now, cause[:32], nas)).rowcount


def _same_session(u: Usage, row_ent: int | None, row_user: str | None) -> bool:
    """Whether a Start whose Acct-Session-Id a row already has is that row's session. CoovaChilli's
    ids have one-second resolution: two sessions of one device started within a second share
    one, so a Start with another Class (entitlement) or User-Name is a new session."""
    if u.entitlement_id is not None and row_ent is not None and u.entitlement_id != row_ent:
        return False
    return not (u.username and row_user and u.username != row_user)


def record_usage(u: Usage, now: float | None = None) -> bool:
    """Apply an accounting report. Counters are totals for the router session, so only the
    growth since the last report is added to the entitlement: a repeated report adds nothing.
    A Start that is another session under a reused Acct-Session-Id (:func:`_same_session`)
    ends the old row, which keeps its figures under ``<id>#<row id>``.
    Returns True when the entitlement's data cap is now used up."""
    now = clock.now() if now is None else now
    with database.atomic():
        row = execute('SELECT id, entitlement_id, input_octets, output_octets, session_time, stopped_at, username'
                      ' FROM "acct_session" WHERE nas = ? AND acct_session_id = ?',
                      (u.nas, u.acct_session_id)).fetchone()
        if row is not None and u.status == "start" and not _same_session(u, row[1], row[6]):
            execute('UPDATE "acct_session" SET acct_session_id = ?, online = ?, stopped_at = COALESCE(stopped_at, ?),'
                    ' terminate_cause = COALESCE(terminate_cause, ?) WHERE id = ?',
                    (f"{u.acct_session_id[:40]}#{row[0]}", False, now, "Superseded", row[0]))
            row = None
        ent_id = u.entitlement_id
        if ent_id is None and u.mac:
            grant = authorize(u.mac, now, u.site)
            ent_id = grant.entitlement_id if grant else None
        if ent_id is not None and execute('SELECT 1 FROM "entitlement" WHERE id = ?', (ent_id,)).fetchone() is None:
            ent_id = None
        if row is None:
            created = AcctSession.create(nas=u.nas, acct_session_id=u.acct_session_id, mac=u.mac, entitlement=ent_id,
                                         ip=u.ip, username=u.username, started_at=now - u.session_time,
                                         updated_at=now, site=u.site or DEFAULT_SITE)
            row = (created.id, ent_id, 0, 0, 0, None, u.username)
        row_id, row_ent, row_in, row_out, row_time, stopped_at, _ = row
        delta = max(u.input_octets + u.output_octets - (row_in + row_out), 0)
        sets, values = ["updated_at = ?", "updates = updates + 1"], [now]
        if delta or u.status != "start":
            sets += ["input_octets = ?", "output_octets = ?", "session_time = ?"]
            values += [max(u.input_octets, row_in), max(u.output_octets, row_out), max(u.session_time, row_time)]
        if u.status == "stop":
            sets += ["online = ?", "stopped_at = ?", "terminate_cause = ?"]
            values += [False, now, u.terminate_cause]
        elif stopped_at is None:
            sets.append("online = ?")
            values.append(True)
        if row_ent is None and ent_id is not None:
            sets.append("entitlement_id = ?")
            values.append(ent_id)
        execute(f'UPDATE "acct_session" SET {", ".join(sets)} WHERE id = ?', (*values, row_id))
        ent_id = row_ent or ent_id
        if not ent_id:
            return False
        if delta:
            execute('UPDATE "entitlement" SET bytes_used = bytes_used + ? WHERE id = ?', (delta, ent_id))
        cap, used = execute('SELECT data_cap_bytes, bytes_used FROM "entitlement" WHERE id = ?', (ent_id,)).fetchone()
        return cap is not None and used >= cap


def device_at(address: str, now: float | None = None) -> str | None:
    """The MAC of the device at ``address``, as the routers last reported it (accounting's
    Framed-IP-Address of a live session), else the device that paid from it in the last hour.
    The caller makes sure ``address`` is the device's own, not a router's NAT address."""
    now = clock.now() if now is None else now
    row = (AcctSession.select(AcctSession.mac).where(AcctSession.ip == address, AcctSession.online,
                                                     AcctSession.mac.is_null(False))
           .order_by(AcctSession.updated_at.desc()).first())
    if row is not None:
        return row.mac
    paid = (Payment.select(Payment.mac).where(Payment.client_ip == address, Payment.mac.is_null(False),
                                              Payment.created_at >= now - 3600)
            .order_by(Payment.created_at.desc()).first())
    return paid.mac if paid is not None else None


def last_ended(mac: str, site: str | None = None, now: float | None = None, within: float = 86400) -> Entitlement | None:
    """The session of ``mac`` whose time or data ran out most recently (within a day), for
    "your 1 hour ended at 21:37" above the packages."""
    now = clock.now() if now is None else now
    query = (Entitlement.select(Entitlement).join(Device, on=(Device.entitlement == Entitlement.id))
             .where(Device.mac == mac, Entitlement.status.in_(("expired", "exhausted")),
                    Entitlement.ended_at >= now - within)
             .order_by(Entitlement.ended_at.desc()))
    ent = query.first()
    return ent if ent is not None and usable_at(ent, site) else None
