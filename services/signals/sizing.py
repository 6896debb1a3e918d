"""Prices and quantity of an entry: limit price, bracket exits on the tick grid, and position size.

Bracket modes:

* ``premium``: TP = entry x (1 + take_profit_pct), SL = entry x (1 - stop_loss_pct).
* ``atr``: the exits are set as underlying moves of k x ATR and converted to premium through the
  contract's delta, premium move ~= |delta| x k x ATR. This is the first-order (delta-only)
  approximation: it ignores gamma (the option gains more than this on a favourable move and loses
  less on an adverse one) and theta/vega, which is acceptable over the minutes a scalp is held.

Every price is rounded half-up to the tick of its own level (``TickRule``: e.g. 0.01 below $3 and
0.05 at or above it; 0.01 throughout for the SPY/QQQ penny classes), and the exits are kept at least
one tick from the entry, with the stop at least one tick above zero.

Size = floor(risk_per_trade_usd x risk_multiplier / ((entry - stop) x 100)), capped at
``max_contracts``; zero (no trade) when one contract's risk exceeds the budget.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from services.signals.contracts import ContractRecord
from services.signals.playbooks import BracketRules, LimitRule, SizingRules, TickRule, fmt

CONTRACT_MULTIPLIER = 100
"""Shares per contract for SPX, NDX, SPY and QQQ options."""

_EPS = 1e-9


def round_to_tick(price: float, rule: TickRule) -> float:
    """``price`` rounded half-up to the tick that applies at its level."""
    tick = rule.tick_for(price)
    return round(math.floor(price / tick + 0.5 + _EPS) * tick, 4)


def tick_up(price: float, rule: TickRule) -> float:
    """The next price on the grid above ``price`` (which is on the grid)."""
    return round(price + rule.tick_for(price), 4)


def tick_down(price: float, rule: TickRule) -> float:
    """The next price on the grid below ``price`` (which is on the grid)."""
    down = price - rule.tick_for(price - _EPS * 10)
    return round(down, 4)


def limit_price(contract: ContractRecord, rule: LimitRule, tick: TickRule) -> tuple[float, str]:
    """Entry limit: the ask, or mid + offset rounded to the tick and capped at the ask."""
    if rule.at == "ask":
        price = round_to_tick(contract.ask, tick)
        return price, f"limit {fmt(price)} = ask"
    raw = contract.mid + rule.offset
    price = min(round_to_tick(raw, tick), round_to_tick(contract.ask, tick))
    text = f"limit {fmt(price)} = mid {fmt(contract.mid)} + {fmt(rule.offset)} (ask {fmt(contract.ask)})"
    return price, text


@dataclass(frozen=True, slots=True)
class BracketPrices:
    """Take-profit and stop-loss limit prices, on the tick grid."""

    take_profit: float
    stop_loss: float
    reason: str


def bracket_prices(
    entry: float, rules: BracketRules, tick: TickRule, *, delta: float = math.nan, atr: float | None = None
) -> BracketPrices | str:
    """The bracket around ``entry``, or a string saying why none can be placed."""
    if rules.mode == "premium":
        assert rules.take_profit_pct is not None and rules.stop_loss_pct is not None
        raw_tp = entry * (1.0 + rules.take_profit_pct)
        raw_sl = entry * (1.0 - rules.stop_loss_pct)
        how = f"premium +{fmt(rules.take_profit_pct * 100)}%/-{fmt(rules.stop_loss_pct * 100)}%"
    else:
        assert rules.take_profit_atr is not None and rules.stop_loss_atr is not None
        if atr is None or not math.isfinite(atr) or atr <= 0:
            return f"{rules.atr_feature} unavailable for an ATR bracket"
        if not math.isfinite(delta) or delta == 0:
            return "contract delta unavailable for an ATR bracket"
        per_atr = abs(delta) * atr
        raw_tp = entry + rules.take_profit_atr * per_atr
        raw_sl = entry - rules.stop_loss_atr * per_atr
        how = (
            f"|delta| {fmt(abs(delta))} x {rules.atr_feature} {fmt(atr)} = {fmt(per_atr)} per ATR, "
            f"+{fmt(rules.take_profit_atr)}/-{fmt(rules.stop_loss_atr)} ATR"
        )
    tp = round_to_tick(raw_tp, tick)
    if tp <= entry:
        tp = tick_up(entry, tick)
    sl = round_to_tick(raw_sl, tick) if raw_sl > 0 else 0.0
    if sl >= entry:
        sl = tick_down(entry, tick)
    if sl < tick.below - _EPS:
        return f"stop {fmt(raw_sl)} would be below one tick (entry {fmt(entry)})"
    return BracketPrices(tp, sl, f"TP {fmt(tp)} / SL {fmt(sl)} from entry {fmt(entry)} ({how})")


@dataclass(frozen=True, slots=True)
class PositionSize:
    """Contracts to buy (0 = do not trade) and the arithmetic behind it."""

    quantity: int
    reason: str


def size_position(
    entry: float,
    stop: float,
    rules: SizingRules,
    risk_multiplier: float = 1.0,
    multiplier: int = CONTRACT_MULTIPLIER,
) -> PositionSize:
    """floor(risk budget / per-contract risk), at least 1 only if one contract fits, capped."""
    budget = rules.risk_per_trade_usd * risk_multiplier
    per_contract = round((entry - stop) * multiplier, 6)
    if per_contract <= 0:
        return PositionSize(0, f"no risk defined: stop {fmt(stop)} is not below entry {fmt(entry)}")
    raw = math.floor(budget / per_contract + _EPS)
    text = (
        f"floor(${fmt(rules.risk_per_trade_usd)} x {fmt(risk_multiplier)} / ${fmt(per_contract)} per contract) = {raw}"
    )
    if raw < 1:
        return PositionSize(0, f"one contract risks ${fmt(per_contract)} > budget ${fmt(budget)}: {text}")
    qty = min(raw, rules.max_contracts)
    capped = f", capped at {rules.max_contracts}" if qty < raw else ""
    return PositionSize(qty, f"{qty} contracts: {text}{capped}")
