"""Microstructure features on scripted quote/trade series with hand-computed expectations."""

from __future__ import annotations

import itertools
import math

import pytest

from services.core.calendar import NS_PER_S
from services.core.events import Quote, Trade
from services.features.microstructure import (
    EventIntensity,
    Microstructure,
    RollingSum,
    order_flow_increment,
)

T0 = 1_752_068_000 * NS_PER_S  # 2025-07-09 13:33:20 UTC


def q(t: float, bid: float, bid_size: float, ask: float, ask_size: float) -> Quote:
    return Quote(
        ts=T0 + round(t * NS_PER_S), symbol="SPY", bid=bid, ask=ask, bid_size=bid_size, ask_size=ask_size
    )


def tr(t: float, price: float, size: float) -> Trade:
    return Trade(ts=T0 + round(t * NS_PER_S), symbol="SPY", price=price, size=size)


# Best quotes and, by hand from Cont-Kukanov-Stoikov, the e_n each one adds:
SCRIPT = [
    (q(0, 100.00, 10, 100.02, 20), None),  # first quote: nothing to compare with
    (q(1, 100.00, 15, 100.02, 20), 5.0),  # bid same: +15 - 10; ask same: -20 + 20
    (q(2, 100.01, 5, 100.02, 12), 13.0),  # bid up: +5; ask same: -12 + 20
    (q(3, 100.00, 8, 100.01, 9), -14.0),  # bid down: -5; ask down: -9
    (q(4, 100.00, 8, 100.03, 30), 9.0),  # bid same: +8 - 8; ask up: +9
]


def test_ofi_increments_are_the_hand_computed_ones() -> None:
    for (prev, _), (cur, expected) in itertools.pairwise(SCRIPT):
        e = order_flow_increment(
            cur.bid, cur.ask, cur.bid_size, cur.ask_size, prev.bid, prev.ask, prev.bid_size, prev.ask_size
        )
        assert e == expected


def test_ofi_running_sum_and_book_features() -> None:
    micro = Microstructure(ofi_window_s=60.0)
    running = [None, 5.0, 18.0, 4.0, 13.0]
    for (quote, _), total in zip(SCRIPT, running, strict=True):
        assert micro.on_quote(quote)
        values: dict[str, float] = {}
        micro.write(values, quote.ts)
        if total is None:
            assert "ofi" not in values
        else:
            assert values["ofi"] == total
    values = {}
    micro.write(values, SCRIPT[0][0].ts + 4 * NS_PER_S)
    assert values["spread"] == pytest.approx(0.03, abs=1e-12)
    assert values["spread_bps"] == pytest.approx(0.03 / 100.015 * 1e4, rel=1e-9)
    assert values["microprice"] == pytest.approx((100.00 * 30 + 100.03 * 8) / 38, rel=1e-15)


def test_first_quote_book_features() -> None:
    micro = Microstructure()
    micro.on_quote(SCRIPT[0][0])
    values: dict[str, float] = {}
    micro.write(values, SCRIPT[0][0].ts)
    assert values["microprice"] == pytest.approx((100.00 * 20 + 100.02 * 10) / 30, rel=1e-15)
    assert values["spread_bps"] == pytest.approx(0.02 / 100.01 * 1e4, rel=1e-9)
    assert values["quote_intensity"] == pytest.approx(0.1)  # one event, tau = 10 s
    assert "trade_imbalance" not in values and "trade_intensity" not in values


def test_ofi_window_by_time_and_by_count() -> None:
    by_time = Microstructure(ofi_window_s=2.5)
    by_count = Microstructure(ofi_window_s=None, ofi_window_events=2)
    for quote, _ in SCRIPT:
        by_time.on_quote(quote)
        by_count.on_quote(quote)
    now = SCRIPT[-1][0].ts
    values: dict[str, float] = {}
    by_time.write(values, now)
    assert values["ofi"] == 13.0 - 14.0 + 9.0  # e_n of t = 2, 3, 4 (t = 1 is older than 2.5 s)
    by_count.write(values, now)
    assert values["ofi"] == -14.0 + 9.0
    later: dict[str, float] = {}
    by_time.write(later, now + 10 * NS_PER_S)  # every increment expired
    assert later["ofi"] == 0.0


