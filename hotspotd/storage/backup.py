"""Backups of the SQLite database, taken online with SQLite's backup API, checked, rotated.

A backup is a complete database file, ``hotspotd-YYYYmmdd-HHMMSS.db`` (UTC) in the backup folder,
taken page by page while the daemon keeps running, then verified with ``PRAGMA integrity_check``.
The newest ``keep`` are kept. :func:`restore` copies a backup back into the live database file
(after saving the current one as a backup first), also through the backup API, so a crash halfway
leaves SQLite's journal to roll it back. PostgreSQL installations use ``pg_dump`` instead.
"""
from __future__ import annotations

import logging
import os
import re
import sqlite3
import time
from dataclasses import dataclass

from . import paths

log = logging.getLogger(__name__)

NAME = re.compile(r"hotspotd-(\d{8}-\d{6})(?:-\d+)?\.db$")


class BackupError(Exception):
    """Why a backup or a restore could not be made; ``str()`` is for the owner."""


@dataclass(frozen=True)
class Backup:
    path: str
    taken_at: float
    size: int


def sqlite_path(url: str) -> str:
    """The database file to back up (:func:`hotspotd.storage.paths.sqlite_file`); BackupError otherwise."""
    path = paths.sqlite_file(url)
    if path is None:
        raise BackupError("backups here are for SQLite; for PostgreSQL use pg_dump (see README)")
    return path


def listing(folder: str) -> list[Backup]:
    """The backups in ``folder``, newest first."""
    try:
        names = os.listdir(folder)
    except FileNotFoundError:
        return []
    found = []
    for name in names:
        if NAME.fullmatch(name):
            path = os.path.join(folder, name)
            st = os.stat(path)
            found.append(Backup(path, st.st_mtime, st.st_size))
    return sorted(found, key=lambda b: (b.taken_at, b.path), reverse=True)


def _copy(source: str, target: str, busy_timeout: float) -> None:
    src = sqlite3.connect(f"file:{source}?mode=ro", uri=True, timeout=busy_timeout)
    dst = sqlite3.connect(target, timeout=busy_timeout)
    try:
        # in steps, sleeping between them: writers are never held up for long
        src.backup(dst, pages=256, sleep=0.005)
    finally:
        dst.close()
        src.close()


def _verify(path: str) -> None:
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        verdict = con.execute("PRAGMA integrity_check").fetchone()[0]
        con.execute("SELECT count(*) FROM payment").fetchone()
    except sqlite3.Error as exc:
        raise BackupError(f"{path} is not a hotspotd database ({exc})") from None
    finally:
        con.close()
    if verdict != "ok":
        raise BackupError(f"{path} failed its integrity check ({verdict})")


def backup(db_path: str, folder: str, keep: int = 14, busy_timeout: float = 5.0) -> Backup:
    """Take a backup of ``db_path`` into ``folder``, verify it, delete the oldest beyond ``keep``."""
    if not os.path.exists(db_path):
        raise BackupError(f"no database at {db_path}")
    os.makedirs(folder, mode=0o750, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    target = os.path.join(folder, f"hotspotd-{stamp}.db")
    n = 1
    while os.path.exists(target):
        target = os.path.join(folder, f"hotspotd-{stamp}-{n}.db")
        n += 1
    partial = target + ".partial"
    old_umask = os.umask(0o077)          # it holds phone numbers: owner only
    try:
        _copy(db_path, partial, busy_timeout)
        _verify(partial)
        os.replace(partial, target)
    except (sqlite3.Error, OSError) as exc:
        raise BackupError(f"backup of {db_path} failed: {exc}") from None
    finally:
        os.umask(old_umask)
        if os.path.exists(partial):
            os.unlink(partial)
    made = Backup(target, os.stat(target).st_mtime, os.stat(target).st_size)
    for old in listing(folder)[max(keep, 1):]:
        os.unlink(old.path)
        log.info("backup %s rotated out", os.path.basename(old.path))
    log.info("backup written: %s (%d KB)", target, made.size // 1024)
    return made


def restore(db_path: str, source: str, folder: str, busy_timeout: float = 5.0) -> Backup | None:
    """Replace the database at ``db_path`` with the backup ``source``. The current database is
    first saved into ``folder`` (returned), so a restore can itself be undone. Stop the daemon
    first: a running one would keep serving from what it has in memory."""
    if not os.path.exists(source):
        raise BackupError(f"no backup at {source}")
    _verify(source)
    saved = backup(db_path, folder, keep=10 ** 6, busy_timeout=busy_timeout) if os.path.exists(db_path) else None
    try:
        _copy(source, db_path, busy_timeout)
    except sqlite3.Error as exc:
        raise BackupError(f"restore into {db_path} failed: {exc}") from None
    _verify(db_path)
    log.info("restored %s from %s", db_path, source)
    return saved


def due(folder: str, every_seconds: float, now: float | None = None) -> bool:
    """True when the newest backup in ``folder`` is older than ``every_seconds`` (or none exists)."""
    now = time.time() if now is None else now
    newest = listing(folder)
    return not newest or now - newest[0].taken_at >= every_seconds


def take_if_due(cfg) -> str | None:
    """The backup job (``[backup]``): a backup of the config's SQLite database when the newest one
    is older than ``every_hours``; returns its path, None when none was due."""
    b = cfg.backup
    folder = cfg.backup_folder
    if not due(folder, b.every_hours * 3600):
        return None
    made = backup(sqlite_path(cfg.database.url), folder, keep=b.keep,
                  busy_timeout=cfg.database.busy_timeout_ms / 1000)
    return made.path
