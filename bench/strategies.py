"""The VWAP-reversion strategy written for backtrader and for backtesting.py, for ``bench/backtest.py``.

Both engines trade the **underlying** (shares or index units), not options: neither has an options
model, chains, greeks or contract selection. The comparison with DreamBot's pipeline is therefore
one of engine overhead per bar, not of like-for-like work (DreamBot does strictly more per bar).

The rules, identical in both engines and close to DreamBot's ``vwap_reversion`` playbooks:

- session VWAP of the typical price ``(high + low + close) / 3`` weighted by volume, reset at each
  session's first bar, with volume-weighted sigma bands (``services.features.vwap`` definitions,
  sums kept around the session's first price);
- entry: flat, not the session's last bar, and ``close < vwap - 2 sigma < vwap`` (the bands have
  width: never on a session's first bar): buy ``SIZE`` units at market (next bar's open, both
  engines' default);
- exit: ``close >= vwap`` (reverted), ``close <= stop`` where the stop is the 3-sigma lower band
  as of the entry signal, or the session's last bar (day trading: flat overnight).

Each engine is written the way its documentation shows: backtrader computes the bands in a streaming
``Indicator`` and trades in ``Strategy.next``; backtesting.py computes them vectorized in
``Strategy.init`` with ``self.I`` and trades in ``next``. backtrader runs without its default
observers (``stdstats=False``), which only slow it down.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from services.core.calendar import ny_date
from services.core.events import Bar

SIZE = 1
ENTRY_SIGMA = 2.0
STOP_SIGMA = 3.0
CASH = 10_000_000.0  # enough for one NDX unit at any synthetic price


@dataclass(frozen=True)
class EngineRun:
    """One engine over one symbol's bars: wall time and round trips."""

    engine: str
    symbol: str
    bars: int
    seconds: float
    trades: int  # closed round trips (a position still open at the end of the data is not counted)


def bars_frame(bars: Sequence[Bar]) -> pd.DataFrame:
    """OHLCV with a (naive UTC) DatetimeIndex, plus ``Session`` (ordinal of the New York date)
    and ``Last`` (1.0 on a session's last bar): the input both engines read."""
    ts = np.fromiter((b.ts for b in bars), dtype=np.int64, count=len(bars))
    session = np.fromiter((ny_date(b.ts).toordinal() for b in bars), dtype=np.int64, count=len(bars))
    last = np.append(session[1:] != session[:-1], True).astype(np.float64)
    return pd.DataFrame(
        {
            "Open": [b.open for b in bars],
            "High": [b.high for b in bars],
            "Low": [b.low for b in bars],
            "Close": [b.close for b in bars],
            "Volume": [b.volume for b in bars],
            "Session": session.astype(np.float64),
            "Last": last,
        },
        index=pd.DatetimeIndex(ts.astype("datetime64[ns]")),
    )


