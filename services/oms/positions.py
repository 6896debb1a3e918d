"""Positions per contract and round trips per bracket: average price, PnL net of fees, MAE/MFE.

Money is in USD: a premium of ``p`` on ``q`` contracts is ``p * q * multiplier``. Fees are charged to
realized PnL when they are paid, so for a flat contract ``realized = sold - bought - fees`` exactly.
Unrealized PnL is ``(mark - avg_price) * quantity * multiplier`` (signed quantity; no exit fees).

A round trip (one OTOCO bracket) starts at its first entry fill and closes once the entry is done
(filled, canceled or expired) and every contract bought has been sold again. Its MAE/MFE are the
worst/best running PnL in USD, gross of fees, over the trade's life: realized on contracts already
exited plus the open contracts valued at each mark (the quote mid) and at each fill price.
``mae <= 0 <= mfe``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from services.core.events import Event, OrderRequest, Position, Side, TradeOutcome
from services.core.shared_state import PositionState
from services.oms.orders import Fill


@dataclass(slots=True)
class ContractPosition:
    """Net holding of one contract (positive long, negative short)."""

    underlying: str
    contract: str
    multiplier: int = 100
    quantity: int = 0
    avg_price: float = 0.0
    realized: float = 0.0
    fees: float = 0.0
    bought: float = 0.0
    sold: float = 0.0
    mark: float | None = None

    @property
    def unrealized(self) -> float:
        """Open PnL at the mark (0 when flat or never marked)."""
        if not self.quantity or self.mark is None:
            return 0.0
        return (self.mark - self.avg_price) * self.quantity * self.multiplier

    def apply(self, side: Side, quantity: int, price: float, fees: float) -> None:
        """Book a fill: average into the position or realize against it."""
        signed = quantity if side == "buy" else -quantity
        notional = price * quantity * self.multiplier
        if side == "buy":
            self.bought += notional
        else:
            self.sold += notional
        self.fees += fees
        self.realized -= fees
        if self.quantity == 0 or (self.quantity > 0) == (signed > 0):
            total = abs(self.quantity) + quantity
            self.avg_price = (self.avg_price * abs(self.quantity) + price * quantity) / total
            self.quantity += signed
            return
        closing = min(quantity, abs(self.quantity))
        direction = 1 if self.quantity > 0 else -1
        self.realized += (price - self.avg_price) * closing * self.multiplier * direction
        self.quantity += closing * -direction
        rest = quantity - closing
        if self.quantity == 0:
            self.avg_price = 0.0
        if rest:
            self.quantity = rest if side == "buy" else -rest
            self.avg_price = price

    def to_event(self, ts: int) -> Position:
        """The wire event for this position."""
        return Position(
            ts=ts,
            underlying=self.underlying,
            contract=self.contract,
            quantity=self.quantity,
            avg_price=max(self.avg_price, 0.0),
            realized_pnl=self.realized,
            unrealized_pnl=self.unrealized,
        )

    def to_state(self) -> PositionState:
        """This position in the shared schema (an entry of the OMS snapshot's ``positions``)."""
        return PositionState(
            underlying=self.underlying,
            contract=self.contract,
            quantity=self.quantity,
            avg_price=self.avg_price,
            mark=self.mark,
            realized_pnl=self.realized,
            unrealized_pnl=self.unrealized,
            fees=self.fees,
        )


@dataclass(slots=True)
class RoundTrip:
    """One bracket's trade: entry fills, exit fills, fees and excursions."""

    id: str
    underlying: str
    contract: str
    playbook: str
    side: Side
    reason: str = ""
    context: dict[str, float] = field(default_factory=dict)
    multiplier: int = 100
    entry_qty: int = 0
    entry_cost: float = 0.0
    exit_qty: int = 0
    exit_value: float = 0.0
    fees: float = 0.0
    entry_ts: int | None = None
    exit_ts: int | None = None
    exit_reason: str = ""
    entry_done: bool = False
    closed: bool = False
    mae: float = 0.0
    mfe: float = 0.0

    @property
    def direction(self) -> int:
        """+1 for a long (bought) trade, -1 for a short one."""
        return 1 if self.side == "buy" else -1

    @property
    def open_qty(self) -> int:
        """Contracts entered and not yet exited."""
        return self.entry_qty - self.exit_qty

    @property
    def entry_price(self) -> float:
        """Average entry price (0 before the first fill)."""
        return self.entry_cost / self.entry_qty if self.entry_qty else 0.0

    @property
    def exit_price(self) -> float:
        """Average exit price (0 before the first exit)."""
        return self.exit_value / self.exit_qty if self.exit_qty else 0.0

    def running_pnl(self, mark: float) -> float:
        """Gross PnL if the open contracts were worth ``mark`` now."""
        realized = (self.exit_value - self.entry_price * self.exit_qty) * self.direction
        return (realized + (mark - self.entry_price) * self.open_qty * self.direction) * self.multiplier

    def observe(self, mark: float) -> None:
        """Fold a mark into MAE/MFE (only while contracts are open)."""
        if self.entry_qty == 0:
            return
        pnl = self.running_pnl(mark)
        self.mae = min(self.mae, pnl)
        self.mfe = max(self.mfe, pnl)

    @property
    def pnl(self) -> float:
        """Net PnL in USD of what has been exited, after every fee paid."""
        gross = (self.exit_value - self.entry_price * self.exit_qty) * self.direction * self.multiplier
        return gross - self.fees

    def outcome(self, ts: int) -> TradeOutcome:
        """The closed round trip as a TradeOutcome."""
        return TradeOutcome(
            ts=ts,
            id=self.id,
            underlying=self.underlying,
            playbook=self.playbook,
            contract=self.contract,
            entry_ts=self.entry_ts or 0,
            exit_ts=self.exit_ts or ts,
            entry_price=self.entry_price,
            exit_price=self.exit_price,
            quantity=self.entry_qty,
            pnl=self.pnl,
            mae=self.mae,
            mfe=self.mfe,
            exit_reason=self.exit_reason,
            reason=self.reason,
            context=dict(self.context),
        )


class PositionBook:
    """Positions per contract and round trips per bracket, updated from fills and marks."""

    def __init__(self, multiplier: int = 100) -> None:
        self.multiplier = multiplier
        self.positions: dict[str, ContractPosition] = {}
        self.trades: dict[str, RoundTrip] = {}
        self._active: dict[str, RoundTrip] = {}  # not yet closed (what marks and fills scan)
        self._emitted: dict[str, tuple[int, float, float, float]] = {}
        self._marks: dict[str, float] = {}

    # -- round trips --------------------------------------------------------------------------

    def open_trade(
        self,
        trade_id: str,
        request: OrderRequest,
        reason: str = "",
        context: Mapping[str, float] | None = None,
    ) -> RoundTrip:
        """Start tracking the round trip of a submitted bracket."""
        trade = RoundTrip(
            id=trade_id,
            underlying=request.underlying,
            contract=request.contract,
            playbook=request.playbook,
            side=request.side,
            reason=reason,
            context=dict(context or {}),
            multiplier=self.multiplier,
        )
        self.trades[trade_id] = trade
        self._active[trade_id] = trade
        return trade

    def open_trades(self, underlying: str | None = None, contract: str | None = None) -> list[RoundTrip]:
        """Trades holding contracts, oldest first (optionally of one underlying or contract)."""
        return [
            t
            for t in self._active.values()
            if t.open_qty > 0
            and (underlying is None or t.underlying == underlying)
            and (contract is None or t.contract == contract)
        ]

    def entry_finished(self, trade_id: str, ts: int) -> list[Event]:
        """The bracket's entry reached a terminal state; closes the trade if nothing is open."""
        trade = self.trades.get(trade_id)
        if trade is None or trade.entry_done:
            return []
        trade.entry_done = True
        return self._maybe_close(trade, ts)

    def _maybe_close(self, trade: RoundTrip, ts: int) -> list[Event]:
        if trade.closed or not trade.entry_done or trade.open_qty:
            return []
        self._active.pop(trade.id, None)
        if trade.entry_qty == 0:
            return []  # the entry never filled: no round trip to report
        trade.closed = True
        return [trade.outcome(ts)]

    # -- fills and marks ----------------------------------------------------------------------

    def position(self, underlying: str, contract: str) -> ContractPosition:
        """The position in ``contract`` (created flat on first use)."""
        pos = self.positions.get(contract)
        if pos is None:
            pos = ContractPosition(underlying, contract, self.multiplier, mark=self._marks.get(contract))
            self.positions[contract] = pos
        return pos

    def on_fill(self, fill: Fill, trade_id: str | None, exit_reason: str) -> list[Event]:
        """Book a fill on its contract and its round trip(s); returns Position then any TradeOutcome.

        ``trade_id`` names the bracket the fill belongs to; ``None`` (an expiry settlement, say)
        closes open trades of the contract oldest first. ``exit_reason`` labels closing fills.
        """
        pos = self.position(fill.underlying, fill.contract)
        pos.apply(fill.side, fill.quantity, fill.price, fill.fees)
        allocations: list[tuple[RoundTrip, int, float]] = []
        if trade_id is not None and trade_id in self.trades:
            allocations.append((self.trades[trade_id], fill.quantity, fill.fees))
        else:
            remaining = fill.quantity
            for trade in self.open_trades(contract=fill.contract):
                if remaining == 0:
                    break
                if trade.side == fill.side:
                    continue
                take = min(trade.open_qty, remaining)
                allocations.append((trade, take, fill.fees * take / fill.quantity))
                remaining -= take
        closed: list[Event] = []
        for trade, qty, fees in allocations:
            trade.fees += fees
            if fill.side == trade.side:
                trade.entry_qty += qty
                trade.entry_cost += fill.price * qty
                if trade.entry_ts is None:
                    trade.entry_ts = fill.ts
            else:
                qty = min(qty, trade.open_qty)
                trade.exit_qty += qty
                trade.exit_value += fill.price * qty
                trade.exit_ts = fill.ts
                trade.exit_reason = exit_reason
            trade.observe(fill.price)
            if pos.mark is not None and trade.open_qty:
                trade.observe(pos.mark)
            closed.extend(self._maybe_close(trade, fill.ts))
        return [self._position_event(pos, fill.ts), *closed]

    def mark(self, contract: str, price: float) -> None:
        """New mark for ``contract``: unrealized PnL and the open trades' MAE/MFE follow it."""
        self._marks[contract] = price
        pos = self.positions.get(contract)
        if pos is None:
            return  # never filled: no open trade holds it (a fill creates the position first)
        pos.mark = price
        for trade in self.open_trades(contract=contract):
            trade.observe(price)

    def position_updates(self, ts: int, contracts: Iterable[str]) -> list[Event]:
        """Position events for ``contracts`` whose numbers changed since they were last published."""
        out: list[Event] = []
        for contract in contracts:
            pos = self.positions.get(contract)
            if pos is not None and self._key(pos) != self._emitted.get(contract):
                out.append(self._position_event(pos, ts))
        return out

    def _key(self, pos: ContractPosition) -> tuple[int, float, float, float]:
        return (pos.quantity, pos.avg_price, pos.realized, pos.unrealized)

    def _position_event(self, pos: ContractPosition, ts: int) -> Position:
        self._emitted[pos.contract] = self._key(pos)
        return pos.to_event(ts)

    # -- totals -------------------------------------------------------------------------------

    def realized(self) -> float:
        """Realized PnL over every contract, net of fees."""
        return sum(p.realized for p in self.positions.values())

    def unrealized(self) -> float:
        """Unrealized PnL over every open contract."""
        return sum(p.unrealized for p in self.positions.values())

    def is_flat(self) -> bool:
        """True when no contract is held."""
        return all(p.quantity == 0 for p in self.positions.values())
