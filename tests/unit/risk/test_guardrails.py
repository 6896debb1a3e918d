"""Each guardrail refuses exactly when its limit is crossed (both sides of the boundary), by name."""

from __future__ import annotations

import datetime as dt

import pytest

from services.core.events import Heartbeat, OrderRequest, RiskRejection
from services.risk.config import (
    CooldownConfig,
    DuplicateConfig,
    EntryWindowConfig,
    RiskConfig,
    StaleDataConfig,
    ThrottleConfig,
)
from services.risk.event_halts import EconomicEvent, EventCalendar, EventKind, EventsConfig
from services.risk.guardrails import RULE_NAMES

from .support import MIN, NS, T0, Harness, make_intent, ny_ns, utc_ns


def approved(decision: object) -> OrderRequest:
    assert isinstance(decision, OrderRequest), decision
    return decision


def refused(decision: object, rule: str) -> RiskRejection:
    assert isinstance(decision, RiskRejection), decision
    assert decision.rule == rule, decision
    assert decision.reason
    return decision


def _contract(i: int) -> str:
    return f"SPY250708C{620000 + i * 1000:08d}"


def test_rule_names_and_order_are_stable() -> None:
    assert RULE_NAMES == (
        "state_unavailable",
        "kill_switch",
        "daily_loss_limit",
        "entry_window",
        "event_halt",
        "stale_feed",
        "stale_data",
        "duplicate_intent",
        "order_throttle",
        "loss_cooldown",
        "max_open_positions",
        "max_contracts_per_order",
        "contracts_per_contract",
        "contracts_per_underlying",
        "premium_per_symbol",
        "premium_total",
    )


def test_approval_is_an_order_request_with_a_derived_id() -> None:
    h = Harness()
    req = approved(h.intent("i-1", T0, quantity=2, limit_price=2.5, take_profit=3.5, stop_loss=1.5))
    assert req.id == "ord-i-1" and req.intent_id == "i-1"
    assert (req.quantity, req.limit_price, req.take_profit, req.stop_loss) == (2, 2.5, 3.5, 1.5)
    assert (req.underlying, req.contract, req.side, req.playbook, req.ts) == (
        "SPY",
        "SPY250708C00620000",
        "buy",
        "orb",
        T0,
    )
    long_id = "x" * 64
    req2 = approved(h.intent(long_id, T0 + NS, contract=_contract(1)))
    assert len(req2.id) == 64 and req2.id.startswith("ord-x")


def test_max_open_positions() -> None:
    h = Harness(RiskConfig(max_open_positions=2))
    approved(h.intent("a", T0, contract=_contract(1)))
    approved(h.intent("b", T0 + NS, contract=_contract(2)))  # 1 open -> 2nd allowed
    r = refused(h.intent("c", T0 + 2 * NS, contract=_contract(3)), "max_open_positions")  # 2 open -> refused
    assert "2 positions" in r.reason and "max 2" in r.reason
    # Adding to a contract already held opens no new position.
    approved(h.intent("d", T0 + 40 * NS, contract=_contract(1)))


@pytest.mark.parametrize("mode", ["cap", "reject"])
def test_max_contracts_per_order(mode: str) -> None:
    h = Harness(RiskConfig(max_contracts_per_order=5, sizing_mode=mode, max_open_positions=10))  # type: ignore[arg-type]
    assert approved(h.intent("a", T0, quantity=5, contract=_contract(1), limit_price=1.0)).quantity == 5
    over = h.intent("b", T0 + NS, quantity=6, contract=_contract(2), limit_price=1.0)
    if mode == "cap":
        assert approved(over).quantity == 5
    else:
        assert "6 contracts exceeds the 5-contract cap" in refused(over, "max_contracts_per_order").reason


def test_max_contracts_scaled_by_calibration() -> None:
    h = Harness(RiskConfig(max_contracts_per_order=10), risk_multiplier=0.5)
    assert approved(h.intent("a", T0, quantity=8, limit_price=0.5)).quantity == 5  # floor(10 x 0.5)


