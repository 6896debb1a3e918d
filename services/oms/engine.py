"""OrderManager: the OMS engine. Events in, events out; the broker is injected, paper or live.

Each handler returns what to publish, in a deterministic order: every broker OrderEvent in the order
the broker reported it, each followed by the Position (and, when a round trip closes, the
TradeOutcome) it caused; then Position updates from new marks. Handlers are idempotent: a redelivered
OrderRequest, RiskCommand or option quote yields nothing, and repeated broker reports (same event id)
are dropped.

Risk commands:

- ``cancel``: ``order_id`` names a bracket (its client order id, i.e. the OrderRequest id) or one
  leg (broker order id). A bracket cancel cancels its entry if still working; exit legs stay to
  protect whatever the entry already bought (use ``flatten`` to get out). Without ``order_id``,
  every working entry on ``underlying`` (``*``: all underlyings) is canceled.
- ``modify``: move the stop of a bracket (or of the stop leg named) to ``stop_price``.
- ``flatten``: cancel the bracket's working legs and close what it holds with a market order
  (``order_id``: one bracket; else every bracket on ``underlying``, ``*`` for all).
- ``engage_kill_switch``: cancel every working order, flatten every bracket (exit reason
  ``kill_switch``) and reject new OrderRequests until ``release_kill_switch``.

Session rules carried by an OrderRequest (the playbook's, see :func:`services.signals.engine.session_rules`),
acted on in event time (:meth:`OrderManager.on_clock`). Every market-data handler expires entries
before it works the data (a quote after a deadline never fills the entry it ended) and flattens after
it (the flatten trades against the newest quote):

- ``entry_expires_ts``: an entry still working after it is canceled (audit ``entry_expired``); a request
  arriving after it is refused.
- ``flatten_ts``: at it the bracket is flattened (exit reason ``session_close``): working legs canceled,
  what it holds sold at market. A request arriving at or after it is refused.

Venue reconciliation (failing closed): before the first entry, and again every
``tradier.reconcile_interval_secs`` of the injected clock while they disagree, :meth:`OrderManager.check_venue`
reads the broker's :meth:`~services.oms.brokers.base.Broker.account_state`. Own live orders (DreamBot's
tags) that the book does not know are adopted: an OTOCO becomes a bracket and a round trip again, its
fills become the position they are. Foreign orders are reported (audit ``foreign_order``) and left
alone. Entries are refused (a rejected ``entry`` OrderEvent with the reason) until the venue's
positions equal the book's, contract by contract; a venue that cannot be read is not "flat". Entries
also wait while the broker itself refuses them (:meth:`~services.oms.brokers.base.Broker.entries_refused`:
a submission with an unknown outcome, the venue unavailable past its retry budget). Exits - cancels,
stop modifies, flattens, the kill switch - are worked regardless; one that the venue fails is
audited (``exit_failed``) and the rest go on.

Intrabar paths (paper broker, ``paper.intrabar: pessimistic``): :meth:`OrderManager.on_intrabar` walks
each held contract of a bar's underlying through the bar's pessimistic path (:mod:`services.oms.intrabar`),
in time order across contracts, stopping before a bracket's ``flatten_ts``; the broker works only the
exit legs against those points.

The only I/O is the optional audit sink passed in.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import msgspec

from services.core import shared_state
from services.core.clock import Clock
from services.core.events import (
    Bar,
    ChainSnapshot,
    Event,
    FeatureVector,
    OptionQuote,
    OrderEvent,
    OrderRequest,
    RiskCommand,
    SignalIntent,
    TradeOutcome,
)
from services.core.shared_state import OmsKillSwitch, OmsSnapshot
from services.oms.audit import AuditSink, event_record
from services.oms.brokers.base import EXPIRY_REASON, Broker, BrokerError, VenueUnavailableError
from services.oms.config import BrokerConfig
from services.oms.intrabar import PATH_QUARTERS, SyntheticRepricer, pessimistic_path
from services.oms.orders import (
    ContractSymbolError,
    Fill,
    OptionContract,
    OrderBook,
    OrderLeg,
    OtocoOrder,
    exposure_direction,
    opposite,
)
from services.oms.positions import PositionBook, RoundTrip
from services.oms.stop_sync import StopSync


@runtime_checkable
class IntrabarVenue(Protocol):
    """A simulated venue that can work exit legs against modelled intrabar quotes (the paper broker)."""

    def on_intrabar_quote(self, quote: OptionQuote) -> list[OrderEvent]: ...


ALL_UNDERLYINGS = "*"
_MAX_ID = 64


def client_id(raw: str) -> str:
    """A client order id that fits the 64-character wire limit (long ids keep a hash suffix)."""
    if len(raw) <= _MAX_ID:
        return raw
    digest = hashlib.blake2b(raw.encode(), digest_size=8).hexdigest()
    return f"{raw[: _MAX_ID - 17]}~{digest}"


def quote_mark(quote: OptionQuote) -> float | None:
    """The mark of an option quote: the mid (a missing bid counts as 0), else the bid, else None."""
    if quote.ask > 0:
        return (quote.bid + quote.ask) / 2
    return quote.bid if quote.bid > 0 else None


@dataclass(slots=True)
class Reconciliation:
    """What the latest look at the venue found."""

    ts: int = 0
    adopted: list[str] = field(default_factory=list)
    foreign: list[str] = field(default_factory=list)
    mismatch: str | None = "the venue's orders and positions have not been read yet"
    checks: int = 0


@dataclass(frozen=True, slots=True)
class FillReport:
    """Fill quality of one execution: delay since the order went live and cost against the mid."""

    order_id: str
    client_order_id: str
    leg: str
    contract: str
    side: str
    quantity: int
    price: float
    fees: float
    order_ts: int
    fill_ts: int
    delay_ns: int
    bid: float | None
    ask: float | None
    slippage_vs_mid: float | None


class OrderManager:
    """Works risk-approved brackets at a broker and keeps orders, positions and PnL."""

    def __init__(
        self,
        broker: Broker,
        clock: Clock,
        config: BrokerConfig | None = None,
        audit: AuditSink | None = None,
        intent_cache: int = 10_000,
    ) -> None:
        self.broker = broker
        self.clock = clock
        self.config = config or BrokerConfig()
        self.audit = audit
        self.book = OrderBook()
        self.positions = PositionBook(self.config.multiplier)
        self.stop_sync = StopSync(self.config.stop_sync)
        self.fill_reports: list[FillReport] = []
        self.kill_switch_engaged = False
        self.kill_switch_reason = ""
        self._requests_seen: set[str] = set()
        self._commands_seen: set[str] = set()
        self._intents: OrderedDict[str, tuple[str, dict[str, float]]] = OrderedDict()
        self._intent_cache = intent_cache
        self._flatten_orders: dict[str, tuple[str, str]] = {}
        self._flatten_seq: dict[str, int] = {}
        self._last_quote: dict[str, OptionQuote] = {}
        self._underlying_px: dict[str, float] = {}
        self._terms: dict[str, OptionContract | None] = {}
        self.reconciliation = Reconciliation()
        self._next_reconcile_ns: int | None = None
        self._foreign_seen: set[str] = set()
        self._entry_due: dict[str, int] = {}  # bracket -> first ns its entry may no longer fill
        self._flatten_due_at: dict[str, int] = {}  # bracket -> when it is flattened before the close
        self.entries_expired: list[str] = []  # brackets whose entry the TTL ended before it filled fully
        self.flattened_at_close: list[str] = []  # brackets flattened by their flatten_ts
        self._fill_quote: OptionQuote | None = None  # the intrabar point being worked (its fills' quote)

    @property
    def intrabar(self) -> bool:
        """Whether bars get a pessimistic intrabar path (a simulated venue and ``paper.intrabar`` on)."""
        return self.config.paper.intrabar == "pessimistic" and isinstance(self.broker, IntrabarVenue)

    # -- inputs -------------------------------------------------------------------------------

    def on_signal_intent(self, intent: SignalIntent) -> list[Event]:
        """Remember an intent's reason and features for the TradeOutcome of its order."""
        self._intents[intent.id] = (intent.reason, dict(intent.features))
        self._intents.move_to_end(intent.id)
        while len(self._intents) > self._intent_cache:
            self._intents.popitem(last=False)
        return []

    def on_order_request(self, request: OrderRequest) -> list[Event]:
        """Submit a risk-approved OTOCO bracket (once per request id)."""
        if request.id in self._requests_seen:
            self._audit({"kind": "duplicate_request", "id": request.id, "ts": request.ts})
            return []
        self._requests_seen.add(request.id)
        self._audit(event_record("order_request", request))
        coid = client_id(request.id)
        out: list[Event] = self.check_venue()
        refused = f"kill switch engaged: {self.kill_switch_reason}" if self.kill_switch_engaged else None
        refused = refused or self.entries_refused() or self._too_late(request)
        if refused is not None:
            return out + self._process([self._entry_rejection(request, coid, refused)])
        self.book.add_bracket(request, coid)
        if request.entry_expires_ts is not None:
            self._entry_due[coid] = request.entry_expires_ts + 1
        if request.flatten_ts is not None:
            self._flatten_due_at[coid] = request.flatten_ts
        reason, context = self._intents.get(request.intent_id, ("", {}))
        self.positions.open_trade(coid, request, reason, context)
        try:
            events = self.broker.submit_otoco(request, coid)
        except VenueUnavailableError as exc:  # nothing reached the venue: the entry is refused
            events = [self._entry_rejection(request, coid, str(exc))]
        return out + self._process(events)

    def _too_late(self, request: OrderRequest) -> str | None:
        now = self.clock.now_ns()
        if request.entry_expires_ts is not None and now > request.entry_expires_ts:
            return f"the entry expired {(now - request.entry_expires_ts) / 1e9:g} s before it reached the OMS"
        if request.flatten_ts is not None and now >= request.flatten_ts:
            return "the bracket's flatten time before the close has passed"
        return None

    def on_clock(self, ts: int) -> list[Event]:
        """Event time reached ``ts``: cancel entries whose TTL passed, flatten brackets due before the close."""
        out = self._expire_entries(ts)
        out.extend(self._flatten_due(ts))
        return out

    def _expire_entries(self, ts: int) -> list[Event]:
        """Before market data at ``ts`` is worked: no entry fills against a quote after its deadline."""
        out: list[Event] = []
        if not self._entry_due or ts < min(self._entry_due.values()):
            return out
        for coid, at in list(self._entry_due.items()):
            if ts < at:
                continue
            del self._entry_due[coid]
            bracket = self.book.brackets.get(coid)
            entry = self.book.leg(bracket.entry_id) if bracket is not None else None
            if entry is not None and not entry.is_terminal:
                self.entries_expired.append(coid)
                self._audit({"kind": "entry_expired", "client_order_id": coid, "ts": ts,
                             "filled": entry.filled, "quantity": entry.quantity})
                out.extend(self._cancel_leg(entry.order_id))
        return out

    def _flatten_due(self, ts: int) -> list[Event]:
        """After market data at ``ts`` is worked: the flatten trades against the newest quote."""
        out: list[Event] = []
        if not self._flatten_due_at or ts < min(self._flatten_due_at.values()):
            return out
        for coid, at in list(self._flatten_due_at.items()):
            if ts < at:
                continue
            del self._flatten_due_at[coid]
            self._entry_due.pop(coid, None)
            bracket = self.book.brackets.get(coid)
            if bracket is None or not any(not self.book.legs[i].is_terminal for i in bracket.leg_ids()):
                continue
            self.flattened_at_close.append(coid)
            self._audit({"kind": "session_flatten", "client_order_id": coid, "ts": ts})
            out.extend(self._flatten_bracket(bracket, "session_close"))
        return out

    def _entry_rejection(self, request: OrderRequest, coid: str, reason: str) -> OrderEvent:
        return OrderEvent(
            ts=self.clock.now_ns(),
            id=f"{coid}.rejected",
            order_id=coid,
            client_order_id=coid,
            underlying=request.underlying,
            contract=request.contract,
            leg="entry",
            side=request.side,
            status="rejected",
            quantity=request.quantity,
            limit_price=request.limit_price,
            reason=reason,
        )

    # -- venue reconciliation -----------------------------------------------------------------

    def entries_refused(self) -> str | None:
        """Why new entries must wait (venue disagreement, broker trouble), or None."""
        mismatch = self.reconciliation.mismatch
        if mismatch is not None:
            return f"book and venue disagree: {mismatch}"
        return self.broker.entries_refused()

    def check_venue(self) -> list[Event]:
        """Reconcile with the venue if not yet done, or if they disagreed and the interval passed."""
        if self.reconciliation.mismatch is None:
            return []
        now = self.clock.now_ns()
        if self._next_reconcile_ns is not None and now < self._next_reconcile_ns:
            return []
        return self.reconcile()

    def reconcile(self) -> list[Event]:
        """Read the venue's orders and positions, adopt own orders, report foreign ones, compare."""
        rec = self.reconciliation
        now = self.clock.now_ns()
        rec.ts = now
        rec.checks += 1
        self._next_reconcile_ns = now + int(self.config.tradier.reconcile_interval_secs * 1e9)
        try:
            state = self.broker.account_state()
        except VenueUnavailableError as exc:
            rec.mismatch = f"the venue could not be read ({exc})"
            self._audit({"kind": "reconciliation", "ts": now, "mismatch": rec.mismatch})
            return []
        if state is None:
            rec.mismatch = None
            return []
        out: list[Event] = []
        problems: list[str] = []
        for order in state.orders:
            coid = order.client_order_id
            if not order.own:
                if order.order_id not in self._foreign_seen:
                    self._foreign_seen.add(order.order_id)
                    rec.foreign.append(order.order_id)
                    self._audit({"kind": "foreign_order", "ts": now, "order": order.describe()})
                continue
            if coid is not None and (coid in self.book.brackets or coid in self._flatten_orders):
                continue
            if coid is None or order.request is None:
                problems.append(f"own {order.describe()} cannot be adopted")
                continue
            self.book.add_bracket(order.request, coid)
            self.positions.open_trade(coid, order.request, "adopted from the venue", {})
            self._requests_seen.add(order.request.id)
            rec.adopted.append(coid)
            self._audit({"kind": "adopted_order", "ts": now, "client_order_id": coid, "order": order.describe()})
            out.extend(self._process(self.broker.adopt(order, coid)))
        book = {c: p.quantity for c, p in self.positions.positions.items() if p.quantity}
        venue = dict(state.positions)
        differ = sorted(c for c in set(book) | set(venue) if book.get(c, 0) != venue.get(c, 0))
        if differ:
            problems.append("positions differ: " + ", ".join(
                f"{c} venue {venue.get(c, 0)} book {book.get(c, 0)}" for c in differ))
        rec.mismatch = "; ".join(problems) or None
        self._audit({"kind": "reconciliation", "ts": now, "adopted": list(rec.adopted), "foreign": list(rec.foreign),
                     "mismatch": rec.mismatch})
        return out

    def on_risk_command(self, command: RiskCommand) -> list[Event]:
        """Cancel, modify, flatten, or engage/release the kill switch (once per command id)."""
        if command.id in self._commands_seen:
            self._audit({"kind": "duplicate_command", "id": command.id, "ts": command.ts})
            return []
        self._commands_seen.add(command.id)
        self._audit(event_record("risk_command", command))
        try:
            return self._command(command)
        except BrokerError as exc:
            self._ignored(command, f"broker refused: {exc}")
            return []

    def on_option_quote(self, quote: OptionQuote) -> list[Event]:
        """New quote: session rules due by its time first, then marks, MAE/MFE, and what it fills."""
        out = self._expire_entries(quote.ts)
        out.extend(self._on_quote(quote))
        out.extend(self._flatten_due(quote.ts))
        return out

    def _on_quote(self, quote: OptionQuote) -> list[Event]:
        symbol = quote.symbol
        last = self._last_quote.get(symbol)
        if last is not None and (quote.ts < last.ts or quote == last):
            return []
        self._last_quote[symbol] = quote
        if quote.underlying_price is not None:
            self._underlying_px[quote.underlying] = quote.underlying_price
        mark = quote_mark(quote)
        positions = self.positions
        if symbol not in positions.positions:
            # Never held: no trade to track or position to publish (most of a chain); the mark is kept
            # for a fill this quote may cause, and the broker still works any resting order.
            if mark is not None:
                positions.mark(symbol, mark)
            reports = self.broker.on_option_quote(quote)
            if not reports:
                return []
            out = self._process(reports)
            out.extend(positions.position_updates(quote.ts, [symbol]))
            return out
        if mark is not None:
            positions.mark(symbol, mark)
            for trade in positions.open_trades(contract=symbol):
                self.stop_sync.on_mark(trade.id, mark)
        out = self._process(self.broker.on_option_quote(quote))
        out.extend(positions.position_updates(quote.ts, [symbol]))
        return out

    def on_chain(self, chain: ChainSnapshot) -> list[Event]:
        """Every quote of a chain snapshot, then its underlying price."""
        self._underlying_px[chain.underlying] = chain.underlying_price
        out: list[Event] = self._expire_entries(chain.ts)
        on_quote = self._on_quote
        for quote in chain.quotes:
            events = on_quote(quote)
            if events:
                out.extend(events)
        out.extend(self.on_underlying(chain.underlying, chain.underlying_price, chain.ts))
        return out

    def on_underlying(self, symbol: str, price: float, ts: int) -> list[Event]:
        """An underlying price: session rules due by ``ts``, then underlying-triggered stops at the broker."""
        self._underlying_px[symbol] = price
        out = self._expire_entries(ts)
        out.extend(self._process(self.broker.on_underlying(symbol, price, ts)))
        out.extend(self._flatten_due(ts))
        return out

    def on_features(self, features: FeatureVector) -> list[Event]:
        """Underlying ``close`` and ``atr_14``: underlying stops, then stop sync (tighten by modify)."""
        close = features.values.get("close")
        atr = features.values.get("atr_14")
        out: list[Event] = self.on_clock(features.ts)
        if close is None or not close > 0:
            return out
        out.extend(self.on_underlying(features.symbol, close, features.ts))
        if atr is None or not self.config.stop_sync.enabled:
            return out
        for trade in self.positions.open_trades(underlying=features.symbol):
            bracket = self.book.brackets.get(trade.id)
            stop = self.book.leg(bracket.stop_loss_id) if bracket else None
            terms = self._contract(trade.contract)
            if stop is None or stop.is_terminal or terms is None:
                continue
            quote = self._last_quote.get(trade.contract)
            reference = (quote.bid if trade.side == "buy" else quote.ask) if quote else trade.entry_price
            proposal = self.stop_sync.propose(
                trade.id,
                close=close,
                atr=atr,
                bid=quote.bid if quote else None,
                ask=quote.ask if quote else None,
                tick=self.config.paper.tick_size(terms.root, reference or trade.entry_price),
            )
            if proposal is not None:
                try:
                    out.extend(self._process(self.broker.modify_stop(stop.order_id, proposal)))
                except BrokerError as exc:  # the stop stays where it was; the next proposal tries again
                    self._exit_failed("modify_stop", stop.order_id, exc)
        return out

    def on_intrabar(self, bar: Bar, pricer: SyntheticRepricer) -> list[Event]:
        """Walk the held contracts of ``bar.symbol`` through the bar's pessimistic path, before the chain
        at the bar's end: ``pricer`` reprices each from its quote in the latest chain (the bar's start)."""
        venue = self.broker
        if not self.intrabar or not isinstance(venue, IntrabarVenue):
            return []
        held: dict[str, tuple[OptionQuote, tuple[tuple[int, float], ...]]] = {}
        flatten_at: dict[str, int] = {}
        for trade in self.positions.open_trades(underlying=bar.symbol):
            terms = self._contract(trade.contract)
            last = self._last_quote.get(trade.contract)
            if trade.id not in self.book.brackets or terms is None or last is None:
                continue
            # Several brackets on one contract: the oldest sets the path, the earliest flatten time ends it.
            direction = exposure_direction(trade.side, terms.right)
            held.setdefault(trade.contract, (last, pessimistic_path(bar, direction)))
            due = self._flatten_due_at.get(trade.id)
            if due is not None:
                flatten_at[trade.contract] = min(due, flatten_at.get(trade.contract, due))
        out: list[Event] = []
        for i in range(len(PATH_QUARTERS)):  # point by point across contracts: events stay in time order
            for contract, (last, path) in held.items():
                ts, spot = path[i]
                if ts >= flatten_at.get(contract, ts + 1):
                    continue  # flattened by then (at the next market data, against the bar's end)
                quote = pricer.quote_at(last, spot, ts)
                if quote is None:
                    continue
                self._fill_quote = quote
                try:
                    reports = venue.on_intrabar_quote(quote)
                    if reports:
                        out.extend(self._process(reports))
                        out.extend(self.positions.position_updates(ts, [contract]))
                finally:
                    self._fill_quote = None
        return out

    def on_session_close(self, ts: int, settle_prices: Mapping[str, float]) -> list[Event]:
        """Session close: the broker expires orders and settles expiring positions."""
        return self._process(self.broker.on_session_close(ts, settle_prices))

    # -- state --------------------------------------------------------------------------------

    def is_flat(self) -> bool:
        """No contract held and no live order."""
        return self.positions.is_flat() and not any(True for _ in self.book.live())

    def snapshot_state(self) -> OmsSnapshot:
        """Live orders and held positions in the shared schema (written under keys.POSITIONS)."""
        return OmsSnapshot(
            ts=self.clock.now_ns(),
            broker=self.broker.name,
            kill_switch=OmsKillSwitch(engaged=self.kill_switch_engaged, reason=self.kill_switch_reason),
            flat=self.is_flat(),
            orders=tuple(leg.to_state() for leg in self.book.live()),
            positions=tuple(p.to_state() for p in self.positions.positions.values() if p.quantity),
            realized_pnl=self.positions.realized(),
            unrealized_pnl=self.positions.unrealized(),
        )

    def snapshot(self) -> dict[str, Any]:
        """:meth:`snapshot_state` as the JSON document a reader of the key decodes (plain dicts and lists)."""
        doc: dict[str, Any] = msgspec.json.decode(shared_state.encode(self.snapshot_state()))
        return doc

    # -- commands -----------------------------------------------------------------------------

    def _command(self, cmd: RiskCommand) -> list[Event]:
        if cmd.action == "engage_kill_switch":
            return self._engage_kill_switch(cmd)
        if cmd.action == "release_kill_switch":
            self.kill_switch_engaged = False
            self.kill_switch_reason = ""
            return []
        if cmd.action == "cancel":
            return self._cancel(cmd)
        if cmd.action == "modify":
            return self._modify(cmd)
        return self._flatten_command(cmd)

    def _engage_kill_switch(self, cmd: RiskCommand) -> list[Event]:
        self.kill_switch_engaged = True
        self.kill_switch_reason = cmd.reason
        out: list[Event] = []
        for leg in list(self.book.live()):
            if leg.leg != "flatten" and not leg.is_terminal:
                out.extend(self._cancel_leg(leg.order_id))
        for bracket in list(self.book.brackets.values()):
            out.extend(self._flatten_bracket(bracket, "kill_switch"))
        return out

    def _cancel(self, cmd: RiskCommand) -> list[Event]:
        targets: list[OrderLeg] = []
        if cmd.order_id:
            bracket = self.book.brackets.get(cmd.order_id)
            leg = self.book.leg(bracket.entry_id) if bracket else self.book.leg(cmd.order_id)
            if leg is None or leg.is_terminal:
                self._ignored(cmd, f"no working order {cmd.order_id}")
                return []
            targets.append(leg)
        else:
            for bracket in self._brackets_on(cmd.underlying):
                entry = self.book.leg(bracket.entry_id)
                if entry is not None and not entry.is_terminal:
                    targets.append(entry)
        out: list[Event] = []
        for leg in targets:
            if not leg.is_terminal:
                out.extend(self._process(self.broker.cancel(leg.order_id)))
        return out

    def _modify(self, cmd: RiskCommand) -> list[Event]:
        if not cmd.order_id or cmd.stop_price is None or not cmd.stop_price > 0:
            self._ignored(cmd, "modify needs order_id and a positive stop_price")
            return []
        bracket = self.book.brackets.get(cmd.order_id)
        leg = self.book.leg(bracket.stop_loss_id) if bracket else self.book.leg(cmd.order_id)
        if leg is None or leg.leg != "stop_loss" or leg.is_terminal:
            self._ignored(cmd, f"no working stop for {cmd.order_id}")
            return []
        return self._process(self.broker.modify_stop(leg.order_id, cmd.stop_price))

    def _flatten_command(self, cmd: RiskCommand) -> list[Event]:
        if cmd.order_id:
            bracket = self.book.bracket_of(cmd.order_id)
            if bracket is None:
                self._ignored(cmd, f"no bracket for {cmd.order_id}")
                return []
            return self._flatten_bracket(bracket, "flatten")
        out: list[Event] = []
        for bracket in self._brackets_on(cmd.underlying):
            out.extend(self._flatten_bracket(bracket, "flatten"))
        return out

    def _brackets_on(self, underlying: str) -> list[OtocoOrder]:
        return [
            b
            for b in self.book.brackets.values()
            if underlying == ALL_UNDERLYINGS or b.request.underlying == underlying
        ]

    def _flatten_bracket(self, bracket: OtocoOrder, reason: str) -> list[Event]:
        """Cancel the bracket's live legs, then sell (buy back) what it still holds at market."""
        out: list[Event] = []
        for order_id in bracket.leg_ids():
            leg = self.book.legs[order_id]
            if not leg.is_terminal:
                out.extend(self._cancel_leg(order_id))
        trade = self.positions.trades.get(bracket.client_order_id)
        if trade is None or trade.open_qty <= 0:
            return out
        working = sum(
            leg.leaves
            for leg in self.book.live()
            if leg.leg == "flatten" and self._flatten_orders.get(leg.client_order_id, ("",))[0] == trade.id
        )
        quantity = trade.open_qty - working
        if quantity <= 0:
            return out
        n = self._flatten_seq.get(trade.id, 0) + 1
        self._flatten_seq[trade.id] = n
        coid = client_id(f"{trade.id}.flat{n}")
        self._flatten_orders[coid] = (trade.id, reason)
        try:
            events = self.broker.submit_market(
                coid, trade.underlying, trade.contract, opposite(trade.side), quantity, "flatten"
            )
        except VenueUnavailableError as exc:  # never reached the venue: the next flatten tries again
            self._flatten_orders.pop(coid, None)
            self._exit_failed("flatten", coid, exc)
            return out
        out.extend(self._process(events))
        return out

    def _cancel_leg(self, order_id: str) -> list[Event]:
        try:
            return self._process(self.broker.cancel(order_id))
        except VenueUnavailableError as exc:
            self._exit_failed("cancel", order_id, exc)
            return []

    def _exit_failed(self, action: str, order_id: str, exc: Exception) -> None:
        self._audit({"kind": "exit_failed", "action": action, "order_id": order_id, "ts": self.clock.now_ns(),
                     "why": str(exc)})

    # -- broker events ------------------------------------------------------------------------

    def _process(self, events: Iterable[OrderEvent]) -> list[Event]:
        out: list[Event] = []
        for event in events:
            if self.book.seen(event):
                continue
            fill = self.book.apply(event)
            out.append(event)
            leg = self.book.legs[event.order_id]
            if fill is None:
                self._audit(event_record("order_event", event))
            else:
                out.extend(self._on_fill(fill, event))
            bracket = self.book.brackets.get(event.client_order_id)
            if bracket is None:
                continue
            if leg.leg == "stop_loss":
                if event.status == "modified" and event.stop_price is not None:
                    self.stop_sync.on_stop_changed(bracket.client_order_id, event.stop_price)
                elif leg.is_terminal:
                    self.stop_sync.forget(bracket.client_order_id)
            if leg.leg == "entry" and leg.is_terminal:
                out.extend(self._closed(self.positions.entry_finished(bracket.client_order_id, event.ts)))
        return out

    def _on_fill(self, fill: Fill, event: OrderEvent) -> list[Event]:
        trade_id, exit_reason = self._attribute(fill)
        point = self._fill_quote
        quote = point if point is not None and point.symbol == fill.contract else self._last_quote.get(fill.contract)
        report = self._report(fill, quote)
        self.fill_reports.append(report)
        self._audit(
            event_record(
                "order_event",
                event,
                fill_quantity=fill.quantity,
                fill_delay_ns=report.delay_ns,
                slippage_vs_mid=report.slippage_vs_mid,
            )
        )
        out = self._closed(self.positions.on_fill(fill, trade_id, exit_reason))
        trade = self.positions.trades.get(trade_id) if trade_id else None
        if trade is not None and fill.leg == "entry":
            self._track_stop(trade, quote)
        return out

    def _attribute(self, fill: Fill) -> tuple[str | None, str]:
        """Which round trip a fill belongs to and, if it closes, why."""
        if fill.client_order_id in self.book.brackets:
            labels = {"entry": "", "take_profit": "take_profit", "stop_loss": "stop_loss"}
            return fill.client_order_id, labels.get(fill.leg, "flatten")
        flatten = self._flatten_orders.get(fill.client_order_id)
        if flatten is not None:
            return flatten
        if fill.reason.startswith(EXPIRY_REASON):
            return None, "expiry"
        return None, "flatten"

    def _closed(self, events: list[Event]) -> list[Event]:
        """Forget stop tracking of round trips that just closed; audit their outcomes."""
        for event in events:
            if isinstance(event, TradeOutcome):
                self.stop_sync.forget(event.id)
                self._audit(event_record("trade_outcome", event))
        return events

    def _track_stop(self, trade: RoundTrip, quote: OptionQuote | None) -> None:
        bracket = self.book.brackets[trade.id]
        stop = self.book.leg(bracket.stop_loss_id)
        terms = self._contract(trade.contract)
        if stop is None or stop.stop_price is None or terms is None:
            return
        underlying = quote.underlying_price if quote and quote.underlying_price else None
        self.stop_sync.track(
            trade.id,
            position_dir=trade.direction,
            exposure=exposure_direction(trade.side, terms.right),
            entry_price=trade.entry_price,
            stop=stop.stop_price,
            entry_underlying=underlying or self._underlying_px.get(trade.underlying),
        )

    def _report(self, fill: Fill, quote: OptionQuote | None) -> FillReport:
        mark = quote_mark(quote) if quote is not None else None
        slip = None  # positive: paid more than the mid (buys) or got less (sells)
        if mark is not None and not fill.reason.startswith(EXPIRY_REASON):
            slip = (fill.price - mark) if fill.side == "buy" else (mark - fill.price)
        return FillReport(
            order_id=fill.order_id,
            client_order_id=fill.client_order_id,
            leg=fill.leg,
            contract=fill.contract,
            side=fill.side,
            quantity=fill.quantity,
            price=fill.price,
            fees=fill.fees,
            order_ts=fill.live_ts,
            fill_ts=fill.ts,
            delay_ns=fill.delay_ns,
            bid=quote.bid if quote else None,
            ask=quote.ask if quote else None,
            slippage_vs_mid=slip,
        )

    def _contract(self, symbol: str) -> OptionContract | None:
        if symbol not in self._terms:
            try:
                self._terms[symbol] = OptionContract.parse(symbol)
            except ContractSymbolError:
                self._terms[symbol] = None
        return self._terms[symbol]

    def _ignored(self, cmd: RiskCommand, why: str) -> None:
        self._audit({"kind": "command_ignored", "id": cmd.id, "action": cmd.action, "ts": cmd.ts, "why": why})

    def _audit(self, record: dict[str, Any]) -> None:
        if self.audit is not None:
            self.audit.write(record)
