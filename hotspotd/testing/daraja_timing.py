"""How long the Daraja simulator takes to answer: ``instant`` (the fixed delays tests and the demo
set) or ``realistic`` (what shared/reference/daraja.md, "Timing seen in sandbox" and "Callback",
reports, drawn per transaction from a seeded random generator).

Realistic, per push (seconds after it, before ``time_scale`` divides every figure):

* the STK query turns final after: success 15-30 ("Success visible on the query ~17 s after the
  push"; the issue's "about 15-30 s"), cancel 22-32 ("cancel ~27 s"), 1037 and 1036 (the phone was
  not reached) 12-16 ("timeout (1037) on the query ~14 s"), 1019 (the prompt expired: the customer
  never answered) 60-180 ("The phone prompt expires after roughly 1-3 minutes"); wrong PIN and no
  balance come when the customer answers, as a success does (15-30, a plain choice); codes refused
  before any prompt shows (busy, rule limited, push errors, the wrong operator) 2-6 (undocumented: a
  plain choice);
* the callback comes some seconds after that: 1037 and 1036 10-14 later ("its callback ~26 s"),
  any other 1-12 later (undocumented: "some seconds");
* ``lost_rate`` of the callbacks never come ("Delivered ONCE ... and sometimes never at all";
  "Sandbox callbacks sometimes never arrive"), and ``late_rate`` come 5-60 s after ``late_after``
  wall-clock seconds (hotspotd's payment timeout, ``[mpesa] prompt_lifetime_seconds``: the issue's
  "arrive after hotspotd's 180 s timeout").

Every push draws the same five numbers in the same order, so a seed replays a run's timings even
where outcomes differ. ``time_scale`` compresses the figures (10: a success in 1.5-3 s), for a
hotspotd whose own timings are compressed by the same factor; ``late_after`` is already wall-clock.
"""
from __future__ import annotations

import random
import secrets
from dataclasses import dataclass

INSTANT, REALISTIC = "instant", "realistic"
TIMINGS = (INSTANT, REALISTIC)

#: seconds from the push to the query's final answer, by result code (uniform between the two)
FINAL_AFTER = {"0": (15.0, 30.0), "1": (15.0, 30.0), "2001": (15.0, 30.0), "1032": (22.0, 32.0),
               "1037": (12.0, 16.0), "1036": (12.0, 16.0), "1019": (60.0, 180.0)}
#: any other code: refused before a prompt reached the phone
REFUSED_FINAL_AFTER = (2.0, 6.0)
#: seconds from the query's final answer to the callback
CALLBACK_AFTER_FINAL = {"1037": (10.0, 14.0), "1036": (10.0, 14.0)}
OTHER_CALLBACK_AFTER_FINAL = (1.0, 12.0)
#: how far past ``late_after`` a late callback comes
LATE_BY = (5.0, 60.0)
#: hotspotd's default payment timeout, the default ``late_after`` (before scaling)
PAYMENT_TIMEOUT = 180.0


@dataclass(frozen=True)
class Delays:
    """One push's timing: seconds after it the query is final, and the callback is posted (None:
    never); ``fate`` is ``on_time``, ``late``, ``lost`` (the network ate it) or ``none`` (the
    outcome sends none)."""
    final_after: float
    callback_delay: float | None
    fate: str


def instant(final_after: float, callback_delay: float, deliver: bool) -> Delays:
    """The fixed delays of instant timing."""
    return Delays(final_after, callback_delay if deliver else None, "on_time" if deliver else "none")


class RealisticTiming:
    """Draws each push's :class:`Delays` (call with the simulator's lock held: one generator)."""

    def __init__(self, seed: int | None = None, time_scale: float = 1.0, lost_rate: float = 0.1,
                 late_rate: float = 0.1, late_after: float | None = None):
        if time_scale <= 0:
            raise ValueError(f"time_scale must be greater than 0, not {time_scale!r}")
        for name, rate in (("lost_rate", lost_rate), ("late_rate", late_rate)):
            if not 0 <= rate <= 1:
                raise ValueError(f"{name} is a fraction from 0 to 1, not {rate!r}")
        #: replay a run's timings with the same seed
        self.seed = secrets.randbits(32) if seed is None else int(seed)
        self.time_scale, self.lost_rate, self.late_rate = float(time_scale), float(lost_rate), float(late_rate)
        #: wall-clock seconds after the push past which a late callback comes
        self.late_after = PAYMENT_TIMEOUT / self.time_scale if late_after is None else float(late_after)
        self._random = random.Random(self.seed)

    def draw(self, code: str, deliver: bool) -> Delays:
        r, scale = self._random, self.time_scale
        final = r.uniform(*FINAL_AFTER.get(code, REFUSED_FINAL_AFTER)) / scale
        callback = final + r.uniform(*CALLBACK_AFTER_FINAL.get(code, OTHER_CALLBACK_AFTER_FINAL)) / scale
        lost, late, late_by = r.random() < self.lost_rate, r.random() < self.late_rate, r.uniform(*LATE_BY) / scale
        if not deliver:
            return Delays(final, None, "none")
        if lost:
            return Delays(final, None, "lost")
        if late:
            return Delays(final, max(callback, self.late_after + late_by), "late")
        return Delays(final, callback, "on_time")

    def describe(self) -> str:
        return (f"realistic timing, seed {self.seed}, time scale {self.time_scale:g}, "
                f"{self.lost_rate:.0%} callbacks lost, {self.late_rate:.0%} late (after {self.late_after:g} s)")
