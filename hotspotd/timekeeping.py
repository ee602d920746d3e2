"""Keeping session time right when the wall clock jumps (see :mod:`hotspotd.clock`).

The expire job calls :meth:`Timekeeper.keep` on every tick. Ahead: live sessions move forward with
the timeline, in one transaction, so a correction (NTP after a boot without a battery clock,
someone setting the clock) costs no paid time. Back: the timeline carries on and time left never
grows. The latest time is saved now and then (``clock_high_water``), so a restart with a stale
clock does not go back either.
"""
from __future__ import annotations

import logging

from . import access, clock
from .storage.db import get_setting
from .storage.models import Setting, database

log = logging.getLogger(__name__)


class Timekeeper:
    JUMP_SECONDS = 2.0
    HIGH_WATER_EVERY = 60.0

    def __init__(self) -> None:
        #: whether the kernel says the clock is NTP-synchronised (None: cannot tell)
        self.synchronized: bool | None = None
        self._warned_sync = self._warned_back = self._saved_high_water = 0.0

    def start(self) -> None:
        """Carry on from the latest time this box recorded (the database must be open)."""
        high_water = float(get_setting("clock_high_water") or 0)
        behind = clock.start(high_water)
        if behind > 1:
            log.warning("the system clock is %.0f s behind the last time this box recorded; "
                        "keeping time from there until it is corrected (no battery clock? no NTP yet?)", behind)
        self._warn_unsynchronised(force=True)

    def keep(self) -> float:
        """Notice a wall-clock jump and handle it; returns the jump handled (0 if none)."""
        jump = clock.drift()
        handled = 0.0
        if jump > self.JUMP_SECONDS:
            with database.atomic():
                moved = access.shift_active(jump, clock.now())
                clock.advance(jump)
            log.warning("wall clock jumped %+.0f s; %d live session(s) moved with it", jump, moved)
            handled = jump
        elif jump < -self.JUMP_SECONDS and clock.now() - self._warned_back > 600:
            log.warning("wall clock is %.0f s behind hotspotd's time; keeping hotspotd's time", -jump)
            self._warned_back = clock.now()
        if clock.now() - self._saved_high_water >= self.HIGH_WATER_EVERY:
            self.save()
        self._warn_unsynchronised()
        return handled

    def save(self) -> None:
        """Record the current time as the latest this box has seen."""
        Setting.put("clock_high_water", f"{clock.now():.3f}")
        self._saved_high_water = clock.now()

    def _warn_unsynchronised(self, force: bool = False) -> None:
        if not force and clock.now() - self._warned_sync < 3600:
            return
        self.synchronized = clock.synchronized()
        if self.synchronized is False:
            log.warning("the system clock is not NTP-synchronised; session times rely on it "
                        "(enable systemd-timesyncd or chrony)")
            self._warned_sync = clock.now()