def test_premium_per_symbol_boundary_to_the_cent() -> None:
    cfg = RiskConfig(max_premium_per_symbol_usd=1000, max_open_positions=10, sizing_mode="reject")
    h = Harness(cfg)
    # 4 x 2.50 x 100 = 1000.00 USD: exactly at the cap -> allowed.
    approved(h.intent("a", T0, quantity=4, limit_price=2.5, contract=_contract(1)))
    # Any further premium on SPY crosses it; QQQ is unaffected.
    r = refused(
        h.intent("b", T0 + NS, quantity=1, limit_price=0.05, contract=_contract(2)), "premium_per_symbol"
    )
    assert "cap 1000.00 USD" in r.reason and "1000.00 USD already" in r.reason
    approved(h.intent("q", T0 + 2 * NS, underlying="QQQ", quantity=4, limit_price=2.5))


def test_premium_per_symbol_float_noise_does_not_flip_the_boundary() -> None:
    # 2.35 * 100 = 234.99999999999997 in floats; 2 contracts are exactly the 470 USD cap.
    h = Harness(RiskConfig(max_premium_per_symbol_usd=470, sizing_mode="reject"))
    approved(h.intent("a", T0, quantity=2, limit_price=2.35))
    h2 = Harness(RiskConfig(max_premium_per_symbol_usd=469.99, sizing_mode="reject"))
    refused(h2.intent("a", T0, quantity=2, limit_price=2.35), "premium_per_symbol")


def test_premium_cap_mode_shrinks_then_refuses() -> None:
    h = Harness(RiskConfig(max_premium_per_symbol_usd=1000, max_open_positions=10))
    assert approved(h.intent("a", T0, quantity=5, limit_price=2.5, contract=_contract(1))).quantity == 4
    refused(h.intent("b", T0 + NS, quantity=1, limit_price=2.5, contract=_contract(2)), "premium_per_symbol")


def test_sell_entries_are_sized_by_the_stop() -> None:
    # Selling at 2.00 with a stop at 4.00: 400 USD per contract at risk, not the 200 received.
    h = Harness(RiskConfig(max_premium_per_symbol_usd=1000))
    req = approved(
        h.intent("a", T0, side="sell", quantity=5, limit_price=2.0, take_profit=1.0, stop_loss=4.0)
    )
    assert req.quantity == 2


def test_premium_total() -> None:
    cfg = RiskConfig(max_premium_per_symbol_usd=5000, max_premium_total_usd=1500, max_open_positions=10)
    h = Harness(cfg)
    approved(h.intent("s", T0, quantity=4, limit_price=2.5))  # 1000 USD on SPY
    assert (
        approved(h.intent("q", T0 + NS, underlying="QQQ", quantity=3, limit_price=2.5)).quantity == 2
    )  # +500
    r = refused(h.intent("n", T0 + 2 * NS, underlying="IWM", quantity=1, limit_price=0.01), "premium_total")
    assert "in total" in r.reason


def test_premium_total_scaled_by_calibration() -> None:
    h = Harness(RiskConfig(max_premium_total_usd=1000, sizing_mode="reject"), risk_multiplier=0.5)
    approved(h.intent("a", T0, quantity=2, limit_price=2.5))  # 500 = 1000 x 0.5
    h2 = Harness(RiskConfig(max_premium_total_usd=1000, sizing_mode="reject"), risk_multiplier=0.5)
    refused(h2.intent("a", T0, quantity=3, limit_price=2.5), "premium_total")


def test_order_throttle_rolling_minute() -> None:
    h = Harness(RiskConfig(throttle=ThrottleConfig(max_orders_per_minute=3), max_open_positions=10))
    for i in range(3):
        approved(h.intent(f"a{i}", T0 + i * NS, contract=_contract(i)))
    r = refused(h.intent("b", T0 + 60 * NS - 1, contract=_contract(5)), "order_throttle")
    assert "3 orders in the last minute (max 3)" in r.reason
    # At T0 + 60 s the first approval (at T0) leaves the rolling minute.
    approved(h.intent("c", T0 + 60 * NS, contract=_contract(6)))
    refused(h.intent("d", T0 + 60 * NS + 1, contract=_contract(7)), "order_throttle")


