"""Realized volatility against pandas rolling std and an exact per-window numpy std."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from numpy.lib.stride_tricks import sliding_window_view

from services.features.volatility import MINUTES_PER_YEAR, RECOMPUTE_EVERY, RealizedVolatility

from .conftest import assert_same_series

WINDOWS = (5, 15, 30, 60)
ANNUAL = math.sqrt(252 * 390)


def streaming(close: np.ndarray, windows: tuple[int, ...] = WINDOWS) -> np.ndarray:
    rv = RealizedVolatility(windows)
    out = np.full((len(close), len(windows)), np.nan)
    for i, c in enumerate(close.tolist()):
        rv.update(c)
        out[i] = rv.values
    return out


def exact_window_std(close: np.ndarray, w: int) -> np.ndarray:
    """Two-pass sample std of each full window of log returns, annualized."""
    r = np.diff(np.log(close))
    out = np.full(len(close), np.nan)
    if len(r) >= w:
        out[w:] = np.std(sliding_window_view(r, w), axis=1, ddof=1) * ANNUAL
    return out


@pytest.mark.realdata
def test_real_recordings_match_pandas_rolling_std(real_frame: pd.DataFrame) -> None:
    close = real_frame["close"].to_numpy()
    ours = streaming(close)
    returns = np.log(real_frame["close"]).diff()
    for i, w in enumerate(WINDOWS):
        expected = returns.rolling(w).std().to_numpy() * ANNUAL
        # pandas' online variance leaves ~1e-8 residue after a window turns flat; ours is exactly 0 there.
        assert_same_series(ours[:, i], expected, rtol=1e-8, atol=1e-7)
        assert_same_series(ours[:, i], exact_window_std(close, w), rtol=1e-9, atol=1e-12)


def test_no_drift_over_long_series_with_regime_changes() -> None:
    rng = np.random.default_rng(3)
    n = 5 * RECOMPUTE_EVERY + 77
    scale = np.where(np.arange(n) % 2000 < 1000, 1e-5, 1e-2)  # quiet / wild regimes
    close = 100.0 * np.exp(np.cumsum(rng.normal(0.0, 1.0, n) * scale))
    ours = streaming(close)
    for i, w in enumerate(WINDOWS):
        assert_same_series(ours[:, i], exact_window_std(close, w), rtol=1e-9, atol=1e-13)


def test_flat_prices_are_exactly_zero() -> None:
    close = np.array([100.0, 101.0, 99.0] + [100.0] * 10)
    ours = streaming(close, (3, 5))
    assert ours[-1, 0] == 0.0 and ours[-1, 1] == 0.0
    assert ours[5, 0] > 0.0


def test_warm_up_and_annualization() -> None:
    close = np.array([100.0, 101.0, 100.5, 102.0])
    ours = streaming(close, (2, 3))
    assert np.isnan(ours[1]).all()
    r = np.diff(np.log(close))
    assert ours[2, 0] == pytest.approx(np.std(r[:2], ddof=1) * ANNUAL, rel=1e-12)
    assert np.isnan(ours[2, 1])
    assert ours[3, 1] == pytest.approx(np.std(r, ddof=1) * ANNUAL, rel=1e-12)
    assert MINUTES_PER_YEAR == 98_280


@pytest.mark.parametrize("windows", [(), (1,), (5, 0), (2.5,)])
def test_rejects_bad_windows(windows: tuple[int, ...]) -> None:
    with pytest.raises(ValueError, match="windows"):
        RealizedVolatility(windows)
