"""The order model: option contracts, the per-leg order state machine and OTOCO brackets.

Every order leg moves through::

    pending -> accepted -> working -> partial -> filled
                  |           |         |
                  +-----------+---------+--> canceled | expired | modified (then working again)
    pending -> rejected

``accepted`` also covers a bracket's child legs held until the entry fills; a marketable order may go
from ``accepted`` straight to ``partial``/``filled``. ``modified`` is a live state reached by a stop
or quantity change; the next fill or cancel leaves it like ``working``. ``filled``, ``canceled``,
``rejected`` and ``expired`` are terminal. Anything else raises :class:`IllegalTransitionError`.

Fills on an :class:`~services.core.events.OrderEvent`: ``filled_quantity`` is cumulative (FIX CumQty);
``fill_price`` and ``fees`` belong to the newest fill only (FIX LastPx). :meth:`OrderLeg.apply` turns an
event into the incremental :class:`Fill` it carries.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Final

from services.core.events import OrderEvent, OrderRequest, OrderStatus, Right, Side
from services.core.shared_state import TERMINAL_ORDER_STATUSES, OrderLegState
from services.core.shared_state import LegKind as LegKind  # re-exported: the brokers import it from here

TERMINAL_STATUSES: Final = TERMINAL_ORDER_STATUSES
_LIVE_NEXT: Final[frozenset[OrderStatus]] = frozenset({"partial", "filled", "canceled", "expired", "modified"})
LEGAL_TRANSITIONS: Final[Mapping[OrderStatus, frozenset[OrderStatus]]] = {
    "pending": frozenset({"accepted", "rejected"}),
    "accepted": _LIVE_NEXT | {"working", "rejected"},
    "working": _LIVE_NEXT,
    "partial": _LIVE_NEXT,
    "modified": _LIVE_NEXT | {"working"},
    "filled": frozenset(),
    "canceled": frozenset(),
    "rejected": frozenset(),
    "expired": frozenset(),
}


class OrderStateError(Exception):
    """An order event that the state machine cannot accept."""


class IllegalTransitionError(OrderStateError):
    """A status change the state machine forbids (e.g. filled -> working)."""

    def __init__(self, order_id: str, current: OrderStatus, new: OrderStatus) -> None:
        allowed = ", ".join(sorted(LEGAL_TRANSITIONS[current])) or "nothing (terminal)"
        super().__init__(f"order {order_id}: illegal transition {current} -> {new}; allowed: {allowed}")
        self.order_id = order_id
        self.current = current
        self.new = new


class FillMismatchError(OrderStateError):
    """Quantities or prices of an event contradict the order (over-fill, shrinking fills, no price)."""


def check_transition(order_id: str, current: OrderStatus, new: OrderStatus) -> None:
    """Raise :class:`IllegalTransitionError` unless ``current -> new`` is legal."""
    if new not in LEGAL_TRANSITIONS[current]:
        raise IllegalTransitionError(order_id, current, new)


# --- contracts ---------------------------------------------------------------------------------

_OCC = re.compile(r"^(?:O:)?([A-Z][A-Z0-9]{0,5}?)(\d{6})([CP])(\d{8})$")


class ContractSymbolError(ValueError):
    """A contract symbol that is not an OCC option symbol."""


@dataclass(frozen=True, slots=True)
class OptionContract:
    """Terms of one listed option, parsed from its OCC symbol (``SPXW250708C06200000``)."""

    symbol: str
    root: str
    expiry: dt.date
    right: Right
    strike: float

    @classmethod
    def parse(cls, symbol: str) -> OptionContract:
        """Parse an OCC symbol (an ``O:`` prefix, as Polygon writes it, is accepted)."""
        m = _OCC.match(symbol)
        if m is None:
            raise ContractSymbolError(f"{symbol!r} is not an OCC option symbol like SPXW250708C06200000")
        root, yymmdd, right, strike = m.groups()
        try:
            expiry = dt.date(2000 + int(yymmdd[:2]), int(yymmdd[2:4]), int(yymmdd[4:]))
        except ValueError:
            raise ContractSymbolError(f"{symbol!r} has an invalid expiry date {yymmdd}") from None
        return cls(symbol, root, expiry, "C" if right == "C" else "P", int(strike) / 1000.0)

    def intrinsic(self, underlying_price: float) -> float:
        """Intrinsic value per share at ``underlying_price`` (never negative), to the cent."""
        raw = underlying_price - self.strike if self.right == "C" else self.strike - underlying_price
        return round(max(raw, 0.0), 2)


def exposure_direction(side: Side, right: Right) -> int:
    """+1 when the position gains as the underlying rises (long call, short put), else -1."""
    return (1 if side == "buy" else -1) * (1 if right == "C" else -1)


def opposite(side: Side) -> Side:
    """The side that closes a position opened with ``side``."""
    return "sell" if side == "buy" else "buy"


# --- legs --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Fill:
    """One execution, incremental: ``quantity`` contracts at ``price`` paying ``fees`` USD."""

    order_id: str
    client_order_id: str
    leg: LegKind
    underlying: str
    contract: str
    side: Side
    quantity: int
    price: float
    fees: float
    ts: int
    live_ts: int
    reason: str = ""

    @property
    def delay_ns(self) -> int:
        """Time from the order going live to this fill (fill-quality reports)."""
        return self.ts - self.live_ts


@dataclass(slots=True)
class OrderLeg:
    """One order at the broker as the state machine sees it."""

    order_id: str
    client_order_id: str
    underlying: str
    contract: str
    leg: LegKind
    side: Side
    quantity: int
    limit_price: float | None = None
    stop_price: float | None = None
    status: OrderStatus = "pending"
    filled: int = 0
    fill_cost: float = 0.0
    fees: float = 0.0
    created_ts: int = 0
    live_ts: int | None = None
    updated_ts: int = 0
    reason: str = ""

    @property
    def leaves(self) -> int:
        """Quantity still to fill."""
        return self.quantity - self.filled

    @property
    def is_terminal(self) -> bool:
        """True once filled, canceled, rejected or expired."""
        return self.status in TERMINAL_STATUSES

    @property
    def avg_fill_price(self) -> float:
        """Quantity-weighted average fill price (0 before any fill)."""
        return self.fill_cost / self.filled if self.filled else 0.0

    def transition(self, new: OrderStatus) -> None:
        """Move to ``new`` or raise :class:`IllegalTransitionError`."""
        check_transition(self.order_id, self.status, new)
        self.status = new

    def apply(self, event: OrderEvent) -> Fill | None:
        """Validate and apply a broker event; returns the incremental fill it reports, if any."""
        if event.order_id != self.order_id:
            raise OrderStateError(f"event {event.id} is for order {event.order_id}, not {self.order_id}")
        delta = event.filled_quantity - self.filled
        if delta < 0:
            raise FillMismatchError(
                f"order {self.order_id}: filled quantity went back from {self.filled} to {event.filled_quantity}"
            )
        if event.status != "modified" and event.quantity != self.quantity and self.status != "pending":
            raise FillMismatchError(
                f"order {self.order_id}: quantity changed {self.quantity} -> {event.quantity} without a modify"
            )
        if event.filled_quantity > event.quantity:
            raise FillMismatchError(f"order {self.order_id}: filled {event.filled_quantity} of {event.quantity}")
        if event.status in ("partial", "filled"):
            if delta <= 0:
                raise FillMismatchError(f"order {self.order_id}: {event.status} event without a new fill")
            if event.fill_price is None or event.fill_price < 0:
                raise FillMismatchError(f"order {self.order_id}: fill without a valid fill_price")
            if event.status == "filled" and event.filled_quantity != event.quantity:
                raise FillMismatchError(
                    f"order {self.order_id}: status filled at {event.filled_quantity} of {event.quantity}"
                )
            if event.status == "partial" and event.filled_quantity >= event.quantity:
                raise FillMismatchError(
                    f"order {self.order_id}: partial at {event.filled_quantity} of {event.quantity}"
                )
        elif delta:
            raise FillMismatchError(f"order {self.order_id}: {event.status} event changes the filled quantity")
        previous = self.status
        self.transition(event.status)
        self.quantity = event.quantity
        if event.limit_price is not None:
            self.limit_price = event.limit_price
        if event.stop_price is not None:
            self.stop_price = event.stop_price
        if event.status != "rejected" and (
            self.live_ts is None or (event.status == "working" and previous == "accepted")
        ):
            self.live_ts = event.ts  # a held child goes live when it starts working
        self.updated_ts = event.ts
        self.reason = event.reason or self.reason
        if not delta:
            return None
        price = float(event.fill_price)  # type: ignore[arg-type]  # checked above
        self.filled = event.filled_quantity
        self.fill_cost += price * delta
        self.fees += event.fees
        return Fill(
            order_id=self.order_id,
            client_order_id=self.client_order_id,
            leg=self.leg,
            underlying=self.underlying,
            contract=self.contract,
            side=self.side,
            quantity=delta,
            price=price,
            fees=event.fees,
            ts=event.ts,
            live_ts=self.live_ts if self.live_ts is not None else event.ts,
            reason=event.reason,
        )

    def to_state(self) -> OrderLegState:
        """This leg in the shared schema (an entry of the OMS snapshot's ``orders``)."""
        return OrderLegState(
            order_id=self.order_id,
            client_order_id=self.client_order_id,
            underlying=self.underlying,
            contract=self.contract,
            leg=self.leg,
            side=self.side,
            status=self.status,
            quantity=self.quantity,
            filled_quantity=self.filled,
            limit_price=self.limit_price,
            stop_price=self.stop_price,
        )


@dataclass(slots=True)
class OtocoOrder:
    """An OTOCO bracket: the entry, then a take-profit limit and a stop as a one-cancels-other pair."""

    client_order_id: str
    request: OrderRequest
    entry_id: str | None = None
    take_profit_id: str | None = None
    stop_loss_id: str | None = None

    def leg_ids(self) -> list[str]:
        """Broker order ids known so far, entry first."""
        return [i for i in (self.entry_id, self.take_profit_id, self.stop_loss_id) if i is not None]


@dataclass(slots=True)
class OrderBook:
    """Every order leg and bracket the OMS knows, updated only through legal transitions."""

    legs: dict[str, OrderLeg] = field(default_factory=dict)
    brackets: dict[str, OtocoOrder] = field(default_factory=dict)
    _seen: set[str] = field(default_factory=set)

    def add_bracket(self, request: OrderRequest, client_order_id: str) -> OtocoOrder:
        """Register a bracket about to be submitted (its legs arrive with the broker's events)."""
        bracket = OtocoOrder(client_order_id, request)
        self.brackets[client_order_id] = bracket
        return bracket

    def seen(self, event: OrderEvent) -> bool:
        """True if this exact event (by id) was applied already (a repeated broker report)."""
        return event.id in self._seen

    def apply(self, event: OrderEvent) -> Fill | None:
        """Apply a broker event (a new order starts at ``pending``); returns its incremental fill."""
        leg = self.legs.get(event.order_id)
        if leg is None:
            leg = OrderLeg(
                order_id=event.order_id,
                client_order_id=event.client_order_id,
                underlying=event.underlying,
                contract=event.contract,
                leg=event.leg,
                side=event.side,
                quantity=event.quantity,
                limit_price=event.limit_price,
                stop_price=event.stop_price,
                created_ts=event.ts,
            )
            check_transition(event.order_id, "pending", event.status)
            self.legs[event.order_id] = leg
            bracket = self.brackets.get(event.client_order_id)
            if bracket is not None:
                if event.leg == "entry":
                    bracket.entry_id = event.order_id
                elif event.leg == "take_profit":
                    bracket.take_profit_id = event.order_id
                elif event.leg == "stop_loss":
                    bracket.stop_loss_id = event.order_id
        fill = leg.apply(event)
        self._seen.add(event.id)
        return fill

    def live(self) -> Iterator[OrderLeg]:
        """Legs not yet terminal, in the order they were first seen."""
        return (leg for leg in self.legs.values() if not leg.is_terminal)

    def bracket_of(self, order_id: str) -> OtocoOrder | None:
        """The bracket an order id (or a bracket's client order id) belongs to."""
        if order_id in self.brackets:
            return self.brackets[order_id]
        leg = self.legs.get(order_id)
        return self.brackets.get(leg.client_order_id) if leg is not None else None

    def leg(self, order_id: str | None) -> OrderLeg | None:
        """The leg with ``order_id`` (None for None or unknown)."""
        return self.legs.get(order_id) if order_id is not None else None