def test_duplicate_intent_guard() -> None:
    h = Harness(RiskConfig(duplicate=DuplicateConfig(window_s=30), max_open_positions=10))
    approved(h.intent("a", T0))
    r = refused(h.intent("a", T0 + NS), "duplicate_intent")  # same id
    assert "already decided" in r.reason
    r = refused(h.intent("b", T0 + 30 * NS - 1), "duplicate_intent")  # same underlying+playbook+contract
    assert "orb already entered SPY250708C00620000 30.0 s ago (window 30 s)" in r.reason
    approved(h.intent("c", T0 + 30 * NS - 1, playbook="vwap_reclaim"))  # other playbook
    approved(h.intent("d", T0 + 30 * NS - 1, contract=_contract(9)))  # other contract
    approved(h.intent("e", T0 + 30 * NS))  # window over
    refused(h.intent("a", T0 + 300 * NS, contract=_contract(8)), "duplicate_intent")  # same id, much later


def test_a_refused_intent_does_not_arm_the_contract_window() -> None:
    h = Harness(RiskConfig(max_contracts_per_order=1, sizing_mode="reject"))
    refused(h.intent("a", T0, quantity=2), "max_contracts_per_order")
    approved(h.intent("b", T0 + NS, quantity=1))


def test_loss_cooldown_per_symbol() -> None:
    h = Harness(
        RiskConfig(cooldown=CooldownConfig(losses=2, minutes=10, scope="symbol"), max_open_positions=10)
    )
    h.outcome("o1", T0, -50)
    approved(h.intent("a", T0 + NS, contract=_contract(1)))  # one loss: no cooldown
    h.outcome("o2", T0 + 2 * NS, 0.0)  # a scratch breaks the streak
    h.outcome("o3", T0 + 3 * NS, -50)
    approved(h.intent("b", T0 + 4 * NS, contract=_contract(2)))
    last_loss = T0 + 5 * NS
    h.outcome("o4", last_loss, -20)  # 2nd loss in a row
    approved(h.intent("q", last_loss + NS, underlying="QQQ"))  # other symbol unaffected
    r = refused(h.intent("c", last_loss + 10 * MIN - 1, contract=_contract(3)), "loss_cooldown")
    assert "2 losses in a row on SPY; no entries until 11:10:05 New York" in r.reason
    approved(h.intent("d", last_loss + 10 * MIN, contract=_contract(4)))
    h.outcome("o5", last_loss + 11 * MIN, -20)  # the streak restarted at the cooldown
    approved(h.intent("e", last_loss + 12 * MIN, contract=_contract(5)))


def test_loss_cooldown_global_scope() -> None:
    h = Harness(RiskConfig(cooldown=CooldownConfig(losses=2, minutes=10, scope="global")))
    h.outcome("o1", T0, -50, underlying="SPY")
    h.outcome("o2", T0 + NS, -50, underlying="QQQ")
    r = refused(h.intent("a", T0 + 2 * NS, underlying="IWM"), "loss_cooldown")
    assert "all symbols" in r.reason
    h.outcome("o2", T0 + 3 * NS, -50, underlying="QQQ")  # redelivered outcome: ignored
    approved(h.intent("b", T0 + NS + 10 * MIN, underlying="IWM"))


def test_stale_heartbeat_from_the_state_store() -> None:
    h = Harness(RiskConfig(stale_data=StaleDataConfig(max_heartbeat_age_s=10, max_market_data_age_s=None)))
    e = h.engine
    refused(e.on_intent(make_intent("a", h.at(T0))), "stale_data")  # no heartbeat yet
    h.heartbeat(T0)
    ok = e.on_intent(make_intent("b", h.at(T0 + 10 * NS), contract=_contract(1)))  # exactly 10 s old
    approved(ok)
    r = refused(e.on_intent(make_intent("c", h.at(T0 + 10 * NS + 1), contract=_contract(2))), "stale_data")
    assert "heartbeat is 10.0 s old (max 10 s)" in r.reason
    h.heartbeat(T0 + 10 * NS + 1, seq=2)  # ingest writes a new heartbeat: entries resume
    approved(e.on_intent(make_intent("d", h.at(T0 + 11 * NS), contract=_contract(2))))


