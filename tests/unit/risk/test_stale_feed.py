"""A stale feed (no market data for a bar interval plus ``stale_feed_seconds`` in regular hours) refuses
new entries with rule ``stale_feed``, clears when data resumes, never trips outside regular hours, and a
future-dated vector never counts as fresh. Hand-built event sequences on the replay clock."""

from __future__ import annotations

import pytest

from services.core.events import FeatureVector, OrderRequest, RiskCommand, RiskRejection
from services.core.settings import ConfigError
from services.risk.config import RiskConfig
from services.risk.engine import RiskEngine

from .support import MIN, NS, T0, Harness, make_intent, ny_ns

HOUR = 60 * MIN


def config(**kw: object) -> RiskConfig:
    """Risk's defaults without stale_data's own market-data age check (30 s), so stale_feed is alone."""
    return RiskConfig(stale_data={"max_market_data_age_s": None}, **kw)  # type: ignore[arg-type]


def harness(**kw: object) -> Harness:
    t0 = kw.pop("t0", T0)
    return Harness(config(**kw), t0=t0)  # type: ignore[arg-type]


def minute_bars(h: Harness, symbol: str, start: int, count: int) -> int:
    """Vectors of ``count`` consecutive minute bars ending at start, start+1m, ...; returns the last ts."""
    ts = start
    for i in range(count):
        ts = start + i * MIN
        h.at(ts)
        h.heartbeat(ts)
        h.features(symbol, ts)
    return ts


def decide(h: Harness, iid: str, ts: int, underlying: str = "SPY") -> OrderRequest | RiskRejection:
    """An intent at ``ts`` with a fresh heartbeat but no new market data."""
    h.at(ts)
    h.heartbeat(ts)
    return h.engine.on_intent(make_intent(iid, ts, underlying=underlying))


def test_an_overdue_bar_refuses_entries_with_stale_feed_and_new_data_clears_it() -> None:
    h = harness()  # default stale_feed_seconds: 15
    last = minute_bars(h, "SPY", T0, 3)  # 11:00, 11:01, 11:02: bars every 60 s
    # The next bar is due at 11:03:00; 15 s later (11:03:15) the feed is still not stale...
    assert isinstance(decide(h, "a", last + 75 * NS), OrderRequest)
    assert h.engine.snapshot().feed.stale == ()
    # ... one second later it is: 76 s of silence > 60 s interval + 15 s.
    r = decide(h, "b", last + 76 * NS)
    assert isinstance(r, RiskRejection) and r.rule == "stale_feed"
    assert r.reason == ("SPY feed stale: no market data for 76.0 s in regular hours "
                        "(bars every 60 s, stale 15 s after one is due)")
    snap = h.engine.snapshot()
    assert snap.feed.stale == ("SPY",) and snap.feed.ages_s == {"SPY": 76.0}
    # Data resumes: the next vector makes the feed fresh and entries pass again.
    h.features("SPY", last + 76 * NS)
    assert h.engine.snapshot().feed.stale == ()
    assert isinstance(h.engine.on_intent(make_intent("c", last + 76 * NS, contract="SPY250708C00625000")),
                      OrderRequest)


def test_the_setting_changes_the_threshold_and_null_disables_it() -> None:
    h = harness(stale_feed_seconds=5)
    last = minute_bars(h, "SPY", T0, 2)
    assert isinstance(decide(h, "a", last + 65 * NS), OrderRequest)  # 65 s: not stale yet (60 + 5)
    r = decide(h, "b", last + 66 * NS)
    assert isinstance(r, RiskRejection) and r.rule == "stale_feed"

    off = harness(stale_feed_seconds=None)
    last = minute_bars(off, "SPY", T0, 2)
    assert isinstance(decide(off, "c", last + 30 * MIN), OrderRequest)
    assert off.engine.snapshot().feed.stale == ()


def test_stale_feed_seconds_is_validated_in_one_line() -> None:
    with pytest.raises(ValueError, match="stale_feed_seconds"):
        RiskConfig(stale_feed_seconds=-1)
    from services.app.stages import apply_risk_overrides
    from services.core.session_config import RiskOverrides

    with pytest.raises(ConfigError) as info:
        apply_risk_overrides({"stale_feed_seconds": 0}, RiskOverrides(), "risk.yaml")
    assert "stale_feed_seconds" in str(info.value) and "\n" not in str(info.value)
    assert apply_risk_overrides({"stale_feed_seconds": 42.5}, RiskOverrides(), "risk.yaml").stale_feed_seconds == 42.5


def test_the_interval_is_learned_from_the_bars_second_bars_go_stale_sooner() -> None:
    h = harness()
    for i in range(5):  # 1-second bars
        h.at(T0 + i * NS)
        h.heartbeat(T0 + i * NS)
        h.features("SPY", T0 + i * NS)
    last = T0 + 4 * NS
    assert isinstance(decide(h, "a", last + 16 * NS), OrderRequest)  # 16 s = 1 s + 15 s: not yet
    r = decide(h, "b", last + 17 * NS)
    assert isinstance(r, RiskRejection) and r.rule == "stale_feed" and "bars every 1 s" in r.reason


