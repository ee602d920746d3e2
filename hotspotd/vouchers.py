"""Voucher codes for customers who pay cash: generated in batches, redeemed once, on one device.

Codes are 10 characters from an alphabet without look-alikes (no 0/O, 1/I/L), shown as
``XXXXX-XXXXX``: 31^10 ≈ 8·10^14 codes, so guessing one is hopeless behind the rate limit.
"""
from __future__ import annotations

import logging
import re
import secrets

from . import access, clock
from .errors import DomainError
from .storage.models import DEFAULT_SITE, Entitlement, Event, Package, Voucher, database

log = logging.getLogger(__name__)

ALPHABET = "23456789ABCDEFGHJKMNPQRSTUVWXYZ"
LENGTH = 10
MAX_BATCH = 500


class VoucherError(DomainError, ValueError):
    """The code cannot be used; ``code`` says why: ``not_a_voucher``, ``voucher_invalid``,
    ``voucher_other_venue``, ``voucher_used``, ``no_device`` (nothing consumed); for the owner's batches ``batch_size`` (with
    ``most``) and ``no_such_package``."""


def display(code: str) -> str:
    return f"{code[:5]}-{code[5:]}"


def normalize(text: str) -> str:
    """What a person typed → the stored form: separators and spaces dropped, upper case."""
    return re.sub(r"[\s\-_.]", "", str(text or "")).upper()[:32]


def generate(package_id: int, count: int, batch: str | None = None) -> list[Voucher]:
    """``count`` new codes for the package, all in one batch (default: a date-time name)."""
    if not 1 <= count <= MAX_BATCH:
        raise VoucherError("batch_size", most=MAX_BATCH)
    package = Package.get_or_none(Package.id == package_id)
    if package is None:
        raise VoucherError("no_such_package")
    now = clock.now()
    batch = (batch or clock.local_stamp(now))[:32]
    made: list[Voucher] = []
    with database.atomic():
        while len(made) < count:
            code = "".join(secrets.choice(ALPHABET) for _ in range(LENGTH))
            if Voucher.select().where(Voucher.code == code).exists():
                continue
            made.append(Voucher.create(code=code, package=package.id, batch=batch, created_at=now))
    log.info("generated %d voucher(s) for %s in batch %s", count, package.name, batch)
    return made


def redeem(text: str, mac: str | None, now: float | None = None, site: str = DEFAULT_SITE) -> Entitlement:
    """Use a voucher on device ``mac`` at venue ``site``: its package's time starts now (after any
    time the device still has there). A voucher already used returns its session when asked from
    the same device. A voucher for a package one venue sells works at that venue only."""
    now = clock.now() if now is None else now
    code = normalize(text)
    if not re.fullmatch(f"[{ALPHABET}]{{{LENGTH}}}", code):
        raise VoucherError("not_a_voucher")
    if not mac:
        # no device to put the time on (the page was opened without the router's variables): the
        # voucher stays unused, for the customer to enter again from the Wi-Fi's login page
        raise VoucherError("no_device")
    with database.atomic():
        voucher = Voucher.get_or_none(Voucher.code == code)
        if voucher is None or voucher.revoked:
            raise VoucherError("voucher_invalid")
        if voucher.package.site not in (None, site):
            raise VoucherError("voucher_other_venue")
        if voucher.redeemed_at is not None:
            ent = Entitlement.get_or_none(Entitlement.id == voucher.entitlement_id)
            if ent and access.is_bound(ent.id, mac):
                return ent
            raise VoucherError("voucher_used")
        updated = (Voucher.update(redeemed_at=now).where(Voucher.id == voucher.id, Voucher.redeemed_at.is_null())
                   .execute())
        if not updated:
            raise VoucherError("voucher_used")
        ent = access.grant(voucher.package, mac, now, phone=None, payment=None, site=site)
        Voucher.update(entitlement=ent.id).where(Voucher.id == voucher.id).execute()
        Event.create(at=now, kind="voucher_redeemed", entitlement=ent.id, mac=mac,
                     message=f"voucher {display(code)} ({voucher.package.name})")
    return ent
