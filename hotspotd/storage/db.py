"""The database's lifecycle: open from a URL, pragmas, versioned migrations, seed data.

SQLite runs in WAL mode with foreign keys on, ``synchronous=FULL`` (a committed payment
survives a power cut) and a busy timeout; PostgreSQL (:mod:`hotspotd.storage.postgres`) waits for a lock
no longer than that timeout either. All pending migrations run in one transaction, so a
failed or interrupted upgrade leaves the previous schema and data as they were.
"""
from __future__ import annotations

import hashlib
import logging
import os
import secrets
import time
from contextlib import contextmanager, nullcontext
from typing import Callable, Iterator

import peewee as pw

from .. import clock
from . import models, paths, postgres
from .models import Package, Setting, database

log = logging.getLogger(__name__)

DEFAULT_PACKAGES = [
    # name, price KES, seconds, the name in Kiswahili
    ("30 minutes", 5, 30 * 60, "Dakika 30"),
    ("1 hour", 10, 60 * 60, "Saa 1"),
    ("24 hours", 50, 24 * 60 * 60, "Saa 24"),
]


#: the RADIUS thread's page cache (negative: KiB), see prepare_radius_thread
RADIUS_CACHE_KB = -8000


class _SqliteDatabase(pw.SqliteDatabase):
    """Transactions start with ``BEGIN IMMEDIATE``: a transaction that reads, then writes (redeem a
    voucher, bind a device, count usage) takes the write lock up front and waits its turn under the
    busy timeout. A plain ``BEGIN`` would fail at once with "database is locked" when another
    writer committed between its read and its write (WAL snapshot conflict)."""

    def begin(self, lock_type=None):
        return super().begin(lock_type or "IMMEDIATE")


def open_database(url: str, busy_timeout_ms: int = 5000) -> pw.Database:
    """Open ``url`` and bind the models to it. Creates the SQLite file's folder."""
    db = unbound_database(url, busy_timeout_ms)
    database.initialize(db)
    return db


def unbound_database(url: str, busy_timeout_ms: int = 5000) -> pw.Database:
    """``url``'s database with hotspotd's settings, the models left bound where they are (for
    hand-written SQL beside a running daemon in the same process: ``hotspotd check``)."""
    path = paths.sqlite_path(url)
    if path is not None:
        if path != ":memory:":
            os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        db = _SqliteDatabase(path, pragmas={
            "journal_mode": "wal",
            "foreign_keys": 1,
            "synchronous": "full",
            "busy_timeout": busy_timeout_ms,
            # 2 MB per connection (SQLite's default): each web worker thread has its own; at 8 MB
            # the daemon peaked at 80 MB under web load on a year-old database, at 2 MB at 67 MB
            "cache_size": -2000,
        }, timeout=busy_timeout_ms / 1000)
    else:
        # lock waits bounded by the same busy timeout, connections the server ended replaced
        db = postgres.open_url(url.replace("postgres://", "postgresql://", 1), busy_timeout_ms)
    return db


@contextmanager
def claim_run(name: str, seconds: float, woken: bool = False) -> Iterator[bool]:
    """Whether this process runs this tick of job ``name`` (every ``seconds``).

    On SQLite (one process per database file) always. On PostgreSQL, where several hotspotd
    processes share the database: a session advisory lock keeps two from running the job at
    once (PostgreSQL drops it with the connection, so a process that dies mid-run frees it), and
    the job's row in ``job_run`` lets one run per tick: the first to move ``next_at`` on runs, the
    others skip until it is due again. ``woken``: something in this process needs the job now
    (a data cap reached), so it runs if nobody else is running it.
    """
    db = models.database.obj
    if not isinstance(db, pw.PostgresqlDatabase):
        yield True
        return
    key = int.from_bytes(hashlib.sha256(f"hotspotd job {name}".encode()).digest()[:8], "big") >> 1
    if not db.execute_sql("SELECT pg_try_advisory_lock(%s)", (key,)).fetchone()[0]:
        yield False
        return
    # the lock is this session's: should the server end it mid-run, the run fails rather than
    # carry on, unlocked, on a new connection
    with db.same_session() if isinstance(db, postgres.PostgresqlDatabase) else nullcontext():
        try:
            now = clock.now()
            db.execute_sql('INSERT INTO "job_run" (name, next_at) VALUES (%s, %s) ON CONFLICT (name) DO NOTHING',
                           (name, 0.0))
            due = "" if woken else " AND next_at <= %s"
            claimed = db.execute_sql(f'UPDATE "job_run" SET next_at = %s WHERE name = %s{due}',
                                     (now + 0.9 * seconds, name) + (() if woken else (now,))).rowcount == 1
            yield claimed
        finally:
            db.execute_sql("SELECT pg_advisory_unlock(%s)", (key,))