def test_staleness_is_per_underlying() -> None:
    h = harness()
    h.features("QQQ", T0)
    minute_bars(h, "SPY", T0, 4)  # SPY keeps coming until 11:03, QQQ stopped at 11:00
    h.at(T0 + 3 * MIN)
    assert h.engine.snapshot().feed.stale == ("QQQ",)  # 180 s > 75 s
    assert isinstance(decide(h, "spy", T0 + 3 * MIN), OrderRequest)
    r = decide(h, "qqq", T0 + 3 * MIN, underlying="QQQ")
    assert isinstance(r, RiskRejection) and r.rule == "stale_feed" and r.reason.startswith("QQQ feed stale: ")
    assert h.engine.snapshot().feed.ages_s == {"QQQ": 180.0, "SPY": 0.0}


def test_outside_regular_hours_it_never_trips_and_the_silence_counts_from_the_open() -> None:
    day = (2025, 7, 8)
    h = harness(t0=ny_ns(*day, 8, 0))
    h.features("SPY", ny_ns(*day, 8, 0))  # pre-market data, then silence
    for hh, mm in ((8, 30), (9, 29)):
        h.at(ny_ns(*day, hh, mm))
        assert h.engine.snapshot().feed.stale == ()
    # Regular hours from 09:30: the first regular bar is due 09:31:00, stale after 09:31:15.
    h.at(ny_ns(*day, 9, 31, 15))
    assert h.engine.snapshot().feed.stale == ()
    h.at(ny_ns(*day, 9, 31, 16))
    assert h.engine.snapshot().feed.stale == ("SPY",)
    # After the 16:00 close nothing is stale, however old the data.
    h.at(ny_ns(*day, 16, 0))
    assert h.engine.snapshot().feed.stale == ()


def test_an_early_close_ends_regular_hours_at_13_00() -> None:
    day = (2025, 7, 3)  # the Thursday before Independence Day closes at 13:00
    h = harness(t0=ny_ns(*day, 12, 50))
    h.features("SPY", ny_ns(*day, 12, 50))
    h.at(ny_ns(*day, 12, 52))
    assert h.engine.snapshot().feed.stale == ("SPY",)  # 120 s > 75 s, before the close
    h.at(ny_ns(*day, 13, 0))
    assert h.engine.snapshot().feed.stale == ()  # 13:00 is the close: no longer regular hours


def test_a_future_dated_vector_never_counts_as_fresh() -> None:
    h = harness()
    last = minute_bars(h, "SPY", T0, 2)
    h.at(last + 2 * MIN)
    assert h.engine.snapshot().feed.stale == ("SPY",)
    h.engine.on_features(FeatureVector(ts=last + 2 * MIN + HOUR, symbol="SPY", values={"close": 600.0}))
    snap = h.engine.snapshot()
    assert snap.feed.stale == ("SPY",) and snap.feed.ages_s == {"SPY": 120.0}
    assert h.engine.future_events == 1
    r = decide(h, "a", last + 2 * MIN)
    assert isinstance(r, RiskRejection) and r.rule == "stale_feed"
    # A vector within the tolerance (stale_data.max_future_s, 5 s) is data: it arrives "now".
    h.engine.on_features(FeatureVector(ts=last + 2 * MIN + 4 * NS, symbol="SPY", values={"close": 600.0}))
    assert h.engine.snapshot().feed.stale == ()


def test_exits_and_protective_commands_still_pass_while_the_feed_is_stale() -> None:
    h = harness()
    last = minute_bars(h, "SPY", T0, 2)
    h.at(last + 5 * MIN)
    assert h.engine.snapshot().feed.stale == ("SPY",)
    flatten = RiskCommand(ts=last + 5 * MIN, id="op-1", underlying="SPY", action="flatten", reason="operator")
    assert h.engine.on_command(flatten) == [flatten]
    engage = RiskCommand(ts=last + 5 * MIN, id="op-2", underlying="*", action="engage_kill_switch",
                         reason="operator")
    actions = [c.action for c in h.engine.on_command(engage)]
    assert actions == ["engage_kill_switch", "cancel", "flatten"]


def test_a_later_observed_time_makes_a_silent_feed_stale_without_moving_the_clock() -> None:
    h = harness()
    last = minute_bars(h, "SPY", T0, 2)
    # Event time stands still (a silent live feed): on the replay clock alone nothing is stale.
    assert h.engine.snapshot().feed.stale == ()
    h.engine.observe_time(last + 80 * NS)
    assert h.engine.clock_ns() == last
    snap = h.engine.snapshot()
    assert snap.feed.stale == ("SPY",) and snap.feed.ages_s == {"SPY": 80.0}
    r = h.engine.on_intent(make_intent("late", last))
    assert isinstance(r, RiskRejection) and r.rule == "stale_feed"
    # The next vector is fresh at the observed time's successor: the event clock catching up.
    h.at(last + 81 * NS)
    h.features("SPY", last + 81 * NS)
    assert h.engine.snapshot().feed.stale == ()


def test_a_replayed_day_of_minute_bars_never_trips() -> None:
    day = (2025, 7, 8)
    h = harness(t0=ny_ns(*day, 9, 30))
    engine: RiskEngine = h.engine
    tripped = 0
    ts = ny_ns(*day, 9, 31)
    while ts <= ny_ns(*day, 16, 0):
        for symbol in ("SPY", "QQQ"):
            h.at(ts)
            h.features(symbol, ts)
            tripped += len(engine.snapshot().feed.stale)
        ts += MIN
    assert tripped == 0
