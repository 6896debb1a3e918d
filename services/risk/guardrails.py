"""Guardrails: small, named rules an intent must pass, evaluated in a fixed order.

Each rule sees the intent, a :class:`RiskContext` (everything the engine knows at decision time,
precomputed) and the quantity the earlier rules left, and returns either a (possibly smaller)
quantity or a :class:`Refusal` naming the rule and saying why in a trader's words. The names are
stable: they appear in ``RiskRejection.rule``, metrics and dashboards.

Order (:data:`RULES`): state_unavailable, kill_switch, daily_loss_limit, entry_window, event_halt,
stale_feed, stale_data, duplicate_intent, order_throttle, loss_cooldown, max_open_positions,
max_contracts_per_order, contracts_per_contract, contracts_per_underlying, premium_per_symbol,
premium_total. Gates come first, sizing last, so a
refusal names the most fundamental reason.

Boundaries: a limit refuses only once it is crossed — e.g. with ``max_orders_per_minute: 3`` the
fourth order in a rolling minute is refused; an order filling the premium cap to the cent passes.
Money comparisons are done in integer cents so float noise cannot flip a boundary.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, Protocol

from services.core.calendar import NEW_YORK, NS_PER_MIN, NS_PER_S, Session
from services.core.events import SignalIntent
from services.risk.config import RiskConfig, SizingLimits
from services.risk.event_halts import EventWindow
from services.risk.kill_switch import KillSwitchState

ROLLING_MINUTE_NS: Final = 60 * NS_PER_S


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why an intent was refused: the rule's stable name and a human reason."""

    rule: str
    reason: str


@dataclass(frozen=True, slots=True)
class RiskContext:
    """What the engine knows when it decides one intent (built fresh per intent)."""

    now_ns: int
    config: RiskConfig
    limits: SizingLimits
    state_error: str | None  # None when the StateStore answered
    kill_switch: KillSwitchState
    daily_pnl_usd: float  # realized today + unrealized now
    heartbeat_ts: int | None  # newest ingest heartbeat (StateStore key or Heartbeat event)
    market_ts: int | None  # newest FeatureVector of the intent's underlying
    session: Session | None  # market session of now's New York date
    event_window: EventWindow | None
    intent_seen: bool  # this intent id was already decided
    last_same_key_ns: int | None  # last approval for the same underlying+playbook+contract
    orders_last_minute: int  # approvals in (now - 60 s, now]
    cooldown_until_ns: int | None  # loss cooldown of the intent's scope
    cooldown_streak: int  # losses that started that cooldown
    open_contracts: frozenset[str]  # held or being entered
    premium_symbol_usd: float  # premium at risk on the intent's underlying
    premium_total_usd: float  # premium at risk everywhere
    feed_stale: str | None = None  # why the intent's underlying's feed is stale (services.risk.feed), or None
    contracts_in_contract: int = 0  # |held| + working/unconfirmed entries in the intent's contract
    contracts_in_underlying: int = 0  # the same over every contract of the intent's underlying


class Rule(Protocol):
    """A guardrail: ``name`` is stable; calling it returns a quantity or a Refusal."""

    name: str

    def __call__(self, intent: SignalIntent, ctx: RiskContext, quantity: int) -> int | Refusal: ...


def _hhmm(ts_ns: int, seconds: bool = False) -> str:
    t = dt.datetime.fromtimestamp(ts_ns / NS_PER_S, tz=NEW_YORK)
    return t.strftime("%H:%M:%S" if seconds else "%H:%M")


def _num(x: float) -> str:
    return f"{x:g}"


def cents(usd: float) -> int:
    """USD as integer cents (rounded), for exact limit comparisons."""
    return round(usd * 100)


def unit_risk_usd(intent: SignalIntent, contract_multiplier: int) -> float:
    """Premium at risk of one contract: the debit paid for a buy; for a sell, the debit to buy it
    back at the stop (never less than the credit), a conservative stand-in for its risk."""
    price = intent.limit_price if intent.side == "buy" else max(intent.limit_price, intent.stop_loss)
    return price * contract_multiplier


class StateUnavailableRule:
    name = "state_unavailable"

    def __call__(self, intent: SignalIntent, ctx: RiskContext, quantity: int) -> int | Refusal:
        if ctx.state_error is not None:
            return Refusal(
                self.name, f"shared state unreachable, refusing entries until it answers ({ctx.state_error})"
            )
        return quantity


class KillSwitchRule:
    name = "kill_switch"

    def __call__(self, intent: SignalIntent, ctx: RiskContext, quantity: int) -> int | Refusal:
        ks = ctx.kill_switch
        if ks.engaged:
            return Refusal(self.name, f"kill switch engaged (reason {ks.reason}, by {ks.source})")
        return quantity


class DailyLossLimitRule:
    name = "daily_loss_limit"

    def __call__(self, intent: SignalIntent, ctx: RiskContext, quantity: int) -> int | Refusal:
        limit = ctx.config.max_daily_loss_usd
        if cents(ctx.daily_pnl_usd) <= -cents(limit):
            return Refusal(
                self.name,
                f"daily PnL {ctx.daily_pnl_usd:.2f} USD has reached the {_num(limit)} USD loss limit",
            )
        return quantity


