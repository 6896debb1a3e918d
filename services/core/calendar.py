"""US equity-options market calendar (sessions, holidays, early closes, DST) from exchange_calendars.

Listed SPY/QQQ/SPX/NDX options follow the NYSE session (09:30-16:00 New York, 13:00 on early
closes); the calendar library owns the holiday and DST rules so we never hand-maintain them.
"""

from __future__ import annotations

import datetime as dt
import warnings
from functools import lru_cache
from typing import NamedTuple
from zoneinfo import ZoneInfo

import exchange_calendars as xcals
import pandas as pd

NEW_YORK = ZoneInfo("America/New_York")
NS_PER_S = 1_000_000_000
NS_PER_MIN = 60 * NS_PER_S


class Session(NamedTuple):
    """One trading session: its New York date and open/close in ns since epoch (UTC)."""

    date: dt.date
    open_ns: int
    close_ns: int

    @property
    def early_close(self) -> bool:
        return (self.close_ns - self.open_ns) < 6 * 3600 * NS_PER_S


class MarketCalendar:
    """Session lookups by date or timestamp, memoised (O(1) after the first call per day)."""

    def __init__(self, start: str = "2015-01-01", end: str | None = None) -> None:
        end = end or f"{dt.date.today().year + 2}-12-31"
        with warnings.catch_warnings():
            # exchange_calendars 4.13 trips a pandas 3 deprecation internally; nothing we can act on.
            warnings.simplefilter("ignore", DeprecationWarning)
            warnings.simplefilter("ignore", FutureWarning)
            warnings.filterwarnings("ignore", message="Series.values returning an ndarray")
            cal = xcals.get_calendar("XNYS", start=start, end=end)
        sched = cal.schedule
        self._sessions: dict[dt.date, Session] = {}
        for day, open_ts, close_ts in zip(sched.index, sched["open"], sched["close"], strict=True):
            d = day.date()
            self._sessions[d] = Session(d, int(open_ts.value), int(close_ts.value))
        self._ordered = sorted(self._sessions)
        self.first = self._ordered[0]
        self.last = self._ordered[-1]

    def _check_range(self, day: dt.date) -> None:
        if not self.first <= day <= self.last:
            raise ValueError(f"date {day} is outside the calendar's range {self.first}..{self.last}")

    def session(self, day: dt.date) -> Session | None:
        """The session on New York date ``day``, or None on weekends and holidays."""
        self._check_range(day)
        return self._sessions.get(day)

    def is_session(self, day: dt.date) -> bool:
        """True when the market is open on ``day``."""
        return self.session(day) is not None

    def session_for_ts(self, ts_ns: int) -> Session | None:
        """The session whose New York date contains ``ts_ns`` (even pre/post market), else None."""
        return self.session(ny_date(ts_ns))

    def is_open(self, ts_ns: int) -> bool:
        """True during regular trading hours."""
        s = self.session_for_ts(ts_ns)
        return s is not None and s.open_ns <= ts_ns < s.close_ns

    def minutes_to_close(self, ts_ns: int) -> float:
        """Minutes until the close of ``ts_ns``'s session (negative after the close, NaN off-days)."""
        s = self.session_for_ts(ts_ns)
        return float("nan") if s is None else (s.close_ns - ts_ns) / NS_PER_MIN

    def next_session(self, day: dt.date) -> Session:
        """The first session strictly after ``day``."""
        self._check_range(day)
        d = day + dt.timedelta(days=1)
        while d not in self._sessions:
            d += dt.timedelta(days=1)
            self._check_range(d)
        return self._sessions[d]

    def sessions_between(self, start: dt.date, end: dt.date) -> list[Session]:
        """Sessions with start <= date <= end."""
        return [self._sessions[d] for d in self._ordered if start <= d <= end]

    def expiry_close_ns(self, expiry: dt.date) -> int:
        """When an option expiring on ``expiry`` stops trading (the session close; 16:00 NY otherwise)."""
        s = self._sessions.get(expiry)
        if s is not None:
            return s.close_ns
        local = dt.datetime.combine(expiry, dt.time(16, 0), tzinfo=NEW_YORK)
        return int(local.timestamp()) * NS_PER_S


@lru_cache(maxsize=4096)
def _ny_date_of_utc_hour(hour_index: int) -> dt.date:
    ts = dt.datetime.fromtimestamp(hour_index * 3600, tz=dt.UTC).astimezone(NEW_YORK)
    return ts.date()


def ny_date(ts_ns: int) -> dt.date:
    """New York calendar date of a UTC ns timestamp (DST-aware; cached per UTC hour)."""
    return _ny_date_of_utc_hour(ts_ns // (3600 * NS_PER_S))


def ny_datetime(ts_ns: int) -> dt.datetime:
    """Timezone-aware New York datetime of a UTC ns timestamp."""
    moment: dt.datetime = pd.Timestamp(ts_ns, tz="UTC").tz_convert(NEW_YORK).to_pydatetime()
    return moment


def iso_ny(ts_ns: int) -> str:
    """ISO 8601 with the New York offset, e.g. ``2025-07-08T09:30:00-04:00``."""
    return ny_datetime(ts_ns).isoformat()


@lru_cache(maxsize=1)
def default_calendar() -> MarketCalendar:
    """Process-wide calendar instance (building it costs ~100 ms)."""
    return MarketCalendar()
