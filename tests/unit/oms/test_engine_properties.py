"""Properties over random quote paths and commands: no negative positions, no over-fills, and
realized PnL = sum(sell proceeds) - sum(buy cost) - fees, checked from the published events alone."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.core.events import Event, OrderEvent, Position, TradeOutcome
from services.oms.config import StopSyncConfig

from .support import SPY_C620, Harness, fill_deltas, make_config, make_request

cents = st.integers(min_value=1, max_value=300).map(lambda c: c / 100)
quote_step = st.tuples(
    st.just("quote"),
    st.one_of(st.integers(-25, 25), st.integers(20, 60)),  # bid move in cents: a random walk with
    # rallies (so take profits fill too), clamped at 0 (no bid)
    st.integers(0, 30),  # spread in cents (0 with bid 0: no offer either)
    st.integers(0, 5),  # bid size (0: unknown)
    st.integers(0, 5),  # ask size
)
# quantity, limit offset from the ask in cents, take-profit and stop distances in cents
submit_step = st.tuples(st.just("submit"), st.integers(1, 5), st.integers(-10, 10), st.integers(5, 60),
                        st.integers(5, 60))
command_step = st.tuples(
    st.sampled_from(["cancel", "flatten", "modify", "kill", "release", "features"]),
    st.integers(0, 5),
    cents,
)
steps = st.lists(st.one_of(quote_step, quote_step, submit_step, command_step), min_size=1, max_size=40)


def _check_invariants(h: Harness) -> None:
    for leg in h.oms.book.legs.values():
        assert 0 <= leg.filled <= leg.quantity
    for contract, pos in h.oms.positions.positions.items():
        assert pos.quantity >= 0, "long-only brackets never go short"
        assert h.broker.positions().get(contract, 0) == pos.quantity
    for trade in h.oms.positions.trades.values():
        assert 0 <= trade.exit_qty <= trade.entry_qty


def _identity(events: list[Event]) -> tuple[float, float, float, int]:
    bought = sold = fees = 0.0
    held = 0
    deltas = fill_deltas(events)
    for e in events:
        if isinstance(e, OrderEvent):
            assert e.filled_quantity <= e.quantity
            fees += e.fees
            if e.id in deltas:
                qty, price, _ = deltas[e.id]
                if e.side == "buy":
                    bought += qty * price * 100
                    held += qty
                else:
                    sold += qty * price * 100
                    held -= qty
                assert held >= 0
    return bought, sold, fees, held


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(path=steps, settle=st.integers(61_500, 62_500).map(lambda c: c / 100))
def test_random_paths_keep_the_books_consistent(path: list[tuple[Any, ...]], settle: float) -> None:
    h = Harness(make_config(stop_sync=StopSyncConfig(enabled=True, k_atr=0.5), slippage_ticks=1))
    n = 0
    bid_c, ask_c = 150, 155
    for t, step in enumerate(path, start=1):
        kind = step[0]
        if kind == "quote":
            _, move_c, spread_c, bid_size, ask_size = step
            bid_c = max(bid_c + move_c, 0)
            ask_c = bid_c + spread_c
            h.quote(t, SPY_C620, bid_c / 100, ask_c / 100, bid_size=bid_size, ask_size=ask_size,
                    underlying_price=620.0 + bid_c / 100)
        elif kind == "submit":
            _, qty, offset_c, up_c, down_c = step
            n += 1
            limit_c = max(ask_c + offset_c, 2)
            stop_c = max(limit_c - down_c, 1)
            h.submit(t, make_request(f"r{n}", SPY_C620, qty, limit_c / 100, (limit_c + up_c) / 100,
                                     stop_c / 100))
        elif kind == "features":
            h.features(t, "SPY", 620.0 + step[1] * 0.5, 0.5)
        else:
            target = f"r{step[1]}"
            if kind == "cancel":
                h.command(t, f"c{t}", "cancel", order_id=target)
            elif kind == "flatten":
                h.command(t, f"c{t}", "flatten", underlying="SPY")
            elif kind == "modify":
                h.command(t, f"c{t}", "modify", order_id=target, stop_price=step[2])
            elif kind == "kill":
                h.command(t, f"c{t}", "engage_kill_switch")
            else:
                h.command(t, f"c{t}", "release_kill_switch")
        _check_invariants(h)
        bought, sold, fees, held = _identity(h.events)
        pos = h.oms.positions.positions.get(SPY_C620)
        if pos is not None:
            # While open: realized = sold - bought - fees + cost basis of what is still held.
            assert pos.quantity == held
            basis = pos.avg_price * pos.quantity * 100
            assert pos.realized == pytest.approx(sold - bought - fees + basis, abs=1e-6)
    h.session_close({"SPY": settle})
    _check_invariants(h)
    assert h.oms.is_flat()
    bought, sold, fees, held = _identity(h.events)
    assert held == 0
    realized = h.oms.positions.realized()
    assert realized == pytest.approx(sold - bought - fees, abs=1e-6)
    outcomes = [e for e in h.events if isinstance(e, TradeOutcome)]
    assert sum(o.pnl for o in outcomes) == pytest.approx(realized, abs=1e-6)
    assert len({o.id for o in outcomes}) == len(outcomes)  # each round trip reported once
    for o in outcomes:
        assert o.mae <= 0 <= o.mfe
        assert o.pnl <= o.mfe + 1e-6  # net PnL never beats the best gross running PnL
    last = [e for e in h.events if isinstance(e, Position)]
    if last:
        assert last[-1].quantity == 0 and last[-1].realized_pnl == pytest.approx(realized, abs=1e-6)
