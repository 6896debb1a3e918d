"""FeatureEngine: names, warm-up, regular-hours gating, merging of quotes/trades/chains, robustness."""

from __future__ import annotations

import math
import sys
import types
from typing import Any

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.core.calendar import NS_PER_MIN, NS_PER_S, default_calendar
from services.core.events import Bar, ChainSnapshot, OptionQuote, Quote, Trade
from services.features.bar_quality import BarFlag
from services.features.engine import (
    MICROSTRUCTURE_FEATURES,
    FeatureConfig,
    FeatureEngine,
    bar_feature_names,
    feature_names,
)

from .conftest import bad_print_mask, bar, frame_bars, ny_ns

talib = pytest.importorskip("talib")

NAMES = [
    "close",
    "vwap",
    "vwap_upper_1",
    "vwap_upper_2",
    "vwap_upper_3",
    "vwap_lower_1",
    "vwap_lower_2",
    "vwap_lower_3",
    "atr_14",
    "adx_14",
    "plus_di_14",
    "minus_di_14",
    "vwap_sigma",
    "rv_5",
    "rv_15",
    "rv_30",
    "rv_60",
    "or_high_15",
    "or_low_15",
    "or_breakout_15",
    "or_high_30",
    "or_low_30",
    "or_breakout_30",
    "vwap_dist_atr",
    "minutes_since_open",
    "minutes_to_close",
]
REGULAR_ONLY = {n for n in NAMES if n.startswith(("vwap", "or_", "minutes"))}


def run(bars: list[Bar], config: FeatureConfig | None = None) -> tuple[FeatureEngine, list[dict[str, float]]]:
    engine = FeatureEngine(bars[0].symbol, config)
    return engine, [engine.on_bar(b).values for b in bars]


def test_feature_names_are_stable() -> None:
    assert list(bar_feature_names()) == NAMES
    assert feature_names() == tuple(NAMES) + MICROSTRUCTURE_FEATURES
    assert MICROSTRUCTURE_FEATURES == (
        "spread",
        "spread_bps",
        "microprice",
        "ofi",
        "trade_imbalance",
        "quote_intensity",
        "trade_intensity",
    )
    custom = FeatureConfig(atr_period=10, adx_period=7, rv_windows=(3,), opening_range_minutes=(5,))
    names = bar_feature_names(custom)
    assert {"atr_10", "adx_7", "plus_di_7", "minus_di_7", "rv_3", "or_high_5", "or_breakout_5"} <= set(names)
    assert "atr_14" not in names


