"""Polygon.io (Massive) wire messages -> DreamBot events: websocket frames and REST pages, no I/O.

Every decoder is strict: a message missing a field, with a wrong type or an impossible value
(non-positive price, high below low ...) raises :class:`PolygonMessageError` naming the field, which
the ingest stage dead-letters (:meth:`PolygonMessageError.dead_letter`) instead of crashing. A
websocket frame is a JSON array; :func:`parse_frame` decodes each element on its own so one bad
element never costs the good ones.

Wire facts, as documented (field names verified against these sources):

- Websocket clusters ``wss://socket.polygon.io/stocks`` and ``/options`` (Massive: ``socket.massive.com``).
  On connect the server sends ``[{"ev":"status","status":"connected","message":"Connected Successfully"}]``;
  the client sends ``{"action":"auth","params":KEY}`` and gets ``auth_success`` ("authenticated") or
  ``auth_failed`` ("authentication failed"); then ``{"action":"subscribe","params":"AM.SPY,Q.SPY"}``
  answered by ``status: success`` ("subscribed to: AM.SPY"). Status values handled by the official Go
  client: connected, auth_success, auth_failed, success, error.
  Sources: massive.com/docs/websocket/stocks/aggregates-per-minute.md (auth + subscribe),
  massive.com/docs/websocket/quickstart, github.com/polygon-io/client-go websocket/polygon.go
  (``handleStatus``), github.com/polygon-io/client-python polygon/websocket/__init__.py.
- ``AM`` / ``A`` (stocks aggregates): ``sym, v, av, op, vw, o, c, h, l, a, z, s, e`` (+ ``otc``); ``s``/``e``
  are the window start/end in Unix **milliseconds**, ``vw`` the window VWAP, ``a`` today's VWAP,
  ``z`` the average trade size. Source: massive.com/docs/stocks/ws_stocks_am and
  client-python polygon/websocket/models/models.py ``EquityAgg.from_dict``.
- ``Q`` (quotes): ``sym, bx, bp, bs, ax, ap, as, c, i, t, q, z``; ``t`` in ms. For stocks ``bs``/``as`` are
  **round lots** ("A bid size of 2 means there are 200 shares", massive.com/docs/stocks/ws_stocks_q),
  so :class:`~services.core.events.Quote` sizes here are ``bs * 100`` shares; for options they are contracts
  (massive.com/docs/websocket/options/quotes.md). Source: client-python ``EquityQuote.from_dict``.
- ``T`` (trades): ``sym, x, i, z, p, s, c, t, q`` (+ ``trfi``, ``trft``); ``t`` in ms. Source:
  client-python ``EquityTrade.from_dict``.
- REST custom bars ``GET /v2/aggs/ticker/{ticker}/range/{multiplier}/{timespan}/{from}/{to}``:
  ``{ticker, adjusted, queryCount, resultsCount, status, request_id, results: [{o,h,l,c,v,vw,n,t}], next_url}``
  with ``t`` the bar start in ms (``results`` absent when empty). Sources:
  massive.com/docs/rest/options/aggregates/custom-bars.md, massive.com/blog/aggs-api-updates.
  Indices are asked for as ``I:SPX``, ``I:NDX`` (:func:`polygon_ticker`); their bars are "derived from
  index values rather than individual trades" (massive.com/docs/rest/indices/aggregates/custom-bars.md)
  and carry no ``v``/``vw``/``n``, so a missing ``v`` reads as volume 0.
- REST option chain ``GET /v3/snapshot/options/{underlyingAsset}``: ``results[]`` of ``details`` (contract_type,
  exercise_style, expiration_date, shares_per_contract, strike_price, ticker ``O:...``), ``greeks``,
  ``implied_volatility``, ``last_quote`` (ask, ask_size, bid, bid_size, last_updated ns, midpoint,
  timeframe), ``open_interest``, ``underlying_asset`` (price, ticker, last_updated, timeframe ...), and
  ``next_url``. Sources: massive.com/docs/rest/options/snapshots/option-chain-snapshot.md and the
  client-python mock test_rest/mocks/v3/snapshot/options/AAPL.json.
- REST errors: ``{"status":"ERROR","request_id":..,"error":"Unknown API Key"}`` (401) and
  ``{"status":"NOT_AUTHORIZED","request_id":..,"message":"You are not entitled to this data..."}`` (403).
  Sources: github.com/polygon-io/issues/issues/219, github.com/OpenBB-finance/OpenBB/issues/4747.

Option symbols lose Polygon's ``O:`` prefix so they match :func:`services.core.events.occ_symbol`.
"""

