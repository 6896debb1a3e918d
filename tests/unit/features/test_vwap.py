"""Session VWAP and sigma bands against an independent pandas groupby computation per session."""

from __future__ import annotations

import datetime as dt
import math

import numpy as np
import pandas as pd
import pytest

from services.core.calendar import NEW_YORK, NS_PER_MIN, default_calendar
from services.features.vwap import SessionLookup, SessionVwap

from .conftest import assert_same_series, ny_ns


def regular_hours(ts: pd.Series) -> tuple[pd.Series, pd.Series]:
    """(in regular hours, session date) of each ns timestamp, from the exchange calendar."""
    cal = default_calendar()
    local = pd.DatetimeIndex(pd.to_datetime(ts.to_numpy(), utc=True)).tz_convert(NEW_YORK)
    dates = pd.Series(local.date, index=ts.index)
    sessions = {d: cal.session(d) for d in dates.unique()}
    opens = dates.map(lambda d: sessions[d].open_ns if sessions[d] else -1).astype("int64")
    closes = dates.map(lambda d: sessions[d].close_ns if sessions[d] else -1).astype("int64")
    return (opens >= 0) & (ts >= opens) & (ts < closes), dates


def pandas_vwap(df: pd.DataFrame) -> pd.DataFrame:
    """VWAP and sigma per regular session, computed directly: cumulative sums and a weighted variance."""
    rth, dates = regular_hours(df["ts"])
    out = pd.DataFrame({"vwap": np.nan, "sigma": np.nan}, index=df.index)
    reg = df[rth].copy()
    reg["p"] = (reg["high"] + reg["low"] + reg["close"]) / 3.0
    reg["pv"] = reg["p"] * reg["volume"]
    reg["date"] = dates[rth]
    for _, g in reg.groupby("date", sort=False):
        cum_v = g["volume"].cumsum()
        vwap = g["pv"].cumsum() / cum_v
        p = g["p"].to_numpy()
        v = g["volume"].to_numpy()
        sigma = []
        for i, center in enumerate(vwap.to_numpy()):
            total = cum_v.iloc[i]
            if total > 0:
                sigma.append(math.sqrt(float(np.sum(v[: i + 1] * (p[: i + 1] - center) ** 2)) / total))
            else:
                sigma.append(np.nan)
        out.loc[g.index, "vwap"] = vwap.where(cum_v > 0).to_numpy()
        out.loc[g.index, "sigma"] = sigma
    return out


def streaming_vwap(df: pd.DataFrame) -> pd.DataFrame:
    vw = SessionVwap()
    rows = []
    columns = (df[k].tolist() for k in ("ts", "high", "low", "close", "volume"))
    for t, h, lo, c, v in zip(*columns, strict=True):
        vw.update(int(t), h, lo, c, v)
        rows.append((vw.value, vw.sigma) if vw.ready else (np.nan, np.nan))
    return pd.DataFrame(rows, columns=["vwap", "sigma"], index=df.index)


def assert_vwap_matches(df: pd.DataFrame) -> None:
    expected = pandas_vwap(df)
    actual = streaming_vwap(df)
    assert_same_series(actual["vwap"], expected["vwap"], rtol=1e-12)
    assert_same_series(actual["sigma"], expected["sigma"], rtol=1e-7, atol=1e-9)
    for k in (1, 2, 3):
        assert_same_series(
            actual["vwap"] + k * actual["sigma"], expected["vwap"] + k * expected["sigma"], rtol=1e-12
        )
        assert_same_series(
            actual["vwap"] - k * actual["sigma"], expected["vwap"] - k * expected["sigma"], rtol=1e-12
        )


@pytest.mark.realdata
def test_real_recordings_match_pandas_per_session(real_frame: pd.DataFrame) -> None:
    assert_vwap_matches(real_frame)


@pytest.mark.realdata
def test_zero_volume_regular_bars_match_pandas(spy_frame: pd.DataFrame) -> None:
    # Real feeds have zero-volume minutes; zero a session's first bars and some others to exercise them.
    df = spy_frame.copy()
    rth, dates = regular_hours(df["ts"])
    first_day = df[rth & (dates == dates[rth].iloc[0])].index
    df.loc[first_day[:3], "volume"] = 0.0
    df.loc[first_day[10:400:37], "volume"] = 0.0
    assert_vwap_matches(df)
    actual = streaming_vwap(df)
    assert actual.loc[first_day[:3], "vwap"].isna().all()
    first_price = df.loc[first_day[3], ["high", "low", "close"]].sum() / 3
    assert actual.loc[first_day[3], "vwap"] == pytest.approx(first_price, rel=1e-12)


