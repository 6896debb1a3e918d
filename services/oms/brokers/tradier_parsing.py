"""Tradier brokerage API wire formats <-> DreamBot order events (pure: no I/O).

Field names and rules, verified against Tradier's documentation:

- Place an OTOCO order, ``POST /v1/accounts/{account_id}/orders`` form-encoded: ``class=otoco``, ``duration``
  (or per leg ``duration[i]``, legs 1 and 2 equal), indexed ``symbol[i]``, ``option_symbol[i]``, ``side[i]``
  (``buy_to_open``, ``buy_to_close``, ``sell_to_open``, ``sell_to_close``), ``quantity[i]``, ``type[i]``
  (first: limit/stop/stop_limit; legs 1 and 2 must differ in type and share the option_symbol),
  ``price[i]`` (limit), ``stop[i]`` (stop), ``tag`` (letters, numbers and ``-``, at most 255) and
  ``preview``. Response ``{"order":{"id":..,"status":"ok","partner_id":..}}``.
  Sources: documentation.tradier.com/brokerage-api/trading/place-otoco-order,
  .../trading/place-oto-order (``tag`` rules), .../trading/advanced-orders (validations), and the
  Tradier OpenAPI text "Place OTOCO Order" (OTOCOOrderRequest, OrderResponse example).
- Orders (``GET /v1/accounts/{id}/orders`` and ``/orders/{order_id}``, ``includeTags=true``): ``id, type,
  symbol, side, quantity, status, duration, price, avg_fill_price, exec_quantity, last_fill_price,
  last_fill_quantity, remaining_quantity, create_date, transaction_date, class, option_symbol,
  stop_price, reason_description, tag``; status one of open, partially_filled, filled, expired,
  canceled, pending, rejected, error; multi-order classes carry ``num_legs``, ``strategy`` and ``leg``.
  Source: documentation.tradier.com/brokerage-api/reference/response/orders and
  .../accounts/get-account-orders. Tradier's JSON is converted from XML, so a one-element list arrives
  as a bare object and an empty list as the string ``"null"``; the decoders accept all three.
- Errors: 401 for authentication (body text ``Invalid Access Token``), 400 with a message, and order
  errors from downstream systems as HTTP 200 with ``{"errors":{"error":[...]}}``.
  Source: documentation.tradier.com/brokerage-api/overview/errors.
- Quotes ``GET /v1/markets/quotes?symbols=..``: ``{"quotes":{"quote":[..],"unmatched_symbols":..}}`` with
  ``symbol, type, bid, ask, bidsize, asksize, underlying, strike, option_type, expiration_date,
  open_interest, root_symbol, bid_date, ask_date`` (ms). Source:
  documentation.tradier.com/brokerage-api/markets/get-quotes.

:class:`LegTracker` turns successive observations of one Tradier leg into OrderEvents that obey the
OMS state machine (:mod:`services.oms.orders`): it applies every event it emits to its own
:class:`~services.oms.orders.OrderLeg`, exactly as the paper broker does.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final, Literal

import msgspec

from services.core.events import OptionQuote, OrderEvent, OrderRequest, OrderStatus, Side
from services.oms.orders import ContractSymbolError, LegKind, OptionContract, OrderLeg, OrderStateError

TradierStatus = Literal[
    "open", "partially_filled", "filled", "expired", "canceled", "pending", "rejected", "error", "pending_cancel"
]
TERMINAL_TRADIER: Final = frozenset({"filled", "expired", "canceled", "rejected", "error"})
_TAG_OK = re.compile(r"^[A-Za-z0-9-]{1,255}$")
_TAG_BAD = re.compile(r"[^A-Za-z0-9-]")
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


class TradierProtocolError(ValueError):
    """A Tradier response that does not have the documented shape."""


# --- wire schema ---------------------------------------------------------------------------------


class WireLeg(msgspec.Struct, frozen=True):
    """One order (or one leg of a multi-order) as Tradier reports it."""

    id: int
    status: str
    type: str = ""
    symbol: str = ""
    side: str = ""
    quantity: float = 0.0
    duration: str | None = None
    price: float | None = None
    stop_price: float | None = None
    avg_fill_price: float | None = None
    exec_quantity: float | None = None
    last_fill_price: float | None = None
    last_fill_quantity: float | None = None
    remaining_quantity: float | None = None
    create_date: str | None = None
    transaction_date: str | None = None
    order_class: str = msgspec.field(default="", name="class")
    option_symbol: str | None = None
    reason_description: str | None = None
    tag: str | None = None


class WireOrder(msgspec.Struct, frozen=True):
    """An order; OTOCO/OCO/OTO/multileg orders list their legs in ``leg``."""

    id: int
    status: str
    type: str = ""
    symbol: str = ""
    side: str = ""
    quantity: float = 0.0
    duration: str | None = None
    price: float | None = None
    stop_price: float | None = None
    avg_fill_price: float | None = None
    exec_quantity: float | None = None
    last_fill_price: float | None = None
    last_fill_quantity: float | None = None
    remaining_quantity: float | None = None
    create_date: str | None = None
    transaction_date: str | None = None
    order_class: str = msgspec.field(default="", name="class")
    option_symbol: str | None = None
    reason_description: str | None = None
    tag: str | None = None
    num_legs: int | None = None
    strategy: str | None = None
    leg: list[WireLeg] | WireLeg | None = None

    def legs(self) -> list[WireLeg]:
        """The legs of a multi-order, or the order itself as its only leg."""
        if self.leg is None:
            return [msgspec.convert(msgspec.to_builtins(self), WireLeg, from_attributes=False)]
        return self.leg if isinstance(self.leg, list) else [self.leg]


class _OrdersBody(msgspec.Struct, frozen=True):
    order: list[WireOrder] | WireOrder | None = None


class _OrdersEnvelope(msgspec.Struct, frozen=True):
    orders: _OrdersBody | str | None = None


class _OrderEnvelope(msgspec.Struct, frozen=True):
    order: WireOrder


class _Errors(msgspec.Struct, frozen=True):
    error: list[str] | str = []


class _PlacedOrder(msgspec.Struct, frozen=True):
    status: str = ""
    id: int | None = None
    partner_id: str | None = None


class _PlaceEnvelope(msgspec.Struct, frozen=True):
    order: _PlacedOrder | None = None
    errors: _Errors | None = None


class WireQuote(msgspec.Struct, frozen=True):
    symbol: str
    type: str = ""
    bid: float | None = None
    ask: float | None = None
    bidsize: float | None = None
    asksize: float | None = None
    last: float | None = None
    underlying: str | None = None
    strike: float | None = None
    option_type: str | None = None
    expiration_date: str | None = None
    open_interest: float | None = None
    root_symbol: str | None = None
    bid_date: int | None = None
    ask_date: int | None = None
    trade_date: int | None = None


class _QuotesBody(msgspec.Struct, frozen=True):
    quote: list[WireQuote] | WireQuote | None = None
    unmatched_symbols: Any = None


class _QuotesEnvelope(msgspec.Struct, frozen=True):
    quotes: _QuotesBody | str | None = None


def _decode(kind: type[Any], payload: bytes, what: str) -> Any:
    try:
        return msgspec.json.decode(payload, type=kind)
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        raise TradierProtocolError(f"unexpected Tradier {what} response: {exc}") from None


def error_messages(payload: bytes) -> list[str]:
    """The ``errors.error`` messages of a response body (empty when it has none)."""
    try:
        doc = msgspec.json.decode(payload)
    except msgspec.DecodeError:
        return []
    errors = doc.get("errors") if isinstance(doc, dict) else None
    if not isinstance(errors, dict):
        return []
    raw = errors.get("error", [])
    return [str(x) for x in (raw if isinstance(raw, list) else [raw])]


def parse_placed(payload: bytes) -> tuple[int | None, list[str]]:
    """``(order id, errors)`` of a place/modify/cancel response."""
    env: _PlaceEnvelope = _decode(_PlaceEnvelope, payload, "order")
    errors = []
    if env.errors is not None:
        errors = env.errors.error if isinstance(env.errors.error, list) else [env.errors.error]
    order_id = env.order.id if env.order is not None else None
    if order_id is None and not errors:
        raise TradierProtocolError("Tradier order response has neither an order id nor errors")
    return order_id, errors


def parse_order(payload: bytes) -> WireOrder:
    """``{"order": {...}}`` of ``GET /orders/{id}``."""
    env: _OrderEnvelope = _decode(_OrderEnvelope, payload, "order")
    return env.order


def parse_orders(payload: bytes) -> list[WireOrder]:
    """``{"orders": {"order": [...]}}`` (or a bare object, or ``"null"``) of ``GET /orders``."""
    env: _OrdersEnvelope = _decode(_OrdersEnvelope, payload, "orders")
    if env.orders is None or isinstance(env.orders, str):
        return []
    order = env.orders.order
    if order is None:
        return []
    return order if isinstance(order, list) else [order]


class WirePosition(msgspec.Struct, frozen=True):
    """One position of ``GET /accounts/{id}/positions``."""

    symbol: str
    quantity: float
    cost_basis: float = 0.0
    date_acquired: str | None = None
    id: int | None = None


class _PositionsBody(msgspec.Struct, frozen=True):
    position: list[WirePosition] | WirePosition | None = None


class _PositionsEnvelope(msgspec.Struct, frozen=True):
    positions: _PositionsBody | str | None


def parse_positions(payload: bytes) -> list[WirePosition]:
    """``{"positions": {"position": [...]}}`` (or a bare object, or ``"null"`` when flat). A body
    without the ``positions`` key is not "flat": it raises, so a caller fails closed."""
    env: _PositionsEnvelope = _decode(_PositionsEnvelope, payload, "positions")
    if env.positions is None or isinstance(env.positions, str):
        if env.positions == "null":
            return []
        raise TradierProtocolError(f"unexpected Tradier positions response: positions={env.positions!r}")
    found = env.positions.position
    if found is None:
        return []
    return found if isinstance(found, list) else [found]


def parse_quotes(payload: bytes, ts_ns: int) -> list[OptionQuote]:
    """Option quotes of a ``/markets/quotes`` response (stock quotes and unmatched symbols dropped)."""
    env: _QuotesEnvelope = _decode(_QuotesEnvelope, payload, "quotes")
    if env.quotes is None or isinstance(env.quotes, str) or env.quotes.quote is None:
        return []
    raw = env.quotes.quote if isinstance(env.quotes.quote, list) else [env.quotes.quote]
    out: list[OptionQuote] = []
    for q in raw:
        if q.type != "option" or q.strike is None or q.expiration_date is None or q.option_type not in ("call", "put"):
            continue
        stamp = max(q.bid_date or 0, q.ask_date or 0) * 1_000_000 or ts_ns
        out.append(
            OptionQuote(
                ts=stamp,
                symbol=q.symbol,
                underlying=q.underlying or "",
                expiry=q.expiration_date,
                strike=q.strike,
                right="C" if q.option_type == "call" else "P",
                bid=max(q.bid or 0.0, 0.0),
                ask=max(q.ask or 0.0, 0.0),
                bid_size=q.bidsize or 0.0,
                ask_size=q.asksize or 0.0,
                open_interest=q.open_interest or 0.0,
            )
        )
    return out


# --- requests ------------------------------------------------------------------------------------


#: Tags of DreamBot's orders: ``db-<client order id>`` when the id is a valid tag itself, else
#: ``dbx-<hex of the id>``; both decode back to the id (:func:`client_order_id_of`). Anything else at
#: the venue is a foreign order. ``dbh-<hash>`` (ids too long to encode) is ours but not decodable.
TAG_PLAIN: Final = "db-"
TAG_HEX: Final = "dbx-"
TAG_HASH: Final = "dbh-"
_ID_PLAIN = re.compile(r"^[A-Za-z0-9-]{1,252}$")


def tag_for(client_order_id: str) -> str:
    """The order ``tag`` of a client order id (deterministic, so a resubmission or a restarted OMS
    looks up the same tag; Tradier allows letters, digits and ``-``, at most 255)."""
    if _ID_PLAIN.match(client_order_id):
        return TAG_PLAIN + client_order_id
    encoded = client_order_id.encode().hex()
    if len(TAG_HEX) + len(encoded) <= 255:
        return TAG_HEX + encoded
    return TAG_HASH + hashlib.blake2b(client_order_id.encode(), digest_size=16).hexdigest()


def is_own_tag(tag: str | None) -> bool:
    """Whether ``tag`` marks an order DreamBot placed."""
    return bool(tag) and str(tag).startswith((TAG_PLAIN, TAG_HEX, TAG_HASH))


def client_order_id_of(tag: str | None) -> str | None:
    """The client order id a DreamBot tag encodes (None for foreign or undecodable tags)."""
    if not tag:
        return None
    if tag.startswith(TAG_PLAIN):
        return tag[len(TAG_PLAIN):] or None
    if tag.startswith(TAG_HEX):
        try:
            return bytes.fromhex(tag[len(TAG_HEX):]).decode()
        except (ValueError, UnicodeDecodeError):
            return None
    return None


def is_valid_tag(tag: str) -> bool:
    """Whether Tradier accepts ``tag``."""
    return bool(_TAG_OK.match(tag))


def open_side(side: Side) -> str:
    """``buy`` -> ``buy_to_open`` (a long premium entry), ``sell`` -> ``sell_to_open``."""
    return f"{side}_to_open"


def close_side(side: Side) -> str:
    """The side closing a position opened with ``side``: ``buy`` -> ``sell_to_close``."""
    return "sell_to_close" if side == "buy" else "buy_to_close"


def side_of(tradier_side: str) -> Side:
    """``buy_to_open``/``buy_to_close``/``buy`` -> ``buy``; the sell sides -> ``sell``."""
    return "buy" if tradier_side.startswith("buy") else "sell"


def _px(x: float) -> str:
    return f"{x:.2f}"


def otoco_form(
    request: OrderRequest, tag: str, entry_duration: str = "day", exit_duration: str = "gtc"
) -> list[tuple[str, str]]:
    """The form of an OTOCO bracket: leg 0 the limit entry, leg 1 the take-profit limit, leg 2 the stop."""
    contract, underlying, qty = request.contract, request.underlying, str(request.quantity)
    exit_ = close_side(request.side)
    return [
        ("class", "otoco"),
        ("tag", tag),
        ("symbol[0]", underlying),
        ("option_symbol[0]", contract),
        ("side[0]", open_side(request.side)),
        ("quantity[0]", qty),
        ("type[0]", "limit"),
        ("price[0]", _px(request.limit_price)),
        ("duration[0]", entry_duration),
        ("symbol[1]", underlying),
        ("option_symbol[1]", contract),
        ("side[1]", exit_),
        ("quantity[1]", qty),
        ("type[1]", "limit"),
        ("price[1]", _px(request.take_profit)),
        ("duration[1]", exit_duration),
        ("symbol[2]", underlying),
        ("option_symbol[2]", contract),
        ("side[2]", exit_),
        ("quantity[2]", qty),
        ("type[2]", "stop"),
        ("stop[2]", _px(request.stop_loss)),
        ("duration[2]", exit_duration),
    ]


def request_of(order: WireOrder, client_order_id: str, ts: int) -> OrderRequest | None:
    """The OrderRequest an OTOCO at the venue carries out (to adopt it after a restart): entry limit,
    take-profit limit and stop from its three legs; None if it is not such a bracket."""
    legs = order.legs()
    if order.order_class != "otoco" or len(legs) != 3:
        return None
    entry = legs[0]
    take_profit = next((leg for leg in legs[1:] if leg.type == "limit"), None)
    stop = next((leg for leg in legs[1:] if leg.type in ("stop", "stop_limit")), None)
    if (take_profit is None or stop is None or entry.price is None or take_profit.price is None
            or stop.stop_price is None or not entry.option_symbol):
        return None
    try:
        return OrderRequest(
            ts=ts, id=client_order_id, intent_id=client_order_id, underlying=entry.symbol or order.symbol,
            contract=entry.option_symbol, side=side_of(entry.side), quantity=round(entry.quantity),
            limit_price=entry.price, take_profit=take_profit.price, stop_loss=stop.stop_price, playbook="adopted",
        )
    except (msgspec.ValidationError, ValueError, TypeError):
        return None


def market_form(tag: str, underlying: str, contract: str, side: Side, quantity: int) -> list[tuple[str, str]]:
    """The form of a single-option market order that closes (flattens) a position."""
    return [
        ("class", "option"),
        ("tag", tag),
        ("symbol", underlying),
        ("option_symbol", contract),
        ("side", "sell_to_close" if side == "sell" else "buy_to_close"),
        ("quantity", str(quantity)),
        ("type", "market"),
        ("duration", "day"),
    ]


def stop_modify_form(stop_price: float, duration: str) -> list[tuple[str, str]]:
    """The form of ``PUT /orders/{id}`` moving a stop leg."""
    return [("type", "stop"), ("duration", duration), ("stop", _px(stop_price))]


# --- responses -> events -------------------------------------------------------------------------


def parse_time_ns(text: str | None) -> int | None:
    """``2018-06-01T12:02:29.682Z`` -> ns since the epoch (None when absent or unreadable)."""
    if not text:
        return None
    try:
        stamp = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=dt.UTC)
    return (stamp - _EPOCH) // dt.timedelta(microseconds=1) * 1000


def iso_time(ts_ns: int) -> str:
    """ns since the epoch -> ``2018-06-01T12:02:29.682Z`` (how Tradier writes dates)."""
    stamp = _EPOCH + dt.timedelta(microseconds=ts_ns // 1000)
    return stamp.strftime("%Y-%m-%dT%H:%M:%S.") + f"{stamp.microsecond // 1000:03d}Z"


@dataclass(frozen=True, slots=True)
class LegView:
    """One observation of a leg, normalised (integer contracts, ns times)."""

    order_id: str
    status: str
    quantity: int
    filled: int
    avg_fill_price: float
    last_fill_price: float | None
    last_fill_quantity: int
    limit_price: float | None
    stop_price: float | None
    ts: int | None
    reason: str

    @classmethod
    def of(cls, leg: WireLeg) -> LegView:
        return cls(
            order_id=str(leg.id),
            status=leg.status,
            quantity=round(leg.quantity),
            filled=round(leg.exec_quantity or 0.0),
            avg_fill_price=leg.avg_fill_price or 0.0,
            last_fill_price=leg.last_fill_price,
            last_fill_quantity=round(leg.last_fill_quantity or 0.0),
            limit_price=leg.price if leg.type in ("limit", "stop_limit") else None,
            stop_price=leg.stop_price if leg.type in ("stop", "stop_limit") else None,
            ts=parse_time_ns(leg.transaction_date) or parse_time_ns(leg.create_date),
            reason=leg.reason_description or "",
        )


FeeFn = Callable[[str, Side, int, float], float]


@dataclass(slots=True)
class LegTracker:
    """One leg at Tradier as the OMS sees it: observations in, state-machine-legal OrderEvents out."""

    state: OrderLeg
    fees: FeeFn
    seq: int = 0
    avg_fill_price: float = 0.0
    last_event: OrderEvent | None = None
    root: str = field(init=False)

    def __post_init__(self) -> None:
        try:
            self.root = OptionContract.parse(self.state.contract).root
        except ContractSymbolError:
            self.root = ""

    @classmethod
    def new(
        cls,
        order_id: str,
        client_order_id: str,
        underlying: str,
        contract: str,
        leg: LegKind,
        side: Side,
        quantity: int,
        fees: FeeFn,
    ) -> LegTracker:
        return cls(OrderLeg(order_id, client_order_id, underlying, contract, leg, side, quantity), fees)

    @property
    def is_terminal(self) -> bool:
        return self.state.is_terminal

    def observe(self, view: LegView, now_ns: int, venue_time: bool = True) -> list[OrderEvent]:
        """Events that bring the tracked state to ``view``. Fills carry the venue's transaction time;
        other changes carry it too when ``venue_time`` (a poll), else ``now_ns`` (the change answers a
        request DreamBot just made: submit, modify, cancel)."""
        s = self.state
        out: list[OrderEvent] = []
        fill_ts = view.ts if view.ts is not None else now_ns
        ts = fill_ts if venue_time else now_ns
        if s.status == "pending":
            if view.status in ("rejected", "error"):
                out.append(self._emit("rejected", now_ns, view, reason=view.reason or "rejected by Tradier"))
                return out
            out.append(self._emit("accepted", now_ns, view, quantity=view.quantity))
        if s.is_terminal:
            return out
        changed_terms = view.quantity != s.quantity or (
            (view.stop_price is not None and view.stop_price != s.stop_price)
            or (view.limit_price is not None and view.limit_price != s.limit_price)
        )
        if changed_terms and view.quantity >= s.filled:
            why = "quantity changed" if view.quantity != s.quantity else "order modified"
            out.append(self._emit("modified", ts, view, quantity=view.quantity, reason=why))
        if s.status == "accepted" and view.status == "open" and view.filled == s.filled:
            out.append(self._emit("working", ts, view))
        if view.filled > s.filled:
            delta = view.filled - s.filled
            price = self._fill_price(view, delta)
            status: OrderStatus = "filled" if view.filled >= s.quantity else "partial"
            fee = self.fees(self.root, s.side, delta, price)
            out.append(self._emit(status, fill_ts, view, fill_qty=delta, fill_price=price, fees=fee))
            self.avg_fill_price = view.avg_fill_price or price
        if not s.is_terminal and view.status in ("canceled", "expired", "rejected", "error"):
            status = "expired" if view.status == "expired" else "canceled"
            reason = view.reason or (f"{view.status} at Tradier" if view.status != "canceled" else "canceled")
            out.append(self._emit(status, ts, view, reason=reason))
        return out

    def _fill_price(self, view: LegView, delta: int) -> float:
        if view.last_fill_price is not None and view.last_fill_quantity == delta and view.last_fill_price > 0:
            return round(view.last_fill_price, 4)
        prev = self.state.filled
        notional = view.avg_fill_price * view.filled - self.avg_fill_price * prev
        return round(notional / delta, 4)

    def _emit(
        self,
        status: OrderStatus,
        ts: int,
        view: LegView,
        *,
        quantity: int | None = None,
        fill_qty: int = 0,
        fill_price: float | None = None,
        fees: float = 0.0,
        reason: str = "",
    ) -> OrderEvent:
        s = self.state
        self.seq += 1
        event = OrderEvent(
            ts=ts,
            id=f"{s.order_id}.{self.seq}",
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
            limit_price=view.limit_price if view.limit_price is not None else s.limit_price,
            stop_price=view.stop_price if view.stop_price is not None else s.stop_price,
            fees=fees,
            reason=reason,
        )
        try:
            s.apply(event)
        except OrderStateError as exc:
            raise TradierProtocolError(f"Tradier order {s.order_id} reported an impossible change: {exc}") from None
        self.last_event = event
        return event

    def synthetic(self, status: OrderStatus, ts: int, reason: str) -> OrderEvent:
        """An event the broker decides without Tradier (a refused submission)."""
        view = LegView(self.state.order_id, status, self.state.quantity, 0, 0.0, None, 0, None, None, ts, reason)
        return self._emit(status, ts, view, reason=reason)