@pytest.mark.parametrize(
    "kwargs",
    [
        {"atr_period": 1},
        {"adx_period": 0},
        {"rv_windows": (1,)},
        {"rv_windows": ()},
        {"rv_windows": (5, 5)},
        {"opening_range_minutes": (0,)},
        {"vwap_band_sigmas": (0,)},
        {"bar_interval_s": 0},
    ],
)
def test_config_is_validated(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        FeatureConfig(**kwargs)


def test_config_is_frozen() -> None:
    cfg = FeatureConfig()
    with pytest.raises(AttributeError):
        cfg.atr_period = 3  # type: ignore[misc]
    assert cfg.periods_per_year() == 252 * 390
    assert cfg.periods_per_year(300) == 252 * 78  # 78 five-minute bars in a 6.5 h session


@pytest.mark.realdata
def test_real_session_vectors(spy_frame: pd.DataFrame) -> None:
    bars = frame_bars(spy_frame)
    engine, rows = run(bars)
    # The oracle is TA-Lib over the good bars only: the recording's bad prints (found by plain pandas)
    # feed no indicator, and their vectors carry the close (and clock features) alone.
    bad = bad_print_mask(spy_frame)
    good = spy_frame[~bad]
    high, low, close = (good[c].to_numpy() for c in ("high", "low", "close"))
    atr = talib.ATR(high, low, close, 14)
    adx = talib.ADX(high, low, close, 14)
    assert engine.flagged == {BarFlag.SPIKE: 11, BarFlag.ZERO_VOLUME: 0}
    j = -1  # index among the good bars
    for i, (b, values) in enumerate(zip(bars, rows, strict=True)):
        assert set(values) <= set(NAMES)
        assert all(type(v) is float and math.isfinite(v) for v in values.values())
        assert values["close"] == b.close
        if bad[i]:
            assert set(values) <= {"close", "minutes_since_open", "minutes_to_close"}
            continue
        j += 1
        assert ("atr_14" in values) == (j >= 14)
        assert ("adx_14" in values) == (j >= 27)
        if j >= 27:
            assert values["atr_14"] == pytest.approx(atr[j], rel=1e-9)
            assert values["adx_14"] == pytest.approx(adx[j], rel=1e-9)
        regular = default_calendar().is_open(b.ts)
        if not regular:
            assert not (set(values) & REGULAR_ONLY)
        else:
            assert {"vwap", "vwap_sigma", "minutes_since_open", "minutes_to_close", "vwap_dist_atr"} <= set(
                values
            )
            assert values["vwap_dist_atr"] == pytest.approx(
                (b.close - values["vwap"]) / values["atr_14"], rel=1e-12
            )
            assert values["vwap_upper_2"] == pytest.approx(
                values["vwap"] + 2 * values["vwap_sigma"], rel=1e-15
            )
    assert engine.latest is not None and engine.latest.values == rows[-1]
    assert engine.latest.ts == bars[-1].ts + 60 * NS_PER_S


def test_clock_features_regular_and_early_close() -> None:
    engine = FeatureEngine("SPY")
    first = engine.on_bar(bar(ny_ns("2025-07-02", "09:30"), 600.0))
    assert first.values["minutes_since_open"] == 1.0
    assert first.values["minutes_to_close"] == 389.0
    assert first.ts == ny_ns("2025-07-02", "09:31")
    last = engine.on_bar(bar(ny_ns("2025-07-03", "12:59"), 601.0))  # 13:00 early close
    assert last.values["minutes_to_close"] == 0.0
    assert last.values["minutes_since_open"] == 210.0
    after = engine.on_bar(bar(ny_ns("2025-07-03", "13:00"), 601.0))
    assert "minutes_to_close" not in after.values and "vwap" not in after.values


def test_duplicates_and_out_of_order_bars_change_nothing() -> None:
    start = ny_ns("2025-07-09", "09:30")
    bars = [bar(start + i * NS_PER_MIN, 600.0 + math.sin(i) * 2) for i in range(60)]
    _, clean = run(bars)
    engine = FeatureEngine("SPY")
    seen = []
    for i, b in enumerate(bars):
        vector = engine.on_bar(b)
        seen.append(vector.values)
        if i % 7 == 3:
            assert engine.on_bar(b) is vector  # redelivery
            assert engine.on_bar(bars[i - 2]) is vector  # late
    assert seen == clean


def test_malformed_bars_raise() -> None:
    engine = FeatureEngine("SPY")
    ts = ny_ns("2025-07-09", "09:30")
    with pytest.raises(ValueError, match="QQQ"):
        engine.on_bar(bar(ts, 100.0, symbol="QQQ"))
    with pytest.raises(ValueError, match="malformed"):
        engine.on_bar(Bar(ts=ts, symbol="SPY", open=1.0, high=1.0, low=2.0, close=1.5, volume=1.0))
    with pytest.raises(ValueError, match="malformed"):
        engine.on_bar(Bar(ts=ts, symbol="SPY", open=1.0, high=math.inf, low=1.0, close=1.5, volume=1.0))
    with pytest.raises(ValueError, match="malformed"):
        engine.on_bar(Bar(ts=ts, symbol="SPY", open=1.0, high=2.0, low=1.0, close=math.nan, volume=1.0))
    fixed = FeatureEngine("SPY", FeatureConfig(bar_interval_s=60))
    with pytest.raises(ValueError, match="interval"):
        fixed.on_bar(
            Bar(ts=ts, symbol="SPY", open=1.0, high=2.0, low=1.0, close=1.5, volume=1.0, interval_s=300)
        )
    assert engine.latest is None and fixed.latest is None
    assert engine.on_bar(bar(ts, 100.0)).values["close"] == 100.0


def test_quotes_and_trades_merge_into_the_vector() -> None:
    engine = FeatureEngine("SPY")
    ts = ny_ns("2025-07-09", "09:30")
    engine.on_bar(bar(ts, 600.0))
    quote_ts = ts + 70 * NS_PER_S
    vector = engine.on_quote(Quote(ts=quote_ts, symbol="SPY", bid=600.0, ask=600.02, bid_size=3, ask_size=1))
    assert vector is not None and vector.ts == quote_ts
    assert vector.values["vwap"] == engine._bar_values["vwap"]
    assert vector.values["microprice"] == pytest.approx((600.0 * 1 + 600.02 * 3) / 4)
    assert vector.values["spread"] == pytest.approx(0.02, abs=1e-9)
    assert "ofi" not in vector.values
    assert (
        engine.on_quote(Quote(ts=quote_ts, symbol="SPY", bid=601.0, ask=600.0, bid_size=1, ask_size=1))
        is None
    )
    engine.on_trade(Trade(ts=quote_ts + 1, symbol="SPY", price=600.02, size=10))
    engine.on_trade(Trade(ts=quote_ts + 2, symbol="SPY", price=600.0, size=30))
    second = engine.on_quote(
        Quote(ts=quote_ts + 3, symbol="SPY", bid=600.01, ask=600.02, bid_size=2, ask_size=1)
    )
    assert second is not None
    assert second.values["ofi"] == 2.0 - 1.0 + 1.0  # bid up: +2; ask same: -1 + 1
    assert second.values["trade_imbalance"] == pytest.approx((10 - 30) / 40)
    later = engine.on_bar(bar(ts + NS_PER_MIN, 600.5))
    assert set(MICROSTRUCTURE_FEATURES) <= set(later.values)
    assert later.values["trade_intensity"] < second.values["trade_intensity"]  # decayed to the bar's end
    assert engine.latest is later
    with pytest.raises(ValueError):
        engine.on_quote(Quote(ts=quote_ts, symbol="QQQ", bid=1.0, ask=1.1, bid_size=1, ask_size=1))
    with pytest.raises(ValueError):
        engine.on_trade(Trade(ts=quote_ts, symbol="QQQ", price=1.0, size=1))


def snapshot(ts: int, spot: float = 600.0) -> ChainSnapshot:
    quotes = tuple(
        OptionQuote(
            ts=ts,
            symbol=f"SPY250709{right}{int(k * 1000):08d}",
            underlying="SPY",
            expiry="2025-07-09",
            strike=k,
            right=right,
            bid=max(0.01, (spot - k if right == "C" else k - spot)) + 0.3,
            ask=max(0.01, (spot - k if right == "C" else k - spot)) + 0.4,
            bid_size=10,
            ask_size=10,
            underlying_price=spot,
        )
        for k in (595.0, 600.0, 605.0)
        for right in ("C", "P")
    )
    return ChainSnapshot(ts=ts, underlying="SPY", underlying_price=spot, quotes=quotes)


def test_chain_features_are_merged(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[ChainSnapshot, int, dict[str, Any]]] = []

    def chain_features(snap: ChainSnapshot, now_ns: int, **kwargs: Any) -> dict[str, float]:
        calls.append((snap, now_ns, kwargs))
        return {"atm_iv": 0.2, "skew_25d": -0.03, "broken": math.nan, "also_broken": math.inf}

    fake = types.ModuleType("services.options.chain")
    fake.chain_features = chain_features  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "services.options.chain", fake)
    if "services.options" not in sys.modules:
        monkeypatch.setitem(
            sys.modules, "services.options", types.ModuleType("services.options")
        )

    engine = FeatureEngine("SPY", FeatureConfig(rate=0.04))
    ts = ny_ns("2025-07-09", "10:00")
    engine.on_bar(bar(ts, 600.0))
    snap = snapshot(ts + 61 * NS_PER_S)
    vector = engine.on_chain(snap)
    assert calls[0][0] is snap and calls[0][1] == snap.ts
    assert calls[0][2]["rate"] == 0.04 and calls[0][2]["calendar"] is engine._calendar
    assert vector.ts == snap.ts
    assert vector.values["atm_iv"] == 0.2 and vector.values["skew_25d"] == -0.03
    assert "broken" not in vector.values and "also_broken" not in vector.values
    assert vector.values["close"] == 600.0
    following = engine.on_bar(bar(ts + NS_PER_MIN, 601.0))
    assert following.values["atm_iv"] == 0.2 and following.values["close"] == 601.0
    with pytest.raises(ValueError):
        engine.on_chain(ChainSnapshot(ts=snap.ts, underlying="QQQ", underlying_price=1.0, quotes=()))


