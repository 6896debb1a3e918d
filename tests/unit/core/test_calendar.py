"""Market calendar: holidays, early closes and DST, checked against known NYSE facts."""

from __future__ import annotations

import datetime as dt

import pytest

from services.core.calendar import default_calendar, iso_ny, ny_date

NS = 1_000_000_000


def _utc_ns(y: int, m: int, d: int, hh: int, mm: int) -> int:
    return int(dt.datetime(y, m, d, hh, mm, tzinfo=dt.UTC).timestamp()) * NS


@pytest.mark.parametrize(
    "day", [dt.date(2025, 7, 4), dt.date(2025, 12, 25), dt.date(2025, 4, 18), dt.date(2025, 1, 9)]
)
def test_holidays_are_closed(day: dt.date) -> None:
    # Independence Day, Christmas, Good Friday, and the Carter national day of mourning (2025-01-09).
    assert not default_calendar().is_session(day)


def test_regular_session_hours_follow_dst() -> None:
    cal = default_calendar()
    summer = cal.session(dt.date(2025, 7, 8))
    winter = cal.session(dt.date(2025, 1, 8))
    assert summer is not None and winter is not None
    assert summer.open_ns == _utc_ns(2025, 7, 8, 13, 30)  # 09:30 EDT
    assert winter.open_ns == _utc_ns(2025, 1, 8, 14, 30)  # 09:30 EST
    assert iso_ny(summer.close_ns) == "2025-07-08T16:00:00-04:00"
    # First session after the spring-forward weekend opens at 13:30 UTC.
    spring = cal.session(dt.date(2025, 3, 10))
    assert spring is not None and spring.open_ns == _utc_ns(2025, 3, 10, 13, 30)


def test_early_closes() -> None:
    cal = default_calendar()
    for day in (dt.date(2025, 11, 28), dt.date(2025, 12, 24), dt.date(2025, 7, 3)):
        s = cal.session(day)
        assert s is not None and s.early_close
        assert iso_ny(s.close_ns).endswith("T13:00:00-05:00") or iso_ny(s.close_ns).endswith("T13:00:00-04:00")


def test_minutes_to_close_and_is_open() -> None:
    cal = default_calendar()
    ts = _utc_ns(2025, 7, 8, 19, 58)  # 15:58 New York
    assert cal.minutes_to_close(ts) == pytest.approx(2.0)
    assert cal.is_open(ts)
    assert not cal.is_open(_utc_ns(2025, 7, 8, 20, 0))
    assert not cal.is_open(_utc_ns(2025, 7, 8, 13, 29))


def test_ny_date_crosses_midnight_utc() -> None:
    assert ny_date(_utc_ns(2025, 7, 9, 2, 0)) == dt.date(2025, 7, 8)  # 22:00 EDT the day before
    assert ny_date(_utc_ns(2025, 7, 9, 4, 0)) == dt.date(2025, 7, 9)


def test_next_session_skips_weekend_and_holiday() -> None:
    cal = default_calendar()
    assert cal.next_session(dt.date(2025, 7, 3)).date == dt.date(2025, 7, 7)


def test_out_of_range_is_an_error() -> None:
    with pytest.raises(ValueError, match="outside"):
        default_calendar().session(dt.date(1990, 1, 2))
