"""Background jobs on APScheduler: reconcile pending payments, end expired sessions.

Each job runs at most once at a time (``max_instances=1``), late runs are merged
(``coalesce``), and an exception in one run is logged and never stops the schedule.

Several hotspotd processes may share one PostgreSQL database (a central server): each runs its
own schedule, and :func:`hotspotd.storage.db.claim_run` lets one of them run a job per tick, never two at
once; when one process dies, the next tick's claim falls to another.
"""
from __future__ import annotations

import logging
from datetime import datetime, timezone
from contextlib import nullcontext
from typing import Callable, ContextManager

from apscheduler.schedulers.background import BackgroundScheduler

log = logging.getLogger(__name__)


class Scheduler:
    def __init__(self, claim: Callable[[str, float, bool], ContextManager[bool]] | None = None) -> None:
        """``claim(name, seconds, woken)``: a context manager saying whether this process runs
        this tick of job ``name`` (:func:`hotspotd.storage.db.claim_run`); None: always."""
        self._scheduler = BackgroundScheduler(timezone="UTC", job_defaults={
            "coalesce": True, "max_instances": 1, "misfire_grace_time": 30})
        self._claim = claim
        self._woken: set[str] = set()
        self.runs: dict[str, int] = {}
        self.skipped: dict[str, int] = {}
        self.failures: dict[str, int] = {}

    def every(self, seconds: float, name: str, func: Callable[[], object]) -> None:
        def run() -> None:
            woken = name in self._woken
            self._woken.discard(name)
            try:
                with (self._claim(name, seconds, woken) if self._claim else nullcontext(True)) as mine:
                    if not mine:
                        self.skipped[name] = self.skipped.get(name, 0) + 1
                        return
                    func()
                self.runs[name] = self.runs.get(name, 0) + 1
            except Exception:  # noqa: BLE001 - a failed run must not kill the schedule
                self.failures[name] = self.failures.get(name, 0) + 1
                log.exception("job %s failed", name)
        self._scheduler.add_job(run, "interval", seconds=seconds, id=name, name=name)

    def wake(self, name: str) -> None:
        """Run job ``name`` as soon as possible instead of at its next interval (even when
        another process ran it this tick: something happened here that it must see to)."""
        if self._scheduler.running:
            self._woken.add(name)
            self._scheduler.modify_job(name, next_run_time=datetime.now(timezone.utc))

    def has(self, name: str) -> bool:
        """Whether a job ``name`` is scheduled."""
        return self._scheduler.get_job(name) is not None

    @property
    def running(self) -> bool:
        return self._scheduler.running

    def start(self) -> None:
        self._scheduler.start()

    def stop(self) -> None:
        if self._scheduler.running:
            self._scheduler.shutdown(wait=True)
