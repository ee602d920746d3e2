"""Clock jumps: hotspotd's timeline never runs backwards, and a jump ahead costs nobody paid time."""
import logging
import sys
import time

import pytest

from hotspotd import access, clock
from hotspotd.storage.models import Event, Setting

from tests.helpers import give_time

#: run again on PostgreSQL by scripts/test (-m postgres)
pytestmark = pytest.mark.postgres

MAC = "AA:BB:CC:DD:EE:80"


@pytest.fixture
def wall(monkeypatch):
    """Steer the wall clock: ``wall.jump(seconds)``."""
    class Wall:
        offset = 0.0

        def jump(self, seconds):
            self.offset += seconds

    w = Wall()
    monkeypatch.setattr(clock, "_wall", lambda: time.time() + w.offset)
    yield w
    monkeypatch.undo()
    clock.start()


def test_wall_clock_going_back_does_not_give_time(hotspot, wall):
    give_time(MAC, seconds=3600)
    before = access.authorize(MAC).remaining_seconds
    wall.jump(-2 * 3600)
    assert clock.drift() < -7000
    assert hotspot.timekeeper.keep() == 0
    assert access.authorize(MAC).remaining_seconds <= before
    assert clock.now() > time.time() - 5          # the timeline kept going


def test_wall_clock_jumping_ahead_moves_live_sessions(hotspot, wall):
    ent = give_time(MAC, seconds=3600)
    ended = give_time("AA:BB:CC:DD:EE:81", seconds=3600)
    access.revoke(ended.id, "test")
    wall.jump(3 * 3600)                            # e.g. NTP correcting a stale boot clock
    assert access.authorize(MAC).remaining_seconds > 3500     # nothing happens before the job notices
    assert hotspot.timekeeper.keep() == pytest.approx(3 * 3600, abs=2)
    grant = access.authorize(MAC)
    assert grant is not None and grant.remaining_seconds > 3500
    assert abs(clock.drift()) < 1
    assert hotspot.expire_sessions() == 0          # the jump did not end the session
    event = Event.get(Event.kind == "clock_jump")
    assert "1 live session(s)" in event.message
    assert access.entitlement_of(ent.payment).status == "active"
    assert hotspot.timekeeper.keep() == 0                # handled once


def test_restart_with_a_stale_clock_keeps_the_saved_time(make_hotspot, wall, caplog):
    hs = make_hotspot(scheduler={"enabled": False})
    give_time(MAC, seconds=600)
    hs.timekeeper.keep()
    saved = float(Setting.get_by_id("clock_high_water").value)
    assert saved == pytest.approx(time.time(), abs=5)
    hs.stop()
    wall.jump(-86400)                              # the Pi booted a day in the past
    Setting.put("clock_high_water", str(saved + 3600))
    with caplog.at_level(logging.WARNING, logger="hotspotd.timekeeping"):
        make_hotspot(scheduler={"enabled": False})
    assert clock.now() >= saved + 3600
    assert access.authorize(MAC) is None           # its 10 minutes were over an hour ago
    assert any("behind the last time" in r.message for r in caplog.records)


def test_unsynchronised_clock_is_reported(make_hotspot, monkeypatch, caplog):
    monkeypatch.setattr(clock, "synchronized", lambda: False)
    with caplog.at_level(logging.WARNING, logger="hotspotd.timekeeping"):
        hs = make_hotspot(scheduler={"enabled": False})
    assert hs.timekeeper.synchronized is False
    assert any("not NTP-synchronised" in r.message for r in caplog.records)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="adjtimex is Linux's")
def test_synchronized_asks_the_kernel():
    assert isinstance(clock.synchronized(), bool)   # None would mean adjtimex could not be called


def test_timeline_never_moves_back():
    with pytest.raises(ValueError):
        clock.advance(-1)