@pytest.mark.realdata
def test_no_value_outside_regular_hours(spy_frame: pd.DataFrame) -> None:
    rth, _ = regular_hours(spy_frame["ts"])
    actual = streaming_vwap(spy_frame)
    assert actual.loc[~rth, "vwap"].isna().all()
    assert actual.loc[rth, "vwap"].notna().all()
    # Extended hours carry volume in this file (post-market prints), and still no VWAP.
    assert (spy_frame.loc[~rth, "volume"] > 0).any()


def test_hand_computed_session_with_reset() -> None:
    vw = SessionVwap()
    # 2025-07-09 09:30 and 09:31, then the next session's first bar.
    vw.update(ny_ns("2025-07-09", "09:29"), 11.0, 9.0, 10.0, 500.0)  # pre-market: ignored
    assert not vw.ready and math.isnan(vw.value)
    vw.update(ny_ns("2025-07-09", "09:30"), 11.0, 9.0, 10.0, 100.0)  # p = 10
    assert vw.value == 10.0 and vw.sigma == 0.0
    vw.update(ny_ns("2025-07-09", "09:31"), 14.0, 12.0, 13.0, 300.0)  # p = 13
    assert vw.value == pytest.approx((10 * 100 + 13 * 300) / 400, rel=1e-15)
    var = (100 * (10 - 12.25) ** 2 + 300 * (13 - 12.25) ** 2) / 400
    assert vw.sigma == pytest.approx(math.sqrt(var), rel=1e-12)
    assert vw.band(2) == pytest.approx((12.25 - 2 * math.sqrt(var), 12.25 + 2 * math.sqrt(var)))
    vw.update(ny_ns("2025-07-09", "16:00"), 14.0, 12.0, 13.0, 300.0)  # post-market
    assert not vw.ready
    vw.update(ny_ns("2025-07-10", "09:30"), 21.0, 19.0, 20.0, 50.0)
    assert vw.value == 20.0 and vw.sigma == 0.0


def test_zero_volume_bar_keeps_value_and_zero_cumulative_is_blank() -> None:
    vw = SessionVwap()
    vw.update(ny_ns("2025-07-09", "09:30"), 11.0, 9.0, 10.0, 0.0)
    assert not vw.ready and math.isnan(vw.value)
    vw.update(ny_ns("2025-07-09", "09:31"), 11.0, 9.0, 10.0, 10.0)
    before = (vw.value, vw.sigma)
    vw.update(ny_ns("2025-07-09", "09:32"), 50.0, 40.0, 45.0, 0.0)
    assert (vw.value, vw.sigma) == before and vw.ready


def test_early_close_and_holiday_follow_the_calendar() -> None:
    vw = SessionVwap()
    # 2025-07-03 closes at 13:00 New York; 2025-07-04 is a holiday.
    vw.update(ny_ns("2025-07-03", "12:59"), 11.0, 9.0, 10.0, 10.0)
    assert vw.ready
    vw.update(ny_ns("2025-07-03", "13:00"), 11.0, 9.0, 10.0, 10.0)
    assert not vw.ready
    vw.update(ny_ns("2025-07-04", "10:00"), 11.0, 9.0, 10.0, 10.0)
    assert not vw.ready


def test_dst_switch_moves_the_open_in_utc() -> None:
    lookup = SessionLookup()
    # 2025-03-07 (EST) opens 14:30 UTC, 2025-03-10 (EDT) opens 13:30 UTC.
    before = lookup.regular(ny_ns("2025-03-07", "09:30"))
    after = lookup.regular(ny_ns("2025-03-10", "09:30"))
    assert before is not None and after is not None
    assert dt.datetime.fromtimestamp(before.open_ns / 1e9, dt.UTC).hour == 14
    assert dt.datetime.fromtimestamp(after.open_ns / 1e9, dt.UTC).hour == 13
    assert lookup.regular(ny_ns("2025-03-10", "09:29")) is None
    assert lookup.regular(after.close_ns - NS_PER_MIN) is not None
    assert lookup.regular(after.close_ns) is None
