"""Fee arithmetic with the shipped (Tradier-like) schedule, worked by hand."""

from __future__ import annotations

from services.oms.config import FeeSchedule
from services.oms.fees import FeeModel, round_cents


def test_buy_and_sell_with_default_schedule() -> None:
    fees = FeeModel()  # 0.35 commission, 0.02685 ORF, 0.02 OCC, 0.00279 TAF (sells), SEC 0.000008
    # buy 10 @ 1.00: 10 x (0.35 + 0.02685 + 0.02) = 3.9685 -> 3.97
    assert fees.fill("SPY", "buy", 10, 1.00) == 3.97
    # sell 10 @ 2.00: 3.9685 + 10 x 0.00279 + 0.000008 x 2.00 x 10 x 100 = 3.9685 + 0.0279 + 0.016
    #               = 4.0124 -> 4.01
    assert fees.fill("SPY", "sell", 10, 2.00) == 4.01
    # one contract bought: 0.39685 -> 0.40 (half up)
    assert fees.fill("SPX", "buy", 1, 5.00) == 0.40
    assert fees.fill("SPY", "buy", 0, 1.0) == 0.0
    assert fees.settlement(5) == 0.0


def test_occ_cap_index_fee_and_exercise_fee() -> None:
    s = FeeSchedule(commission_per_contract=0.0, orf_per_contract=0.0, occ_per_contract=0.02,
                    occ_cap_per_order=55.0, taf_per_contract=0.0, sec_fee_rate=0.0,
                    index_fee_per_contract=0.60, exercise_fee_per_contract=1.00)
    fees = FeeModel(s)
    # OCC: 3000 x 0.02 = 60 -> capped at 55
    assert fees.fill("QQQ", "buy", 3000, 1.0) == 55.0
    # index root: 2 x (0.02 + 0.60) = 1.24; the same on an ETF root: 2 x 0.02 = 0.04
    assert fees.fill("SPXW", "buy", 2, 1.0) == 1.24
    assert fees.fill("SPY", "buy", 2, 1.0) == 0.04
    assert fees.settlement(3) == 3.00


def test_round_cents_is_half_up() -> None:
    assert round_cents(0.125) == 0.13 and round_cents(0.135) == 0.14 and round_cents(2.675) == 2.68
