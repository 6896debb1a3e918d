"""RiskEngine: approves or refuses intents, tracks exposure and PnL, and pulls the kill switch.

Pure logic: events in, events out. Time comes from the injected Clock (never the wall clock);
the only I/O is the injected StateStore (kill-switch flag and ingest heartbeat), read at most once
per decision timestamp. The runner calls :meth:`RiskEngine.check` after every event.

Book-keeping (all in event time):

* **Exposure.** Open positions come from ``Position`` events (authoritative net holdings). Entry
  orders risk approved are counted from the moment of approval; ``OrderEvent`` s of the ``entry``
  leg (matched by ``client_order_id`` = the OrderRequest id, or a prefix of it) update their
  working quantity; filled quantity stays counted until a ``Position`` for the contract at or
  after the fill confirms it, so nothing slips through between a fill and its position.
  Premium at risk = |quantity| x average price x multiplier for positions, plus working and
  unconfirmed entry quantity x the entry's unit risk (:func:`guardrails.unit_risk_usd`).
* **Exposure caps.** ``max_contracts_per_contract`` and ``max_contracts_per_underlying`` bound the
  contracts held plus being entered, summed over every playbook (:meth:`contracts_at_risk`).
* **PnL.** Realized PnL of the day is the sum of ``TradeOutcome.pnl`` (USD, net of fees) of round
  trips whose exit falls on the current New York date; ``Position.realized_pnl`` is not added,
  so nothing is counted twice. Unrealized PnL is the newest of ``Position.unrealized_pnl`` and a
  mark recomputed from a FeatureVector whose symbol is the contract (value ``mark_feature``).
* **Stale feed.** Each underlying's FeatureVector arrivals feed a :class:`~services.risk.feed.FeedWatch`:
  in regular hours, an underlying whose next bar is ``stale_feed_seconds`` overdue has its entries
  refused (rule ``stale_feed``) until a vector arrives; exits and protective commands never pass
  through the rules, so they still work. :meth:`RiskEngine.observe_time` lets a free-running live
  service judge staleness at wall time carried forward while no event arrives.
* **Day.** At the first event of a new New York date the day's realized PnL, loss streaks, seen
  intent ids and never-acknowledged approvals are reset. An engaged kill switch is NOT released
  at the new session: an operator releases it. Releasing while the day's loss is still past the
  limit re-engages on the next check.

Kill-switch commands: engaging emits ``engage_kill_switch`` (underlying ``*``), then per known
underlying (sorted) ``cancel`` with ``order_id`` None (= every working order of that underlying)
and ``flatten``. Releasing emits ``release_kill_switch`` (underlying ``*``). Command ids are
deterministic: ``risk:<action>:<underlying>:<ts>``.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import re
from collections import deque
from dataclasses import dataclass
from typing import Final

from services.core import keys, shared_state
from services.core.calendar import NS_PER_MIN, MarketCalendar, default_calendar, ny_date
from services.core.clock import Clock
from services.core.events import (
    FeatureVector,
    Heartbeat,
    OrderEvent,
    OrderRequest,
    Position,
    RiskAction,
    RiskCommand,
    RiskRejection,
    SignalIntent,
    TradeOutcome,
)
from services.core.shared_state import SharedStateError
from services.core.state import StateStore
from services.risk.config import RiskConfig, SizingLimits
from services.risk.event_halts import EventCalendar
from services.risk.feed import FeedStatus, FeedWatch
from services.risk.guardrails import (
    ROLLING_MINUTE_NS,
    RULES,
    Refusal,
    RiskContext,
    Rule,
    evaluate,
    unit_risk_usd,
)
from services.risk.kill_switch import DAILY_LOSS_LIMIT, MANUAL, KillSwitch, KillSwitchState

log = logging.getLogger(__name__)

ALL_UNDERLYINGS: Final = "*"
MAX_ID_LEN: Final = 64
_TERMINAL: Final = frozenset({"filled", "canceled", "rejected", "expired"})
_GLOBAL_SCOPE: Final = "*"
_SEEN_COMMANDS_MAX: Final = 10_000
_OCC: Final = re.compile(r"^(O:)?[A-Z]{1,6}\d{6}[CP]\d{8}$")  # an option contract, not an underlying


def bounded_id(text: str) -> str:
    """``text`` when it fits an event id (64 chars), else a stable 64-char digest-suffixed form."""
    if len(text) <= MAX_ID_LEN:
        return text
    digest = hashlib.blake2b(text.encode(), digest_size=12).hexdigest()
    return f"{text[: MAX_ID_LEN - len(digest) - 1]}~{digest}"


def order_id_for(intent_id: str) -> str:
    """Deterministic OrderRequest id of an approved intent."""
    return bounded_id(f"ord-{intent_id}")


@dataclass(slots=True)
class _Entry:
    """An entry order risk approved (or the OMS reported) that is not yet a confirmed position."""

    underlying: str
    contract: str
    unit_risk: float  # USD per contract
    working: int
    filled_seen: int = 0
    unconfirmed: int = 0  # filled but not yet reflected in a Position
    last_fill_ts: int = 0
    terminal: bool = False
    acked: bool = False
    approved_day: dt.date | None = None

    @property
    def at_risk_qty(self) -> int:
        return self.working + self.unconfirmed

    @property
    def done(self) -> bool:
        return self.terminal and self.unconfirmed == 0


@dataclass(slots=True)
class _Holding:
    underlying: str
    quantity: int
    avg_price: float
    unrealized: float
    ts: int  # event time of the newest quantity/PnL information


@dataclass(frozen=True, slots=True)
class RiskSnapshot:
    """Numbers for metrics and dashboards."""

    ts: int
    day: dt.date | None
    realized_pnl_usd: float
    unrealized_pnl_usd: float
    open_positions: int
    premium_at_risk_usd: float
    kill_switch: KillSwitchState
    state_available: bool
    risk_multiplier: float
    daily_loss_limit_usd: float
    feed: FeedStatus


class RiskEngine:
    """The risk stage's pure engine."""

    def __init__(
        self,
        config: RiskConfig,
        clock: Clock,
        state: StateStore,
        *,
        events: EventCalendar | None = None,
        calendar: MarketCalendar | None = None,
        risk_multiplier: float = 1.0,
        rules: tuple[Rule, ...] = RULES,
    ) -> None:
        self.config = config
        self.limits = SizingLimits.from_config(config, risk_multiplier)
        self._clock = clock
        self._store = state
        self._events = events if events is not None else EventCalendar()
        self._calendar = calendar if calendar is not None else default_calendar()
        self._rules = rules
        self.kill_switch = KillSwitch(state)
        self.feed = FeedWatch(config.stale_feed_seconds, self._calendar)
        self._synced_ts: int | None = None
        self._heartbeat_error: str | None = None
        self._store_heartbeat_ts: int | None = None
        self._event_heartbeat_ts: int | None = None
        self._market_ts: dict[str, int] = {}
        self.future_events = 0  # data ignored as stamped in the future (stale_data.max_future_s)
        self._future_logged: set[str] = set()
        self._underlyings: set[str] = set()
        self._holdings: dict[str, _Holding] = {}
        self._position_ts: dict[str, int] = {}  # newest Position per contract, closed ones too
        self._entries: dict[str, _Entry] = {}
        self._aliases: dict[str, str] = {}  # OMS client_order_id -> entry key
        self._day: dt.date | None = None
        self._realized_today = 0.0
        self._outcome_ids: set[str] = set()
        self._streaks: dict[str, int] = {}
        self._cooldowns: dict[str, tuple[int, int]] = {}  # scope -> (until_ns, streak)
        self._intent_ids: set[str] = set()
        self._last_approval: dict[tuple[str, str, str], int] = {}
        self._approvals: deque[int] = deque()
        self._seen_commands: dict[str, None] = {}

    # --- inputs ---------------------------------------------------------------------------------

    def on_intent(self, intent: SignalIntent) -> OrderRequest | RiskRejection:
        """Approve (possibly capped) or refuse one intent; every rule runs in a fixed order."""
        now = self._begin(intent.ts)
        self._underlyings.add(intent.underlying)
        verdict = evaluate(intent, self._context(intent, now), self._rules)
        self._intent_ids.add(intent.id)
        if isinstance(verdict, Refusal):
            return RiskRejection(
                ts=now,
                intent_id=intent.id,
                underlying=intent.underlying,
                rule=verdict.rule,
                reason=verdict.reason,
            )
        request = OrderRequest(
            ts=now,
            id=order_id_for(intent.id),
            intent_id=intent.id,
            underlying=intent.underlying,
            contract=intent.contract,
            side=intent.side,
            quantity=verdict,
            limit_price=intent.limit_price,
            take_profit=intent.take_profit,
            stop_loss=intent.stop_loss,
            playbook=intent.playbook,
            entry_expires_ts=intent.entry_expires_ts,
            flatten_ts=intent.flatten_ts,
        )
        self._last_approval[(intent.underlying, intent.playbook, intent.contract)] = now
        self._approvals.append(now)
        self._entries[request.id] = _Entry(
            underlying=intent.underlying,
            contract=intent.contract,
            unit_risk=unit_risk_usd(intent, self.config.contract_multiplier),
            working=verdict,
            approved_day=self._day,
        )
        return request

    def on_order_event(self, event: OrderEvent) -> None:
        """Track working entry quantity and fills awaiting their Position."""
        self._begin(event.ts)
        self._underlyings.add(event.underlying)
        if event.leg != "entry":
            return
        key = self._entry_key(event)
        entry = self._entries.get(key)
        if entry is None:
            price = event.limit_price or event.fill_price or 0.0
            entry = _Entry(event.underlying, event.contract, price * self.config.contract_multiplier, 0)
            self._entries[key] = entry
        entry.acked = True
        if event.filled_quantity > entry.filled_seen:
            entry.unconfirmed += event.filled_quantity - entry.filled_seen
            entry.filled_seen = event.filled_quantity
            entry.last_fill_ts = max(entry.last_fill_ts, event.ts)
        if event.status in _TERMINAL:
            entry.terminal = True
        entry.working = 0 if entry.terminal else max(event.quantity - event.filled_quantity, 0)
        self._prune_entries()

    def on_position(self, position: Position) -> None:
        """Replace the holding of one contract (stale snapshots are ignored)."""
        self._begin(position.ts)
        self._underlyings.add(position.underlying)
        if position.ts < self._position_ts.get(position.contract, -1):
            return
        self._position_ts[position.contract] = position.ts
        if position.quantity == 0:
            self._holdings.pop(position.contract, None)
        else:
            self._holdings[position.contract] = _Holding(
                position.underlying,
                position.quantity,
                position.avg_price,
                position.unrealized_pnl,
                position.ts,
            )
        for entry in self._entries.values():
            if entry.contract == position.contract and entry.last_fill_ts <= position.ts:
                entry.unconfirmed = 0
        self._prune_entries()

    def on_outcome(self, outcome: TradeOutcome) -> None:
        """Add today's closed round trip to the day's PnL and the loss streaks (deduplicated by id)."""
        self._begin(outcome.ts)
        self._underlyings.add(outcome.underlying)
        if outcome.id in self._outcome_ids:
            return
        self._outcome_ids.add(outcome.id)
        if ny_date(outcome.exit_ts) != self._day:
            return  # an earlier session's round trip: neither today's PnL nor today's streak
        self._realized_today += outcome.pnl
        scope = outcome.underlying if self.config.cooldown.scope == "symbol" else _GLOBAL_SCOPE
        if outcome.pnl < 0:
            streak = self._streaks.get(scope, 0) + 1
            if streak >= self.config.cooldown.losses:
                until = outcome.exit_ts + round(self.config.cooldown.minutes * NS_PER_MIN)
                self._cooldowns[scope] = (until, streak)
                streak = 0
            self._streaks[scope] = streak
        else:
            self._streaks[scope] = 0

    def on_features(self, features: FeatureVector) -> None:
        """Market time of an underlying (and its arrival, for the stale-feed watch); for an OCC contract
        symbol, its mark (``mark_feature``) re-prices the holding's unrealized PnL."""
        now = self._begin(features.ts)
        if _OCC.match(features.symbol):
            held = self._holdings.get(features.symbol)
            mark = features.values.get(self.config.mark_feature)
            if held is not None and mark is not None and features.ts >= held.ts:
                held.unrealized = (mark - held.avg_price) * held.quantity * self.config.contract_multiplier
                held.ts = features.ts
            return
        self._underlyings.add(features.symbol)
        if self._from_the_future(features.ts, f"features of {features.symbol}"):
            return
        self.feed.arrived(features.symbol, features.ts, now)
        if features.ts > self._market_ts.get(features.symbol, -1):
            self._market_ts[features.symbol] = features.ts

    def on_heartbeat(self, heartbeat: Heartbeat) -> None:
        """A producer's liveness (filtered by ``stale_data.heartbeat_source`` when set)."""
        self._begin(heartbeat.ts)
        wanted = self.config.stale_data.heartbeat_source
        if wanted is not None and heartbeat.source != wanted:
            return
        if self._from_the_future(heartbeat.ts, f"heartbeat of {heartbeat.source}"):
            return
        if self._event_heartbeat_ts is None or heartbeat.ts > self._event_heartbeat_ts:
            self._event_heartbeat_ts = heartbeat.ts

    def on_command(self, command: RiskCommand) -> list[RiskCommand]:
        """Manual kill-switch engage/release; other (protective) commands are forwarded as they are."""
        now = self._begin(command.ts)
        if command.id in self._seen_commands:
            return []
        self._seen_commands[command.id] = None
        if len(self._seen_commands) > _SEEN_COMMANDS_MAX:
            self._seen_commands.pop(next(iter(self._seen_commands)))
        if command.action == "engage_kill_switch":
            self.kill_switch.engage(MANUAL, now, source=f"risk_command:{command.id}")
        elif command.action == "release_kill_switch":
            self.kill_switch.release(now, source=f"risk_command:{command.id}")
        else:
            return [command]
        return self._announce(now, command.reason)

    # --- periodic -------------------------------------------------------------------------------

    def check(self, now_ns: int | None = None) -> list[RiskCommand]:
        """Daily loss limit and kill-switch changes (e.g. an operator writing the key)."""
        now = self._begin(now_ns, trusted=True)
        limit = self.config.max_daily_loss_usd
        pnl = self.daily_pnl()
        detail = ""
        if round(pnl * 100) <= -round(limit * 100) and not self.kill_switch.engaged:
            self.kill_switch.engage(DAILY_LOSS_LIMIT, now, source="risk")
            detail = f"daily PnL {pnl:.2f} USD reached the {limit:g} USD loss limit"
        return self._announce(now, detail)

    def clock_ns(self) -> int:
        """The engine clock's now."""
        return self._clock.now_ns()

    def observe_time(self, now_ns: int) -> None:
        """A trusted time later than the event clock (a free-running live service while no event
        arrives): the stale-feed watch judges at it, so a silent feed is refused. Nothing else moves."""
        self.feed.observe(now_ns)

    # --- views ----------------------------------------------------------------------------------

    def daily_pnl(self) -> float:
        """Realized PnL of the current New York date plus unrealized PnL of open positions."""
        return self._realized_today + sum(h.unrealized for h in self._holdings.values())

    def open_contracts(self) -> frozenset[str]:
        """Contracts held or being entered."""
        held = {c for c, h in self._holdings.items() if h.quantity != 0}
        return frozenset(held | {e.contract for e in self._entries.values() if e.at_risk_qty > 0})

    def premium_at_risk(self, underlying: str | None = None) -> float:
        """Premium at risk in USD, for one underlying or (None) in total."""
        mult = self.config.contract_multiplier
        total = 0.0
        for h in self._holdings.values():
            if underlying is None or h.underlying == underlying:
                total += abs(h.quantity) * h.avg_price * mult
        for e in self._entries.values():
            if underlying is None or e.underlying == underlying:
                total += e.at_risk_qty * e.unit_risk
        return total

    def contracts_at_risk(self, *, contract: str | None = None, underlying: str | None = None) -> int:
        """Contracts held (absolute) plus working and unconfirmed entry quantity, for one contract or
        one underlying (every playbook together)."""
        total = 0
        for c, h in self._holdings.items():
            if (contract is None or c == contract) and (underlying is None or h.underlying == underlying):
                total += abs(h.quantity)
        for e in self._entries.values():
            if (contract is None or e.contract == contract) and (underlying is None or e.underlying == underlying):
                total += e.at_risk_qty
        return total

    def snapshot(self) -> RiskSnapshot:
        now = self._clock.now_ns()
        return RiskSnapshot(
            ts=now,
            day=self._day,
            realized_pnl_usd=self._realized_today,
            unrealized_pnl_usd=sum(h.unrealized for h in self._holdings.values()),
            open_positions=len(self.open_contracts()),
            premium_at_risk_usd=self.premium_at_risk(),
            kill_switch=self.kill_switch.state,
            state_available=self._state_error() is None,
            risk_multiplier=self.limits.risk_multiplier,
            daily_loss_limit_usd=self.config.max_daily_loss_usd,
            feed=self.feed.status(self.feed.now(now)),
        )

    # --- internals ------------------------------------------------------------------------------

    def _begin(self, event_ts: int | None, *, trusted: bool = False) -> int:
        """Decision time (the clock, or the event's time if the clock lags it); rolls the day and
        syncs shared state once per timestamp."""
        now = self._clock.now_ns()
        # An event's own time leads the clock only by up to stale_data.max_future_s: one stamped further
        # ahead must not move the day (a new day resets the daily loss); a caller's explicit time does.
        if event_ts is not None and event_ts > now and (trusted or event_ts <= now + self._future_ns):
            now = event_ts
        day = ny_date(now)
        new_day = day != self._day
        if new_day:
            self._new_day(day)
        self._sync(now)
        if new_day and self.config.daily_loss_resets_next_session:
            state = self.kill_switch.state
            # The loss limit is per day: its kill switch ends with the day it was engaged on.
            if state.engaged and state.reason == DAILY_LOSS_LIMIT and ny_date(state.ts) < day:
                self.kill_switch.release(now, source="risk: new session")
        return now

    def _new_day(self, day: dt.date) -> None:
        self._day = day
        self._realized_today = 0.0
        self._outcome_ids.clear()
        self._streaks.clear()
        self._intent_ids.clear()
        self._last_approval.clear()
        self._position_ts = {c: t for c, t in self._position_ts.items() if c in self._holdings}
        stale = [k for k, e in self._entries.items() if not e.acked and e.approved_day != day]
        for k in stale:
            del self._entries[k]
        self._aliases = {a: k for a, k in self._aliases.items() if k in self._entries}

    def _sync(self, now: int) -> None:
        if self._synced_ts == now:
            return
        self._synced_ts = now
        self.kill_switch.refresh(now)
        try:
            raw = self._store.get(keys.INGEST_HEARTBEAT)
        except Exception as exc:  # any store failure means "unavailable"
            self._heartbeat_error = f"StateStore read failed: {type(exc).__name__}: {exc}"
            return
        self._heartbeat_error = None
        if raw is not None:
            ts = _heartbeat_ts(raw)
            if ts is not None and self._from_the_future(ts, "stored ingest heartbeat", now):
                ts = None
            if ts is not None and (self._store_heartbeat_ts is None or ts > self._store_heartbeat_ts):
                self._store_heartbeat_ts = ts

    @property
    def _future_ns(self) -> int:
        return round(self.config.stale_data.max_future_s * 1e9)

    def _from_the_future(self, ts: int, what: str, now: int | None = None) -> bool:
        """True (and counted in :attr:`future_events`, logged once per kind) when ``ts`` is more than
        ``stale_data.max_future_s`` ahead of the clock: such data is never fresh."""
        now = self._clock.now_ns() if now is None else now
        if ts <= now + self._future_ns:
            return False
        self.future_events += 1
        if what not in self._future_logged:
            self._future_logged.add(what)
            log.warning("ignored data from the future", extra={"what": what, "ts": ts, "clock": now,
                                                               "ahead_s": round((ts - now) / 1e9, 3)})
        return True

    def _state_error(self) -> str | None:
        return self.kill_switch.error or self._heartbeat_error

    def _context(self, intent: SignalIntent, now: int) -> RiskContext:
        while self._approvals and self._approvals[0] <= now - ROLLING_MINUTE_NS:
            self._approvals.popleft()
        scope = intent.underlying if self.config.cooldown.scope == "symbol" else _GLOBAL_SCOPE
        cooldown = self._cooldowns.get(scope)
        heartbeats = [t for t in (self._store_heartbeat_ts, self._event_heartbeat_ts) if t is not None]
        return RiskContext(
            now_ns=now,
            config=self.config,
            limits=self.limits,
            state_error=self._state_error(),
            kill_switch=self.kill_switch.state,
            daily_pnl_usd=self.daily_pnl(),
            heartbeat_ts=max(heartbeats) if heartbeats else None,
            market_ts=self._market_ts.get(intent.underlying),
            feed_stale=self.feed.stale_reason(intent.underlying, self.feed.now(now)),
            session=self._calendar.session_for_ts(now),
            event_window=self._events.halt_active(now),
            intent_seen=intent.id in self._intent_ids,
            last_same_key_ns=self._last_approval.get((intent.underlying, intent.playbook, intent.contract)),
            orders_last_minute=len(self._approvals),
            cooldown_until_ns=cooldown[0] if cooldown else None,
            cooldown_streak=cooldown[1] if cooldown else 0,
            open_contracts=self.open_contracts(),
            premium_symbol_usd=self.premium_at_risk(intent.underlying),
            premium_total_usd=self.premium_at_risk(),
            contracts_in_contract=self.contracts_at_risk(contract=intent.contract),
            contracts_in_underlying=self.contracts_at_risk(underlying=intent.underlying),
        )

    def _entry_key(self, event: OrderEvent) -> str:
        cid = event.client_order_id
        if cid in self._entries:
            return cid
        if cid in self._aliases:
            return self._aliases[cid]
        for key, entry in self._entries.items():
            if cid.startswith(key) and entry.contract == event.contract:
                self._aliases[cid] = key
                return key
        return cid

    def _prune_entries(self) -> None:
        done = [k for k, e in self._entries.items() if e.done]
        for k in done:
            del self._entries[k]
        if done:
            self._aliases = {a: k for a, k in self._aliases.items() if k in self._entries}

    def _announce(self, now: int, detail: str) -> list[RiskCommand]:
        change = self.kill_switch.take_change()
        if change is None:
            return []
        why = f"{change.reason}: {detail}" if detail else change.reason
        if not change.engaged:
            return [_command(now, "release_kill_switch", ALL_UNDERLYINGS, detail or "kill switch released")]
        out = [_command(now, "engage_kill_switch", ALL_UNDERLYINGS, why)]
        for underlying in sorted(self._underlyings):
            out.append(
                _command(now, "cancel", underlying, f"kill switch ({change.reason}): cancel working orders")
            )
            out.append(_command(now, "flatten", underlying, f"kill switch ({change.reason}): flatten"))
        return out


def _command(now: int, action: RiskAction, underlying: str, reason: str) -> RiskCommand:
    return RiskCommand(
        ts=now,
        id=bounded_id(f"risk:{action}:{underlying}:{now}"),
        underlying=underlying,
        action=action,
        reason=reason,
    )


def _heartbeat_ts(raw: bytes) -> int | None:
    """``ts`` of the ingest heartbeat (:class:`~services.core.shared_state.IngestHeartbeat`); None
    when malformed (risk then goes by the Heartbeat events alone)."""
    try:
        return shared_state.decode_heartbeat(raw).ts
    except SharedStateError:
        return None
