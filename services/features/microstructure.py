"""Quote and trade microstructure: spread, microprice, order-flow imbalance, trade signs, intensities.

Everything runs on event time (the events' ``ts``), never the wall clock, so a replay reproduces
live numbers. Definitions:

- ``spread = ask - bid``; ``spread_bps = spread / mid * 1e4`` with ``mid = (bid + ask) / 2``.
- ``microprice = (bid * ask_size + ask * bid_size) / (bid_size + ask_size)`` (the mid when both
  sizes are 0).
- ``ofi``: Cont, Kukanov & Stoikov (2014) order-flow imbalance. Each quote after the first adds
  ``e_n = 1{Pb_n >= Pb_n-1} qb_n - 1{Pb_n <= Pb_n-1} qb_n-1 - 1{Pa_n <= Pa_n-1} qa_n
  + 1{Pa_n >= Pa_n-1} qa_n-1``; ``ofi`` is the sum of ``e_n`` over a rolling window bounded by
  event time (``window_s``) and/or event count (``max_events``).
- Trade sign (quote rule first, tick rule otherwise): a trade at or above the prevailing ask is +1,
  at or below the bid -1; in between (or with no quote yet) an uptick is +1, a downtick -1 and a
  zero tick repeats the previous sign (0 before any tick). ``trade_imbalance`` is the
  size-weighted mean sign over a rolling window: ``sum(sign * size) / sum(size)`` in [-1, 1].
- Intensities are exponentially decayed event rates in events per second:
  ``lambda(t) = sum_i exp(-(t - t_i) / tau) / tau``, so a steady rate r reads r.
"""

from __future__ import annotations

import math
from collections import deque

from services.core.calendar import NS_PER_S
from services.core.events import Quote, Trade

_RESUM_MIN = 1024


class RollingSum:
    """Sum of values over a window bounded by event time and/or event count (O(1) amortized)."""

    __slots__ = ("_removed", "_ts", "_values", "max_events", "total", "window_ns")

    def __init__(self, window_s: float | None = 60.0, max_events: int | None = None) -> None:
        if window_s is None and max_events is None:
            raise ValueError("a rolling window needs window_s, max_events or both")
        if window_s is not None and not window_s > 0.0:
            raise ValueError(f"window_s must be > 0, got {window_s!r}")
        if max_events is not None and max_events < 1:
            raise ValueError(f"max_events must be >= 1, got {max_events!r}")
        self.window_ns = None if window_s is None else round(window_s * NS_PER_S)
        self.max_events = max_events
        self._ts: deque[int] = deque()
        self._values: deque[float] = deque()
        self._removed = 0
        self.total = 0.0

    def __len__(self) -> int:
        return len(self._values)

    def add(self, ts_ns: int, value: float) -> None:
        """Append a value observed at ``ts_ns`` and drop what left the window."""
        self._ts.append(ts_ns)
        self._values.append(value)
        self.total += value
        if self.max_events is not None:
            while len(self._values) > self.max_events:
                self._pop()
        self.expire(ts_ns)

    def expire(self, now_ns: int) -> None:
        """Drop values at or before ``now_ns - window``."""
        if self.window_ns is None:
            return
        cutoff = now_ns - self.window_ns
        ts = self._ts
        while ts and ts[0] <= cutoff:
            self._pop()

    def _pop(self) -> None:
        self._ts.popleft()
        self.total -= self._values.popleft()
        self._removed += 1
        if not self._values:
            self.total = 0.0
            self._removed = 0
        elif self._removed >= max(_RESUM_MIN, len(self._values)):
            # Subtracting removed values leaves rounding residue; re-add from scratch now and then.
            self.total = math.fsum(self._values)
            self._removed = 0


class EventIntensity:
    """Exponentially decayed event rate (events per second) on event time."""

    __slots__ = ("_last_ns", "_level", "_tau_ns", "count", "tau_s")

    def __init__(self, tau_s: float = 10.0) -> None:
        if not tau_s > 0.0:
            raise ValueError(f"tau_s must be > 0, got {tau_s!r}")
        self.tau_s = tau_s
        self._tau_ns = tau_s * NS_PER_S
        self._level = 0.0
        self._last_ns = 0
        self.count = 0

    def add(self, ts_ns: int) -> None:
        """Record one event at ``ts_ns`` (an earlier time than the last counts as simultaneous)."""
        if self.count:
            dt = ts_ns - self._last_ns
            if dt > 0:
                self._level *= math.exp(-dt / self._tau_ns)
                self._last_ns = ts_ns
        else:
            self._last_ns = ts_ns
        self._level += 1.0 / self.tau_s
        self.count += 1

    def rate_at(self, now_ns: int) -> float:
        """Events per second as of ``now_ns``."""
        dt = now_ns - self._last_ns
        return self._level * math.exp(-dt / self._tau_ns) if dt > 0 else self._level