def test_real_chain_features_when_the_options_package_exists() -> None:
    pytest.importorskip("services.options.chain")
    engine = FeatureEngine("SPY")
    ts = ny_ns("2025-07-09", "10:00")
    engine.on_bar(bar(ts, 600.0))
    vector = engine.on_chain(snapshot(ts + 61 * NS_PER_S))
    assert all(math.isfinite(v) for v in vector.values.values())
    assert vector.values["close"] == 600.0


@st.composite
def bar_sequences(draw: st.DrawFn) -> list[Bar]:
    start = (
        draw(st.integers(ny_ns("2024-01-02", "00:00"), ny_ns("2026-06-30", "00:00")))
        // NS_PER_MIN
        * NS_PER_MIN
    )
    size = draw(st.integers(1, 120))
    gaps = draw(st.lists(st.sampled_from([1, 1, 1, 2, 5, 60, 600, 1000]), min_size=size, max_size=size))
    price = draw(st.floats(0.05, 50_000.0))
    bars = []
    ts = start
    for gap in gaps:
        ts += gap * NS_PER_MIN
        step = draw(st.floats(-0.3, 0.3))
        close = min(max(price * math.exp(step), 0.01), 1e6)
        width = draw(st.floats(0.0, 0.05))
        high = max(price, close) * (1.0 + width)
        low = min(price, close) / (1.0 + width)
        volume = draw(st.sampled_from([0.0, 0.0, 1.0, 100.0, 5e6, 1e9]))
        bars.append(Bar(ts=ts, symbol="SPY", open=price, high=high, low=low, close=close, volume=volume))
        price = close
    return bars


