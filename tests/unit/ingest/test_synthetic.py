"""Synthetic bars: deterministic, on the real calendar, valid OHLC, with a realistic intraday shape."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.core.calendar import NS_PER_MIN, default_calendar, ny_date, ny_datetime
from services.core.events import Bar, encode_msgpack
from services.ingest.synthetic import SyntheticParams, synthetic_bars
from services.ingest.validation import BarValidator


@pytest.fixture(scope="module")
def many_sessions() -> list[Bar]:
    return synthetic_bars("SPY", "2024-01-02", 60, seed=42, start_price=475.0)


def session_minutes(bars: list[Bar]) -> tuple[np.ndarray, np.ndarray]:
    """Minutes since the open and minutes until the close of each bar's session."""
    cal = default_calendar()
    sessions = [cal.session_for_ts(b.ts) for b in bars]
    since = np.array([(b.ts - s.open_ns) // NS_PER_MIN for b, s in zip(bars, sessions, strict=True) if s])
    until = np.array(
        [(s.close_ns - b.ts) // NS_PER_MIN - 1 for b, s in zip(bars, sessions, strict=True) if s]
    )
    return since, until


def test_same_seed_same_bytes_other_seed_other_bars() -> None:
    a = [encode_msgpack(b) for b in synthetic_bars("QQQ", dt.date(2025, 7, 8), 2, seed=5, start_price=500.0)]
    b = [encode_msgpack(b) for b in synthetic_bars("QQQ", dt.date(2025, 7, 8), 2, seed=5, start_price=500.0)]
    c = [encode_msgpack(b) for b in synthetic_bars("QQQ", dt.date(2025, 7, 8), 2, seed=6, start_price=500.0)]
    assert a == b and a != c and len(a) == 2 * 390


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    start_price=st.floats(0.05, 50_000.0),
    day=st.dates(dt.date(2016, 1, 1), dt.date(2026, 12, 1)),
)
def test_bars_are_always_valid(seed: int, start_price: float, day: dt.date) -> None:
    bars = synthetic_bars("SPY", day, 2, seed=seed, start_price=start_price)
    validator = BarValidator("synthetic")
    assert all(validator.check_bar(b) is None for b in bars)
    for b in bars:
        assert b.high >= max(b.open, b.close) and b.low <= min(b.open, b.close) and b.low > 0
        assert b.volume >= 0 and b.volume == int(b.volume)


def test_bars_follow_the_market_calendar_and_regular_hours() -> None:
    bars = synthetic_bars("SPY", "2025-07-01", 5, seed=1, start_price=600.0)
    by_day: dict[dt.date, list[Bar]] = {}
    for b in bars:
        by_day.setdefault(ny_date(b.ts), []).append(b)
    assert sorted(by_day) == [dt.date(2025, 7, d) for d in (1, 2, 3, 7, 8)]  # no bars on the 4th
    cal = default_calendar()
    for day, day_bars in by_day.items():
        session = cal.session(day)
        assert session is not None
        assert [b.ts for b in day_bars] == list(range(session.open_ns, session.close_ns, NS_PER_MIN))
    assert ny_datetime(by_day[dt.date(2025, 7, 3)][-1].ts).time() == dt.time(12, 59)  # early close
    assert ny_datetime(by_day[dt.date(2025, 7, 7)][0].ts).time() == dt.time(9, 30)


def test_thanksgiving_week_honours_the_holiday_and_the_early_close() -> None:
    bars = synthetic_bars("SPY", dt.date(2025, 11, 26), 3, seed=9, start_price=650.0)
    days = sorted({ny_date(b.ts) for b in bars})
    assert days == [dt.date(2025, 11, 26), dt.date(2025, 11, 28), dt.date(2025, 12, 1)]
    friday = [b for b in bars if ny_date(b.ts) == dt.date(2025, 11, 28)]
    assert len(friday) == 210 and ny_datetime(friday[-1].ts).time() == dt.time(12, 59)


def test_a_non_session_start_date_starts_at_the_next_session() -> None:
    bars = synthetic_bars("SPY", "2025-07-05", 1, seed=0, start_price=600.0)  # a Saturday
    assert {ny_date(b.ts) for b in bars} == {dt.date(2025, 7, 7)}


def test_volume_is_u_shaped(many_sessions: list[Bar]) -> None:
    since, until = session_minutes(many_sessions)
    volume = np.array([b.volume for b in many_sessions])
    first, last = volume[since < 30].mean(), volume[until < 30].mean()
    midday = volume[(since >= 150) & (since < 240)].mean()
    assert first > 1.5 * midday and last > 1.5 * midday


def test_volatility_clusters(many_sessions: list[Bar]) -> None:
    closes = np.array([b.close for b in many_sessions])
    opens = np.array([b.open for b in many_sessions])
    abs_ret = np.abs(np.log(closes / opens))
    assert np.corrcoef(abs_ret[:-1], abs_ret[1:])[0, 1] > 0.05
    # Not only the intraday U-shape: dividing out the mean |return| per minute leaves clustering.
    minute, _ = session_minutes(many_sessions)
    profile = np.bincount(minute, weights=abs_ret) / np.bincount(minute)
    deseasoned = abs_ret / profile[minute]
    assert np.corrcoef(deseasoned[:-1], deseasoned[1:])[0, 1] > 0.05
    assert profile[:30].mean() > profile[150:240].mean() < profile[-30:].mean()  # intraday vol U-shape


def test_sessions_open_with_an_overnight_gap(many_sessions: list[Bar]) -> None:
    firsts = [
        i
        for i in range(1, len(many_sessions))
        if ny_date(many_sessions[i].ts) != ny_date(many_sessions[i - 1].ts)
    ]
    gaps = [many_sessions[i].open / many_sessions[i - 1].close - 1 for i in firsts]
    assert len(gaps) == 59
    assert sum(abs(g) > 0.0005 for g in gaps) > 40
    assert 0.001 < float(np.std(gaps)) < 0.02


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match="start_price"):
        synthetic_bars("SPY", "2025-07-08", 1, seed=0, start_price=0.0)
    with pytest.raises(ValueError, match="sessions"):
        synthetic_bars("SPY", "2025-07-08", -1, seed=0, start_price=1.0)
    with pytest.raises(ValueError, match="GARCH"):
        SyntheticParams(garch_alpha=0.5, garch_beta=0.6)
    assert synthetic_bars("SPY", "2025-07-08", 0, seed=0, start_price=1.0) == []
