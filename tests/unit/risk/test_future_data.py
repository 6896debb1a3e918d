"""Data stamped in the future (beyond the risk clock + stale_data.max_future_s) never counts as fresh
and never moves risk's day: a future-dated vector, heartbeat or stored heartbeat changes nothing."""

from __future__ import annotations

import json

from services.core import keys
from services.core.events import FeatureVector, Heartbeat, OrderRequest, RiskRejection
from services.risk.config import RiskConfig

from .support import MIN, NS, T0, Harness, make_intent

YEAR = 365 * 24 * 60 * MIN


def test_a_future_vector_is_not_fresh_market_data() -> None:
    h = Harness()
    h.at(T0)
    h.heartbeat(T0)
    h.engine.on_features(FeatureVector(ts=T0 + YEAR, symbol="SPY", values={"close": 1e12}))
    r = h.engine.on_intent(make_intent("a", T0))
    assert isinstance(r, RiskRejection) and r.rule == "stale_data" and r.reason == "no market data seen for SPY"
    assert h.engine.future_events == 1


def test_after_a_future_vector_good_data_still_counts() -> None:
    h = Harness(RiskConfig(stale_feed_seconds=None))  # the stale_data rule's own message, not stale_feed's
    h.at(T0)
    h.engine.on_features(FeatureVector(ts=T0 + YEAR, symbol="SPY", values={"close": 600.0}))
    # Without the guard the future stamp would stay the newest forever and hide the live ones' age.
    assert isinstance(h.intent("a", T0 + MIN), OrderRequest)
    h.at(T0 + 10 * MIN)
    h.heartbeat(T0 + 10 * MIN)
    r = h.engine.on_intent(make_intent("b", T0 + 10 * MIN))
    assert isinstance(r, RiskRejection) and r.rule == "stale_data" and "market data is 540.0 s old" in r.reason


def test_a_future_heartbeat_event_or_stored_heartbeat_is_not_fresh() -> None:
    h = Harness()
    h.at(T0)
    h.features("SPY", T0)
    h.engine.on_heartbeat(Heartbeat(ts=T0 + YEAR, source="ingest", seq=1))
    h.state.set(keys.INGEST_HEARTBEAT, json.dumps({"ts": T0 + YEAR, "seq": 2}).encode())
    r = h.engine.on_intent(make_intent("a", T0))
    assert isinstance(r, RiskRejection) and r.rule == "stale_data" and r.reason == "no ingest heartbeat seen yet"


def test_within_the_tolerance_a_lead_is_accepted() -> None:
    h = Harness(RiskConfig(stale_data={"max_future_s": 5.0}))  # type: ignore[arg-type]
    h.at(T0)
    h.heartbeat(T0)
    h.engine.on_features(FeatureVector(ts=T0 + 4 * NS, symbol="SPY", values={"close": 600.0}))
    assert isinstance(h.engine.on_intent(make_intent("a", T0)), OrderRequest)
    assert h.engine.future_events == 0


def test_a_future_event_does_not_roll_the_day_and_release_a_daily_loss_engagement() -> None:
    h = Harness(RiskConfig(max_daily_loss_usd=500))
    h.outcome("o1", T0, -500.0)
    assert h.engine.check(T0)[0].action == "engage_kill_switch"
    h.engine.on_features(FeatureVector(ts=T0 + YEAR, symbol="SPY", values={"close": 600.0}))
    h.engine.on_heartbeat(Heartbeat(ts=T0 + YEAR, source="ingest", seq=1))
    assert h.engine.kill_switch.engaged and h.engine.daily_pnl() == -500.0
    r = h.intent("a", T0 + NS)
    assert isinstance(r, RiskRejection) and r.rule == "kill_switch"
