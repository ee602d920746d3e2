"""Daraja access tokens, one per consumer key, shared by every client that uses the key.

Daraja may take a token back when it issues the next one (shared/reference/daraja.md, "Hosts and
auth"): two clients of one consumer key that each fetch their own (two venues on one Daraja app, two
hotspotd processes on one database, ``hotspotd check`` beside the daemon) take turns invalidating
each other. So a token belongs to the key, not to a client. :class:`Tokens` shares it between the
clients and threads of one process; :class:`DatabaseTokens` also between the processes on one
database (the ``daraja_token`` table, SQLite and PostgreSQL alike).

The rule a client follows (:meth:`hotspotd.daraja.client.DarajaClient.token`): use the shared token;
when it is refused or due for renewal, look again first (someone may have replaced it already) and
fetch only if it is still the same one, one fetcher at a time: a thread lock within the process, a
short lease in the row between processes (the lease ends by itself if its holder dies). Nothing here
holds a database lock while Daraja is being asked.
"""
from __future__ import annotations

import hashlib
import logging
import threading
import time
from dataclasses import dataclass

import peewee as pw

log = logging.getLogger(__name__)

TABLE = "daraja_token"


@dataclass(frozen=True)
class Token:
    """An access token: renew it from ``refresh_at`` on, it dies at ``expires_at`` (epoch seconds,
    the wall clock: processes share them); ``credentials`` names the key and secret it came from."""
    value: str
    refresh_at: float
    expires_at: float
    credentials: str


def account_of(base_url: str, consumer_key: str) -> str:
    """The id a consumer key's token is kept under (a digest: the key itself is not written down)."""
    return hashlib.sha256(f"hotspotd daraja account\0{base_url}\0{consumer_key}".encode()).hexdigest()


def credentials_of(base_url: str, consumer_key: str, consumer_secret: str) -> str:
    """A digest of the key and secret: a stored token proves these credentials only if it came from them."""
    return hashlib.sha256(f"hotspotd daraja credentials\0{base_url}\0{consumer_key}\0{consumer_secret}"
                          .encode()).hexdigest()


class Tokens:
    """The tokens of one process, by account. Thread-safe; every client given the same instance
    shares its tokens (the daemon gives all of its clients one)."""

    def __init__(self) -> None:
        self._tokens: dict[str, Token] = {}
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()

    def lock(self, account: str) -> threading.Lock:
        """The lock one thread of this process holds while it renews ``account``'s token."""
        with self._guard:
            return self._locks.setdefault(account, threading.Lock())

    def cached(self, account: str) -> Token | None:
        """The token this process last saw (no database read: the hot path)."""
        return self._tokens.get(account)

    def load(self, account: str) -> Token | None:
        """The newest token known for ``account`` (in the database, for :class:`DatabaseTokens`)."""
        return self._tokens.get(account)

    def claim(self, account: str, stale: str | None, lease: float) -> bool:
        """May this process fetch a new token for ``account``, whose current one is ``stale``?
        False: another process is fetching, or has replaced ``stale`` already (look again)."""
        return True

    def save(self, account: str, token: Token) -> None:
        """Keep the fetched ``token`` (and end this process's claim)."""
        self._tokens[account] = token

    def abandon(self, account: str) -> None:
        """The fetch failed: end this process's claim so that another may try."""


class DatabaseTokens(Tokens):
    """:class:`Tokens` kept in the ``daraja_token`` table of ``db`` too (a peewee database, or the
    models' proxy), so that every process on the database shares them. A database that cannot be
    read or written just now (locked, down) leaves each process to itself: a payment never fails
    because of this table."""

    def __init__(self, db) -> None:
        super().__init__()
        self._db = db

    def _sql(self, sql: str, params: tuple = ()):
        return self._db.execute_sql(sql.replace("?", self._db.param), params)

    def load(self, account: str) -> Token | None:
        try:
            row = self._sql(f'SELECT token, refresh_at, expires_at, credentials FROM "{TABLE}" WHERE account = ?',
                            (account,)).fetchone()
        except pw.DatabaseError as exc:
            log.warning("cannot read the shared Daraja token (%s); using this process's", _first_line(exc))
            return self.cached(account)
        if row is None or not row[0]:
            return self.cached(account)
        token = Token(row[0], float(row[1]), float(row[2]), row[3] or "")
        self._tokens[account] = token
        return token

    def claim(self, account: str, stale: str | None, lease: float) -> bool:
        now = time.time()
        try:
            self._sql(f'INSERT INTO "{TABLE}" (account, token, refresh_at, expires_at, credentials, renewing_until)'
                      ' VALUES (?, NULL, 0, 0, ?, 0) ON CONFLICT (account) DO NOTHING', (account, ""))
            same = "token IS NULL" if stale is None else "(token IS NULL OR token = ?)"
            cursor = self._sql(f'UPDATE "{TABLE}" SET renewing_until = ? WHERE account = ? AND renewing_until < ?'
                               f' AND {same}', (now + lease, account, now) + (() if stale is None else (stale,)))
            return cursor.rowcount == 1
        except pw.DatabaseError as exc:
            log.warning("cannot claim the shared Daraja token (%s); fetching one for this process", _first_line(exc))
            return True

    def save(self, account: str, token: Token) -> None:
        super().save(account, token)
        try:
            self._sql(f'UPDATE "{TABLE}" SET token = ?, refresh_at = ?, expires_at = ?, credentials = ?,'
                      ' renewing_until = 0 WHERE account = ?',
                      (token.value, token.refresh_at, token.expires_at, token.credentials, account))
        except pw.DatabaseError as exc:
            log.warning("cannot store the shared Daraja token (%s); other processes will fetch their own",
                        _first_line(exc))

    def abandon(self, account: str) -> None:
        try:
            self._sql(f'UPDATE "{TABLE}" SET renewing_until = 0 WHERE account = ?', (account,))
        except pw.DatabaseError:
            pass


def _first_line(exc: Exception) -> str:
    """What a log line says of a database error: its first line (later ones may quote the SQL's values)."""
    return (str(exc).splitlines() or [type(exc).__name__])[0]
