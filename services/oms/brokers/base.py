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
- A venue adapter may refuse new entries while it cannot vouch for its state (:meth:`Broker.entries_refused`:
  a submission whose outcome is still unknown, the venue unreachable past the retry budget); exits
  (cancel, modify, flatten) are still attempted.
- :meth:`Broker.account_state` reads the venue's open orders and positions for start-up
  reconciliation; a broker that is its own venue (paper) answers None.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
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


class VenueUnavailableError(BrokerError):
    """The venue kept failing (rate limits, 5xx, unreachable) for the whole retry budget."""


@dataclass(frozen=True, slots=True)
class VenueOrder:
    """A live order at the venue, as reconciliation sees it.

    ``client_order_id`` is set for DreamBot's own orders (decoded from the tag), ``request`` for an own
    OTOCO bracket whose terms could be read back (what adopting it needs).
    """

    order_id: str
    tag: str | None
    order_class: str
    status: str
    underlying: str
    contracts: tuple[str, ...]
    own: bool
    client_order_id: str | None = None
    request: OrderRequest | None = None

    def describe(self) -> str:
        return (f"order {self.order_id} ({self.order_class}, {self.status}, {', '.join(self.contracts) or '?'}, "
                f"tag {self.tag or 'none'})")


@dataclass(frozen=True, slots=True)
class AccountState:
    """The venue's live orders and positions (contract -> signed quantity) at one moment."""

    orders: tuple[VenueOrder, ...] = ()
    positions: Mapping[str, int] = field(default_factory=dict)


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

    def entries_refused(self) -> str | None:
        """Why new entries must wait (None: the broker accepts them)."""

    def account_state(self) -> AccountState | None:
        """The venue's live orders and positions (None: the broker is its own venue, nothing to reconcile).
        Raises :class:`VenueUnavailableError` when the venue cannot be read."""

    def adopt(self, order: VenueOrder, client_order_id: str) -> list[OrderEvent]:
        """Track an own order found at the venue under ``client_order_id``; its events so far."""
