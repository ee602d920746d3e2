"""Health: one kind of check for the dashboard's health page (:mod:`.live`, the running daemon)
and ``hotspotd check`` (:mod:`.install`, an installation before it runs).

Both answer a list of :class:`Check`; the page shows them as they are, the command one
:meth:`Check.line` each and exits non-zero on any ``fail``.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Mapping

OK, WARN, FAIL, INFO = "ok", "warn", "fail", "info"


@dataclass(frozen=True)
class Check:
    """One check. ``state``: ok | warn | fail | info; ``key`` a stable name (the page's
    ``data-check``), ``title`` what a person reads, ``items`` the lines under it."""
    key: str
    title: str
    state: str
    detail: str
    items: tuple[str, ...] = ()

    def line(self) -> str:
        """The line of ``hotspotd check``: a failure stands out in capitals."""
        state = "FAIL" if self.state == FAIL else self.state
        return f"{state:<4}  {self.title:<18} {self.detail}"


def bounded(calls: Mapping[str, tuple[Callable[[], Any], float]]) -> dict[str, tuple[str, Any]]:
    """Run each ``name: (function, seconds)`` at once on its own daemon thread and wait at most
    that long for each: ``{"name": ("ok", value) | ("error", exception) | ("timeout", seconds)}``.
    A call still running when its time is up is left to finish on its own (its own timeout ends it);
    the caller never waits longer than the largest bound."""
    results: dict[str, tuple[str, Any]] = {}
    threads = {}

    def run(name: str, fn: Callable[[], Any]) -> None:
        try:
            results[name] = ("ok", fn())
        except Exception as exc:  # noqa: BLE001 - reported on the page, never raised
            results[name] = ("error", exc)

    started = time.monotonic()
    for name, (fn, _) in calls.items():
        t = threading.Thread(target=run, args=(name, fn), name=f"health-{name}", daemon=True)
        t.start()
        threads[name] = t
    for name, t in threads.items():
        t.join(max(calls[name][1] - (time.monotonic() - started), 0))
    return {name: results.get(name, ("timeout", calls[name][1])) for name in calls}
