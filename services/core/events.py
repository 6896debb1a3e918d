"""The wire schema: typed, immutable, versioned events every stage speaks.

Events are msgspec Structs (frozen, tagged by ``type``) so one codec decodes any of them from JSON
or msgpack. Construction in trusted code is unchecked and fast; decoding untrusted bytes checks
every field's type and constraint and raises :class:`EventDecodeError` naming the field.
"""

from __future__ import annotations

import math
import re
from typing import Annotated, Any, Final, Literal

import msgspec

from services.core.learner_policy import LearnerPolicy

SCHEMA_VERSION: Final = 1

# Decoding rejects non-finite and non-positive prices; sizes must be >= 0.
Price = Annotated[float, msgspec.Meta(gt=0.0)]
NonNegPrice = Annotated[float, msgspec.Meta(ge=0.0)]
Size = Annotated[float, msgspec.Meta(ge=0.0)]
Nanos = Annotated[int, msgspec.Meta(ge=0)]
Symbol = Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
Right = Literal["C", "P"]
Side = Literal["buy", "sell"]


class EventDecodeError(ValueError):
    """A payload could not be decoded into an event; ``field`` names the offending path."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"invalid event field {field}: {reason}")
        self.field = field
        self.reason = reason


class Event(msgspec.Struct, frozen=True, kw_only=True, tag_field="type", omit_defaults=False):
    """Base of every event: ``ts`` is event time in ns since the Unix epoch (UTC)."""

    ts: Nanos
    schema: int = SCHEMA_VERSION

    @property
    def event_id(self) -> str:
        """Deterministic identity used by idempotent consumers to drop redeliveries."""
        key = getattr(self, "id", None) or getattr(self, "symbol", None) or getattr(self, "underlying", "")
        return f"{type(self).__name__}:{key}:{self.ts}"


# --- market data -------------------------------------------------------------------------------


class Bar(Event, frozen=True, tag="bar"):
    """An OHLCV bar; ``ts`` is the bar's start and ``interval_s`` its length."""

    symbol: Symbol
    open: Price
    high: Price
    low: Price
    close: Price
    volume: Size
    interval_s: Annotated[int, msgspec.Meta(gt=0)] = 60
    vwap: float | None = None
    trades: int | None = None


class Quote(Event, frozen=True, tag="quote"):
    """Top of book for an underlying."""

    symbol: Symbol
    bid: Price
    ask: Price
    bid_size: Size
    ask_size: Size


class Trade(Event, frozen=True, tag="trade"):
    """A print on the tape."""

    symbol: Symbol
    price: Price
    size: Size


class OptionQuote(Event, frozen=True, tag="option_quote"):
    """Top of book for one option contract (OCC symbol) with its terms."""

    symbol: Symbol
    underlying: Symbol
    expiry: Annotated[str, msgspec.Meta(pattern=r"^\d{4}-\d{2}-\d{2}$")]
    strike: Price
    right: Right
    bid: NonNegPrice
    ask: NonNegPrice
    bid_size: Size = 0.0
    ask_size: Size = 0.0
    open_interest: Size = 0.0
    underlying_price: float | None = None


class ChainSnapshot(Event, frozen=True, tag="chain"):
    """Every quoted contract of one underlying at one instant."""

    underlying: Symbol
    underlying_price: Price
    quotes: tuple[OptionQuote, ...]


class Heartbeat(Event, frozen=True, tag="heartbeat"):
    """Liveness of a producer; the risk stage halts entries when it grows stale."""

    source: Symbol
    seq: Annotated[int, msgspec.Meta(ge=0)]


# --- derived -----------------------------------------------------------------------------------


class FeatureVector(Event, frozen=True, tag="features"):
    """Named feature values of one underlying as of ``ts`` (NaN-free; missing means warming up)."""

    symbol: Symbol
    values: dict[str, float]


class SignalIntent(Event, frozen=True, tag="intent"):
    """A playbook's wish to open a bracketed position, with why it fired."""

    id: Symbol
    underlying: Symbol
    playbook: Symbol
    contract: Symbol
    right: Right
    side: Side
    quantity: Annotated[int, msgspec.Meta(gt=0)]
    limit_price: Price
    take_profit: Price
    stop_loss: Price
    reason: str
    features: dict[str, float] = {}
    # Session rules of the playbook, in event time: the entry may fill at or before entry_expires_ts
    # (signal + the playbook's TTL, never past the session's close) and the bracket is flattened at
    # flatten_ts (minutes before the close; None: the playbook holds overnight). None: no such rule.
    entry_expires_ts: Nanos | None = None
    flatten_ts: Nanos | None = None


