"""What a ``[database] url`` names on this machine. No database library is imported here, so the
config check and the disk check can ask without opening anything."""
from __future__ import annotations

import os
import shutil

SQLITE = "sqlite:///"


def sqlite_path(url: str) -> str | None:
    """The file (or ``:memory:``) a ``sqlite:///`` URL names, None for any other database.
    ``sqlite:////var/lib/hotspotd/hotspotd.db`` is ``/var/lib/hotspotd/hotspotd.db``."""
    return url[len(SQLITE):] if url.startswith(SQLITE) else None


def sqlite_file(url: str) -> str | None:
    """The absolute file of a SQLite database on disk; None for PostgreSQL, ``:memory:`` or a relative path."""
    path = sqlite_path(url)
    return path if path and os.path.isabs(path) else None


def disk_problem(url: str, min_free_mb: int) -> str | None:
    """Why a payment could not be recorded safely now: the SQLite disk below ``min_free_mb``."""
    path = sqlite_file(url)
    if path is None:
        return None
    folder = os.path.dirname(path)
    try:
        free = shutil.disk_usage(folder).free
    except OSError as exc:
        return f"cannot see the database's disk ({exc})"
    if free < min_free_mb * 1024 * 1024:
        return f"only {free // (1024 * 1024)} MB free on the database's disk ({folder}); free some space"
    return None


def shown_url(url: str) -> str:
    """``url`` as a message may show it: a password in it replaced by ``***``."""
    from urllib.parse import urlsplit, urlunsplit
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)
    user = netloc[0].split(":", 1)[0]
    return urlunsplit(parts._replace(netloc=f"{user}:***@{netloc[1]}"))
