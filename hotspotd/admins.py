"""Owner accounts for the dashboard: created from the command line only, scrypt-hashed passwords,
locked for a while after repeated failures. There is no default account and no default password.

An account sees every venue (``sites`` NULL: the owner) or is limited to some venues (``sites``:
their comma-separated ``[[sites]]`` ids, e.g. a venue manager); the dashboard enforces it.
"""
from __future__ import annotations

import hashlib
import hmac
import logging
import re
import secrets
from typing import Iterable

from . import clock
from .storage.models import AdminUser

log = logging.getLogger(__name__)

MIN_PASSWORD = 10
MAX_FAILURES = 5
LOCK_SECONDS = 15 * 60
_N, _R, _P = 2 ** 14, 8, 1          # ~50 ms on a Raspberry Pi 4, 16 MiB of memory
_USERNAME = re.compile(r"[A-Za-z0-9._@-]{1,64}")
# a hash checked for unknown users too, so a login takes as long whether the user exists or not
_DUMMY = None


class AdminError(ValueError):
    """A request about an account that cannot be honoured; ``str()`` says why."""


def hash_password(password: str) -> str:
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=_N, r=_R, p=_P, dklen=32)
    return f"scrypt${_N}${_R}${_P}${salt.hex()}${digest.hex()}"


def check_password(stored: str, password: str) -> bool:
    try:
        kind, n, r, p, salt, digest = stored.split("$")
        if kind != "scrypt":
            return False
        computed = hashlib.scrypt(password.encode(), salt=bytes.fromhex(salt), n=int(n), r=int(r), p=int(p),
                                  dklen=len(digest) // 2)
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(computed.hex(), digest)


def password_problem(password: str) -> str | None:
    if len(password) < MIN_PASSWORD:
        return f"use at least {MIN_PASSWORD} characters"
    if password.lower() in ("password123", "admin12345", "1234567890", "hotspotd123", "qwertyuiop"):
        return "that password is too common"
    return None


def parse_sites(text: str | None, known: Iterable[str]) -> list[str] | None:
    """``"a,b"`` → ``["a", "b"]``; ``"all"`` or None → None (every venue). Raises
    :class:`AdminError` naming the known venues when an id is not one of ``known``."""
    if text is None or text.strip().lower() == "all":
        return None
    known = list(known)
    ids = list(dict.fromkeys(part.strip() for part in text.split(",") if part.strip()))
    if not ids:
        raise AdminError(f"sites: name one or more venues, or all; known: {', '.join(known)}")
    unknown = [i for i in ids if i not in known]
    if unknown:
        raise AdminError(f"sites: no venue {', '.join(repr(i) for i in unknown)}; known: {', '.join(known)}")
    return ids


def _stored(sites: list[str] | None) -> str | None:
    return None if sites is None else ",".join(sites)


def create(username: str, password: str, sites: list[str] | None = None) -> AdminUser:
    """A new account, limited to the venues ``sites`` (None: every venue); raises
    :class:`AdminError` for a bad name, a weak password or a taken name. Check ``sites`` with
    :func:`parse_sites` first."""
    if not _USERNAME.fullmatch(username or ""):
        raise AdminError("username: letters, digits and . _ @ - only, at most 64")
    problem = password_problem(password or "")
    if problem:
        raise AdminError(f"password: {problem}")
    if AdminUser.get_or_none(AdminUser.username == username):
        raise AdminError(f"an account {username!r} already exists (use set-password to change it)")
    return AdminUser.create(username=username, password_hash=hash_password(password), created_at=clock.now(),
                            sites=_stored(sites))


def set_sites(username: str, sites: list[str] | None) -> None:
    """Limit the account to the venues ``sites`` (None: every venue). Takes effect at its next
    request: the dashboard reads the account on every one."""
    if sites is not None and not sites:
        raise AdminError("sites: name one or more venues, or all")
    if not AdminUser.update(sites=_stored(sites)).where(AdminUser.username == username).execute():
        raise AdminError(f"no account {username!r}")


def set_password(username: str, password: str) -> None:
    problem = password_problem(password or "")
    if problem:
        raise AdminError(f"password: {problem}")
    updated = (AdminUser.update(password_hash=hash_password(password), failed_logins=0, locked_until=None)
               .where(AdminUser.username == username).execute())
    if not updated:
        raise AdminError(f"no account {username!r}")


def authenticate(username: str, password: str, now: float | None = None) -> AdminUser | None:
    """The account when the password is right and the account is not locked; otherwise None.

    After :data:`MAX_FAILURES` wrong passwords in a row the account is locked for
    :data:`LOCK_SECONDS`; while locked even the right password is refused."""
    global _DUMMY
    now = clock.now() if now is None else now
    user = AdminUser.get_or_none(AdminUser.username == (username or "")[:64])
    if user is None:
        if _DUMMY is None:
            _DUMMY = hash_password(secrets.token_hex(8))
        check_password(_DUMMY, password or "")
        return None
    if user.locked_until and user.locked_until > now:
        log.warning("admin login for %r refused: locked", user.username)
        return None
    if not check_password(user.password_hash, password or ""):
        failures = user.failed_logins + 1
        locked = now + LOCK_SECONDS if failures >= MAX_FAILURES else None
        AdminUser.update(failed_logins=0 if locked else failures, locked_until=locked).where(
            AdminUser.id == user.id).execute()
        log.warning("admin login for %r failed%s", user.username, "; locked for 15 minutes" if locked else "")
        return None
    AdminUser.update(failed_logins=0, locked_until=None, last_login_at=now).where(AdminUser.id == user.id).execute()
    return AdminUser.get_by_id(user.id)


def is_locked(username: str, now: float | None = None) -> bool:
    now = clock.now() if now is None else now
    user = AdminUser.get_or_none(AdminUser.username == (username or "")[:64])
    return bool(user and user.locked_until and user.locked_until > now)