class EntryWindowRule:
    name = "entry_window"

    def __call__(self, intent: SignalIntent, ctx: RiskContext, quantity: int) -> int | Refusal:
        s, now, cfg = ctx.session, ctx.now_ns, ctx.config.entry_window
        if s is None:
            day = dt.datetime.fromtimestamp(now / NS_PER_S, tz=NEW_YORK).date()
            return Refusal(self.name, f"no trading session on {day.isoformat()}")
        if now < s.open_ns:
            return Refusal(self.name, f"market not open yet (opens {_hhmm(s.open_ns)} New York)")
        if now >= s.close_ns:
            return Refusal(self.name, f"market closed ({_hhmm(s.close_ns)} New York)")
        first = s.open_ns + round(cfg.minutes_after_open * NS_PER_MIN)
        if now < first:
            return Refusal(
                self.name,
                f"within {_num(cfg.minutes_after_open)} min after the open "
                f"(entries from {_hhmm(first)} New York)",
            )
        last = s.close_ns - round(cfg.minutes_before_close * NS_PER_MIN)
        if now >= last:
            early = ", early close" if s.early_close else ""
            return Refusal(
                self.name,
                f"within {_num(cfg.minutes_before_close)} min of the close at {_hhmm(s.close_ns)} New York"
                f"{early} (no entries from {_hhmm(last)})",
            )
        return quantity


class EventHaltRule:
    name = "event_halt"

    def __call__(self, intent: SignalIntent, ctx: RiskContext, quantity: int) -> int | Refusal:
        w = ctx.event_window
        if w is not None:
            note = f" [{w.note}]" if w.note else ""
            return Refusal(self.name, w.describe() + note)
        return quantity


class StaleFeedRule:
    """The intent's underlying has had no market data for a bar interval plus ``stale_feed_seconds`` in
    regular hours (:mod:`services.risk.feed`)."""

    name = "stale_feed"

    def __call__(self, intent: SignalIntent, ctx: RiskContext, quantity: int) -> int | Refusal:
        if ctx.feed_stale is not None:
            return Refusal(self.name, ctx.feed_stale)
        return quantity


class StaleDataRule:
    name = "stale_data"

    def __call__(self, intent: SignalIntent, ctx: RiskContext, quantity: int) -> int | Refusal:
        cfg = ctx.config.stale_data
        if cfg.max_heartbeat_age_s is not None:
            if ctx.heartbeat_ts is None:
                return Refusal(self.name, "no ingest heartbeat seen yet")
            age = ctx.now_ns - ctx.heartbeat_ts
            if age > round(cfg.max_heartbeat_age_s * NS_PER_S):
                return Refusal(
                    self.name,
                    f"ingest heartbeat is {age / NS_PER_S:.1f} s old (max {_num(cfg.max_heartbeat_age_s)} s)",
                )
        if cfg.max_market_data_age_s is not None:
            if ctx.market_ts is None:
                return Refusal(self.name, f"no market data seen for {intent.underlying}")
            age = ctx.now_ns - ctx.market_ts
            if age > round(cfg.max_market_data_age_s * NS_PER_S):
                return Refusal(
                    self.name,
                    f"{intent.underlying} market data is {age / NS_PER_S:.1f} s old "
                    f"(max {_num(cfg.max_market_data_age_s)} s)",
                )
        return quantity


class DuplicateIntentRule:
    name = "duplicate_intent"

    def __call__(self, intent: SignalIntent, ctx: RiskContext, quantity: int) -> int | Refusal:
        if ctx.intent_seen:
            return Refusal(self.name, f"intent {intent.id} was already decided")
        window = ctx.config.duplicate.window_s
        last = ctx.last_same_key_ns
        if last is not None and ctx.now_ns - last < round(window * NS_PER_S):
            return Refusal(
                self.name,
                f"{intent.playbook} already entered {intent.contract} "
                f"{(ctx.now_ns - last) / NS_PER_S:.1f} s ago (window {_num(window)} s)",
            )
        return quantity


class OrderThrottleRule:
    name = "order_throttle"

    def __call__(self, intent: SignalIntent, ctx: RiskContext, quantity: int) -> int | Refusal:
        cap = ctx.config.throttle.max_orders_per_minute
        if ctx.orders_last_minute >= cap:
            return Refusal(self.name, f"{ctx.orders_last_minute} orders in the last minute (max {cap})")
        return quantity


class LossCooldownRule:
    name = "loss_cooldown"

    def __call__(self, intent: SignalIntent, ctx: RiskContext, quantity: int) -> int | Refusal:
        until = ctx.cooldown_until_ns
        if until is not None and ctx.now_ns < until:
            scope = intent.underlying if ctx.config.cooldown.scope == "symbol" else "all symbols"
            return Refusal(
                self.name,
                f"{ctx.cooldown_streak} losses in a row on {scope}; no entries until "
                f"{_hhmm(until, seconds=True)} New York",
            )
        return quantity


