"""Session rules a playbook puts on its intents: entry TTL (never past the close), flatten before the
close (early closes included), holding overnight only when the playbook says so. Times by hand."""

from __future__ import annotations

import datetime as dt

import pytest

from services.core.calendar import NEW_YORK, NS_PER_S, default_calendar
from services.signals.engine import session_rules
from services.signals.playbooks import Playbook

from .builders import shipped

CAL = default_calendar()


def ny(day: dt.date, hh: int, mm: int) -> int:
    return int(dt.datetime(day.year, day.month, day.day, hh, mm, tzinfo=NEW_YORK).timestamp()) * NS_PER_S


def playbook(**update: object) -> Playbook:
    return shipped().playbooks[0].model_copy(update=update)


REGULAR = dt.date(2025, 7, 8)  # closes 16:00
EARLY = dt.date(2025, 7, 3)  # closes 13:00 (Independence Day eve)


def test_shipped_defaults() -> None:
    pb = shipped().playbooks[0]
    assert (pb.entry_ttl_s, pb.flatten_before_close_minutes, pb.hold_overnight) == (120.0, 5.0, False)


def test_the_entry_expires_after_its_ttl_and_the_bracket_is_flat_before_the_close() -> None:
    assert session_rules(playbook(), ny(REGULAR, 10, 0), CAL) == (ny(REGULAR, 10, 2), ny(REGULAR, 15, 55))
    assert session_rules(playbook(entry_ttl_s=45), ny(REGULAR, 10, 0), CAL) == (
        ny(REGULAR, 10, 0) + 45 * NS_PER_S, ny(REGULAR, 15, 55))


def test_early_closes_move_the_flatten_time() -> None:
    assert session_rules(playbook(flatten_before_close_minutes=10), ny(EARLY, 11, 0), CAL) == (
        ny(EARLY, 11, 2), ny(EARLY, 12, 50))
    # 12:56 is past the 12:55 flatten time of a 13:00 close: nothing fires.
    refused = session_rules(playbook(), ny(EARLY, 12, 56), CAL)
    assert isinstance(refused, str) and "flat from 2025-07-03T12:55:00-04:00" in refused


def test_the_ttl_never_reaches_past_the_close() -> None:
    # Holding overnight: no flatten, but an entry signalled at 15:59 with a 10-minute TTL dies at 16:00.
    assert session_rules(playbook(hold_overnight=True, entry_ttl_s=600), ny(REGULAR, 15, 59), CAL) == (
        ny(REGULAR, 16, 0), None)
    assert session_rules(playbook(hold_overnight=True, entry_ttl_s=600), ny(EARLY, 12, 58), CAL) == (
        ny(EARLY, 13, 0), None)


@pytest.mark.parametrize("moment", [ny(REGULAR, 16, 30), ny(dt.date(2025, 7, 5), 11, 0)],
                         ids=["after the close", "a Saturday"])
def test_a_day_trading_playbook_fires_nothing_off_session(moment: int) -> None:
    assert isinstance(session_rules(playbook(), moment, CAL), str)
