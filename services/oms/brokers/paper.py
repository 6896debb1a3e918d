"""PaperBroker: a simulated venue that fills orders from option quotes (a broker like any other).

Fill rules (``slip`` = ``slippage_ticks`` x the root's tick at the touch price):

- **Marketable on arrival.** A limit order that can trade against the last known quote when it is
  submitted (for a bracket's children: when they activate) fills at once: a buy at
  ``min(limit, ask + slip)`` when ``0 < ask <= limit``, a sell at ``max(limit, bid - slip)`` when
  ``bid >= limit``.
- **Resting limits** (everything after the arrival check, including the remainder of a partial
  fill) fill only when the market trades through them, at their own limit price: a buy when
  ``0 < ask <= limit``, a sell when ``bid >= limit`` (take-profit of a long: ``bid >= take_profit``).
- **Stops** are stop-market orders. A sell stop triggers when ``bid <= stop`` and then fills at
  ``bid - slip`` (never below one tick) on that quote and, for any remainder, on later quotes while
  the bid is positive. A buy stop mirrors it on the ask (``ask >= stop``, fills at ``ask + slip``).
  With ``stop_on_underlying`` a stop leg whose OrderRequest has ``underlying_stop`` also triggers
  when the underlying reaches that level (long call/short put: at or below; otherwise at or
  above) and fills against the contract's last known quote.
- **Market orders** (flatten) fill like a triggered stop: sells at ``bid - slip``, buys at
  ``ask + slip``.
- **Displayed size.** With ``partial_fills`` each quote offers ``floor(ask_size)`` contracts to
  buyers and ``floor(bid_size)`` to sellers, consumed by orders in submission order; the rest keeps
  working. A side with a price but size 0 is taken as size unknown (no limit); a zero price means
  no market on that side (no fill).
- **OTOCO.** The take-profit and stop legs are accepted with the entry and held until it fills;
  they start working on the entry's first fill and only ever sell what the entry has bought (they
  protect a partial entry). One-cancels-other: a fill on one leg reduces the other's quantity
  (``modified``); when one leg completes, the other is canceled. If the entry ends (cancel,
  expiry) short of its quantity, the children shrink to what was filled, or are canceled when
  nothing is left to exit.
- **Session close.** Orders on contracts expiring that day expire (with ``duration: day``, every
  live order). Open positions in expiring contracts settle at intrinsic value from
  ``settle_prices[underlying]`` (else the last underlying price seen): cash-settled index roots
  (SPX, SPXW, NDX, NDXP ...) are cash-settled; equity/ETF options (SPY, QQQ) in the money are
  treated as exercised and immediately closed at intrinsic (a cash equivalent for PnL), out of the
  money they expire worthless (a settlement at 0). Settlements pay ``exercise_fee_per_contract``.

Latency (``latency_ms``, off when None): an order reaches the venue ``latency_ms`` after it is sent (an
entry or flatten when submitted, a bracket's exit legs when the entry's fill activates them). It never
trades against the quote in hand when it was sent: its first look is the first quote stamped strictly
after it was sent and at or after send + latency, where it is marketable on arrival as above (a buy at
``min(limit, ask + slip)``), and it rests from then on. Until then it does not fill or trigger.

Intrabar paths (``intrabar: pessimistic``, the default): with bar-end synthetic chains the OMS also
feeds :meth:`PaperBroker.on_intrabar_quote` a modelled quote of each held contract at four points
inside every bar (open, adverse extreme, favourable extreme, close; :mod:`services.oms.intrabar`), so
a stop or target touched inside a bar fills there, and when both could have been, the stop first.
Only exit legs of filled entries see these points; the fill rules above apply to them unchanged (a
triggered stop fills at the point's bid, a target at its limit).

Event timestamps: fills carry the quote's (or underlying print's) ``ts``; submissions, cancels and
modifications carry the injected clock's now.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final

from services.core.calendar import ny_date
from services.core.clock import Clock
from services.core.events import OptionQuote, OrderEvent, OrderRequest, OrderStatus, Side
from services.oms.brokers.base import (
    EXPIRY_REASON,
    AccountState,
    BrokerError,
    SettlementPriceMissingError,
    UnknownOrderError,
    VenueOrder,
)
from services.oms.config import PaperConfig
from services.oms.fees import FeeModel
from services.oms.orders import (
    ContractSymbolError,
    LegKind,
    OptionContract,
    OrderLeg,
    exposure_direction,
    opposite,
)


@dataclass(slots=True)
class _Liquidity:
    """Contracts still offered on each side of the latest quote (None: size unknown)."""

    bid: int | None
    ask: int | None

    @classmethod
    def of(cls, quote: OptionQuote, partial_fills: bool) -> _Liquidity:
        if not partial_fills:
            return cls(None, None)
        bid = math.floor(quote.bid_size) if quote.bid_size > 0 else None
        ask = math.floor(quote.ask_size) if quote.ask_size > 0 else None
        return cls(bid, ask)

    def available(self, side: Side) -> int | None:
        return self.ask if side == "buy" else self.bid

    def take(self, side: Side, quantity: int) -> None:
        if side == "buy" and self.ask is not None:
            self.ask -= quantity
        elif side == "sell" and self.bid is not None:
            self.bid -= quantity


@dataclass(slots=True)
class _PaperOrder:
    state: OrderLeg
    terms: OptionContract | None
    bracket: _Bracket | None = None
    active: bool = True
    rested: bool = False
    triggered: bool = False
    underlying_stop: float | None = None
    exposure: int = 1
    seq: int = 0
    last_event: OrderEvent | None = None
    sent_ns: int | None = None  # with latency: when the order was sent ...
    ready_ns: int | None = None  # ... and the first quote time it may trade against


@dataclass(slots=True)
class _Bracket:
    client_order_id: str
    entry: _PaperOrder
    take_profit: _PaperOrder
    stop_loss: _PaperOrder
    children: tuple[_PaperOrder, _PaperOrder] = field(init=False)

    def __post_init__(self) -> None:
        self.children = (self.take_profit, self.stop_loss)

    def open_quantity(self) -> int:
        """Contracts bought by the entry and not yet sold by either exit leg."""
        return self.entry.state.filled - self.take_profit.state.filled - self.stop_loss.state.filled

    def sibling(self, order: _PaperOrder) -> _PaperOrder:
        return self.stop_loss if order is self.take_profit else self.take_profit


class PaperBroker:
    """Simulated broker filling from quotes; deterministic for a given input sequence."""

    name: Final = "paper"

    def __init__(
        self,
        clock: Clock,
        config: PaperConfig | None = None,
        fees: FeeModel | None = None,
        order_id_prefix: str = "paper-",
    ) -> None:
        self.clock = clock
        self.config = config or PaperConfig()
        self.fees = fees or FeeModel(index_roots=self.config.cash_settled_roots)
        self._prefix = order_id_prefix
        self._next_id = 0
        self._orders: dict[str, _PaperOrder] = {}
        self._by_client_id: dict[str, list[_PaperOrder]] = {}
        self._by_contract: dict[str, list[_PaperOrder]] = {}
        self._quotes: dict[str, OptionQuote] = {}
        self._liquidity: dict[str, _Liquidity] = {}
        self._underlying_px: dict[str, float] = {}
        self._positions: dict[str, int] = {}
        self._contracts: dict[str, tuple[OptionContract, str]] = {}

    # -- queries ------------------------------------------------------------------------------

    def open_orders(self) -> list[OrderEvent]:
        """The latest event of every live order, oldest order first."""
        return [o.last_event for o in self._orders.values() if not o.state.is_terminal and o.last_event]

    def positions(self) -> dict[str, int]:
        """The simulated account's net contracts per symbol (non-zero only)."""
        return {c: q for c, q in self._positions.items() if q}

    def entries_refused(self) -> str | None:
        """The paper broker always takes entries."""
        return None

    def account_state(self) -> AccountState | None:
        """The paper broker is its own venue: there is nothing to reconcile."""
        return None

    def adopt(self, order: VenueOrder, client_order_id: str) -> list[OrderEvent]:
        """Nothing exists outside this process, so nothing can be adopted."""
        raise BrokerError(f"the paper broker has no venue orders to adopt ({order.describe()})")

    # -- requests -----------------------------------------------------------------------------

    def submit_otoco(self, request: OrderRequest, client_order_id: str) -> list[OrderEvent]:
        """Place an OTOCO bracket (idempotent on ``client_order_id``)."""
        existing = self._by_client_id.get(client_order_id)
        if existing is not None:
            return [o.last_event for o in existing if o.last_event is not None]
        ts = self.clock.now_ns()
        terms, problem = self._check_bracket(request)
        exit_side = opposite(request.side)
        exposure = exposure_direction(request.side, terms.right) if terms else 1
        entry = self._new_order(
            client_order_id,
            request.underlying,
            request.contract,
            "entry",
            request.side,
            request.quantity,
            terms,
            limit_price=request.limit_price,
        )
        tp = self._new_order(
            client_order_id,
            request.underlying,
            request.contract,
            "take_profit",
            exit_side,
            request.quantity,
            terms,
            limit_price=request.take_profit,
        )
        sl = self._new_order(
            client_order_id,
            request.underlying,
            request.contract,
            "stop_loss",
            exit_side,
            request.quantity,
            terms,
            stop_price=request.stop_loss,
        )
        sl.underlying_stop = request.underlying_stop
        sl.exposure = exposure
        bracket = _Bracket(client_order_id, entry, tp, sl)
        for order in (entry, tp, sl):
            order.bracket = bracket
        tp.active = sl.active = False
        self._by_client_id[client_order_id] = [entry, tp, sl]
        out: list[OrderEvent] = []
        if problem:
            for order in (entry, tp, sl):
                out.append(self._emit(order, "rejected", ts, reason=problem))
            return out
        for order in (entry, tp, sl):
            out.append(self._emit(order, "accepted", ts))
        self._arrive(entry, ts, out)
        return out

    def submit_market(
        self,
        client_order_id: str,
        underlying: str,
        contract: str,
        side: Side,
        quantity: int,
        leg: LegKind = "flatten",
    ) -> list[OrderEvent]:
        """Place a market order (idempotent on ``client_order_id``)."""
        existing = self._by_client_id.get(client_order_id)
        if existing is not None:
            return [o.last_event for o in existing if o.last_event is not None]
        ts = self.clock.now_ns()
        try:
            terms: OptionContract | None = OptionContract.parse(contract)
            problem = "" if quantity > 0 else f"quantity must be positive, got {quantity}"
        except ContractSymbolError as exc:
            terms, problem = None, str(exc)
        order = self._new_order(client_order_id, underlying, contract, leg, side, max(quantity, 0), terms)
        self._by_client_id[client_order_id] = [order]
        if problem:
            return [self._emit(order, "rejected", ts, reason=problem)]
        out = [self._emit(order, "accepted", ts)]
        self._arrive(order, ts, out)
        return out

    def cancel(self, order_id: str) -> list[OrderEvent]:
        """Cancel a live order; canceling an entry shrinks or cancels its held children."""
        order = self._order(order_id)
        if order.state.is_terminal:
            return []
        ts = self.clock.now_ns()
        out = [self._emit(order, "canceled", ts, reason="canceled by request")]
        if order.bracket is not None and order is order.bracket.entry:
            self._reconcile(order.bracket, ts, out, "entry canceled")
        return out

    def modify_stop(self, order_id: str, stop_price: float) -> list[OrderEvent]:
        """Move a stop leg; it is checked against the last quote at once (it may trigger)."""
        order = self._order(order_id)
        if order.state.leg != "stop_loss":
            raise BrokerError(f"order {order_id} is a {order.state.leg} leg, not a stop")
        if not (stop_price > 0 and math.isfinite(stop_price)):
            raise BrokerError(f"stop price must be a positive number, got {stop_price}")
        if order.state.is_terminal or order.triggered:
            return []
        ts = self.clock.now_ns()
        out = [self._emit(order, "modified", ts, stop_price=round(stop_price, 2), reason="stop modified")]
        quote = self._quotes.get(order.state.contract)
        if quote is not None and order.active and self.config.latency_ms is None:
            self._evaluate(order, quote, ts, out)  # with latency the new level meets the next quote
        return out

    # -- market data --------------------------------------------------------------------------

    def on_option_quote(self, quote: OptionQuote) -> list[OrderEvent]:
        """Work every live order on the quoted contract against the new quote."""
        symbol = quote.symbol
        self._quotes[symbol] = quote
        # The new quote's displayed size is built when an order first trades against it (_evaluate).
        self._liquidity.pop(symbol, None)
        if quote.underlying_price is not None:
            self._underlying_px[quote.underlying] = quote.underlying_price
        orders = self._by_contract.get(symbol)
        if not orders:
            return []
        out: list[OrderEvent] = []
        for order in list(orders):
            self._evaluate(order, quote, quote.ts, out)
        self._by_contract[quote.symbol] = [o for o in orders if not o.state.is_terminal]
        return out

    def on_underlying(self, symbol: str, price: float, ts: int) -> list[OrderEvent]:
        """Trigger stop legs whose underlying_stop the print reached (when enabled)."""
        self._underlying_px[symbol] = price
        out: list[OrderEvent] = []
        if not self.config.stop_on_underlying:
            return out
        live = [o for orders in self._by_contract.values() for o in orders if not o.state.is_terminal]
        for order in live:
            level = order.underlying_stop
            if (
                level is None
                or order.triggered
                or not order.active
                or order.state.is_terminal
                or order.state.underlying != symbol
            ):
                continue
            hit = price <= level if order.exposure > 0 else price >= level
            if not hit:
                continue
            order.triggered = True
            order.state.reason = f"underlying stop {level:.2f} reached at {price:.2f}"
            quote = self._quotes.get(order.state.contract)
            if quote is not None:
                self._evaluate(order, quote, ts, out)
        return out

    def on_intrabar_quote(self, quote: OptionQuote) -> list[OrderEvent]:
        """A modelled point of a bar's path (:mod:`services.oms.intrabar`): works the contract's live
        exit legs (stops and targets of filled entries) against it, nothing else.

        It is not the contract's last quote (entries, flattens and later stop moves still meet real
        quotes), its displayed size is its own, and the latency model holds: a leg not yet at the venue
        by the point's time ignores it. With ``stop_on_underlying`` the point's underlying price also
        triggers the stop's ``underlying_stop``."""
        symbol = quote.symbol
        legs = [
            o
            for o in self._by_contract.get(symbol, ())
            if o.state.leg in ("stop_loss", "take_profit") and o.active and not o.state.is_terminal
        ]
        if not legs:
            return []
        saved = self._liquidity.pop(symbol, None)
        out: list[OrderEvent] = []
        spot = quote.underlying_price
        for order in legs:
            sent, ready = order.sent_ns, order.ready_ns
            if sent is not None and ready is not None and (quote.ts <= sent or quote.ts < ready):
                continue  # not at the venue yet
            level = order.underlying_stop
            if (self.config.stop_on_underlying and level is not None and spot is not None and not order.triggered
                    and (spot <= level if order.exposure > 0 else spot >= level)):
                order.triggered = True
                order.state.reason = f"underlying stop {level:.2f} reached at {spot:.2f} (intrabar)"
            self._evaluate(order, quote, quote.ts, out)
        self._liquidity.pop(symbol, None)
        if saved is not None:
            self._liquidity[symbol] = saved  # the real quote's remaining size is untouched by the model
        self._by_contract[symbol] = [o for o in self._by_contract.get(symbol, ()) if not o.state.is_terminal]
        return out

    def on_session_close(self, ts: int, settle_prices: Mapping[str, float]) -> list[OrderEvent]:
        """Expire orders and settle positions in contracts expiring on ``ts``'s New York date."""
        day = ny_date(ts)
        settlements: list[tuple[str, int, OptionContract, str, float]] = []
        for contract, qty in self._positions.items():
            terms, underlying = self._contracts[contract]
            if qty == 0 or terms.expiry > day:
                continue
            price = settle_prices.get(underlying, self._underlying_px.get(underlying))
            if price is None:
                raise SettlementPriceMissingError(
                    f"{contract} expires {terms.expiry} but no settlement price for {underlying} was given "
                    f"or seen; pass settle_prices[{underlying!r}]"
                )
            settlements.append((contract, qty, terms, underlying, price))
        out: list[OrderEvent] = []
        for order in list(self._orders.values()):
            if order.state.is_terminal:
                continue
            expiring = order.terms is not None and order.terms.expiry <= day
            if expiring or self.config.duration == "day":
                why = "contract expired" if expiring else "day order expired at the close"
                out.append(self._emit(order, "expired", ts, reason=why))
        for contract, qty, terms, underlying, price in settlements:
            self._settle(contract, qty, terms, underlying, price, ts, out)
        for contract in list(self._by_contract):
            self._by_contract[contract] = [o for o in self._by_contract[contract] if not o.state.is_terminal]
        return out

    # -- internals ----------------------------------------------------------------------------

    def _check_bracket(self, request: OrderRequest) -> tuple[OptionContract | None, str]:
        try:
            terms = OptionContract.parse(request.contract)
        except ContractSymbolError as exc:
            return None, str(exc)
        lo, hi = (
            (request.stop_loss, request.take_profit)
            if request.side == "buy"
            else (request.take_profit, request.stop_loss)
        )
        if not lo < request.limit_price < hi:
            names = (
                "stop_loss < limit_price < take_profit"
                if request.side == "buy"
                else ("take_profit < limit_price < stop_loss")
            )
            return terms, (
                f"bracket prices out of order for a {request.side}: need {names}, got "
                f"limit {request.limit_price}, take_profit {request.take_profit}, "
                f"stop_loss {request.stop_loss}"
            )
        return terms, ""

    def _new_order(
        self,
        client_order_id: str,
        underlying: str,
        contract: str,
        leg: LegKind,
        side: Side,
        quantity: int,
        terms: OptionContract | None,
        *,
        limit_price: float | None = None,
        stop_price: float | None = None,
    ) -> _PaperOrder:
        self._next_id += 1
        order_id = f"{self._prefix}{self._next_id}"
        state = OrderLeg(
            order_id,
            client_order_id,
            underlying,
            contract,
            leg,
            side,
            quantity,
            limit_price=limit_price,
            stop_price=stop_price,
            created_ts=self.clock.now_ns(),
        )
        order = _PaperOrder(state, terms)
        self._orders[order_id] = order
        self._by_contract.setdefault(contract, []).append(order)
        if terms is not None:
            self._contracts.setdefault(contract, (terms, underlying))
        return order

    def _order(self, order_id: str) -> _PaperOrder:
        order = self._orders.get(order_id)
        if order is None:
            raise UnknownOrderError(f"no paper order with id {order_id!r}")
        return order

    def _emit(
        self,
        order: _PaperOrder,
        status: OrderStatus,
        ts: int,
        *,
        quantity: int | None = None,
        fill_qty: int = 0,
        fill_price: float | None = None,
        fees: float = 0.0,
        stop_price: float | None = None,
        reason: str = "",
    ) -> OrderEvent:
        s = order.state
        order.seq += 1
        event = OrderEvent(
            ts=ts,
            id=f"{s.order_id}.{order.seq}",
            order_id=s.order_id,
            client_order_id=s.client_order_id,
            underlying=s.underlying,
            contract=s.contract,
            leg=s.leg,
            side=s.side,
            status=status,
            quantity=s.quantity if quantity is None else quantity,
            filled_quantity=s.filled + fill_qty,
            fill_price=fill_price,
            limit_price=s.limit_price,
            stop_price=s.stop_price if stop_price is None else stop_price,
            fees=fees,
            reason=reason,
        )
        s.apply(event)  # the broker obeys the same state machine as the OMS
        order.last_event = event
        return event

    def _slip(self, order: _PaperOrder, price: float) -> float:
        root = order.terms.root if order.terms else ""
        return self.config.slippage_ticks * self.config.tick_size(root, price)

    def _market_price(self, order: _PaperOrder, quote: OptionQuote) -> float | None:
        if order.state.side == "buy":
            return round(quote.ask + self._slip(order, quote.ask), 2) if quote.ask > 0 else None
        if quote.bid <= 0:
            return None
        root = order.terms.root if order.terms else ""
        floor = min(quote.bid, self.config.tick_size(root, quote.bid))
        return round(max(quote.bid - self._slip(order, quote.bid), floor), 2)

    def _limit_price(self, order: _PaperOrder, quote: OptionQuote) -> float | None:
        limit = order.state.limit_price
        if limit is None:
            return None
        if order.state.side == "buy":
            if not 0 < quote.ask <= limit:
                return None
            return limit if order.rested else round(min(limit, quote.ask + self._slip(order, quote.ask)), 2)
        if not (quote.bid > 0 and quote.bid >= limit):
            return None
        return limit if order.rested else round(max(limit, quote.bid - self._slip(order, quote.bid)), 2)

    def _stop_triggered(self, order: _PaperOrder, quote: OptionQuote) -> bool:
        stop = order.state.stop_price
        if stop is None:
            return False
        if order.state.side == "sell":
            return quote.bid <= stop
        return quote.ask > 0 and quote.ask >= stop

    def _delay(self, order: _PaperOrder, ts: int) -> bool:
        """With latency on: hold ``order`` until the venue has it (True); else False."""
        latency = self.config.latency_ms
        if latency is None:
            return False
        order.sent_ns = ts
        order.ready_ns = ts + int(latency * 1_000_000)
        order.rested = False
        return True

    def _arrive(self, order: _PaperOrder, ts: int, out: list[OrderEvent]) -> None:
        """First look at a new (or newly active) order: marketable against the last quote?"""
        if self._delay(order, ts):
            if not order.state.is_terminal and order.state.status != "working":
                out.append(self._emit(order, "working", ts))
            return
        quote = self._quotes.get(order.state.contract)
        before = len(out)
        if quote is not None:
            self._evaluate(order, quote, ts, out)
        order.rested = True
        filled_now = any(e.order_id == order.state.order_id and e.filled_quantity for e in out[before:])
        if not filled_now and not order.state.is_terminal and order.state.status != "working":
            out.append(self._emit(order, "working", ts))

    def _evaluate(self, order: _PaperOrder, quote: OptionQuote, ts: int, out: list[OrderEvent]) -> None:
        s = order.state
        if not order.active or s.is_terminal:
            return
        if order.ready_ns is not None and order.sent_ns is not None:
            if quote.ts <= order.sent_ns or quote.ts < order.ready_ns:
                return  # not at the venue yet
            order.ready_ns = order.sent_ns = None
        kind = s.leg
        price: float | None
        if kind == "stop_loss":
            if not order.triggered and self._stop_triggered(order, quote):
                order.triggered = True
                s.reason = f"stop {s.stop_price} triggered at bid {quote.bid} / ask {quote.ask}"
            price = self._market_price(order, quote) if order.triggered else None
        elif kind == "flatten":
            price = self._market_price(order, quote)
        else:
            price = self._limit_price(order, quote)
        order.rested = True
        if price is None:
            return
        qty = s.leaves
        bracket = order.bracket
        if bracket is not None and kind != "entry":
            qty = min(qty, bracket.open_quantity())
        liquidity = self._liquidity.get(s.contract)
        if liquidity is None:  # first trade against this quote (``quote`` is always the contract's latest)
            liquidity = self._liquidity[s.contract] = _Liquidity.of(quote, self.config.partial_fills)
        available = liquidity.available(s.side)
        if available is not None:
            qty = min(qty, available)
        if qty <= 0:
            return
        liquidity.take(s.side, qty)
        self._fill(order, qty, price, ts, out, reason=s.reason if kind == "stop_loss" else "")

    def _fill(
        self, order: _PaperOrder, qty: int, price: float, ts: int, out: list[OrderEvent], reason: str = ""
    ) -> None:
        s = order.state
        root = order.terms.root if order.terms else ""
        fees = self.fees.fill(root, s.side, qty, price)
        status: OrderStatus = "filled" if s.filled + qty == s.quantity else "partial"
        out.append(self._emit(order, status, ts, fill_qty=qty, fill_price=price, fees=fees, reason=reason))
        self._positions[s.contract] = self._positions.get(s.contract, 0) + (qty if s.side == "buy" else -qty)
        bracket = order.bracket
        if bracket is None:
            return
        if order is bracket.entry:
            for child in bracket.children:
                if not child.active and not child.state.is_terminal:
                    child.active = True
                    out.append(self._emit(child, "working", ts, reason="entry filled"))
            quote = self._quotes.get(s.contract)
            for child in bracket.children:
                if child.rested or child.ready_ns is not None or child.state.is_terminal:
                    continue
                if self._delay(child, ts):
                    continue
                if quote is not None:
                    self._evaluate(child, quote, ts, out)
                child.rested = True
            if s.is_terminal:
                self._reconcile(bracket, ts, out, "entry filled")
        else:
            self._reconcile(bracket, ts, out, "oco")

    def _reconcile(self, bracket: _Bracket, ts: int, out: list[OrderEvent], why: str) -> None:
        """Keep each child's quantity = what the entry will have bought - what the sibling sold."""
        entry = bracket.entry.state
        planned = entry.filled if entry.is_terminal else entry.quantity
        for child in bracket.children:
            c = child.state
            if c.is_terminal:
                continue
            target = planned - bracket.sibling(child).state.filled
            if target <= c.filled:
                out.append(self._emit(child, "canceled", ts, reason=why))
            elif target != c.quantity:
                out.append(self._emit(child, "modified", ts, quantity=target, reason=why))

    def _settle(
        self,
        contract: str,
        qty: int,
        terms: OptionContract,
        underlying: str,
        price: float,
        ts: int,
        out: list[OrderEvent],
    ) -> None:
        intrinsic = terms.intrinsic(price)
        if intrinsic <= 0:
            how = "worthless"
        elif terms.root in self.config.cash_settled_roots:
            how = "cash_settled"
        else:
            how = "exercised"
        side: Side = "sell" if qty > 0 else "buy"
        quantity = abs(qty)
        order = self._new_order(
            f"{EXPIRY_REASON}-{contract}-{terms.expiry:%Y%m%d}",
            underlying,
            contract,
            "flatten",
            side,
            quantity,
            terms,
        )
        self._by_client_id[order.state.client_order_id] = [order]
        reason = f"{EXPIRY_REASON}:{how} at {intrinsic:.2f} ({underlying} {price:.2f})"
        out.append(self._emit(order, "accepted", ts, reason=reason))
        out.append(
            self._emit(
                order,
                "filled",
                ts,
                fill_qty=quantity,
                fill_price=intrinsic,
                fees=self.fees.settlement(quantity),
                reason=reason,
            )
        )
        self._positions[contract] = 0
