"""Economic-event halt windows: New York -> UTC across DST, half-open windows, O(log n) lookup."""

from __future__ import annotations

import datetime as dt
import random

import pytest

from services.core.settings import CONFIG_DIR
from services.risk.event_halts import (
    EconomicEvent,
    EventCalendar,
    EventKind,
    EventsConfig,
    EventWindow,
    load_event_calendar,
    ny_local_to_utc_ns,
)

from .support import MIN, NS, utc_ns


def _calendar(
    *events: tuple[str, dt.date, str | None], before: float = 10, after: float = 30
) -> EventCalendar:
    cfg = EventsConfig(
        kinds={
            "CPI": EventKind(time="08:30", minutes_before=before, minutes_after=after, impact="high"),
            "FOMC": EventKind(time="14:00", minutes_before=before, minutes_after=after, impact="high"),
            "MINOR": EventKind(time="10:00", minutes_before=5, minutes_after=5, impact="low"),
        },
        events=[EconomicEvent(kind=k, date=d, time=t) for k, d, t in events],
    )
    return EventCalendar.from_config(cfg)


def test_dst_conversion_by_hand() -> None:
    # DST began Sunday 2025-03-09 (EDT = UTC-4): 08:30 EDT on Monday 2025-03-10 is 12:30 UTC.
    assert ny_local_to_utc_ns(dt.date(2025, 3, 10), "08:30") == utc_ns(2025, 3, 10, 12, 30)
    # The Friday before was still EST (UTC-5): 08:30 EST is 13:30 UTC.
    assert ny_local_to_utc_ns(dt.date(2025, 3, 7), "08:30") == utc_ns(2025, 3, 7, 13, 30)
    # DST ended Sunday 2025-11-02: 08:30 EST on Monday 2025-11-03 is 13:30 UTC.
    assert ny_local_to_utc_ns(dt.date(2025, 11, 3), "08:30") == utc_ns(2025, 11, 3, 13, 30)
    # ... and the Friday before was EDT: 08:30 EDT is 12:30 UTC.
    assert ny_local_to_utc_ns(dt.date(2025, 10, 31), "08:30") == utc_ns(2025, 10, 31, 12, 30)
    # 2:30 on the spring-forward Sunday does not exist in New York.
    with pytest.raises(ValueError, match="does not exist"):
        ny_local_to_utc_ns(dt.date(2025, 3, 9), "02:30")


def test_window_is_half_open_on_a_dst_change_date() -> None:
    cal = _calendar(("CPI", dt.date(2025, 3, 10), None), ("CPI", dt.date(2025, 11, 3), None))
    spring = utc_ns(2025, 3, 10, 12, 30)  # 08:30 EDT
    fall = utc_ns(2025, 11, 3, 13, 30)  # 08:30 EST
    for event in (spring, fall):
        start, end = event - 10 * MIN, event + 30 * MIN
        assert cal.halt_active(start - 1) is None
        w = cal.halt_active(start)
        assert w is not None and w.event_ns == event
        assert cal.halt_active(event) is not None
        assert cal.halt_active(end - 1) is not None
        assert cal.halt_active(end) is None
    # One hour off either way (the classic DST bug) is outside the window.
    assert cal.halt_active(spring + 60 * MIN) is None
    assert cal.halt_active(fall - 60 * MIN) is None


def test_overlapping_windows_and_impact_filter() -> None:
    day = dt.date(2025, 7, 8)
    cfg = EventsConfig(
        kinds={
            "LONG": EventKind(time="08:30", minutes_before=0, minutes_after=120),
            "SHORT": EventKind(time="09:00", minutes_before=0, minutes_after=5),
            "MINOR": EventKind(time="10:00", minutes_before=5, minutes_after=5, impact="low"),
        },
        events=[EconomicEvent(kind=k, date=day) for k in ("LONG", "SHORT", "MINOR")],
    )
    cal = EventCalendar.from_config(cfg)
    # 09:10 EDT: SHORT (09:00-09:05) started later but ended; LONG (08:30-10:30) still covers.
    w = cal.halt_active(utc_ns(2025, 7, 8, 13, 10))
    assert w is not None and w.kind == "LONG"
    assert cal.halt_active(utc_ns(2025, 7, 8, 14, 30)) is None  # 10:30 EDT, LONG's end
    assert cal.halt_active(utc_ns(2025, 7, 8, 14, 0)) is not None  # MINOR and LONG
    filtered = EventCalendar.from_config(cfg, min_impact="medium")
    assert len(filtered) == 2 and all(w.kind != "MINOR" for w in filtered.windows)


def test_lookup_matches_brute_force() -> None:
    rng = random.Random(7)
    windows = []
    for i in range(300):
        start = rng.randrange(0, 10_000)
        windows.append(
            EventWindow(
                f"E{i}", dt.date(2025, 1, 1), "00:00", "high", start, start, start + rng.randrange(1, 400)
            )
        )
    cal = EventCalendar(windows)
    for ts in range(-5, 10_500, 7):
        covering = [w for w in windows if w.start_ns <= ts < w.end_ns]
        got = cal.halt_active(ts)
        if covering:
            assert got is not None and got.start_ns <= ts < got.end_ns
            assert got.end_ns == max(w.end_ns for w in covering)
        else:
            assert got is None
    assert EventCalendar().halt_active(0) is None


def test_shipped_calendar_dates_convert_across_dst() -> None:
    cal = load_event_calendar(CONFIG_DIR / "events.yaml")
    by_key = {(w.kind, w.date): w for w in cal.windows}
    # NFP Friday 2025-03-07 (EST) and CPI Wednesday 2025-03-12 (EDT) straddle the 2025-03-09 change.
    assert by_key[("NFP", dt.date(2025, 3, 7))].event_ns == utc_ns(2025, 3, 7, 13, 30)
    assert by_key[("CPI", dt.date(2025, 3, 12))].event_ns == utc_ns(2025, 3, 12, 12, 30)
    # FOMC statements at 14:00: 18:00 UTC in summer time, 19:00 UTC in winter.
    assert by_key[("FOMC", dt.date(2025, 3, 19))].event_ns == utc_ns(2025, 3, 19, 18, 0)
    assert by_key[("FOMC", dt.date(2025, 12, 10))].event_ns == utc_ns(2025, 12, 10, 19, 0)
    # Shutdown-rescheduled releases are at their actual dates.
    assert ("CPI", dt.date(2025, 10, 24)) in by_key and ("CPI", dt.date(2025, 10, 15)) not in by_key
    assert ("NFP", dt.date(2025, 12, 16)) in by_key
    w = by_key[("CPI", dt.date(2025, 3, 12))]
    assert (w.end_ns - w.event_ns) // NS == 75 * 60 and (w.event_ns - w.start_ns) // NS == 10 * 60