def test_stale_heartbeat_from_events_and_source_filter() -> None:
    cfg = RiskConfig(
        stale_data=StaleDataConfig(
            max_heartbeat_age_s=5, heartbeat_source="polygon", max_market_data_age_s=None
        )
    )
    h = Harness(cfg)
    e = h.engine
    e.on_heartbeat(Heartbeat(ts=h.at(T0), source="replay", seq=1))  # not the configured source
    refused(e.on_intent(make_intent("a", T0)), "stale_data")
    e.on_heartbeat(Heartbeat(ts=T0, source="polygon", seq=1))
    approved(e.on_intent(make_intent("b", h.at(T0 + 5 * NS))))
    refused(e.on_intent(make_intent("c", h.at(T0 + 5 * NS + 1), contract=_contract(1))), "stale_data")


def test_stale_market_data() -> None:
    h = Harness(RiskConfig(stale_data=StaleDataConfig(max_heartbeat_age_s=None, max_market_data_age_s=30)))
    e = h.engine
    refused(e.on_intent(make_intent("a", h.at(T0))), "stale_data")  # no features for SPY yet
    h.features("SPY", T0)
    approved(e.on_intent(make_intent("b", h.at(T0 + 30 * NS))))
    r = refused(e.on_intent(make_intent("c", h.at(T0 + 30 * NS + 1), contract=_contract(1))), "stale_data")
    assert "SPY market data is 30.0 s old" in r.reason
    h.features("QQQ", T0 + 31 * NS)  # another underlying's data does not refresh SPY
    refused(e.on_intent(make_intent("d", h.at(T0 + 31 * NS), contract=_contract(2))), "stale_data")


def test_stale_checks_can_be_disabled() -> None:
    h = Harness(RiskConfig(stale_data=StaleDataConfig(max_heartbeat_age_s=None, max_market_data_age_s=None)))
    approved(h.engine.on_intent(make_intent("a", h.at(T0))))


def test_entry_window_regular_day() -> None:
    cfg = RiskConfig(entry_window=EntryWindowConfig(minutes_after_open=5, minutes_before_close=15))
    h = Harness(cfg, t0=ny_ns(2025, 7, 8, 9, 0))
    refused(h.intent("pre", ny_ns(2025, 7, 8, 9, 29)), "entry_window")  # before the open
    r = refused(h.intent("a", ny_ns(2025, 7, 8, 9, 35) - 1), "entry_window")
    assert "5 min after the open (entries from 09:35 New York)" in r.reason
    approved(h.intent("b", ny_ns(2025, 7, 8, 9, 35), contract=_contract(1)))
    approved(h.intent("c", ny_ns(2025, 7, 8, 15, 45) - 1, contract=_contract(2)))
    r = refused(h.intent("d", ny_ns(2025, 7, 8, 15, 45), contract=_contract(3)), "entry_window")
    assert "15 min of the close at 16:00 New York" in r.reason and "early" not in r.reason
    refused(h.intent("e", ny_ns(2025, 7, 8, 16, 5), contract=_contract(4)), "entry_window")


def test_entry_window_early_close() -> None:
    # 2025-11-28, the day after Thanksgiving, closes at 13:00 New York (EST: 18:00 UTC).
    cfg = RiskConfig(entry_window=EntryWindowConfig(minutes_after_open=5, minutes_before_close=15))
    h = Harness(cfg, t0=utc_ns(2025, 11, 28, 15, 0))
    approved(h.intent("a", utc_ns(2025, 11, 28, 17, 45) - 1))  # 12:44:59.999999999 EST
    r = refused(h.intent("b", utc_ns(2025, 11, 28, 17, 45), contract=_contract(1)), "entry_window")
    assert "close at 13:00 New York, early close (no entries from 12:45)" in r.reason