from __future__ import annotations

import datetime as dt
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any, Final, Literal

import msgspec

from services.core.dlq import DeadLetter, dead_letter
from services.core.events import Bar, OptionQuote, Quote, Trade

Market = Literal["stocks", "options"]
StreamEvent = Bar | Quote | Trade | OptionQuote

NS_PER_MS: Final = 1_000_000
#: Shares in one round lot; stock quote sizes on the wire are in round lots.
ROUND_LOT: Final = 100
#: Seconds per bar for the fixed-length Polygon timespans (month/quarter/year have no fixed length).
TIMESPAN_SECONDS: Final[dict[str, int]] = {
    "second": 1,
    "minute": 60,
    "hour": 3600,
    "day": 86_400,
    "week": 604_800,
}
#: OCC roots of PM-settled index options -> their underlying index.
INDEX_ROOTS: Final[dict[str, str]] = {"SPXW": "SPX", "NDXP": "NDX", "RUTW": "RUT", "XSP": "XSP"}
#: Underlyings that are indices: Polygon names them ``I:<symbol>`` (REST, websocket and flat files).
INDEX_SYMBOLS: Final = frozenset({"SPX", "NDX", "RUT", "XSP", "VIX"})
INDEX_PREFIX: Final = "I:"

_OCC = re.compile(r"^(?:O:)?([A-Z][A-Z0-9]{0,5}?)(\d{2})(\d{2})(\d{2})([CP])(\d{8})$")
_PATH = re.compile(r"at `([^`]+)`")
_MISSING = re.compile(r"missing required field `([^`]+)`")


class PolygonMessageError(ValueError):
    """A Polygon message that cannot become an event: ``field`` names the culprit, ``payload`` is the raw
    element (bytes) to dead-letter."""

    def __init__(self, field: str, reason: str, payload: bytes = b"") -> None:
        super().__init__(f"malformed Polygon message, field {field}: {reason}")
        self.field = field
        self.reason = reason
        self.payload = payload

    def dead_letter(self, *, stage: str, topic: str, offset: int, partition: int = 0) -> DeadLetter:
        """The dead letter a stage publishes for this message (``offset``: the frame's sequence number)."""
        return dead_letter(
            reason="decode_error",
            detail=str(self),
            stage=stage,
            topic=topic,
            partition=partition,
            offset=offset,
            payload=self.payload,
            field=self.field,
        )


# --- websocket wire schema -----------------------------------------------------------------------

Px = Annotated[float, msgspec.Meta(gt=0.0)]
NonNeg = Annotated[float, msgspec.Meta(ge=0.0)]
Millis = Annotated[int, msgspec.Meta(ge=0)]


class _Envelope(msgspec.Struct):
    ev: str


class StatusMessage(msgspec.Struct, frozen=True):
    """``{"ev":"status","status":...,"message":...}``: connection, auth and subscription outcomes."""

    ev: str
    status: str
    message: str = ""


class AggregateMessage(msgspec.Struct, frozen=True):
    """``AM`` (per minute) or ``A`` (per second) aggregate of one ticker."""

    ev: str
    symbol: str = msgspec.field(name="sym")
    volume: NonNeg = msgspec.field(name="v")
    open: Px = msgspec.field(name="o")
    close: Px = msgspec.field(name="c")
    high: Px = msgspec.field(name="h")
    low: Px = msgspec.field(name="l")
    start_ms: Millis = msgspec.field(name="s")
    end_ms: Millis = msgspec.field(name="e")
    accumulated_volume: NonNeg | None = msgspec.field(default=None, name="av")
    official_open: float | None = msgspec.field(default=None, name="op")
    vwap: float | None = msgspec.field(default=None, name="vw")
    day_vwap: float | None = msgspec.field(default=None, name="a")
    average_size: float | None = msgspec.field(default=None, name="z")
    otc: bool | None = None


