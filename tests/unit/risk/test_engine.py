"""RiskEngine book-keeping: working entries, fills awaiting positions, determinism."""

from __future__ import annotations

from services.core.events import OrderRequest, RiskRejection, encode_json
from services.risk.config import RiskConfig

from .support import MIN, NS, T0, Harness

C1 = "SPY250708C00620000"
C2 = "SPY250708P00600000"


def test_working_entry_counts_until_canceled() -> None:
    h = Harness(RiskConfig(max_premium_per_symbol_usd=1000, sizing_mode="reject"))
    e = h.engine
    req = h.intent("a", T0, quantity=4, limit_price=2.5)
    assert isinstance(req, OrderRequest)
    assert e.premium_at_risk("SPY") == 1000.0 and e.open_contracts() == {C1}
    h.order_event(req.id, T0 + NS, "working", qty=4)
    r = h.intent("b", T0 + 2 * NS, contract=C2, limit_price=0.5)
    assert isinstance(r, RiskRejection) and r.rule == "premium_per_symbol"
    h.order_event(req.id, T0 + 3 * NS, "canceled", qty=4)
    assert e.premium_at_risk() == 0.0 and e.open_contracts() == frozenset()
    assert isinstance(h.intent("c", T0 + 4 * NS, contract=C2, quantity=4, limit_price=2.5), OrderRequest)


def test_fill_stays_counted_until_its_position_arrives() -> None:
    h = Harness()
    e = h.engine
    req = h.intent("a", T0, quantity=3, limit_price=2.0)
    assert isinstance(req, OrderRequest)
    h.order_event(req.id, T0 + NS, "partial", qty=3, filled=1)
    assert e.premium_at_risk() == 600.0  # 2 working + 1 filled, awaiting its Position
    h.order_event(req.id, T0 + 2 * NS, "filled", qty=3, filled=3)
    assert e.premium_at_risk() == 600.0
    h.position(C1, T0 + 2 * NS, qty=3, avg=2.1)
    assert round(e.premium_at_risk(), 2) == 630.0  # now the position's cost basis: 3 x 2.10 x 100
    assert e.open_contracts() == {C1}
    h.position(C1, T0 + 5 * NS, qty=0, avg=0.0)  # closed
    assert e.premium_at_risk() == 0.0 and e.open_contracts() == frozenset()
    h.position(C1, T0 + 4 * NS, qty=3, avg=2.1)  # a late, stale snapshot is ignored
    assert e.open_contracts() == frozenset()


def test_oms_suffixed_client_order_id_matches_the_request() -> None:
    h = Harness()
    e = h.engine
    req = h.intent("a", T0, quantity=2, limit_price=2.0)
    assert isinstance(req, OrderRequest)
    h.order_event(f"{req.id}-entry", T0 + NS, "working", qty=2)
    h.order_event(f"{req.id}-entry", T0 + 2 * NS, "rejected", qty=2)
    assert e.premium_at_risk() == 0.0


def test_exit_legs_do_not_change_entry_exposure() -> None:
    h = Harness()
    e = h.engine
    req = h.intent("a", T0, quantity=1, limit_price=2.0)
    assert isinstance(req, OrderRequest)
    h.order_event(f"{req.id}-tp", T0 + NS, "working", qty=1, leg="take_profit", price=3.0)
    assert e.premium_at_risk() == 200.0


def test_unknown_entry_orders_from_the_oms_are_counted() -> None:
    h = Harness()
    h.order_event("manual-1", T0, "working", qty=2, price=1.5)
    assert h.engine.premium_at_risk("SPY") == 300.0


def test_unacknowledged_approvals_expire_at_the_next_date() -> None:
    h = Harness()
    assert isinstance(h.intent("a", T0, quantity=2), OrderRequest)
    assert h.engine.premium_at_risk() == 400.0
    h.engine.check(T0 + 24 * 60 * MIN)
    assert h.engine.premium_at_risk() == 0.0


def test_intent_ids_reset_with_the_date() -> None:
    h = Harness()
    assert isinstance(h.intent("a", T0), OrderRequest)
    assert isinstance(h.intent("a", T0 + 24 * 60 * MIN), OrderRequest)


def _run() -> list[bytes]:
    h = Harness(RiskConfig(max_open_positions=2, max_daily_loss_usd=300))
    out: list[bytes] = []
    for i, contract in enumerate((C1, C2, "SPY250708C00630000")):
        out.append(encode_json(h.intent(f"i{i}", T0 + i * NS, contract=contract)))
    h.outcome("o1", T0 + 10 * NS, -350.0)
    out += [encode_json(c) for c in h.engine.check(T0 + 10 * NS)]
    out.append(encode_json(h.intent("late", T0 + 11 * NS)))
    return out


def test_outputs_are_deterministic() -> None:
    first, second = _run(), _run()
    assert first == second
    assert b'"rule":"max_open_positions"' in first[2] and b"engage_kill_switch" in first[3]


def test_snapshot() -> None:
    h = Harness()
    h.intent("a", T0, quantity=2)
    h.outcome("o1", T0 + NS, -20.0)
    snap = h.engine.snapshot()
    assert snap.realized_pnl_usd == -20.0 and snap.open_positions == 1 and snap.premium_at_risk_usd == 400.0
    assert snap.kill_switch.engaged is False and snap.state_available and snap.risk_multiplier == 1.0