@given(bar_sequences())
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_valid_bars_never_produce_nan_or_inf(bars: list[Bar]) -> None:
    engine = FeatureEngine("SPY")
    for b in bars:
        values = engine.on_bar(b).values
        assert set(values) <= set(NAMES)
        assert all(math.isfinite(v) for v in values.values()), values


@given(
    st.lists(
        st.tuples(
            st.integers(0, 5_000_000_000),
            st.floats(1.0, 1000.0),
            st.floats(0.0, 0.5),
            st.floats(0.0, 1e6),
            st.floats(0.0, 1e6),
            st.booleans(),
        ),
        min_size=1,
        max_size=60,
    )
)
@settings(max_examples=150, deadline=None)
def test_valid_quotes_and_trades_never_produce_nan_or_inf(
    events: list[tuple[int, float, float, float, float, bool]],
) -> None:
    engine = FeatureEngine("SPY")
    ts = ny_ns("2025-07-09", "10:00")
    engine.on_bar(bar(ts, 100.0))
    for dt_ns, bid, spread, bid_size, ask_size, is_trade in events:
        ts += dt_ns
        if is_trade:
            engine.on_trade(Trade(ts=ts, symbol="SPY", price=bid + spread / 2, size=bid_size))
            continue
        vector = engine.on_quote(
            Quote(ts=ts, symbol="SPY", bid=bid, ask=bid + spread, bid_size=bid_size, ask_size=ask_size)
        )
        assert vector is not None
        assert all(math.isfinite(v) for v in vector.values.values()), vector.values
    final = engine.on_bar(bar(ts // NS_PER_MIN * NS_PER_MIN + NS_PER_MIN, 100.0))
    assert all(math.isfinite(v) for v in final.values.values())
    assert np.all(np.isfinite(list(final.values.values())))