class QuoteMessage(msgspec.Struct, frozen=True):
    """``Q``: top of book of a stock (sizes in round lots) or an option contract (sizes in contracts)."""

    ev: str
    symbol: str = msgspec.field(name="sym")
    bid: NonNeg = msgspec.field(name="bp")
    ask: NonNeg = msgspec.field(name="ap")
    bid_size: NonNeg = msgspec.field(name="bs")
    ask_size: NonNeg = msgspec.field(name="as")
    ts_ms: Millis = msgspec.field(name="t")
    bid_exchange: int | None = msgspec.field(default=None, name="bx")
    ask_exchange: int | None = msgspec.field(default=None, name="ax")
    condition: int | None = msgspec.field(default=None, name="c")
    indicators: list[int] | None = msgspec.field(default=None, name="i")
    sequence: int | None = msgspec.field(default=None, name="q")
    tape: int | None = msgspec.field(default=None, name="z")


class TradeMessage(msgspec.Struct, frozen=True):
    """``T``: one print on the tape."""

    ev: str
    symbol: str = msgspec.field(name="sym")
    price: Px = msgspec.field(name="p")
    size: NonNeg = msgspec.field(name="s")
    ts_ms: Millis = msgspec.field(name="t")
    exchange: int | None = msgspec.field(default=None, name="x")
    trade_id: str | None = msgspec.field(default=None, name="i")
    tape: int | None = msgspec.field(default=None, name="z")
    conditions: list[int] | None = msgspec.field(default=None, name="c")
    sequence: int | None = msgspec.field(default=None, name="q")


_envelope = msgspec.json.Decoder(_Envelope)
_status = msgspec.json.Decoder(StatusMessage)
_aggregate = msgspec.json.Decoder(AggregateMessage)
_quote = msgspec.json.Decoder(QuoteMessage)
_trade = msgspec.json.Decoder(TradeMessage)
_frame = msgspec.json.Decoder(list[msgspec.Raw])


def _field_of(message: str, prefix: str = "$") -> str:
    path = _PATH.search(message)
    base = path.group(1) if path else prefix
    missing = _MISSING.search(message)
    return f"{base}.{missing.group(1)}" if missing else base


def _decode(decoder: msgspec.json.Decoder[Any], raw: bytes) -> Any:
    try:
        return decoder.decode(raw)
    except msgspec.ValidationError as exc:
        raise PolygonMessageError(_field_of(str(exc)), str(exc), raw) from None
    except msgspec.DecodeError as exc:
        raise PolygonMessageError("$", f"not valid JSON: {exc}", raw) from None


def polygon_ticker(symbol: str) -> str:
    """Our symbol as Polygon spells the ticker: ``SPX`` -> ``I:SPX``; stocks and ETFs unchanged."""
    sym = symbol.strip().upper()
    return INDEX_PREFIX + sym if sym in INDEX_SYMBOLS else sym


def our_symbol(ticker: str) -> str:
    """Polygon's ticker as our symbol: ``I:SPX`` -> ``SPX`` (others unchanged, option prefix included)."""
    return ticker[len(INDEX_PREFIX) :] if ticker.startswith(INDEX_PREFIX) else ticker


def strip_option_prefix(symbol: str) -> str:
    """``O:SPY250709C00620000`` -> ``SPY250709C00620000`` (other symbols unchanged)."""
    return symbol[2:] if symbol.startswith("O:") else symbol


@dataclass(frozen=True, slots=True)
class OccTerms:
    """Terms read from an OCC option symbol."""

    root: str
    underlying: str
    expiry: str
    right: Literal["C", "P"]
    strike: float


def occ_terms(symbol: str) -> OccTerms:
    """Parse an OCC symbol (``O:`` prefix allowed); raises PolygonMessageError when it is not one."""
    m = _OCC.match(symbol)
    if m is None:
        raise PolygonMessageError("sym", f"{symbol!r} is not an OCC option symbol", symbol.encode())
    root, yy, mm, dd, right, strike = m.groups()
    try:
        expiry = dt.date(2000 + int(yy), int(mm), int(dd)).isoformat()
    except ValueError:
        raise PolygonMessageError("sym", f"{symbol!r} has an invalid expiry", symbol.encode()) from None
    return OccTerms(root, INDEX_ROOTS.get(root, root), expiry, "C" if right == "C" else "P", int(strike) / 1000.0)


