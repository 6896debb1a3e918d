"""Injected clocks: engines ask a Clock for time, so a replay behaves exactly like live."""

from __future__ import annotations

import time
from typing import Protocol

NS_PER_S = 1_000_000_000


class Clock(Protocol):
    """Source of 'now' in ns since the Unix epoch (UTC)."""

    def now_ns(self) -> int:
        """Current time in ns."""


class ReplayClock:
    """Event-time clock: advanced by the replay, never moves backwards."""

    def __init__(self, start_ns: int = 0) -> None:
        self._now = start_ns

    def now_ns(self) -> int:
        return self._now

    def advance_to(self, ts_ns: int) -> None:
        """Move to ``ts_ns`` if it is later than now."""
        if ts_ns > self._now:
            self._now = ts_ns


class WallClock:
    """Real time, for services talking to live venues (never used by engines directly)."""

    def now_ns(self) -> int:
        return time.time_ns()