def session_vwap_bands(
    high: np.ndarray, low: np.ndarray, close: np.ndarray, volume: np.ndarray, session: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(vwap, vwap - 2 sigma, vwap - 3 sigma) per bar, vectorized; NaN before a session has volume."""
    frame = pd.DataFrame(
        {
            "p": (np.asarray(high) + np.asarray(low) + np.asarray(close)) / 3.0,
            "v": np.asarray(volume, dtype=np.float64),
            "s": np.asarray(session),
        }
    )
    groups = frame.groupby("s", sort=False)
    p0 = groups["p"].transform("first")
    d = frame["p"] - p0
    vol = groups["v"].cumsum()
    s1 = (frame["v"] * d).groupby(frame["s"], sort=False).cumsum()
    s2 = (frame["v"] * d * d).groupby(frame["s"], sort=False).cumsum()
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(vol > 0, s1 / vol, np.nan)
        var = np.where(vol > 0, s2 / vol - mean * mean, np.nan)
    sigma = np.sqrt(np.where(var > 0, var, 0.0))
    sigma = np.where(np.isnan(var), np.nan, sigma)
    vwap = p0.to_numpy() + mean
    return vwap, vwap - ENTRY_SIGMA * sigma, vwap - STOP_SIGMA * sigma


# --- backtrader ---------------------------------------------------------------------------------


def run_backtrader(symbol: str, frame: pd.DataFrame) -> EngineRun:
    """The strategy in backtrader (feed built and run inside the timing)."""
    import backtrader as bt

    class SessionFeed(bt.feeds.PandasData):  # type: ignore[misc]
        lines = ("session", "last")
        params = (("session", "Session"), ("last", "Last"), ("openinterest", None))

    class SessionVwapBands(bt.Indicator):  # type: ignore[misc]
        lines = ("vwap", "lower2", "lower3")

        def __init__(self) -> None:
            self._session = None
            self._p0 = self._v = self._s1 = self._s2 = 0.0

        def next(self) -> None:
            d = self.data
            p = (d.high[0] + d.low[0] + d.close[0]) / 3.0
            session = d.session[0]
            if session != self._session:
                self._session, self._p0 = session, p
                self._v = self._s1 = self._s2 = 0.0
            v = d.volume[0]
            if v > 0.0:
                dev = p - self._p0
                self._v += v
                self._s1 += v * dev
                self._s2 += v * dev * dev
            if self._v > 0.0:
                mean = self._s1 / self._v
                var = self._s2 / self._v - mean * mean
                sigma = math.sqrt(var) if var > 0.0 else 0.0
                vwap = self._p0 + mean
                lines: Any = self.lines  # backtrader's metaclass turns the ``lines`` names into line objects
                lines.vwap[0] = vwap
                lines.lower2[0] = vwap - ENTRY_SIGMA * sigma
                lines.lower3[0] = vwap - STOP_SIGMA * sigma

    class VwapReversion(bt.Strategy):  # type: ignore[misc]
        def __init__(self) -> None:
            self.bands = SessionVwapBands(self.data)  # type: ignore[call-arg]  # bt.Indicator's metaclass
            self.stop_price = math.nan
            self.trades = 0

        def notify_trade(self, trade: bt.Trade) -> None:
            if trade.isclosed:
                self.trades += 1

        def next(self) -> None:
            close = self.data.close[0]
            vwap = self.bands.vwap[0]
            if self.position:
                if self.data.last[0] or close >= vwap or close <= self.stop_price:
                    self.close()
            elif not self.data.last[0] and close < self.bands.lower2[0] < vwap:
                self.stop_price = self.bands.lower3[0]
                self.buy(size=SIZE)

    start = time.perf_counter()
    cerebro = bt.Cerebro(stdstats=False)
    cerebro.broker.setcash(CASH)
    cerebro.adddata(SessionFeed(dataname=frame))
    cerebro.addstrategy(VwapReversion)
    strategy = cerebro.run()[0]
    seconds = time.perf_counter() - start
    return EngineRun("backtrader", symbol, len(frame), seconds, strategy.trades)


# --- backtesting.py -----------------------------------------------------------------------------


def run_backtesting(symbol: str, frame: pd.DataFrame) -> EngineRun:
    """The strategy in backtesting.py (vectorized bands in ``init``, decisions in ``next``)."""
    from backtesting import Backtest, Strategy

    class VwapReversion(Strategy):  # type: ignore[misc]
        def init(self) -> None:
            d = self.data
            bands = session_vwap_bands(d.High, d.Low, d.Close, d.Volume, d.Session)
            self.vwap = self.I(lambda: bands[0], name="vwap")
            self.lower2 = self.I(lambda: bands[1], name="lower2")
            self.lower3 = self.I(lambda: bands[2], name="lower3")
            self.stop_price = math.nan

        def next(self) -> None:
            close = self.data.Close[-1]
            last = self.data.Last[-1]
            if self.position:
                if last or close >= self.vwap[-1] or close <= self.stop_price:
                    self.position.close()
            elif not last and close < self.lower2[-1] < self.vwap[-1]:
                self.stop_price = self.lower3[-1]
                self.buy(size=SIZE)

    start = time.perf_counter()
    with warnings.catch_warnings():  # "some trades remain open": counted as backtrader counts them (not)
        warnings.filterwarnings("ignore", "Some trades remain open", UserWarning)
        stats = Backtest(frame, VwapReversion, cash=CASH).run()
    seconds = time.perf_counter() - start
    return EngineRun("backtesting.py", symbol, len(frame), seconds, int(stats["# Trades"]))