def prepare_radius_thread() -> int | str | None:
    """Set up this thread's connection for the RADIUS server; returns the setting now in force:
    SQLite's ``synchronous`` (1 = NORMAL), PostgreSQL's ``synchronous_commit`` ("off").

    - It commits without waiting for the disk (``synchronous = NORMAL``: in WAL mode a power cut
      may undo the last commits, never corrupt the file). What this thread writes may be lost
      without harm: accounting counters are running totals per router session, so the next
      report after a power cut adds whatever the lost one did; a device binding lost is made
      again at the next login. Payments are never written from it. The fsync of every
      Interim-Update was 84 % of its time.
    - It keeps a larger page cache than the other connections (8 MB, not 2): every request
      reads the device index, and a cold page is a system call.

    On PostgreSQL the same bargain is ``synchronous_commit = off`` for this thread's sessions (a
    crash of the server may lose the last commits, never half of one): one RADIUS thread per
    process answers one request at a time, and waiting for the WAL flush of each Interim-Update
    was most of its time (``scripts/bench --central``).
    """
    db = models.database.obj
    if isinstance(db, postgres.PostgresqlDatabase):
        return db.set_for_this_thread("synchronous_commit", "off")
    if not isinstance(db, pw.SqliteDatabase):
        return None
    db.execute_sql("PRAGMA synchronous = NORMAL")
    db.execute_sql(f"PRAGMA cache_size = {RADIUS_CACHE_KB}")
    return db.execute_sql("PRAGMA synchronous").fetchone()[0]


def _v1(db: pw.Database) -> None:
    db.create_tables(models.V1_MODELS, safe=True)


def _v2(db: pw.Database) -> None:
    db.create_tables([models.Disconnect], safe=True)


def _v3(db: pw.Database) -> None:
    db.create_tables([models.Voucher, models.AdminUser], safe=True)


def _v4(db: pw.Database) -> None:
    # an ended session's device bindings are released (access.end_bindings): a regular's MAC
    # otherwise collects one active binding per day, and every RADIUS request walks them all;
    # the (mac, active) index grows the entitlement id so that lookup never reads the table
    db.execute_sql('DROP INDEX IF EXISTS "device_mac_active"')
    db.create_tables([models.Device], safe=True)      # creates the missing index only
    db.execute_sql('UPDATE "device" SET active = FALSE WHERE active AND entitlement_id IN'
                   ' (SELECT id FROM "entitlement" WHERE status <> \'active\')')


def _v5(db: pw.Database) -> None:
    db.create_tables([models.JobRun], safe=True)


def _v6(db: pw.Database) -> None:
    db.create_tables([models.Payment], safe=True)      # creates the missing (status, …) indexes only


#: (table, column) of migration v7, each added with its database default (the default venue)
V7_COLUMNS = (("package", "site"), ("package", "roams"), ("payment", "site"), ("entitlement", "site"),
              ("entitlement", "roams"), ("acct_session", "site"), ("admin_user", "sites"))


def _v7(db: pw.Database) -> None:
    # every existing row belongs to the default venue; an existing package stays on sale at every
    # venue (NULL), as it was. ALTER TABLE … ADD COLUMN with the model's own definition: NOT NULL
    # columns carry a DEFAULT, which both databases take without rewriting the table. A database
    # made new has the columns already (earlier steps create tables from today's models).
    models_by_table = {m._meta.table_name: m for m in models.ALL_MODELS}
    for table, column in V7_COLUMNS:
        if column in {c.name for c in db.get_columns(table)}:
            continue
        ctx = db.get_sql_context()
        definition, _ = ctx.sql(models_by_table[table]._meta.fields[column].ddl(ctx)).query()
        db.execute_sql(f'ALTER TABLE "{table}" ADD COLUMN {definition}')
    for model in (models.Package, models.Payment, models.Entitlement):
        db.create_tables([model], safe=True)          # the new columns' indexes


def _v8(db: pw.Database) -> None:
    db.create_tables([models.DarajaToken], safe=True)


def _v9(db: pw.Database) -> None:
    # a second name, in Kiswahili; the default packages an install was seeded with get theirs
    if "name_sw" not in {c.name for c in db.get_columns("package")}:
        ctx = db.get_sql_context()
        definition, _ = ctx.sql(models.Package._meta.fields["name_sw"].ddl(ctx)).query()
        db.execute_sql(f'ALTER TABLE "package" ADD COLUMN {definition}')
    for name, price, seconds, name_sw in DEFAULT_PACKAGES:
        (models.Package.update(name_sw=name_sw)
         .where(models.Package.name == name, models.Package.duration_seconds == seconds,
                models.Package.name_sw.is_null()).execute())