def test_trade_signs_quote_rule_then_tick_rule() -> None:
    micro = Microstructure()
    micro.on_quote(SCRIPT[-1][0])  # bid 100.00, ask 100.03
    trades = [
        (tr(5, 100.03, 100), 1),  # at the ask
        (tr(5, 100.00, 50), -1),  # at the bid
        (tr(6, 100.02, 10), 1),  # inside, uptick from 100.00
        (tr(6, 100.02, 20), 1),  # inside, zero tick: repeats +1
        (tr(7, 100.01, 40), -1),  # inside, downtick
        (tr(7, 100.05, 5), 1),  # above the ask
    ]
    for trade, sign in trades:
        assert micro.classify(trade.price) == sign
        assert micro.on_trade(trade)
    values: dict[str, float] = {}
    micro.write(values, trades[-1][0].ts)
    assert values["trade_imbalance"] == pytest.approx((100 - 50 + 10 + 20 - 40 + 5) / 225, rel=1e-15)


def test_tick_rule_without_quotes_starts_at_zero() -> None:
    micro = Microstructure()
    signs = []
    for trade in (tr(0, 10.0, 1), tr(1, 10.0, 1), tr(2, 10.1, 1), tr(3, 10.1, 1), tr(4, 9.9, 1)):
        signs.append(micro.classify(trade.price))
        micro.on_trade(trade)
    assert signs == [0, 0, 1, 1, -1]


def test_intensity_decays_on_event_time() -> None:
    micro = Microstructure(intensity_tau_s=10.0)
    for quote, _ in SCRIPT:  # one quote per second at t = 0..4
        micro.on_quote(quote)
    values: dict[str, float] = {}
    micro.write(values, SCRIPT[-1][0].ts)
    expected = sum(math.exp(-(4 - j) / 10.0) for j in range(5)) / 10.0
    assert values["quote_intensity"] == pytest.approx(expected, rel=1e-12)
    micro.write(values, SCRIPT[-1][0].ts + 10 * NS_PER_S)
    assert values["quote_intensity"] == pytest.approx(expected * math.exp(-1.0), rel=1e-12)


def test_steady_rate_reads_as_events_per_second() -> None:
    rate = EventIntensity(tau_s=5.0)
    for i in range(2000):  # 4 events per second for 500 s
        rate.add(T0 + i * NS_PER_S // 4)
    assert rate.rate_at(T0 + 1999 * NS_PER_S // 4) == pytest.approx(4.0, rel=0.07)


def test_invalid_crossed_and_stale_events_are_ignored() -> None:
    micro = Microstructure()
    assert micro.on_quote(q(1, 100.0, 1, 100.1, 1))
    assert not micro.on_quote(q(2, 100.2, 1, 100.1, 1))  # crossed
    assert not micro.on_quote(q(0.5, 100.0, 1, 100.1, 1))  # older than the last quote
    assert not micro.on_quote(q(3, math.nan, 1, 100.1, 1))
    assert micro.on_quote(q(3, 100.1, 1, 100.1, 1))  # locked is a real market state
    assert micro.on_trade(tr(3, 100.1, 0))  # odd-lot reports can carry size 0
    assert not micro.on_trade(tr(2, 100.1, 1))
    assert not micro.on_trade(tr(4, math.inf, 1))
    values: dict[str, float] = {}
    micro.write(values, T0 + 4 * NS_PER_S)
    assert "trade_imbalance" not in values  # no size traded yet
    assert all(math.isfinite(v) for v in values.values())


def test_rolling_sum_resums_and_validates() -> None:
    window = RollingSum(window_s=None, max_events=3)
    for i in range(10_000):
        window.add(i, 0.1 * (i % 7))
    assert window.total == pytest.approx(math.fsum(0.1 * (i % 7) for i in range(9_997, 10_000)), abs=1e-12)
    assert len(window) == 3
    with pytest.raises(ValueError):
        RollingSum(window_s=None, max_events=None)
    with pytest.raises(ValueError):
        RollingSum(window_s=0.0)
