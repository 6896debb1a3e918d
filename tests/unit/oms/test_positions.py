"""Position and round-trip accounting: averages, realized/unrealized net of fees, MAE/MFE, FIFO."""

from __future__ import annotations

import pytest

from services.core.events import Side, TradeOutcome
from services.oms.orders import Fill
from services.oms.positions import ContractPosition, PositionBook

from .support import SPY_C620, make_request


def _fill(side: Side, qty: int, price: float, fees: float, ts: int, coid: str = "r1", leg: str = "entry",
          reason: str = "") -> Fill:
    return Fill("o", coid, leg, "SPY", SPY_C620, side, qty, price, fees, ts, 0, reason)  # type: ignore[arg-type]


def test_average_price_realized_and_unrealized() -> None:
    pos = ContractPosition("SPY", SPY_C620)
    pos.apply("buy", 2, 1.00, 1.10)
    pos.apply("buy", 1, 1.30, 0.55)
    # avg = (2*1.00 + 1*1.30) / 3 = 1.10
    assert (pos.quantity, pos.avg_price) == (3, pytest.approx(1.10))
    pos.mark = 1.20
    assert pos.unrealized == pytest.approx((1.20 - 1.10) * 3 * 100)  # 30.00
    pos.apply("sell", 2, 1.50, 1.12)
    # realized = (1.50 - 1.10)*2*100 - (1.10 + 0.55 + 1.12) = 80 - 2.77 = 77.23
    assert pos.realized == pytest.approx(77.23)
    assert (pos.quantity, pos.avg_price) == (1, pytest.approx(1.10))
    pos.apply("sell", 1, 0.90, 0.56)
    # + (0.90 - 1.10)*100 - 0.56 = -20.56 -> 56.67
    assert pos.realized == pytest.approx(56.67) and pos.quantity == 0 and pos.avg_price == 0.0
    # The accounting identity: realized = sold - bought - fees.
    assert pos.realized == pytest.approx(pos.sold - pos.bought - pos.fees)


def test_short_position_and_crossing_through_zero() -> None:
    pos = ContractPosition("SPY", SPY_C620)
    pos.apply("sell", 2, 2.00, 0.0)
    pos.mark = 1.50
    assert pos.unrealized == pytest.approx(100.0)  # (1.50 - 2.00) * -2 * 100
    pos.apply("buy", 3, 1.50, 0.0)  # covers 2 (+100) and goes long 1 @ 1.50
    assert (pos.quantity, pos.avg_price, pos.realized) == (1, 1.50, pytest.approx(100.0))


def test_round_trip_outcome_mae_mfe_and_fifo_settlement() -> None:
    book = PositionBook()
    book.open_trade("r1", make_request("r1", SPY_C620, 2, 1.00, 2.0, 0.5), "why", {"x": 1.0})
    book.open_trade("r2", make_request("r2", SPY_C620, 1, 1.00, 2.0, 0.5))
    book.on_fill(_fill("buy", 2, 1.00, 1.10, 10, "r1"), "r1", "")
    book.on_fill(_fill("buy", 1, 1.20, 0.55, 11, "r2"), "r2", "")
    book.mark(SPY_C620, 0.80)  # r1 running: (0.80-1.00)*2*100 = -40; r2: (0.80-1.20)*100 = -40
    book.mark(SPY_C620, 1.40)  # r1: +80; r2: +20
    assert book.entry_finished("r1", 12) == [] and book.entry_finished("r2", 12) == []
    # An unattributed closing fill (an expiry settlement) closes the oldest trades first.
    out = book.on_fill(_fill("sell", 3, 1.10, 0.0, 20, "expiry-x", "flatten", "expiry:cash_settled"), None,
                       "expiry")
    done = [e for e in out if isinstance(e, TradeOutcome)]
    assert [o.id for o in done] == ["r1", "r2"]
    r1, r2 = done
    # r1: (1.10 - 1.00)*2*100 - 1.10 = 18.90; r2: (1.10 - 1.20)*100 - 0.55 = -10.55
    assert (r1.pnl, r2.pnl) == (pytest.approx(18.90), pytest.approx(-10.55))
    assert (r1.mae, r1.mfe, r2.mae, r2.mfe) == (
        pytest.approx(-40.0), pytest.approx(80.0), pytest.approx(-40.0), pytest.approx(20.0))
    assert (r1.exit_reason, r1.reason, r1.context) == ("expiry", "why", {"x": 1.0})
    assert book.is_flat()
    assert book.realized() == pytest.approx(18.90 - 10.55)


def test_trade_closes_only_when_the_entry_is_done() -> None:
    book = PositionBook()
    book.open_trade("r1", make_request("r1", SPY_C620, 5, 1.00, 2.0, 0.5))
    book.on_fill(_fill("buy", 2, 1.00, 0.0, 1), "r1", "")
    out = book.on_fill(_fill("sell", 2, 1.50, 0.0, 2, leg="take_profit"), "r1", "take_profit")
    assert not any(isinstance(e, TradeOutcome) for e in out)  # the entry may still buy more
    (outcome,) = book.entry_finished("r1", 3)
    assert isinstance(outcome, TradeOutcome)
    assert (outcome.quantity, outcome.pnl, outcome.ts, outcome.exit_ts) == (2, pytest.approx(100.0), 3, 2)


def test_position_updates_only_when_numbers_change() -> None:
    book = PositionBook()
    book.open_trade("r1", make_request("r1", SPY_C620, 1, 1.00, 2.0, 0.5))
    book.on_fill(_fill("buy", 1, 1.00, 0.0, 1), "r1", "")
    assert book.position_updates(2, [SPY_C620]) == []
    book.mark(SPY_C620, 1.10)
    (update,) = book.position_updates(3, [SPY_C620])
    assert update.unrealized_pnl == pytest.approx(10.0)  # type: ignore[attr-defined]
    assert book.position_updates(4, [SPY_C620, "OTHER"]) == []