def test_entry_window_holiday_and_weekend() -> None:
    h = Harness(t0=ny_ns(2025, 7, 4, 11, 0))
    r = refused(h.intent("a", ny_ns(2025, 7, 4, 11, 0)), "entry_window")
    assert "no trading session on 2025-07-04" in r.reason
    refused(h.intent("b", ny_ns(2025, 7, 5, 11, 0)), "entry_window")


def _halts(day: dt.date, local_time: str, before: float, after: float) -> EventCalendar:
    return EventCalendar.from_config(
        EventsConfig(
            kinds={"CPI": EventKind(time=local_time, minutes_before=before, minutes_after=after)},
            events=[EconomicEvent(kind="CPI", date=day)],
        )
    )


def test_event_halt_on_spring_dst_change_date() -> None:
    # Event 2025-03-10 08:30 New York. DST began 2025-03-09, so 08:30 EDT = 12:30 UTC and the
    # 75-minute tail ends 13:45 UTC (09:45 EDT). With EST by mistake it would end at 14:45 UTC.
    cfg = RiskConfig(entry_window=EntryWindowConfig(minutes_after_open=0, minutes_before_close=0))
    h = Harness(cfg, events=_halts(dt.date(2025, 3, 10), "08:30", 10, 75), t0=utc_ns(2025, 3, 10, 13, 0))
    r = refused(h.intent("a", utc_ns(2025, 3, 10, 13, 30)), "event_halt")  # 09:30 EDT, the open
    assert "CPI 2025-03-10 08:30 New York" in r.reason
    refused(h.intent("b", utc_ns(2025, 3, 10, 13, 45) - 1, contract=_contract(1)), "event_halt")
    approved(h.intent("c", utc_ns(2025, 3, 10, 13, 45), contract=_contract(2)))  # 09:45 EDT


def test_event_halt_on_fall_dst_change_date() -> None:
    # Event 2025-11-03 08:30 New York. DST ended 2025-11-02, so 08:30 EST = 13:30 UTC and the
    # tail ends 14:45 UTC (09:45 EST). With EDT by mistake it would end at 13:45 UTC.
    cfg = RiskConfig(entry_window=EntryWindowConfig(minutes_after_open=0, minutes_before_close=0))
    h = Harness(cfg, events=_halts(dt.date(2025, 11, 3), "08:30", 10, 75), t0=utc_ns(2025, 11, 3, 14, 30))
    refused(h.intent("a", utc_ns(2025, 11, 3, 14, 45) - 1), "event_halt")  # 09:44:59 EST
    approved(h.intent("b", utc_ns(2025, 11, 3, 14, 45), contract=_contract(1)))  # 09:45 EST


def test_event_halt_intraday_window_both_edges() -> None:
    # An intraday release at 10:00 New York on 2025-03-10 (EDT): 14:00 UTC, halt 13:50-14:20 UTC.
    h = Harness(events=_halts(dt.date(2025, 3, 10), "10:00", 10, 20), t0=utc_ns(2025, 3, 10, 13, 40))
    approved(h.intent("a", utc_ns(2025, 3, 10, 13, 50) - 1))
    refused(h.intent("b", utc_ns(2025, 3, 10, 13, 50), contract=_contract(1)), "event_halt")
    refused(h.intent("c", utc_ns(2025, 3, 10, 14, 20) - 1, contract=_contract(2)), "event_halt")
    approved(h.intent("d", utc_ns(2025, 3, 10, 14, 20), contract=_contract(3)))


def test_first_failing_rule_in_order_is_reported() -> None:
    h = Harness(RiskConfig(max_contracts_per_order=1, sizing_mode="reject"))
    e = h.engine
    # Stale (no heartbeat) AND too many contracts: stale_data comes first.
    refused(e.on_intent(make_intent("a", h.at(T0), quantity=5)), "stale_data")
    # Outside the session AND stale: entry_window comes first.
    refused(e.on_intent(make_intent("b", h.at(ny_ns(2025, 7, 8, 17, 0)), quantity=5)), "entry_window")