def _v10(db: pw.Database) -> None:
    # the customer's SMS (receipt, reminder, voucher) and the language a payment was made in
    if "lang" not in {c.name for c in db.get_columns("payment")}:
        ctx = db.get_sql_context()
        definition, _ = ctx.sql(models.Payment._meta.fields["lang"].ddl(ctx)).query()
        db.execute_sql(f'ALTER TABLE "payment" ADD COLUMN {definition}')
    db.create_tables([models.SmsMessage], safe=True)


def _v11(db: pw.Database) -> None:
    db.create_tables([models.ManualAccount, models.C2BTransaction, models.MpesaTransaction, models.ReceiptLookup],
                     safe=True)


#: (version, description, function). Append; never edit a released step.
MIGRATIONS: list[tuple[int, str, Callable[[pw.Database], None]]] = [
    (1, "initial schema", _v1),
    (2, "disconnect queue", _v2),
    (3, "vouchers and admin accounts", _v3),
    (4, "release the device bindings of ended sessions; a covering index for RADIUS", _v4),
    (5, "scheduled jobs shared by several processes", _v5),
    (6, "indexes for the reconcile job's questions", _v6),
    (7, "venues (sites): packages, payments, sessions and accounts carry their site", _v7),
    (8, "the Daraja access token of each consumer key, shared by every process", _v8),
    (9, "packages get a name in Kiswahili", _v9),
    (10, "SMS to customers; a payment keeps its page's language", _v10),
    (11, "payments from the M-Pesa menu (C2B), the M-Pesa statement (Pull) and code lookups (Transaction Status)",
     _v11),
]
LATEST = MIGRATIONS[-1][0]


def schema_version(db: pw.Database) -> int:
    if not db.table_exists(Setting._meta.table_name):
        return 0
    row = Setting.get_or_none(Setting.key == "schema_version")
    return int(row.value) if row else 0


def migrate(db: pw.Database) -> list[int]:
    """Bring the schema to :data:`LATEST`; returns the versions applied.

    Refuses a database newer than this code (a downgrade would lose data).
    """
    current = schema_version(db)
    if current > LATEST:
        raise RuntimeError(f"database schema version {current} is newer than this hotspotd ({LATEST}); upgrade hotspotd")
    applied = []
    # every pending step in one transaction: an upgrade that fails at any step leaves the
    # database exactly as the old version left it (SQLite and PostgreSQL both roll back DDL)
    with db.atomic():
        for version, description, step in MIGRATIONS:
            if version <= current:
                continue
            log.info("migrating database to version %d (%s)", version, description)
            step(db)
            Setting.put("schema_version", str(version))
            applied.append(version)
    return applied


def seed(db: pw.Database) -> None:
    """Default packages on first start; a per-install callback token."""
    with db.atomic():
        if not Setting.get_or_none(Setting.key == "packages_seeded"):
            if not Package.select().exists():
                now = time.time()
                for position, (name, price, seconds, name_sw) in enumerate(DEFAULT_PACKAGES):
                    Package.create(name=name, name_sw=name_sw, price=price, duration_seconds=seconds,
                                   position=position, created_at=now)
            Setting.put("packages_seeded", "1")
        if not Setting.get_or_none(Setting.key == "callback_token"):
            Setting.put("callback_token", new_callback_token())
        if not Setting.get_or_none(Setting.key == "database_id"):
            # not a secret: lets `hotspotd check` tell whether the running daemon uses this database
            Setting.put("database_id", secrets.token_hex(8))


def new_callback_token() -> str:
    """24 random bytes, URL-safe, without a word Daraja refuses in a callback URL ("exe", "sql",
    "cmd", …, in any case: config.CALLBACK_FORBIDDEN_WORDS); a random token holds one about one
    time in a hundred, and Register URL then refuses the install's C2B URLs."""
    from ..config import CALLBACK_FORBIDDEN_WORDS
    while True:
        token = secrets.token_urlsafe(24)
        if not any(word in token.lower() for word in CALLBACK_FORBIDDEN_WORDS):
            return token


def get_setting(key: str, default: str | None = None) -> str | None:
    row = Setting.get_or_none(Setting.key == key)
    return row.value if row else default


def prepare(url: str, busy_timeout_ms: int = 5000) -> pw.Database:
    """Open, migrate and seed: what the daemon and the CLI do before anything else."""
    db = open_database(url, busy_timeout_ms)
    db.connect(reuse_if_open=True)
    migrate(db)
    seed(db)
    return db


__all__ = ["open_database", "migrate", "seed", "prepare", "get_setting", "LATEST", "models"]
