"""Session VWAP with volume-weighted sigma bands, reset at each regular (NYSE) session open.

Choices, so every consumer reads the numbers the same way:

- Price is the bar's typical price ``(high + low + close) / 3``, weighted by the bar's volume.
- A bar belongs to the regular session when ``open <= bar.ts < close`` (``ts`` is the bar's
  start; the calendar supplies the open and close, early closes and DST included). The sums reset
  at the first regular-session bar of each new session.
- Outside regular hours (pre- and post-market, weekends, holidays) there is no VWAP value: the
  features are blank, whatever the extended-hours volume.
- A regular-session bar with zero volume leaves the sums unchanged; while the session's
  cumulative volume is still 0 the VWAP is blank.
- ``sigma = sqrt(sum(v * p^2) / sum(v) - vwap^2)``, a tiny negative variance (rounding) clamped to
  0; bands are ``vwap ± k * sigma``. To keep the subtraction from cancelling (p^2 ~ 4e5 while the
  variance is ~1), the sums are kept around the session's first typical price p0:
  ``vwap = p0 + S1 / V`` and ``sigma^2 = S2 / V - (S1 / V)^2`` with ``S1 = sum(v * (p - p0))`` and
  ``S2 = sum(v * (p - p0)^2)``, which is the same quantity algebraically.
"""

from __future__ import annotations

import datetime as dt
import math

from services.core.calendar import NEW_YORK, NS_PER_S, MarketCalendar, Session, default_calendar, ny_date


class SessionLookup:
    """The session of a timestamp's New York day (or None), cached per day so each lookup is O(1)."""

    __slots__ = ("_calendar", "_day_hi", "_day_lo", "session")

    def __init__(self, calendar: MarketCalendar | None = None) -> None:
        self._calendar = calendar if calendar is not None else default_calendar()
        self._day_lo = 0
        self._day_hi = 0
        self.session: Session | None = None

    def at(self, ts_ns: int) -> Session | None:
        """The session whose New York date contains ``ts_ns`` (pre/post market included), else None."""
        if self._day_lo <= ts_ns < self._day_hi:
            return self.session
        day = ny_date(ts_ns)
        start = dt.datetime.combine(day, dt.time(0), tzinfo=NEW_YORK)
        end = dt.datetime.combine(day + dt.timedelta(days=1), dt.time(0), tzinfo=NEW_YORK)
        self._day_lo = int(start.timestamp()) * NS_PER_S
        self._day_hi = int(end.timestamp()) * NS_PER_S
        self.session = self._calendar.session(day)
        return self.session

    def regular(self, ts_ns: int) -> Session | None:
        """The session when ``ts_ns`` is inside its regular hours, else None."""
        s = self.at(ts_ns)
        if s is not None and s.open_ns <= ts_ns < s.close_ns:
            return s
        return None


class SessionVwap:
    """Session VWAP and sigma; ``ready`` is False (values NaN) outside regular hours or before volume."""

    __slots__ = ("_lookup", "_p0", "_s1", "_s2", "_session_open", "_volume", "ready", "sigma", "value")

    def __init__(self, calendar: MarketCalendar | None = None, lookup: SessionLookup | None = None) -> None:
        self._lookup = lookup if lookup is not None else SessionLookup(calendar)
        self._session_open = -1
        self._p0 = 0.0
        self._volume = 0.0
        self._s1 = 0.0
        self._s2 = 0.0
        self.ready = False
        self.value = math.nan
        self.sigma = math.nan

    def update(self, ts_ns: int, high: float, low: float, close: float, volume: float) -> None:
        """Feed one bar; resolves whether it is a regular-session bar from the calendar."""
        s = self._lookup.regular(ts_ns)
        if s is None:
            self.ready = False
            self.value = self.sigma = math.nan
            return
        self.update_regular(s.open_ns, high, low, close, volume)

    def update_regular(
        self, session_open_ns: int, high: float, low: float, close: float, volume: float
    ) -> None:
        """Feed a bar already known to lie in the regular session that opened at ``session_open_ns``."""
        p = (high + low + close) / 3.0
        if session_open_ns != self._session_open:
            self._session_open = session_open_ns
            self._p0 = p
            self._volume = 0.0
            self._s1 = 0.0
            self._s2 = 0.0
        if volume > 0.0:
            d = p - self._p0
            vd = volume * d
            self._volume += volume
            self._s1 += vd
            self._s2 += vd * d
        total = self._volume
        if total > 0.0:
            mean = self._s1 / total
            var = self._s2 / total - mean * mean
            self.value = self._p0 + mean
            self.sigma = math.sqrt(var) if var > 0.0 else 0.0
            self.ready = True
        else:
            self.ready = False
            self.value = self.sigma = math.nan

    def band(self, k: float) -> tuple[float, float]:
        """(lower, upper) band at ``k`` sigma (NaN when not ready)."""
        return self.value - k * self.sigma, self.value + k * self.sigma