def order_flow_increment(
    bid: float,
    ask: float,
    bid_size: float,
    ask_size: float,
    prev_bid: float,
    prev_ask: float,
    prev_bid_size: float,
    prev_ask_size: float,
) -> float:
    """Cont–Kukanov–Stoikov ``e_n`` between two consecutive best quotes."""
    e = 0.0
    if bid >= prev_bid:
        e += bid_size
    if bid <= prev_bid:
        e -= prev_bid_size
    if ask <= prev_ask:
        e -= ask_size
    if ask >= prev_ask:
        e += prev_ask_size
    return e


def valid_quote(q: Quote) -> bool:
    """Finite positive prices, finite non-negative sizes and not crossed (locked is accepted)."""
    return 0.0 < q.bid <= q.ask < math.inf and 0.0 <= q.bid_size < math.inf and 0.0 <= q.ask_size < math.inf


def valid_trade(t: Trade) -> bool:
    """Finite positive price and finite non-negative size."""
    return 0.0 < t.price < math.inf and 0.0 <= t.size < math.inf


class Microstructure:
    """Top-of-book and tape features of one underlying, fed Quote and Trade events in event order."""

    __slots__ = (
        "_last_quote_ts",
        "_last_sign",
        "_last_trade_price",
        "_last_trade_ts",
        "_ofi",
        "_quote_rate",
        "_trade_rate",
        "_trade_signed",
        "_trade_size",
        "ask",
        "ask_size",
        "bid",
        "bid_size",
        "quotes",
        "trades",
    )

    def __init__(
        self,
        ofi_window_s: float | None = 60.0,
        ofi_window_events: int | None = None,
        trade_window_s: float | None = 60.0,
        trade_window_events: int | None = None,
        intensity_tau_s: float = 10.0,
    ) -> None:
        self._ofi = RollingSum(ofi_window_s, ofi_window_events)
        self._trade_signed = RollingSum(trade_window_s, trade_window_events)
        self._trade_size = RollingSum(trade_window_s, trade_window_events)
        self._quote_rate = EventIntensity(intensity_tau_s)
        self._trade_rate = EventIntensity(intensity_tau_s)
        self._last_quote_ts = -1
        self._last_trade_ts = -1
        self._last_trade_price = math.nan
        self._last_sign = 0
        self.bid = self.ask = math.nan
        self.bid_size = self.ask_size = 0.0
        self.quotes = 0
        self.trades = 0

    def on_quote(self, q: Quote) -> bool:
        """Update from a quote; False (ignored) when invalid, crossed or older than the last quote."""
        if q.ts < self._last_quote_ts or not valid_quote(q):
            return False
        if self.quotes:
            e = order_flow_increment(
                q.bid, q.ask, q.bid_size, q.ask_size, self.bid, self.ask, self.bid_size, self.ask_size
            )
            self._ofi.add(q.ts, e)
        self.bid = q.bid
        self.ask = q.ask
        self.bid_size = q.bid_size
        self.ask_size = q.ask_size
        self._last_quote_ts = q.ts
        self._quote_rate.add(q.ts)
        self.quotes += 1
        return True

    def classify(self, price: float) -> int:
        """Sign of a trade at ``price`` against the current quote and the last trade (no state change)."""
        if self.quotes:
            if price >= self.ask:
                return 1
            if price <= self.bid:
                return -1
        last = self._last_trade_price
        if price > last:
            return 1
        if price < last:
            return -1
        return self._last_sign

    def on_trade(self, t: Trade) -> bool:
        """Update from a trade; False (ignored) when invalid or older than the last trade."""
        if t.ts < self._last_trade_ts or not valid_trade(t):
            return False
        sign = self.classify(t.price)
        self._last_sign = sign
        self._last_trade_price = t.price
        self._last_trade_ts = t.ts
        self._trade_signed.add(t.ts, sign * t.size)
        self._trade_size.add(t.ts, t.size)
        self._trade_rate.add(t.ts)
        self.trades += 1
        return True

    @property
    def spread(self) -> float:
        return self.ask - self.bid

    @property
    def microprice(self) -> float:
        depth = self.bid_size + self.ask_size
        if depth > 0.0:
            return (self.bid * self.ask_size + self.ask * self.bid_size) / depth
        return (self.bid + self.ask) / 2.0

    def write(self, values: dict[str, float], now_ns: int) -> None:
        """Add the available features as of ``now_ns`` to ``values`` (windows expire, rates decay)."""
        if self.quotes:
            bid = self.bid
            ask = self.ask
            spread = ask - bid
            values["spread"] = spread
            values["spread_bps"] = spread / ((bid + ask) / 2.0) * 1e4
            values["microprice"] = self.microprice
            if self.quotes > 1:
                self._ofi.expire(now_ns)
                values["ofi"] = self._ofi.total
            values["quote_intensity"] = self._quote_rate.rate_at(now_ns)
        if self.trades:
            self._trade_signed.expire(now_ns)
            self._trade_size.expire(now_ns)
            size = self._trade_size.total
            if size > 0.0:
                imbalance = self._trade_signed.total / size
                values["trade_imbalance"] = (
                    -1.0 if imbalance < -1.0 else (1.0 if imbalance > 1.0 else imbalance)
                )
            values["trade_intensity"] = self._trade_rate.rate_at(now_ns)
