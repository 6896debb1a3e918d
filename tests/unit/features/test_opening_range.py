"""Opening range and breakout against a pandas computation per session."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from services.core.calendar import NEW_YORK, NS_PER_MIN, NS_PER_S, default_calendar
from services.features.opening_range import OpeningRange

from .conftest import assert_same_series, ny_ns


def pandas_opening_range(df: pd.DataFrame, minutes: int) -> pd.DataFrame:
    """Per session: high/low of bars starting in the first N minutes, shown once a bar ends past them."""
    cal = default_calendar()
    local = pd.DatetimeIndex(pd.to_datetime(df["ts"].to_numpy(), utc=True)).tz_convert(NEW_YORK)
    frame = df.assign(date=local.date)
    out = pd.DataFrame({"high": np.nan, "low": np.nan, "breakout": np.nan}, index=df.index)
    for day, g in frame.groupby("date", sort=False):
        session = cal.session(day)
        if session is None:
            continue
        rth = g[(g["ts"] >= session.open_ns) & (g["ts"] < session.close_ns)]
        end = session.open_ns + minutes * NS_PER_MIN
        window = rth[rth["ts"] < end]
        if window.empty:
            continue
        hi, lo = window["high"].max(), window["low"].min()
        done = rth[rth["ts"] + 60 * NS_PER_S >= end]
        out.loc[done.index, "high"] = hi
        out.loc[done.index, "low"] = lo
        close = done["close"]
        out.loc[done.index, "breakout"] = np.where(close > hi, 1.0, np.where(close < lo, -1.0, 0.0))
    return out


def streaming(df: pd.DataFrame, minutes: int) -> pd.DataFrame:
    rng = OpeningRange(minutes)
    rows = []
    for t, h, lo, c in zip(*(df[k].tolist() for k in ("ts", "high", "low", "close")), strict=True):
        rng.update(int(t), h, lo, c)
        rows.append((rng.high, rng.low, float(rng.breakout)) if rng.ready else (np.nan, np.nan, np.nan))
    return pd.DataFrame(rows, columns=["high", "low", "breakout"], index=df.index)


@pytest.mark.realdata
@pytest.mark.parametrize("minutes", [15, 30, 5])
def test_real_recordings_match_pandas(real_frame: pd.DataFrame, minutes: int) -> None:
    expected = pandas_opening_range(real_frame, minutes)
    actual = streaming(real_frame, minutes)
    for col in ("high", "low", "breakout"):
        assert_same_series(actual[col], expected[col], rtol=0.0)
    assert set(actual["breakout"].dropna().unique()) == {-1.0, 0.0, 1.0}


@pytest.mark.realdata
def test_session_starting_mid_morning_has_no_range(qqq_frame: pd.DataFrame) -> None:
    # The QQQ recording starts at 10:16 New York on 2025-04-30: no bar inside that day's range.
    first_day = qqq_frame[qqq_frame["ts"] < ny_ns("2025-05-01", "00:00")]
    assert streaming(first_day, 15)["high"].isna().all()


def test_completes_at_the_last_range_bar_and_breaks_out() -> None:
    rng = OpeningRange(3)
    day = "2025-07-09"
    rng.update(ny_ns(day, "09:29"), 200.0, 1.0, 100.0)  # pre-market extremes are not in the range
    assert not rng.ready
    rng.update(ny_ns(day, "09:30"), 101.0, 99.0, 100.0)
    rng.update(ny_ns(day, "09:31"), 102.0, 99.5, 101.0)
    assert not rng.ready and math.isnan(rng.high)
    rng.update(ny_ns(day, "09:32"), 101.5, 98.0, 99.0)
    assert rng.ready and (rng.high, rng.low, rng.breakout) == (102.0, 98.0, 0)
    rng.update(ny_ns(day, "09:33"), 103.0, 101.0, 102.5)  # after the window: does not move the range
    assert (rng.high, rng.low, rng.breakout) == (102.0, 98.0, 1)
    rng.update(ny_ns(day, "09:34"), 99.0, 97.0, 97.5)
    assert rng.breakout == -1
    rng.update(ny_ns(day, "16:00"), 99.0, 97.0, 97.5)  # post-market: not published
    assert not rng.ready and rng.breakout == 0
    rng.update(ny_ns("2025-07-10", "09:30"), 50.0, 49.0, 49.5)  # new session starts over
    assert not rng.ready


def test_missing_last_range_bar_completes_on_the_next_bar() -> None:
    rng = OpeningRange(2)
    rng.update(ny_ns("2025-07-09", "09:30"), 101.0, 99.0, 100.0)
    assert not rng.ready
    rng.update(ny_ns("2025-07-09", "09:33"), 110.0, 100.0, 109.0)  # 09:31 and 09:32 missing
    assert rng.ready and (rng.high, rng.low, rng.breakout) == (101.0, 99.0, 1)


@pytest.mark.parametrize("minutes", [0, -1, 1.5])
def test_rejects_bad_minutes(minutes: object) -> None:
    with pytest.raises(ValueError, match="minutes"):
        OpeningRange(minutes)  # type: ignore[arg-type]
