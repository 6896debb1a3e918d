"""The vectorised batch path gives the streaming engine's numbers (to 1e-12 relative)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from services.core.calendar import NS_PER_MIN
from services.core.events import Bar
from services.features.batch import batch_bar_features, batch_features_of_bars, session_bounds
from services.features.engine import FeatureConfig, FeatureEngine, bar_feature_names

from .conftest import assert_same_series, frame_bars, ny_ns, random_walk_ohlc


def streaming_frame(bars: list[Bar], config: FeatureConfig | None = None) -> pd.DataFrame:
    engine = FeatureEngine(bars[0].symbol, config)
    rows = [engine.on_bar(b).values for b in bars]
    return pd.DataFrame(rows, columns=list(bar_feature_names(config)), dtype="float64")


def assert_batch_equals_streaming(bars: list[Bar], config: FeatureConfig | None = None) -> None:
    batch = batch_features_of_bars(bars, config=config)
    stream = streaming_frame(bars, config)
    assert list(batch.columns) == list(stream.columns)
    assert len(batch) == len(stream)
    for col in stream.columns:
        try:
            assert_same_series(batch[col].to_numpy(), stream[col].to_numpy(), rtol=1e-12)
        except AssertionError as exc:
            raise AssertionError(f"{col}: {exc}") from None


@pytest.mark.realdata
def test_real_recordings_batch_equals_streaming(real_frame: pd.DataFrame) -> None:
    assert_batch_equals_streaming(frame_bars(real_frame))


@pytest.mark.realdata
def test_real_recording_with_custom_periods(spy_frame: pd.DataFrame) -> None:
    config = FeatureConfig(
        atr_period=5,
        adx_period=9,
        rv_windows=(2, 7, 100),
        opening_range_minutes=(1, 60),
        vwap_band_sigmas=(2,),
    )
    assert_batch_equals_streaming(frame_bars(spy_frame), config)


def test_synthetic_days_with_gaps_flat_runs_and_zero_volume() -> None:
    high, low, close = random_walk_ohlc(11, 4000, flat_runs=6)
    start = ny_ns("2025-03-06", "04:00")  # across the March DST switch and a weekend
    rng = np.random.default_rng(11)
    ts = start + np.cumsum(rng.choice([1, 1, 1, 2, 30, 600], size=close.size)) * NS_PER_MIN
    volume = rng.choice([0.0, 0.0, 10.0, 5e4], size=close.size)
    bars = [
        Bar(
            ts=int(t),
            symbol="XYZ",
            open=float(c),
            high=float(h),
            low=float(lo),
            close=float(c),
            volume=float(v),
        )
        for t, h, lo, c, v in zip(ts, high, low, close, volume, strict=True)
    ]
    assert_batch_equals_streaming(bars)


def test_session_bounds_follow_the_calendar() -> None:
    ts = np.array([ny_ns("2025-07-03", "09:30"), ny_ns("2025-07-04", "10:00"), ny_ns("2025-07-07", "20:00")])
    opens, closes = session_bounds(ts)
    assert opens[0] == ny_ns("2025-07-03", "09:30") and closes[0] == ny_ns("2025-07-03", "13:00")
    assert opens[1] == -1 and closes[1] == -1  # Independence Day
    assert opens[2] == ny_ns("2025-07-07", "09:30") and closes[2] == ny_ns("2025-07-07", "16:00")


def test_rejects_unordered_or_invalid_input() -> None:
    ts = np.array([2, 1]) * NS_PER_MIN + ny_ns("2025-07-09", "09:30")
    one = np.ones(2)
    with pytest.raises(ValueError, match="increasing"):
        batch_bar_features(ts, one, one, one, one)
    with pytest.raises(ValueError, match="finite"):
        batch_bar_features(ts[::-1], one, one, np.array([1.0, np.nan]), one)
    with pytest.raises(ValueError, match="length"):
        batch_bar_features(ts, one, one, one, np.ones(3))


def test_index_is_new_york_time() -> None:
    ts = np.array([ny_ns("2025-07-09", "09:30")])
    frame = batch_bar_features(ts, [101.0], [99.0], [100.0], [10.0])
    assert str(frame.index.tz) == "America/New_York"
    assert frame.index[0].hour == 9 and frame.index[0].minute == 30
    assert frame["vwap"].iloc[0] == 100.0