class OrderRequest(Event, frozen=True, tag="order_request"):
    """Risk-approved instruction to the OMS: an OTOCO bracket (entry, then TP/SL OCO pair)."""

    id: Symbol
    intent_id: Symbol
    underlying: Symbol
    contract: Symbol
    side: Side
    quantity: Annotated[int, msgspec.Meta(gt=0)]
    limit_price: Price
    take_profit: Price
    stop_loss: Price
    playbook: Symbol = "manual"
    # The intent's session rules (see SignalIntent): the OMS cancels an entry still working after
    # entry_expires_ts and flattens the bracket at flatten_ts.
    entry_expires_ts: Nanos | None = None
    flatten_ts: Nanos | None = None
    # Optional underlying level that also fires the stop leg (long call/short put: underlying <= it;
    # long put/short call: >= it) when the broker enables stop_on_underlying. Added by the OMS.
    underlying_stop: Annotated[float, msgspec.Meta(gt=0.0)] | None = None
    # Risk's HMAC-SHA256 over every other field (services.core.approval); the OMS executes only a
    # request whose approval verifies. Optional and last, so the schema stays version 1: a reader
    # that predates it ignores it, and a request without one decodes (and is refused by the OMS).
    approval: Annotated[str, msgspec.Meta(pattern=r"^[0-9a-f]{64}$")] | None = None


class RiskRejection(Event, frozen=True, tag="risk_rejection"):
    """Risk refused an intent; ``rule`` names the guardrail and ``reason`` says why."""

    intent_id: Symbol
    underlying: Symbol
    rule: Symbol
    reason: str


RiskAction = Literal["engage_kill_switch", "release_kill_switch", "cancel", "modify", "flatten"]


class RiskCommand(Event, frozen=True, tag="risk_command"):
    """A command from risk (or an operator) to the OMS."""

    id: Symbol
    underlying: Symbol
    action: RiskAction
    reason: str
    order_id: str | None = None
    stop_price: float | None = None


OrderStatus = Literal[
    "pending", "accepted", "working", "partial", "filled", "canceled", "rejected", "expired", "modified"
]


class OrderEvent(Event, frozen=True, tag="order_event"):
    """A state change of one order leg at the broker."""

    id: Symbol
    order_id: Symbol
    client_order_id: Symbol
    underlying: Symbol
    contract: Symbol
    leg: Literal["entry", "take_profit", "stop_loss", "flatten"]
    side: Side
    status: OrderStatus
    quantity: Annotated[int, msgspec.Meta(ge=0)]
    filled_quantity: Annotated[int, msgspec.Meta(ge=0)] = 0
    fill_price: float | None = None
    limit_price: float | None = None
    stop_price: float | None = None
    fees: NonNegPrice = 0.0
    reason: str = ""


class Position(Event, frozen=True, tag="position"):
    """Net holding in one contract with its realised and unrealised PnL (net of fees)."""

    underlying: Symbol
    contract: Symbol
    quantity: int
    avg_price: NonNegPrice
    realized_pnl: float
    unrealized_pnl: float


class TradeOutcome(Event, frozen=True, tag="outcome"):
    """A round trip, closed: what the learner and the reports learn from."""

    id: Symbol
    underlying: Symbol
    playbook: Symbol
    contract: Symbol
    entry_ts: Nanos
    exit_ts: Nanos
    entry_price: NonNegPrice
    exit_price: NonNegPrice
    quantity: Annotated[int, msgspec.Meta(gt=0)]
    pnl: float
    mae: float
    mfe: float
    exit_reason: str
    reason: str
    context: dict[str, float] = {}


class LearnerUpdate(Event, frozen=True, tag="learner_update"):
    """The learner's current view: per-playbook gate probabilities and weights."""

    underlying: Symbol
    model: Symbol
    version: Annotated[int, msgspec.Meta(ge=0)]
    gates: dict[str, float]
    # A walk-forward retrain's policy, which signals applies from then on (none: an online view only).
    # Optional and last, so the schema stays version 1.
    policy: LearnerPolicy | None = None


