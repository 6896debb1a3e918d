"""Order state machine: legal transitions only, fill accounting per leg, contract parsing."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from services.core.events import OrderEvent, OrderStatus
from services.oms.orders import (
    LEGAL_TRANSITIONS,
    TERMINAL_STATUSES,
    ContractSymbolError,
    FillMismatchError,
    IllegalTransitionError,
    OptionContract,
    OrderBook,
    OrderLeg,
    check_transition,
    exposure_direction,
)

from .support import SPXW_C6200, make_request


def _event(status: OrderStatus, seq: int, **over: Any) -> OrderEvent:
    base: dict[str, Any] = dict(ts=seq, id=f"o1.{seq}", order_id="o1", client_order_id="r1", underlying="SPX",
                                contract=SPXW_C6200, leg="entry", side="buy", status=status, quantity=3,
                                limit_price=5.0)
    base.update(over)
    return OrderEvent(**base)


def test_happy_path_entry_fills_in_two_parts() -> None:
    book = OrderBook()
    book.add_bracket(make_request("r1", SPXW_C6200, 3, 5.0, 9.0, 2.0), "r1")
    assert book.apply(_event("accepted", 1)) is None
    assert book.apply(_event("working", 2)) is None
    first = book.apply(_event("partial", 3, filled_quantity=1, fill_price=5.0, fees=0.55))
    second = book.apply(_event("filled", 4, filled_quantity=3, fill_price=4.9, fees=1.10))
    assert first is not None and second is not None
    assert (first.quantity, first.price, second.quantity, second.price) == (1, 5.0, 2, 4.9)
    leg = book.legs["o1"]
    assert leg.status == "filled" and leg.is_terminal
    assert leg.avg_fill_price == pytest.approx((5.0 + 2 * 4.9) / 3)
    assert leg.fees == pytest.approx(1.65)
    assert book.brackets["r1"].entry_id == "o1"
    assert second.delay_ns == 4 - 2  # live since the working event at ts=2


@pytest.mark.parametrize(
    ("path", "bad"),
    [
        (["accepted", "working"], "accepted"),
        (["accepted", "canceled"], "working"),
        (["accepted", "rejected"], "accepted"),
        (["accepted", "expired"], "modified"),
        ([], "working"),  # a new order must start with accepted or rejected
        ([], "filled"),
    ],
)
def test_illegal_transitions_raise(path: list[OrderStatus], bad: OrderStatus) -> None:
    book = OrderBook()
    for i, status in enumerate(path, start=1):
        book.apply(_event(status, i))
    with pytest.raises(IllegalTransitionError) as err:
        book.apply(_event(bad, 99, filled_quantity=3 if bad == "filled" else 0,
                          fill_price=5.0 if bad == "filled" else None))
    assert "illegal transition" in str(err.value)


def test_filled_order_cannot_move_again() -> None:
    leg = OrderLeg("o1", "r1", "SPX", SPXW_C6200, "entry", "buy", 1)
    leg.transition("accepted")
    leg.transition("filled")
    for status in LEGAL_TRANSITIONS:
        with pytest.raises(IllegalTransitionError):
            leg.transition(status)


def test_transition_table_is_closed_and_terminals_are_final() -> None:
    for current, nexts in LEGAL_TRANSITIONS.items():
        assert nexts <= set(LEGAL_TRANSITIONS)
        if current in TERMINAL_STATUSES:
            assert not nexts
    check_transition("o", "modified", "working")
    check_transition("o", "partial", "partial")
    with pytest.raises(IllegalTransitionError):
        check_transition("o", "working", "accepted")


def test_fill_accounting_errors_are_typed() -> None:
    book = OrderBook()
    book.apply(_event("accepted", 1))
    with pytest.raises(FillMismatchError, match="filled 4 of 3"):
        book.apply(_event("partial", 2, filled_quantity=4, fill_price=5.0))
    with pytest.raises(FillMismatchError, match="without a valid fill_price"):
        book.apply(_event("partial", 3, filled_quantity=1))
    with pytest.raises(FillMismatchError, match="status filled at 2 of 3"):
        book.apply(_event("filled", 4, filled_quantity=2, fill_price=5.0))
    with pytest.raises(FillMismatchError, match="without a modify"):
        book.apply(_event("working", 5, quantity=2))
    book.apply(_event("partial", 6, filled_quantity=2, fill_price=5.0))
    with pytest.raises(FillMismatchError, match="went back"):
        book.apply(_event("partial", 7, filled_quantity=1, fill_price=5.0))
    with pytest.raises(FillMismatchError, match="changes the filled quantity"):
        book.apply(_event("canceled", 8, filled_quantity=3))
    # A modify may shrink the order (OCO), not below what is filled.
    book.apply(_event("modified", 9, quantity=2, filled_quantity=2))
    assert book.legs["o1"].quantity == 2


def test_repeated_event_is_recognised() -> None:
    book = OrderBook()
    ev = _event("accepted", 1)
    assert not book.seen(ev)
    book.apply(ev)
    assert book.seen(ev)


def test_occ_symbols_parse_and_intrinsic() -> None:
    c = OptionContract.parse("O:SPXW250708C06200000")
    assert (c.root, c.expiry, c.right, c.strike) == ("SPXW", dt.date(2025, 7, 8), "C", 6200.0)
    assert c.intrinsic(6212.345) == 12.35 and c.intrinsic(6100) == 0.0
    p = OptionContract.parse("SPY240607P00512500")
    assert (p.root, p.strike, p.right) == ("SPY", 512.5, "P")
    assert p.intrinsic(510.0) == 2.5
    with pytest.raises(ContractSymbolError, match="not an OCC option symbol"):
        OptionContract.parse("SPY")
    with pytest.raises(ContractSymbolError, match="invalid expiry"):
        OptionContract.parse("SPY251399C00600000")
    assert exposure_direction("buy", "C") == 1 and exposure_direction("buy", "P") == -1
    assert exposure_direction("sell", "P") == 1 and exposure_direction("sell", "C") == -1
