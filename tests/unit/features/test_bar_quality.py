"""Bad bars (zero-volume regular-hours bars, one-bar spikes) are flagged and feed no indicator."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from services.core.calendar import NS_PER_MIN, default_calendar
from services.core.events import Bar
from services.features.bar_quality import BarFlag, BarQuality, BarQualityConfig
from services.features.engine import FeatureConfig, FeatureEngine

from .conftest import bad_print_mask, frame_bars, ny_ns, random_walk_ohlc
from .test_batch import assert_batch_equals_streaming

talib = pytest.importorskip("talib")


@pytest.mark.realdata
def test_a_real_bad_print_no_longer_moves_atr(spy_frame: pd.DataFrame) -> None:
    # 2025-07-08 08:33 New York: SPY printed a low of 523.12 with the body at 621.1-621.19.
    i = int(np.flatnonzero(spy_frame["low"].to_numpy() == 523.12)[0])
    hlc = [spy_frame[c].to_numpy() for c in ("high", "low", "close")]
    raw_atr = talib.ATR(*hlc, 14)
    assert raw_atr[i] / raw_atr[i - 1] > 5  # the defect: one print moved ATR more than fivefold
    engine = FeatureEngine("SPY")
    rows = [engine.on_bar(b).values for b in frame_bars(spy_frame.iloc[: i + 2])]
    assert engine.flagged[BarFlag.SPIKE] == 1 and "atr_14" not in rows[i]
    good = spy_frame.iloc[: i + 2].drop(index=spy_frame.index[i])
    oracle = talib.ATR(*(good[c].to_numpy() for c in ("high", "low", "close")), 14)
    assert rows[i + 1]["atr_14"] == pytest.approx(oracle[-1], rel=1e-12)
    assert rows[i + 1]["atr_14"] == pytest.approx(rows[i - 1]["atr_14"], rel=0.5)  # no jump at all


@pytest.mark.realdata
def test_the_real_regular_hours_spike_of_the_qqq_recording(qqq_frame: pd.DataFrame) -> None:
    engine = FeatureEngine("QQQ")
    bars = frame_bars(qqq_frame)
    flags = []
    for b in bars:
        engine.on_bar(b)
        flags.append(engine.last_flag)
    cal = default_calendar()
    rth_spikes = [b for b, f in zip(bars, flags, strict=True) if f is BarFlag.SPIKE and cal.is_open(b.ts)]
    # 2025-05-19 12:21 New York (16:21 UTC in the file): low 516.30 under a 520.02-520.05 body.
    assert [(b.ts, b.low) for b in rth_spikes] == [(ny_ns("2025-05-19", "12:21"), 516.30)]
    flagged = np.array([f is not None for f in flags])
    assert engine.flagged == {BarFlag.SPIKE: int(flagged.sum()), BarFlag.ZERO_VOLUME: 0}
    # Every flag is a wick of more than 0.5 % of the price (plain pandas), and the count is small.
    assert bad_print_mask(qqq_frame)[flagged].all() and 0 < flagged.sum() < 20


def _day(day: str, closes: list[float], *, volumes: list[float] | None = None, start: str = "09:30") -> list[Bar]:
    t0 = ny_ns(day, start)
    vols = volumes or [1000.0] * len(closes)
    return [Bar(ts=t0 + i * NS_PER_MIN, symbol="SPY", open=c, high=c + 0.1, low=c - 0.1, close=c, volume=v)
            for i, (c, v) in enumerate(zip(closes, vols, strict=True))]


def test_a_zero_volume_regular_hours_bar_feeds_nothing() -> None:
    closes = [600.0 + 0.05 * (i % 7) for i in range(40)]
    volumes = [1000.0] * 40
    volumes[30] = 0.0
    bars = _day("2025-07-09", closes, volumes=volumes)
    engine = FeatureEngine("SPY")
    rows = [engine.on_bar(b).values for b in bars]
    assert engine.flagged == {BarFlag.ZERO_VOLUME: 1, BarFlag.SPIKE: 0}
    assert rows[30] == {"close": closes[30], "minutes_since_open": 31.0, "minutes_to_close": 359.0}
    # The later vectors equal an engine that never saw the bar (its ATR, ADX, VWAP, opening range).
    clean = FeatureEngine("SPY")
    expected = [clean.on_bar(b).values for b in bars[:30] + bars[31:]]
    for got, want in zip(rows[31:], expected[30:], strict=True):
        assert got == want


def test_zero_volume_outside_regular_hours_is_not_flagged() -> None:
    bars = _day("2025-07-09", [600.0] * 20, volumes=[0.0] * 20, start="07:00")
    engine = FeatureEngine("SPY")
    for b in bars:
        engine.on_bar(b)
    assert engine.flagged[BarFlag.ZERO_VOLUME] == 0 and "atr_14" in (engine.latest.values if engine.latest else {})


def test_a_wick_spike_is_flagged_and_a_gap_is_not() -> None:
    quality = BarQuality(BarQualityConfig())
    for i in range(30):  # ATR 0.2, median 600: threshold max(10 x 0.2, 0.005 x 600) = 3.0
        assert quality.classify(600.0, 600.1, 599.9, 600.0 + 0.001 * (i % 2), 1000.0, True) is None
    assert quality.classify(600.0, 600.1, 596.8, 600.0, 1000.0, True) is BarFlag.SPIKE  # 3.2 below body
    assert quality.classify(600.0, 600.1, 597.1, 600.0, 1000.0, True) is None  # 2.9: inside T
    # A gap: body and range both far from the median (close 594), the wick beyond the body small.
    assert quality.classify(594.5, 594.6, 593.9, 594.0, 1000.0, True) is None
    assert BarQuality(BarQualityConfig(enabled=False)).classify(600, 600, 600, 600, 0.0, True) is None


def test_bad_bar_rule_parameters_are_validated() -> None:
    for kwargs in ({"spike_k": 0.0}, {"spike_window": 2}, {"spike_floor_bps": -1.0}, {"atr_period": 1}):
        with pytest.raises(ValueError):
            BarQualityConfig(**kwargs)


def test_batch_equals_streaming_with_spikes_and_zero_volume_bars() -> None:
    high, low, close = random_walk_ohlc(5, 3000)
    rng = np.random.default_rng(5)
    spikes = rng.choice(np.arange(100, close.size), size=25, replace=False)
    low[spikes] = np.minimum(low[spikes], close[spikes]) - rng.uniform(2.0, 9.0, size=spikes.size)
    up = spikes[:10]
    high[up] = np.maximum(high[up], close[up]) + 12.0
    start = ny_ns("2025-07-08", "08:00")
    ts = start + np.cumsum(rng.choice([1, 1, 1, 2, 17], size=close.size)) * NS_PER_MIN
    volume = rng.choice([0.0, 500.0, 5e4], size=close.size, p=[0.05, 0.45, 0.5])
    bars = [Bar(ts=int(t), symbol="XYZ", open=float(c), high=float(h), low=float(lo), close=float(c),
                volume=float(v)) for t, h, lo, c, v in zip(ts, high, low, close, volume, strict=True)]
    engine = FeatureEngine("XYZ")
    for b in bars:
        engine.on_bar(b)
    assert engine.flagged[BarFlag.SPIKE] >= 10 and engine.flagged[BarFlag.ZERO_VOLUME] >= 10
    assert_batch_equals_streaming(bars)
    assert_batch_equals_streaming(bars, FeatureConfig(bar_quality=BarQualityConfig(spike_k=4.0, spike_window=5)))