def _check_ohlc(o: float, h: float, low: float, c: float, raw: bytes) -> None:
    if not (h >= low and h >= max(o, c) and low <= min(o, c)):
        raise PolygonMessageError("h", f"inconsistent bar: open {o} high {h} low {low} close {c}", raw)


def aggregate_to_bar(msg: AggregateMessage, raw: bytes = b"") -> Bar:
    """An ``AM``/``A`` message as a Bar (start time, window length from ``e - s``)."""
    _check_ohlc(msg.open, msg.high, msg.low, msg.close, raw)
    span_ms = msg.end_ms - msg.start_ms
    if span_ms <= 0 or span_ms % 1000:
        raise PolygonMessageError(
            "e", f"window end {msg.end_ms} is not a whole number of seconds after {msg.start_ms}", raw
        )
    vwap = msg.vwap if msg.vwap is not None and math.isfinite(msg.vwap) and msg.vwap > 0 else None
    return Bar(
        ts=msg.start_ms * NS_PER_MS,
        symbol=strip_option_prefix(msg.symbol),
        open=msg.open,
        high=msg.high,
        low=msg.low,
        close=msg.close,
        volume=msg.volume,
        interval_s=span_ms // 1000,
        vwap=vwap,
    )


def quote_to_event(msg: QuoteMessage, market: Market, raw: bytes = b"") -> Quote | OptionQuote:
    """A ``Q`` message: a Quote (stock sizes converted from round lots to shares) or an OptionQuote."""
    ts = msg.ts_ms * NS_PER_MS
    if market == "options" or msg.symbol.startswith("O:"):
        terms = occ_terms(msg.symbol)
        return OptionQuote(
            ts=ts,
            symbol=strip_option_prefix(msg.symbol),
            underlying=terms.underlying,
            expiry=terms.expiry,
            strike=terms.strike,
            right=terms.right,
            bid=msg.bid,
            ask=msg.ask,
            bid_size=msg.bid_size,
            ask_size=msg.ask_size,
        )
    if msg.bid <= 0 or msg.ask <= 0:
        side = "bp" if msg.bid <= 0 else "ap"
        raise PolygonMessageError(side, f"one-sided stock quote (bid {msg.bid}, ask {msg.ask})", raw)
    return Quote(
        ts=ts,
        symbol=msg.symbol,
        bid=msg.bid,
        ask=msg.ask,
        bid_size=msg.bid_size * ROUND_LOT,
        ask_size=msg.ask_size * ROUND_LOT,
    )


def trade_to_event(msg: TradeMessage) -> Trade:
    """A ``T`` message as a Trade."""
    return Trade(ts=msg.ts_ms * NS_PER_MS, symbol=strip_option_prefix(msg.symbol), price=msg.price, size=msg.size)


@dataclass(slots=True)
class ParsedFrame:
    """One websocket frame, decoded: events in wire order, status messages, and the malformed elements."""

    events: list[StreamEvent] = field(default_factory=list)
    statuses: list[StatusMessage] = field(default_factory=list)
    errors: list[PolygonMessageError] = field(default_factory=list)


def parse_element(raw: bytes, market: Market = "stocks") -> StreamEvent | StatusMessage | None:
    """Decode one element of a frame: an event, a status message, or None for an event type DreamBot
    does not consume (LULD, FMV ...). Raises PolygonMessageError when it is malformed."""
    ev = _decode(_envelope, raw).ev
    if ev == "status":
        return _decode(_status, raw)  # type: ignore[no-any-return]
    if ev in ("AM", "A"):
        return aggregate_to_bar(_decode(_aggregate, raw), raw)
    if ev == "Q":
        return quote_to_event(_decode(_quote, raw), market, raw)
    if ev == "T":
        return trade_to_event(_decode(_trade, raw))
    return None


