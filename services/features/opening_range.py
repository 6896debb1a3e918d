"""Opening range (high/low of the first N minutes of each regular session) and its breakout.

- The range collects the bars with ``open <= bar.ts < open + N min`` (``ts`` is the bar start).
- It is complete once a bar ends at or after ``open + N min`` (the range's last bar, or the first
  bar after it when that one is missing); only then are ``high``/``low`` published, so a consumer
  never mistakes a forming range for the final one.
- ``breakout`` is +1 when the bar closes above the range high, -1 below the range low, else 0.
- A session whose first bar comes after the window (a recording that starts mid-session) has no
  opening range.
- Values are published for regular-session bars only; each new session starts over.
"""

from __future__ import annotations

import math

from services.core.calendar import NS_PER_MIN, NS_PER_S, MarketCalendar

from .vwap import SessionLookup


class OpeningRange:
    """Opening range over the first ``minutes`` of each regular session; ``ready`` once complete."""

    __slots__ = (
        "_high",
        "_lookup",
        "_low",
        "_session_open",
        "_window_ns",
        "breakout",
        "high",
        "low",
        "minutes",
        "ready",
    )

    def __init__(
        self, minutes: int = 15, calendar: MarketCalendar | None = None, lookup: SessionLookup | None = None
    ) -> None:
        if not isinstance(minutes, int) or minutes < 1:
            raise ValueError(f"minutes must be an integer >= 1, got {minutes!r}")
        self.minutes = minutes
        self._window_ns = minutes * NS_PER_MIN
        self._lookup = lookup if lookup is not None else SessionLookup(calendar)
        self._session_open = -1
        self._high = -math.inf
        self._low = math.inf
        self.ready = False
        self.high = math.nan
        self.low = math.nan
        self.breakout = 0

    def update(self, ts_ns: int, high: float, low: float, close: float, interval_s: int = 60) -> None:
        """Feed one bar; resolves whether it is a regular-session bar from the calendar."""
        s = self._lookup.regular(ts_ns)
        if s is None:
            self.ready = False
            self.high = self.low = math.nan
            self.breakout = 0
            return
        self.update_regular(s.open_ns, ts_ns, ts_ns + interval_s * NS_PER_S, high, low, close)

    def update_regular(
        self, session_open_ns: int, ts_ns: int, end_ns: int, high: float, low: float, close: float
    ) -> None:
        """Feed a bar ``[ts_ns, end_ns)`` known to lie in the session opened at ``session_open_ns``."""
        if session_open_ns != self._session_open:
            self._session_open = session_open_ns
            self._high = -math.inf
            self._low = math.inf
        range_end = session_open_ns + self._window_ns
        if ts_ns < range_end:
            if high > self._high:
                self._high = high
            if low < self._low:
                self._low = low
        if end_ns >= range_end and self._high >= self._low:
            hi = self._high
            lo = self._low
            self.high = hi
            self.low = lo
            self.breakout = 1 if close > hi else (-1 if close < lo else 0)
            self.ready = True
        else:
            self.ready = False
            self.high = self.low = math.nan
            self.breakout = 0
