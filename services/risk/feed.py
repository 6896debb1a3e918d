"""Stale-feed watch: when market data of each underlying last arrived, and whether its feed is stale.

Risk's market data is the features topic: one FeatureVector per bar and underlying, stamped at the
bar's end. A bar is due one bar interval after the previous one, so "no data for
``stale_feed_seconds``" counts from when the next bar was due: an underlying's feed is stale when

    now - max(last arrival, the session's open) > bar interval + stale_feed_seconds

during regular hours of the market calendar (open <= now < close, early closes honoured); outside
them it is never stale. The bar interval is the smallest gap seen between two vectors' timestamps of
that underlying (60 s until two have been seen). An arrival is stamped with risk's clock at receipt,
not with the vector's own time; the engine drops a vector stamped in the future before it gets here,
so a future-dated timestamp never counts as fresh.

Clock: risk's engine clock. In a replay, backtest or lockstep run that is the replay clock (event
time), so a recording trips the watch only where it really has a hole; on a free-running live feed the
service also reports wall time carried forward from the last event (:meth:`FeedWatch.observe`),
so a silent feed is seen although no event moves event time.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from services.core.calendar import NS_PER_S, MarketCalendar

DEFAULT_INTERVAL_NS: Final = 60 * NS_PER_S


@dataclass(frozen=True, slots=True)
class FeedStatus:
    """The watch's view at one instant: seconds since each underlying's last arrival, the stale ones."""

    now_ns: int
    ages_s: dict[str, float]
    stale: tuple[str, ...]


class FeedWatch:
    """Newest arrival and bar interval per underlying; staleness on demand (pure: time is passed in)."""

    def __init__(self, stale_after_s: float | None, calendar: MarketCalendar) -> None:
        self._stale_after_ns = None if stale_after_s is None else round(stale_after_s * NS_PER_S)
        self._calendar = calendar
        self._arrived: dict[str, int] = {}  # underlying -> risk-clock time of its newest vector's arrival
        self._last_ts: dict[str, int] = {}  # underlying -> newest vector timestamp
        self._interval: dict[str, int] = {}  # underlying -> smallest positive timestamp gap seen
        self._observed_ns = 0  # newest trusted time reported by the service (free-running live only)

    @property
    def enabled(self) -> bool:
        return self._stale_after_ns is not None

    def arrived(self, symbol: str, ts: int, now: int) -> None:
        """A vector of ``symbol`` stamped ``ts`` arrived at risk-clock time ``now``."""
        last = self._last_ts.get(symbol)
        if last is not None and ts > last:
            gap = ts - last
            self._interval[symbol] = min(gap, self._interval.get(symbol, gap))
        if last is None or ts > last:
            self._last_ts[symbol] = ts
        self._arrived[symbol] = max(now, self._arrived.get(symbol, now))

    def observe(self, now: int) -> None:
        """A trusted later time (the service's wall-clock estimate while nothing arrives)."""
        self._observed_ns = max(self._observed_ns, now)

    def now(self, clock_ns: int) -> int:
        """The time staleness is judged at: the engine's clock, or a later observed time."""
        return max(clock_ns, self._observed_ns)

    def age_ns(self, symbol: str, now: int) -> int | None:
        """Nanoseconds since ``symbol``'s newest arrival (None before the first)."""
        arrived = self._arrived.get(symbol)
        return None if arrived is None else max(now - arrived, 0)

    def stale_reason(self, symbol: str, now: int) -> str | None:
        """Why ``symbol``'s feed is stale at ``now`` (None when it is not, or was never seen)."""
        if self._stale_after_ns is None or symbol not in self._arrived:
            return None
        session = self._calendar.session_for_ts(now)
        if session is None or not session.open_ns <= now < session.close_ns:
            return None
        since = max(self._arrived[symbol], session.open_ns)
        interval = self._interval.get(symbol, DEFAULT_INTERVAL_NS)
        silent = now - since
        if silent <= interval + self._stale_after_ns:
            return None
        return (f"{symbol} feed stale: no market data for {silent / NS_PER_S:.1f} s in regular hours "
                f"(bars every {interval / NS_PER_S:g} s, stale {self._stale_after_ns / NS_PER_S:g} s after one is due)")

    def status(self, now: int) -> FeedStatus:
        """Ages and stale underlyings at ``now``."""
        ages = {s: max(now - t, 0) / NS_PER_S for s, t in sorted(self._arrived.items())}
        stale = tuple(s for s in ages if self.stale_reason(s, now) is not None)
        return FeedStatus(now, ages, stale)
