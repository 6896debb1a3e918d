"""Sizing arithmetic, tick rounding, brackets and limit prices, checked by hand."""

from __future__ import annotations

import pytest

from services.signals.playbooks import BracketRules, LimitRule, SizingRules, TickRule
from services.signals.sizing import (
    BracketPrices,
    bracket_prices,
    limit_price,
    round_to_tick,
    size_position,
    tick_down,
    tick_up,
)

from .builders import rec

SPX = TickRule(below=0.01, above=0.05, threshold=3.0)
PENNY = TickRule(below=0.01, above=0.01, threshold=3.0)
PREMIUM = BracketRules(mode="premium", take_profit_pct=0.5, stop_loss_pct=0.3)


def test_size_is_floor_of_budget_over_per_contract_risk() -> None:
    rules = SizingRules(risk_per_trade_usd=200, max_contracts=10)
    # (1.00 - 0.60) x 100 = $40 per contract (40.00000000000001 in floats): 200 / 40 = 5 exactly.
    assert size_position(1.00, 0.60, rules).quantity == 5
    # (0.52 - 0.36) x 100 = $16: floor(12.5) = 12, capped at 10.
    capped = size_position(0.52, 0.36, rules)
    assert capped.quantity == 10
    assert capped.reason == "10 contracts: floor($200 x 1 / $16 per contract) = 12, capped at 10"
    # risk multiplier 0.5: floor(100 / 16) = 6
    assert size_position(0.52, 0.36, rules, risk_multiplier=0.5).quantity == 6


def test_no_trade_when_one_contract_does_not_fit() -> None:
    rules = SizingRules(risk_per_trade_usd=200, max_contracts=10)
    # SPX: (12.00 - 9.90) x 100 = $210 > $200
    none = size_position(12.00, 9.90, rules)
    assert none.quantity == 0
    assert none.reason == "one contract risks $210 > budget $200: floor($200 x 1 / $210 per contract) = 0"
    assert size_position(12.00, 10.00, rules).quantity == 1  # exactly $200 fits
    assert size_position(1.0, 1.0, rules).quantity == 0
    assert size_position(1.0, 0.5, rules, risk_multiplier=0.0).quantity == 0


@pytest.mark.parametrize(
    ("price", "rule", "expected"),
    [
        (2.996, SPX, 3.00),  # 0.01 grid below $3
        (2.994, SPX, 2.99),
        (3.024, SPX, 3.00),  # 0.05 grid at/above $3
        (3.025, SPX, 3.05),  # half up
        (4.521, SPX, 4.50),
        (3.08, SPX, 3.10),
        (3.08, PENNY, 3.08),
        (0.364, PENNY, 0.36),
        (0.365, PENNY, 0.37),
    ],
)
def test_round_to_tick(price: float, rule: TickRule, expected: float) -> None:
    assert round_to_tick(price, rule) == expected


def test_tick_steps_across_the_threshold() -> None:
    assert tick_up(2.99, SPX) == 3.00
    assert tick_up(3.00, SPX) == 3.05
    assert tick_down(3.00, SPX) == 2.99
    assert tick_down(3.05, SPX) == 3.00


def test_premium_bracket_on_spx_ticks() -> None:
    # entry 3.30: TP 4.95 (0.05 grid), SL 2.31 (0.01 grid below $3)
    assert bracket_prices(3.30, PREMIUM, SPX) == BracketPrices(
        4.95, 2.31, "TP 4.95 / SL 2.31 from entry 3.3 (premium +50%/-30%)"
    )
    # entry 2.20, TP +40% = 3.08 -> 3.10 on the 0.05 grid; SL -30% = 1.54
    rules = BracketRules(mode="premium", take_profit_pct=0.4, stop_loss_pct=0.3)
    got = bracket_prices(2.20, rules, SPX)
    assert isinstance(got, BracketPrices) and (got.take_profit, got.stop_loss) == (3.10, 1.54)
    got = bracket_prices(2.20, rules, PENNY)
    assert isinstance(got, BracketPrices) and (got.take_profit, got.stop_loss) == (3.08, 1.54)


def test_bracket_keeps_a_tick_from_entry_and_above_zero() -> None:
    tiny = BracketRules(mode="premium", take_profit_pct=0.001, stop_loss_pct=0.001)
    got = bracket_prices(1.00, tiny, PENNY)
    assert isinstance(got, BracketPrices) and (got.take_profit, got.stop_loss) == (1.01, 0.99)
    assert bracket_prices(0.01, PREMIUM, PENNY) == "stop 0.007 would be below one tick (entry 0.01)"


def test_atr_bracket_converts_through_delta() -> None:
    rules = BracketRules(mode="atr", take_profit_atr=3.0, stop_loss_atr=1.5)
    # |delta| 0.40 x ATR 0.4 = 0.16 per ATR: TP 0.82 + 0.48 = 1.30; SL 0.82 - 0.24 = 0.58
    got = bracket_prices(0.82, rules, PENNY, delta=-0.40, atr=0.4)
    assert isinstance(got, BracketPrices) and (got.take_profit, got.stop_loss) == (1.30, 0.58)
    # SPX: |delta| 0.30 x ATR 5.0 = 1.5 per ATR: TP 6.20 + 4.5 = 10.70; SL 6.20 - 2.25 = 3.95
    got = bracket_prices(6.20, rules, SPX, delta=0.30, atr=5.0)
    assert isinstance(got, BracketPrices) and (got.take_profit, got.stop_loss) == (10.70, 3.95)
    assert bracket_prices(0.82, rules, PENNY, delta=0.4, atr=None) == "atr_14 unavailable for an ATR bracket"
    assert bracket_prices(0.82, rules, PENNY, atr=0.4) == "contract delta unavailable for an ATR bracket"


def test_limit_price() -> None:
    c = rec(621, "C", 0.40, bid=0.80, ask=0.84)
    assert limit_price(c, LimitRule(at="ask"), PENNY) == (0.84, "limit 0.84 = ask")
    assert limit_price(c, LimitRule(at="mid", offset=0.01), PENNY)[0] == 0.83
    assert limit_price(c, LimitRule(at="mid", offset=0.05), PENNY)[0] == 0.84  # capped at the ask
    spx = rec(6210, "C", 0.30, bid=6.00, ask=6.40, root="SPXW")
    assert limit_price(spx, LimitRule(at="mid", offset=0.0), SPX)[0] == 6.20