class RegimeChange(Event, frozen=True, tag="regime_change"):
    """A change point detected in a feature stream."""

    underlying: Symbol
    regime: Symbol
    previous: Symbol
    score: float


AnyEvent = (
    Bar
    | Quote
    | Trade
    | OptionQuote
    | ChainSnapshot
    | Heartbeat
    | FeatureVector
    | SignalIntent
    | OrderRequest
    | RiskRejection
    | RiskCommand
    | OrderEvent
    | Position
    | TradeOutcome
    | LearnerUpdate
    | RegimeChange
)

EVENT_TYPES: Final[tuple[type[Event], ...]] = (
    Bar,
    Quote,
    Trade,
    OptionQuote,
    ChainSnapshot,
    Heartbeat,
    FeatureVector,
    SignalIntent,
    OrderRequest,
    RiskRejection,
    RiskCommand,
    OrderEvent,
    Position,
    TradeOutcome,
    LearnerUpdate,
    RegimeChange,
)

# --- codecs ------------------------------------------------------------------------------------

_json_encoder = msgspec.json.Encoder()
_json_decoder: msgspec.json.Decoder[Any] = msgspec.json.Decoder(AnyEvent)
_mp_encoder = msgspec.msgpack.Encoder()
_mp_decoder: msgspec.msgpack.Decoder[Any] = msgspec.msgpack.Decoder(AnyEvent)
_PATH = re.compile(r"at `([^`]+)`")
_MISSING = re.compile(r"missing required field `([^`]+)`")


def _field_of(message: str) -> str:
    path = _PATH.search(message)
    base = path.group(1) if path else "$"
    missing = _MISSING.search(message)
    return f"{base}.{missing.group(1)}" if missing else base


def _check_finite(event: Event) -> Event:
    # msgpack can carry NaN/inf, which the range constraints above do not all catch (optionals, dicts).
    for name in event.__struct_fields__:
        value = getattr(event, name)
        if isinstance(value, float) and not math.isfinite(value):
            raise EventDecodeError(f"$.{name}", "must be a finite number")
        if isinstance(value, dict):
            for k, v in value.items():
                if isinstance(v, float) and not math.isfinite(v):
                    raise EventDecodeError(f"$.{name}.{k}", "must be a finite number")
    return event


def _check_schema(event: Event) -> Event:
    if event.schema > SCHEMA_VERSION:
        raise EventDecodeError("$.schema", f"version {event.schema} is newer than supported {SCHEMA_VERSION}")
    return event


def encode_json(event: Event) -> bytes:
    """Encode an event as compact JSON."""
    return _json_encoder.encode(event)


def encode_msgpack(event: Event) -> bytes:
    """Encode an event as msgpack."""
    return _mp_encoder.encode(event)


def decode_json(payload: bytes | str) -> AnyEvent:
    """Decode and validate JSON; raises EventDecodeError naming the bad field."""
    try:
        event = _json_decoder.decode(payload)
    except msgspec.ValidationError as exc:
        raise EventDecodeError(_field_of(str(exc)), str(exc)) from None
    except msgspec.DecodeError as exc:
        raise EventDecodeError("$", f"not valid JSON: {exc}") from None
    return _check_schema(_check_finite(event))  # type: ignore[return-value]


def decode_msgpack(payload: bytes) -> AnyEvent:
    """Decode and validate msgpack; raises EventDecodeError naming the bad field."""
    try:
        event = _mp_decoder.decode(payload)
    except msgspec.ValidationError as exc:
        raise EventDecodeError(_field_of(str(exc)), str(exc)) from None
    except msgspec.DecodeError as exc:
        raise EventDecodeError("$", f"not valid msgpack: {exc}") from None
    return _check_schema(_check_finite(event))  # type: ignore[return-value]


def validate(event: Event) -> AnyEvent:
    """Round-trip a constructed event through the checking decoder (for untrusted constructors)."""
    return decode_msgpack(encode_msgpack(event))


def occ_symbol(underlying: str, expiry: str, right: str, strike: float) -> str:
    """OCC option symbol, e.g. ``SPXW250708C06200000`` (root, yymmdd, C/P, strike x 1000)."""
    yymmdd = expiry[2:4] + expiry[5:7] + expiry[8:10]
    return f"{underlying}{yymmdd}{right}{round(strike * 1000):08d}"
