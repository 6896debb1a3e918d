"""The Broker interface: the small surface every venue adapter (paper, Tradier) implements.

A broker works orders and reports every state change as :class:`~services.core.events.OrderEvent`
values, returned synchronously from each call (a live adapter returns what it learned from the
venue during the call). Rules every adapter keeps:

- Client order ids are idempotent: submitting a known ``client_order_id`` again returns the current
  state of the existing order (its latest events, same ids), never a second order.
- Events follow the state machine in :mod:`services.oms.orders`; each has a unique ``id``.
- ``filled_quantity`` is cumulative; ``fill_price`` and ``fees`` describe the newest fill only.
- Event time ``ts`` is the market-data time that caused the event (a quote or an underlying print)
  or the injected clock's now for requests (submit, cancel, modify).
- An expiry settlement arrives as a ``flatten`` order whose ``reason`` starts with ``expiry``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

from services.core.events import OptionQuote, OrderEvent, OrderRequest, Side
from services.oms.orders import LegKind

#: ``reason`` prefix of settlement events at expiry.
EXPIRY_REASON = "expiry"


class BrokerError(Exception):
    """A request the broker cannot act on (unknown order, wrong kind of leg)."""


class UnknownOrderError(BrokerError):
    """No order with this id exists at the broker."""


class SettlementPriceMissingError(BrokerError):
    """An expiring position needs a settlement price for its underlying and none is known."""


class Broker(Protocol):
    """What the OMS needs from a venue."""

    @property
    def name(self) -> str:
        """Short venue name (``paper``, ``tradier``)."""

    def submit_otoco(self, request: OrderRequest, client_order_id: str) -> list[OrderEvent]:
        """Place an OTOCO bracket: the entry limit, then a take-profit limit and a stop (OCO)."""

    def submit_market(
        self,
        client_order_id: str,
        underlying: str,
        contract: str,
        side: Side,
        quantity: int,
        leg: LegKind = "flatten",
    ) -> list[OrderEvent]:
        """Place a market order (used to flatten a position)."""

    def cancel(self, order_id: str) -> list[OrderEvent]:
        """Cancel a live order; a terminal order yields no events."""

    def modify_stop(self, order_id: str, stop_price: float) -> list[OrderEvent]:
        """Move a stop leg's stop price; a terminal or already triggered stop yields no events."""

    def on_option_quote(self, quote: OptionQuote) -> list[OrderEvent]:
        """Market data for one contract: fills and triggers it causes."""

    def on_underlying(self, symbol: str, price: float, ts: int) -> list[OrderEvent]:
        """An underlying price print: underlying-triggered exits it causes."""

    def on_session_close(self, ts: int, settle_prices: Mapping[str, float]) -> list[OrderEvent]:
        """The session closed: expire orders, settle expiring positions (prices by underlying)."""

    def open_orders(self) -> list[OrderEvent]:
        """The latest event of every live order, oldest order first."""