def parse_frame(frame: bytes | str, market: Market = "stocks") -> ParsedFrame:
    """Decode a websocket frame (a JSON array); malformed elements land in ``errors``, never raise."""
    payload = frame.encode() if isinstance(frame, str) else frame
    out = ParsedFrame()
    try:
        elements: list[msgspec.Raw] = _frame.decode(payload)
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        out.errors.append(PolygonMessageError("$", f"frame is not a JSON array: {exc}", payload))
        return out
    for element in elements:
        raw = bytes(element)
        try:
            item = parse_element(raw, market)
        except PolygonMessageError as exc:
            out.errors.append(exc)
            continue
        if isinstance(item, StatusMessage):
            out.statuses.append(item)
        elif item is not None:
            out.events.append(item)
    return out


# --- REST wire schema ----------------------------------------------------------------------------


class AggResult(msgspec.Struct, frozen=True):
    """One bar of a custom-bars response."""

    o: Px
    h: Px
    low: Px = msgspec.field(name="l")
    c: Px = msgspec.field(name="c")
    t: int = msgspec.field(name="t")
    v: NonNeg = msgspec.field(default=0.0, name="v")  # absent on index bars (no trades behind them)
    vw: float | None = None
    n: int | None = None
    otc: bool | None = None


class AggsPage(msgspec.Struct, frozen=True):
    """A custom-bars (``/v2/aggs``) response page."""

    status: str
    ticker: str | None = None
    adjusted: bool | None = None
    queryCount: int | None = None  # noqa: N815 - wire name
    resultsCount: int | None = None  # noqa: N815 - wire name
    request_id: str | None = None
    results: list[AggResult] = []
    next_url: str | None = None


class OptionDetails(msgspec.Struct, frozen=True):
    contract_type: Literal["call", "put", "other"]
    expiration_date: str
    strike_price: Px
    ticker: str
    exercise_style: str | None = None
    shares_per_contract: float | None = None


class OptionLastQuote(msgspec.Struct, frozen=True):
    ask: NonNeg = 0.0
    bid: NonNeg = 0.0
    ask_size: NonNeg = 0.0
    bid_size: NonNeg = 0.0
    last_updated: int = 0
    midpoint: float | None = None
    timeframe: str | None = None
    ask_exchange: int | None = None
    bid_exchange: int | None = None


class OptionGreeks(msgspec.Struct, frozen=True):
    delta: float | None = None
    gamma: float | None = None
    theta: float | None = None
    vega: float | None = None


class UnderlyingAsset(msgspec.Struct, frozen=True):
    ticker: str | None = None
    price: float | None = None
    last_updated: int | None = None
    timeframe: str | None = None
    change_to_break_even: float | None = None
    value: float | None = None


class OptionSnapshot(msgspec.Struct, frozen=True):
    """One contract of an option chain snapshot."""

    details: OptionDetails
    last_quote: OptionLastQuote | None = None
    greeks: OptionGreeks | None = None
    implied_volatility: float | None = None
    open_interest: NonNeg | None = None
    underlying_asset: UnderlyingAsset | None = None
    break_even_price: float | None = None
    day: dict[str, Any] | None = None
    last_trade: dict[str, Any] | None = None
    fmv: float | None = None


class ChainPage(msgspec.Struct, frozen=True):
    """A ``/v3/snapshot/options/{underlying}`` response page."""

    status: str
    request_id: str | None = None
    results: list[OptionSnapshot] = []
    next_url: str | None = None


class ErrorBody(msgspec.Struct, frozen=True):
    """An error response: ``status`` ERROR / NOT_AUTHORIZED / NOT_FOUND with ``error`` or ``message``."""

    status: str = ""
    request_id: str | None = None
    error: str | None = None
    message: str | None = None

    @property
    def text(self) -> str:
        return self.error or self.message or self.status or "(no message)"


_aggs_page = msgspec.json.Decoder(AggsPage)
_chain_page = msgspec.json.Decoder(ChainPage)
_error_body = msgspec.json.Decoder(ErrorBody)


def parse_error_body(payload: bytes) -> ErrorBody | None:
    """The error document of a non-200 response, or None when the body is not one."""
    try:
        return _error_body.decode(payload)
    except (msgspec.ValidationError, msgspec.DecodeError):
        return None