class MaxOpenPositionsRule:
    name = "max_open_positions"

    def __call__(self, intent: SignalIntent, ctx: RiskContext, quantity: int) -> int | Refusal:
        cap = ctx.config.max_open_positions
        if intent.contract not in ctx.open_contracts and len(ctx.open_contracts) >= cap:
            n = len(ctx.open_contracts)
            return Refusal(self.name, f"{n} positions open or being entered (max {cap})")
        return quantity


class MaxContractsRule:
    name = "max_contracts_per_order"

    def __call__(self, intent: SignalIntent, ctx: RiskContext, quantity: int) -> int | Refusal:
        cap = ctx.limits.max_contracts_per_order
        if quantity <= cap:
            return quantity
        if ctx.config.sizing_mode == "reject":
            return Refusal(self.name, f"{quantity} contracts exceeds the {cap}-contract cap")
        return cap


class ExposureCapRule:
    """Contracts held or being entered, summed over every playbook, against a cap per contract or per
    underlying: two playbooks firing on one bar cannot double a position. In ``cap`` sizing mode the
    order shrinks to what fits and is refused only when not one contract fits."""

    def __init__(self, name: str, scope: str, cap_and_used: Callable[[RiskContext], tuple[int | None, int]]) -> None:
        self.name = name
        self._scope = scope
        self._cap_and_used = cap_and_used

    def __call__(self, intent: SignalIntent, ctx: RiskContext, quantity: int) -> int | Refusal:
        cap, used = self._cap_and_used(ctx)
        if cap is None:
            return quantity
        fits = max(cap - used, 0)
        if fits >= quantity:
            return quantity
        if fits < 1 or ctx.config.sizing_mode == "reject":
            return Refusal(self.name, f"{quantity} more contracts would make {used + quantity} {self._scope} "
                                      f"(cap {cap}, {used} held or being entered)")
        return fits


def _contract_exposure(ctx: RiskContext) -> tuple[int | None, int]:
    return ctx.config.max_contracts_per_contract, ctx.contracts_in_contract


def _underlying_exposure(ctx: RiskContext) -> tuple[int | None, int]:
    return ctx.config.max_contracts_per_underlying, ctx.contracts_in_underlying


class PremiumCapRule:
    """Premium at risk (positions + working entries + this order) against a cap; in ``cap`` sizing
    mode the order shrinks to what fits and is refused only when not one contract fits."""

    def __init__(
        self, name: str, scope: str, cap_and_used: Callable[[RiskContext], tuple[float, float]]
    ) -> None:
        self.name = name
        self._scope = scope
        self._cap_and_used = cap_and_used

    def __call__(self, intent: SignalIntent, ctx: RiskContext, quantity: int) -> int | Refusal:
        cap, used = self._cap_and_used(ctx)
        unit = unit_risk_usd(intent, ctx.config.contract_multiplier)
        unit_c = max(cents(unit), 1)
        fits = max(cents(cap) - cents(used), 0) // unit_c
        if fits >= quantity:
            return quantity
        if fits < 1 or ctx.config.sizing_mode == "reject":
            return Refusal(
                self.name,
                f"{quantity} x {unit:.2f} USD would put {used + quantity * unit:.2f} USD of premium at risk "
                f"{self._scope} (cap {cap:.2f} USD, {used:.2f} USD already)",
            )
        return fits


def _symbol_premium(ctx: RiskContext) -> tuple[float, float]:
    return ctx.limits.max_premium_per_symbol_usd, ctx.premium_symbol_usd


def _total_premium(ctx: RiskContext) -> tuple[float, float]:
    return ctx.limits.max_premium_total_usd, ctx.premium_total_usd


RULES: Final[tuple[Rule, ...]] = (
    StateUnavailableRule(),
    KillSwitchRule(),
    DailyLossLimitRule(),
    EntryWindowRule(),
    EventHaltRule(),
    StaleFeedRule(),
    StaleDataRule(),
    DuplicateIntentRule(),
    OrderThrottleRule(),
    LossCooldownRule(),
    MaxOpenPositionsRule(),
    MaxContractsRule(),
    ExposureCapRule("contracts_per_contract", "in this contract", _contract_exposure),
    ExposureCapRule("contracts_per_underlying", "on this underlying", _underlying_exposure),
    PremiumCapRule("premium_per_symbol", "on this underlying", _symbol_premium),
    PremiumCapRule("premium_total", "in total", _total_premium),
)
RULE_NAMES: Final[tuple[str, ...]] = tuple(r.name for r in RULES)


def evaluate(intent: SignalIntent, ctx: RiskContext, rules: tuple[Rule, ...] = RULES) -> int | Refusal:
    """Run every rule in order; the first Refusal wins, else the final (capped) quantity."""
    quantity = intent.quantity
    for rule in rules:
        result = rule(intent, ctx, quantity)
        if isinstance(result, Refusal):
            return result
        quantity = result
    return quantity
