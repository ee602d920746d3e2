"""Backups: taken online while the daemon writes, verified, rotated, restored; the daily job."""
import os
import threading

import pytest

from hotspotd import clock
from hotspotd.storage import backup, db
from hotspotd.service import cli
from hotspotd.storage.models import Event, Package, Payment

from tests.helpers import give_time


def test_online_backup_while_writing_then_restore_round_trip(make_hotspot, tmp_path):
    hs = make_hotspot(scheduler={"enabled": False})
    give_time("AA:BB:CC:DD:EE:A0")
    path = backup.sqlite_path(hs.config.database.url)
    stop = threading.Event()

    def writer():                               # the daemon keeps working during the backup
        while not stop.is_set():
            Event.create(at=clock.now(), kind="noise", message="x" * 200)
        hs.db.close()
    t = threading.Thread(target=writer)
    t.start()
    try:
        made = backup.backup(path, str(tmp_path / "b"), keep=3)
    finally:
        stop.set()
        t.join()
    assert oct(os.stat(made.path).st_mode & 0o777) == "0o600"
    snapshot_payments = Payment.select().count()
    assert snapshot_payments == 1
    # life goes on, then something goes wrong and the owner restores
    give_time("AA:BB:CC:DD:EE:A1")
    Package.update(price=999).execute()
    hs.stop()
    saved = backup.restore(path, made.path, str(tmp_path / "b"))
    database = db.prepare(hs.config.database.url)
    assert Payment.select().count() == snapshot_payments and Package.get(Package.name == "1 hour").price == 10
    database.close()
    # the state before the restore was kept, and can be restored in turn
    backup.restore(path, saved.path, str(tmp_path / "b"))
    database = db.prepare(hs.config.database.url)
    assert Payment.select().count() == 2 and Package.get(Package.name == "1 hour").price == 999
    database.close()


def test_rotation_keeps_the_newest(tmp_path):
    database = db.prepare(f"sqlite:///{tmp_path}/h.db")
    made = [backup.backup(str(tmp_path / "h.db"), str(tmp_path / "b"), keep=3) for _ in range(5)]
    left = backup.listing(str(tmp_path / "b"))
    assert len(left) == 3 and {b.path for b in left} == {m.path for m in made[-3:]}
    database.close()


def test_a_damaged_backup_is_refused(tmp_path):
    database = db.prepare(f"sqlite:///{tmp_path}/h.db")
    database.close()
    bad = tmp_path / "hotspotd-20260101-000000.db"
    bad.write_bytes(b"garbage" * 1000)
    with pytest.raises(backup.BackupError, match="not a hotspotd database"):
        backup.restore(str(tmp_path / "h.db"), str(bad), str(tmp_path / "b"))
    assert backup.listing(str(tmp_path / "b")) == []          # nothing touched, nothing saved


def test_cli_backup_backups_restore(tmp_path, capsys):
    (tmp_path / "h.toml").write_text(f'[database]\nurl = "sqlite:///{tmp_path}/h.db"\n'
                                     f'[backup]\nfolder = "{tmp_path}/bk"\n')
    cfg = ["--config", str(tmp_path / "h.toml")]
    assert cli.main(cfg + ["packages", "add", "--name", "Day", "--price", "40", "--minutes", "1440"]) == 0
    assert cli.main(cfg + ["db", "backup"]) == 0
    written = capsys.readouterr().out.split("backup written: ")[1].split(" (")[0]
    assert cli.main(cfg + ["packages", "disable", "4"]) == 0 and "disabled" in capsys.readouterr().out
    assert cli.main(cfg + ["db", "backups"]) == 0
    assert written in capsys.readouterr().out
    assert cli.main(cfg + ["db", "restore", written, "--yes"]) == 0
    assert "restored" in capsys.readouterr().out
    assert cli.main(cfg + ["packages", "list"]) == 0
    day = next(line for line in capsys.readouterr().out.splitlines() if "Day" in line)
    assert day.rstrip().endswith("active")                     # as it was when the backup was taken
    assert cli.main(cfg + ["db", "restore", str(tmp_path / "nope.db"), "--yes"]) == 1
    assert "no backup at" in capsys.readouterr().err


def test_postgres_installations_are_told_to_use_pg_dump():
    with pytest.raises(backup.BackupError, match="pg_dump"):
        backup.sqlite_path("postgresql://hotspotd@localhost/hotspotd")


def test_daily_job_backs_up_when_due(make_hotspot, tmp_path):
    hs = make_hotspot(scheduler={"enabled": False}, backup={"folder": str(tmp_path / "daily"), "every_hours": 24})
    first = hs.backup_if_due()
    assert first and os.path.exists(first)
    assert hs.backup_if_due() is None                          # not due again within the day
    old = clock.now() - 25 * 3600
    os.utime(first, (old, old))
    assert hs.backup_if_due() not in (None, first)
