"""``hotspotd db copy``: a single venue's SQLite database onto the central PostgreSQL server.

Every row of every table moves with its id (receipts, sessions, events and the callback token
stay what they were), in one transaction on the target: a copy that fails part-way leaves the
target as empty as it was. The source is only read (and first brought to this version's schema,
as the daemon would). The target must be empty: a copy never merges into a database in use.
"""
from __future__ import annotations

from dataclasses import dataclass

import peewee as pw
from playhouse.db_url import connect as connect_url

from . import db as db_mod, models, paths


class CopyError(Exception):
    """Why the copy was refused or failed; the target is unchanged."""


@dataclass
class Copied:
    table: str
    rows: int


def _open(url: str) -> pw.Database:
    path = paths.sqlite_path(url)
    if path is not None:
        return db_mod._SqliteDatabase(path, pragmas={"foreign_keys": 1, "busy_timeout": 5000})
    return connect_url(url.replace("postgres://", "postgresql://", 1))


def copy(source_url: str, target_url: str, batch: int = 5000, progress=None) -> list[Copied]:
    """Copy every table from ``source_url`` to the empty database at ``target_url``.
    ``progress(table, rows)`` is told as each table is done. Returns the rows per table."""
    if source_url == target_url:
        raise CopyError("source and target are the same database")
    source, target = _open(source_url), _open(target_url)
    done: list[Copied] = []
    try:
        # bring both to this version's schema; models are bound to one database at a time
        for database in (source, target):
            models.database.initialize(database)
            database.connect(reuse_if_open=True)
            db_mod.migrate(database)
        busy = [m._meta.table_name for m in models.ALL_MODELS
                if m is not models.Setting and m.select().exists()]
        if busy:
            raise CopyError(f"the target already holds data ({', '.join(busy)}): copy only into a new, empty "
                            f"database")
        with target.atomic():
            for model in models.ALL_MODELS:
                rows = _copy_table(model, source, target, batch)
                done.append(Copied(model._meta.table_name, rows))
                if progress:
                    progress(model._meta.table_name, rows)
            if isinstance(target, pw.PostgresqlDatabase):
                _continue_sequences(target)
        models.database.initialize(source)
        for model in models.ALL_MODELS:
            if model is models.Setting:
                continue
            count = source.execute_sql(f'SELECT COUNT(*) FROM "{model._meta.table_name}"').fetchone()[0]
            copied = target.execute_sql(f'SELECT COUNT(*) FROM "{model._meta.table_name}"').fetchone()[0]
            if count != copied:
                raise CopyError(f"{model._meta.table_name}: {count} rows in the source, {copied} in the target")
        if isinstance(target, pw.PostgresqlDatabase):
            # statistics for the planner: without them RADIUS's lookup took 1.75 ms instead of 0.26
            # on a copied database until autovacuum came round (scripts/bench --central)
            target.execute_sql("ANALYZE")
    except (pw.DatabaseError, pw.InterfaceError, ValueError) as exc:
        raise CopyError(f"copy failed, the target is unchanged: {exc}") from exc
    finally:
        source.close()
        target.close()
    return done


def _copy_table(model, source: pw.Database, target: pw.Database, batch: int) -> int:
    fields = list(model._meta.sorted_fields)
    columns = ", ".join(f'"{f.column_name}"' for f in fields)
    booleans = [i for i, f in enumerate(fields) if isinstance(f, pw.BooleanField)]
    table = model._meta.table_name
    if model is models.Setting:
        # the target's migration wrote its own schema version: the source's other settings win
        target.execute_sql(f'DELETE FROM "{table}"')
    insert = f'INSERT INTO "{table}" ({columns}) VALUES ({", ".join([target.param] * len(fields))})'
    cursor = source.execute_sql(f'SELECT {columns} FROM "{table}" ORDER BY 1')
    total = 0
    while True:
        rows = cursor.fetchmany(batch)
        if not rows:
            return total
        if booleans:     # SQLite keeps booleans as 0/1; PostgreSQL wants true/false
            rows = [tuple(bool(v) if i in booleans and v is not None else v for i, v in enumerate(row)) for row in rows]
        out = target.cursor()
        out.executemany(insert, rows)
        total += len(rows)


def _continue_sequences(target: pw.Database) -> None:
    """New rows on PostgreSQL get ids after the copied ones."""
    for model in models.ALL_MODELS:
        pk = model._meta.primary_key
        if isinstance(pk, pw.AutoField):
            table = model._meta.table_name
            target.execute_sql(f"SELECT setval(pg_get_serial_sequence('\"{table}\"', '{pk.column_name}'), "
                               f'COALESCE((SELECT MAX("{pk.column_name}") FROM "{table}"), 0) + 1, false)')
