"""ATR, +DI, -DI and ADX against TA-Lib (the oracle) on real recordings and seeded random walks."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from services.features.wilder import AverageTrueRange, DirectionalMovement

from .conftest import assert_same_series, random_walk_ohlc

talib = pytest.importorskip("talib")


def streaming(high: np.ndarray, low: np.ndarray, close: np.ndarray, period: int) -> tuple[np.ndarray, ...]:
    atr = AverageTrueRange(period)
    dm = DirectionalMovement(period)
    out = np.full((4, len(close)), np.nan)
    for i, (h, lo, c) in enumerate(zip(high.tolist(), low.tolist(), close.tolist(), strict=True)):
        atr.update(h, lo, c)
        dm.update(h, lo, c)
        if atr.ready:
            out[0, i] = atr.value
        if dm.di_ready:
            out[1, i] = dm.plus_di
            out[2, i] = dm.minus_di
        if dm.adx_ready:
            out[3, i] = dm.adx
    return tuple(out)


def talib_all(high: np.ndarray, low: np.ndarray, close: np.ndarray, period: int) -> tuple[np.ndarray, ...]:
    return (
        talib.ATR(high, low, close, timeperiod=period),
        talib.PLUS_DI(high, low, close, timeperiod=period),
        talib.MINUS_DI(high, low, close, timeperiod=period),
        talib.ADX(high, low, close, timeperiod=period),
    )


def assert_matches_talib(high: np.ndarray, low: np.ndarray, close: np.ndarray, period: int) -> None:
    ours = streaming(high, low, close, period)
    theirs = talib_all(high, low, close, period)
    for name, a, b in zip(("ATR", "PLUS_DI", "MINUS_DI", "ADX"), ours, theirs, strict=True):
        try:
            assert_same_series(a, b, rtol=1e-9, atol=1e-12)
        except AssertionError as exc:
            raise AssertionError(f"{name}({period}) differs from TA-Lib: {exc}") from None


@pytest.mark.realdata
@pytest.mark.parametrize("period", [14, 5, 30])
def test_real_recordings_match_talib(real_frame: pd.DataFrame, period: int) -> None:
    high, low, close = (real_frame[c].to_numpy() for c in ("high", "low", "close"))
    assert_matches_talib(high, low, close, period)


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("period", [2, 3, 14, 20])
def test_random_walks_match_talib(seed: int, period: int) -> None:
    high, low, close = random_walk_ohlc(seed, 3000, flat_runs=4)
    assert_matches_talib(high, low, close, period)


def test_first_outputs_follow_talib_lookback() -> None:
    high, low, close = random_walk_ohlc(42, 200)
    atr, plus, minus, adx = streaming(high, low, close, 14)
    assert np.isnan(atr[13]) and not np.isnan(atr[14])
    assert np.isnan(plus[13]) and not np.isnan(plus[14]) and not np.isnan(minus[14])
    assert np.isnan(adx[26]) and not np.isnan(adx[27])
    assert talib.ATR(high, low, close, 14)[14] == pytest.approx(atr[14], rel=1e-12)


def test_all_flat_prices_give_zero_di_and_adx_like_talib() -> None:
    flat = np.full(60, 100.0)
    assert_matches_talib(flat, flat.copy(), flat.copy(), 5)
    atr, plus, minus, adx = streaming(flat, flat.copy(), flat.copy(), 5)
    assert atr[-1] == 0.0 and plus[-1] == 0.0 and minus[-1] == 0.0 and adx[-1] == 0.0


def test_tiny_moves_after_long_flat_stretch_match_talib() -> None:
    # TR decays towards 0 over the flat stretch; TA-Lib keeps dividing as long as it is not exactly 0.
    size = 1500
    high = np.full(size, 101.0)
    high[:5] = 100.0
    high[900] = 101.0 + 1e-12
    low = high.copy()
    low[1200] = 101.0 - 1e-12
    close = high.copy()
    assert_matches_talib(high, low, close, 2)


def test_state_is_plain_floats() -> None:
    atr = AverageTrueRange(3)
    for h, lo, c in [(2.0, 1.0, 1.5), (2.5, 1.5, 2.0), (3.0, 2.0, 2.5), (3.5, 2.5, 3.0)]:
        atr.update(h, lo, c)
    assert type(atr.value) is float and math.isfinite(atr.value)


@pytest.mark.parametrize("period", [0, 1, -3, 2.5])
def test_rejects_bad_periods(period: object) -> None:
    with pytest.raises(ValueError, match="period"):
        AverageTrueRange(period)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="period"):
        DirectionalMovement(period)  # type: ignore[arg-type]
