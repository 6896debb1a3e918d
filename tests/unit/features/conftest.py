"""Shared inputs for the feature tests: the real recordings read with pandas, as Bar events."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

import numpy as np
import pandas as pd
import pytest

from services.core.calendar import NEW_YORK, NS_PER_S
from services.core.datasets import QQQ_1MIN_UTC, SPY_1MIN
from services.core.events import Bar
from tests.realdata import require_real


def read_recording(name: str) -> pd.DataFrame:
    """A real 1-minute recording as ts (int ns UTC), open, high, low, close, volume, symbol."""
    path = require_real(name)
    df = pd.read_csv(path)
    if "Symbol" in df.columns:  # the QQQ file: naive UTC
        stamps = pd.to_datetime(df["Datetime"]).dt.tz_localize("UTC")
        symbol = df["Symbol"].astype(str)
    else:  # the SPY file: New York offsets in the text
        stamps = pd.to_datetime(df["Datetime"], utc=True)
        symbol = pd.Series("SPY", index=df.index)
    return pd.DataFrame(
        {
            "ts": stamps.dt.as_unit("ns").astype("int64"),
            "open": df["Open"].astype("float64"),
            "high": df["High"].astype("float64"),
            "low": df["Low"].astype("float64"),
            "close": df["Close"].astype("float64"),
            "volume": df["Volume"].astype("float64"),
            "symbol": symbol,
        }
    )


def frame_bars(df: pd.DataFrame, symbol: str | None = None) -> list[Bar]:
    """Bar events of a frame with ts/open/high/low/close/volume columns (plain Python numbers)."""
    sym = symbol or str(df["symbol"].iloc[0])
    cols = (df[c].tolist() for c in ("ts", "open", "high", "low", "close", "volume"))
    return [
        Bar(ts=int(t), symbol=sym, open=o, high=h, low=lo, close=c, volume=float(v))
        for t, o, h, lo, c, v in zip(*cols, strict=True)
    ]


def ny_ns(day: str, hhmm: str) -> int:
    """ns since epoch of a New York wall-clock time, e.g. ``ny_ns("2025-07-09", "09:30")``."""
    t = dt.datetime.fromisoformat(f"{day}T{hhmm}").replace(tzinfo=NEW_YORK)
    return int(t.timestamp()) * NS_PER_S


def bar(ts: int, close: float, *, volume: float = 1000.0, symbol: str = "SPY", spread: float = 0.1) -> Bar:
    """A 1-minute bar centred on ``close``."""
    return Bar(
        ts=ts, symbol=symbol, open=close, high=close + spread, low=close - spread, close=close, volume=volume
    )


def random_walk_ohlc(seed: int, size: int, *, flat_runs: int = 0) -> tuple[np.ndarray, ...]:
    """Seeded random-walk high/low/close (with optional flat stretches where TR is exactly 0)."""
    rng = np.random.default_rng(seed)
    close = 100.0 + np.cumsum(rng.normal(0.0, 0.3, size))
    high = close + rng.uniform(0.0, 0.5, size)
    low = close - rng.uniform(0.0, 0.5, size)
    for start in rng.integers(30, size - 200, flat_runs):
        length = int(rng.integers(10, 150))
        level = close[start - 1]
        high[start : start + length] = level
        low[start : start + length] = level
        close[start : start + length] = level
    return high, low, close


def assert_same_series(
    actual: Sequence[float], expected: Sequence[float], *, rtol: float, atol: float = 0.0
) -> None:
    """Equal NaN positions and values within tolerance."""
    a = np.asarray(actual, dtype=float)
    e = np.asarray(expected, dtype=float)
    assert a.shape == e.shape
    np.testing.assert_array_equal(np.isnan(a), np.isnan(e), err_msg="warm-up / blank positions differ")
    mask = ~np.isnan(e)
    np.testing.assert_allclose(a[mask], e[mask], rtol=rtol, atol=atol)


@pytest.fixture(scope="session")
def spy_frame() -> pd.DataFrame:
    return read_recording(SPY_1MIN)


@pytest.fixture(scope="session")
def qqq_frame() -> pd.DataFrame:
    return read_recording(QQQ_1MIN_UTC)


@pytest.fixture(scope="session", params=[SPY_1MIN, QQQ_1MIN_UTC], ids=["spy", "qqq"])
def real_frame(request: pytest.FixtureRequest) -> pd.DataFrame:
    return read_recording(request.param)


def bad_print_mask(df: pd.DataFrame, fraction: float = 0.005) -> np.ndarray:
    """Bars with a wick beyond their body of more than ``fraction`` of the close (plain pandas).

    An oracle independent of :mod:`services.features.bar_quality` (no trailing median, no ATR): on
    the SPY recording it picks out exactly its bad prints (lows 1-16% under the body, mostly after
    hours), which the engine's rule must flag as spikes.
    """
    body_lo = df[["open", "close"]].min(axis=1)
    body_hi = df[["open", "close"]].max(axis=1)
    wick = np.maximum(body_lo - df["low"], df["high"] - body_hi)
    mask: np.ndarray = (wick > fraction * df["close"]).to_numpy(dtype=bool)
    return mask