def timespan_seconds(multiplier: int, timespan: str) -> int:
    """Bar length in seconds; refuses month/quarter/year (no fixed length) with a readable error."""
    if timespan not in TIMESPAN_SECONDS:
        known = ", ".join(TIMESPAN_SECONDS)
        raise ValueError(f"timespan {timespan!r} has no fixed length; use one of: {known}")
    if multiplier <= 0:
        raise ValueError(f"multiplier must be positive, got {multiplier}")
    return multiplier * TIMESPAN_SECONDS[timespan]


def parse_aggs_page(payload: bytes, ticker: str, interval_s: int) -> tuple[list[Bar], str | None]:
    """Bars of one custom-bars page and its ``next_url``; a bad bar raises PolygonMessageError."""
    page: AggsPage = _decode(_aggs_page, payload)
    if page.status not in ("OK", "DELAYED"):
        raise PolygonMessageError("status", f"aggregates status {page.status!r}", payload)
    bars: list[Bar] = []
    for i, r in enumerate(page.results):
        _check_ohlc(r.o, r.h, r.low, r.c, payload)
        if r.t < 0:
            raise PolygonMessageError(f"results[{i}].t", f"negative timestamp {r.t}", payload)
        vwap = r.vw if r.vw is not None and math.isfinite(r.vw) and r.vw > 0 else None
        bars.append(
            Bar(
                ts=r.t * NS_PER_MS,
                symbol=strip_option_prefix(page.ticker or ticker),
                open=r.o,
                high=r.h,
                low=r.low,
                close=r.c,
                volume=r.v,
                interval_s=interval_s,
                vwap=vwap,
                trades=r.n,
            )
        )
    return bars, page.next_url


@dataclass(frozen=True, slots=True)
class ChainRows:
    """One parsed chain page: its option quotes, the underlying price it reports, and ``next_url``."""

    quotes: list[OptionQuote]
    underlying_price: float | None
    next_url: str | None


def snapshot_to_quote(snap: OptionSnapshot, underlying: str, where: str, payload: bytes) -> OptionQuote | None:
    """One chain row as an OptionQuote (None for a contract with no quote yet)."""
    d = snap.details
    if d.contract_type not in ("call", "put"):
        return None
    terms = occ_terms(d.ticker)
    if terms.expiry != d.expiration_date:
        raise PolygonMessageError(
            f"{where}.details.expiration_date", f"{d.expiration_date} != symbol {d.ticker}", payload
        )
    q = snap.last_quote
    if q is None:
        return None
    ua = snap.underlying_asset
    px = ua.price if ua is not None and ua.price is not None and ua.price > 0 else None
    return OptionQuote(
        ts=q.last_updated,
        symbol=strip_option_prefix(d.ticker),
        underlying=underlying,
        expiry=d.expiration_date,
        strike=d.strike_price,
        right="C" if d.contract_type == "call" else "P",
        bid=q.bid,
        ask=q.ask,
        bid_size=q.bid_size,
        ask_size=q.ask_size,
        open_interest=snap.open_interest or 0.0,
        underlying_price=px,
    )


def parse_chain_page(payload: bytes, underlying: str) -> ChainRows:
    """OptionQuotes of one chain page (contracts without a quote are skipped)."""
    page: ChainPage = _decode(_chain_page, payload)
    if page.status not in ("OK", "DELAYED"):
        raise PolygonMessageError("status", f"chain snapshot status {page.status!r}", payload)
    quotes: list[OptionQuote] = []
    spot: float | None = None
    for i, snap in enumerate(page.results):
        quote = snapshot_to_quote(snap, underlying, f"results[{i}]", payload)
        if quote is None:
            continue
        quotes.append(quote)
        if spot is None and quote.underlying_price is not None:
            spot = quote.underlying_price
    return ChainRows(quotes, spot, page.next_url)


def subscription_params(channels: Sequence[str], symbols: Sequence[str]) -> str:
    """``["AM","Q"], ["SPY","QQQ"]`` -> ``"AM.SPY,AM.QQQ,Q.SPY,Q.QQQ"`` (the subscribe ``params``)."""
    return ",".join(f"{c}.{s}" for c in channels for s in symbols)
