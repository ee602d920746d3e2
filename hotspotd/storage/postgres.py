"""PostgreSQL connections that live through what a server does to them.

Each thread (web workers, the RADIUS thread, the scheduler's workers) keeps its own connection
for as long as the daemon runs. Two things SQLite never does to such a connection, PostgreSQL does:

- **Another session holds a lock** (a migration, a dump, a hand-typed ``LOCK TABLE``): a statement
  waits for it with no end. ``lock_timeout`` is set to ``[database] busy_timeout_ms`` on every
  connection, so a payment waits as long as it would on SQLite's busy timeout, then is refused
  ("canceling statement due to lock timeout", SQLSTATE 55P03).
- **The server ends the session** (a restart, ``pg_terminate_backend``, an idle-session timeout):
  peewee keeps handing the dead connection out, and every statement of that thread fails with
  "connection already closed" until the process restarts (coleifer/peewee#1780, #2036). Here a
  connection the server has ended is replaced before the next statement is sent. It is noticed
  without a round trip: an idle connection whose socket has something to read was written to by
  the server, and psycopg2's ``poll()`` reads it (its farewell, or a notice) and marks the
  connection closed if it was one.

Never by retrying a statement after an error (playhouse's ``ReconnectMixin``): psycopg2 reports a
statement the server never saw and one it ran just before it died with the same "server closed the
connection unexpectedly", and running the second again could record a callback twice. Inside a
transaction nothing is replaced either: the transaction died with its session, and fails.
"""
from __future__ import annotations

import logging
import select
import sys
import threading
from contextlib import contextmanager
from typing import Iterator

import peewee as pw
from playhouse.db_url import connect as connect_url

log = logging.getLogger(__name__)


class PostgresqlDatabase(pw.PostgresqlDatabase):
    """peewee's PostgreSQL database with bounded lock waits and ended connections replaced."""

    def __init__(self, database, lock_timeout_ms: int = 5000, **kwargs):
        self.lock_timeout_ms = int(lock_timeout_ms)
        self._same_session = threading.local()
        self._thread_settings = threading.local()
        super().__init__(database, **kwargs)

    def _initialize_connection(self, conn) -> None:
        with conn.cursor() as cur:
            cur.execute("SET lock_timeout = %s", (self.lock_timeout_ms,))
            # peewee connects in the thread that will use the connection: a replaced one gets them too
            for name, value in getattr(self._thread_settings, "values", {}).items():
                cur.execute(f"SET {name} = %s", (value,))

    def set_for_this_thread(self, name: str, value: str) -> str:
        """``SET name = value`` on this thread's connection, and again on any connection that
        replaces it; returns the setting now in force."""
        if not getattr(self._thread_settings, "values", None):
            self._thread_settings.values = {}
        self._thread_settings.values[name] = value
        self.execute_sql(f"SET {name} = %s", (value,))
        return self.execute_sql(f"SHOW {name}").fetchone()[0]

    def execute_sql(self, sql, params=None, *args, **kwargs):   # peewee 3 passes commit= too
        self._replace_if_ended()
        return super().execute_sql(sql, params, *args, **kwargs)

    def begin(self, *args, **kwargs):
        self._replace_if_ended()
        return super().begin(*args, **kwargs)

    def rollback(self):
        # an ended session took its transaction with it: nothing is left to roll back, and trying
        # would put "connection already closed" in place of the error that says what happened
        if not self.is_closed() and self._state.conn.closed:
            return None
        return super().rollback()

    @contextmanager
    def same_session(self) -> Iterator[None]:
        """Statements in this block rely on this thread's session (an advisory lock it holds):
        a connection the server ended is not replaced, since a new session would not hold it; they
        fail instead."""
        self._same_session.depth = getattr(self._same_session, "depth", 0) + 1
        try:
            yield
        finally:
            self._same_session.depth -= 1

    def _replace_if_ended(self) -> None:
        if self.is_closed() or self.in_transaction() or getattr(self._same_session, "depth", 0):
            return
        conn = self._state.conn
        if not conn.closed:
            poller = select.poll()
            poller.register(conn.fileno(), select.POLLIN)
            if not poller.poll(0):
                return                                  # idle and silent: the usual case
            import psycopg2
            # the first read takes the server's last words (a FATAL notice), the next one the
            # end of the stream, which marks the connection closed; a live one has nothing left
            for _ in range(3):
                try:
                    conn.poll()
                except psycopg2.Error:
                    break
                if not poller.poll(0):
                    break
        if conn.closed:
            farewell = [n.split(":", 1)[1].strip() for n in conn.notices if n.startswith("FATAL:")][-1:]
            log.warning("the database server ended this thread's connection (%s); connecting again",
                        farewell[0] if farewell else "connection lost")
            self.close()


class DriverMissing(RuntimeError):
    """A PostgreSQL URL, and no PostgreSQL driver in this Python: the operator installs the extra."""


def open_url(url: str, lock_timeout_ms: int) -> PostgresqlDatabase:
    """A :class:`PostgresqlDatabase` for a ``postgresql://`` URL (parsed as playhouse parses it).
    Raises :class:`DriverMissing` when psycopg2 is not installed (peewee would only say so at the
    first query, in a traceback)."""
    if pw.psycopg2 is None:
        raise DriverMissing(
            "the database URL is PostgreSQL, but its driver (psycopg2) is not installed in this Python "
            f"({sys.executable}): install hotspotd's postgres extra, e.g. `{sys.executable} -m pip install "
            "'psycopg2-binary>=2.9,<3'` (from a checkout: `pip install -e '.[postgres]'`)")
    plain = connect_url(url)                            # the URL's checks and connect parameters
    return PostgresqlDatabase(plain.database, lock_timeout_ms=lock_timeout_ms, **plain.connect_params)
