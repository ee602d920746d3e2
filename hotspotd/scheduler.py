"""Background jobs on APScheduler: reconcile pending payments, end expired sessions.

Each job runs at most once at a time (``max_instances=1``), late runs are merged
(``coalesce``), and an exception in one run is logged and never stops the schedule.
"""
from __future__ import annotations

import logging
from datetime import datetime, timezone
from typing import Callable

from apscheduler.schedulers.background import BackgroundScheduler

log = logging.getLogger(__name__)


class Scheduler:
    def __init__(self) -> None:
        self._scheduler = BackgroundScheduler(timezone="UTC", job_defaults={
            "coalesce": True, "max_instances": 1, "misfire_grace_time": 30})
        self.runs: dict[str, int] = {}
        self.failures: dict[str, int] = {}

    def every(self, seconds: float, name: str, func: Callable[[], object]) -> None:
        def run() -> None:
            try:
                func()
                self.runs[name] = self.runs.get(name, 0) + 1
            except Exception:  # noqa: BLE001 - a failed run must not kill the schedule
                self.failures[name] = self.failures.get(name, 0) + 1
                log.exception("job %s failed", name)
        self._scheduler.add_job(run, "interval", seconds=seconds, id=name, name=name)

    def wake(self, name: str) -> None:
        """Run job ``name`` as soon as possible instead of at its next interval."""
        if self._scheduler.running:
            self._scheduler.modify_job(name, next_run_time=datetime.now(timezone.utc))

    @property
    def running(self) -> bool:
        return self._scheduler.running

    def start(self) -> None:
        self._scheduler.start()

    def stop(self) -> None:
        if self._scheduler.running:
            self._scheduler.shutdown(wait=True)
