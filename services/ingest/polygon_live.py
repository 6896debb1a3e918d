"""The live Polygon (Massive) feed: websocket minute aggregates, quotes and trades, REST chains and
gap backfill, turned into the md.* outputs every runner consumes (embedded ``dreambot run --live`` and
``python -m services.ingest.main``, both through :func:`services.app.stages.build_feed`).

Three parts, so that a capture replays to exactly what the live session saw:

- :class:`MinuteAssembler` (no I/O of its own): decoded frames in, outputs out, in arrival order.
  ``AM`` -> Bar (md.bars), ``Q`` -> Quote (md.quotes), ``T`` -> Trade (md.trades). A bar already seen
  (a frame re-sent after a reconnect) is dropped, as are quotes and trades older than the symbol's last
  closed minute. After a reconnect, the first bar of each symbol that lands past a hole makes it ask
  the venue for the missing minutes (REST minute aggregates) and emit them first, so no minute is
  missing. During regular hours, a bar ending at least ``chain_every_s`` (event time) after the last
  chain of its underlying makes it ask for a chain snapshot (0DTE and 1DTE expiries, strikes within
  ``chain_strike_pct`` of spot), emitted before the bar as the replay feed does. It writes the ingest
  heartbeat (``{ts: newest event time, seq}``) on every timer tick and whenever the feed's event time
  has moved on by ``heartbeat_secs`` since the last write, never per bar or per quote.
- a venue: :class:`RestVenue` (the REST client, every answer also written to the capture) or
  :class:`CapturedVenue` (the answers read back from a capture).
- a driver: :class:`PolygonLiveFeed` (websocket clusters and the heartbeat timer on an asyncio loop in a
  thread, handed over through a queue; the assembler runs on the consumer's side so heartbeat writes
  fall between the same outputs live and in replay) or :class:`CaptureReplayFeed`.

Failures: an ``auth_failed`` answer on the websocket, or a 401/403 from REST, ends the feed at once
with one :class:`PolygonFeedError` line (no retries); a dropped socket is retried with jittered
exponential backoff up to ``max_reconnects`` consecutive failures (then one error line). The API key
lives in a SecretStr; it is sent only in the websocket auth frame and the REST bearer header.

Stocks and ETFs stream on ``<ws_url>/stocks``; indices (SPX, NDX) on ``<ws_url>/indices`` as
``I:SPX`` (their aggregates carry no volume), chains and backfill for them ask for ``I:SPX`` too.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import queue
import random
import threading
import time
from collections import deque
from collections.abc import AsyncGenerator, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Literal, Protocol

import msgspec
from msgspec.structs import replace
from pydantic import SecretStr

from services.core import keys, shared_state, topics
from services.core.calendar import NS_PER_S, MarketCalendar, ny_date
from services.core.events import Bar, ChainSnapshot, Quote, Trade
from services.core.shared_state import IngestHeartbeat
from services.core.stage import Output
from services.core.state import StateStore
from services.ingest.capture import CaptureError, CaptureWriter, read_capture
from services.ingest.polygon_parsing import INDEX_SYMBOLS, ParsedFrame, parse_frame, polygon_ticker
from services.ingest.polygon_rest import PolygonAuthError, PolygonRest, PolygonRestConfig, PolygonRestError
from services.ingest.polygon_ws import (
    PolygonStream,
    PolygonStreamAuthError,
    PolygonStreamConfig,
    PolygonStreamError,
)

log = logging.getLogger(__name__)

NS_PER_MS: Final = 1_000_000
Cluster = Literal["stocks", "indices"]
CLUSTERS: Final[tuple[Cluster, ...]] = ("stocks", "indices")


class PolygonFeedError(RuntimeError):
    """The live feed cannot go on (key refused, reconnects exhausted, capture out of step): one line."""


def cluster_of(symbol: str) -> Cluster:
    return "indices" if symbol in INDEX_SYMBOLS else "stocks"


def cluster_url(ws_url: str, cluster: Cluster) -> str:
    """``wss://socket.polygon.io`` (or one already ending in a cluster) -> ``.../<cluster>``."""
    base = ws_url.rstrip("/")
    for name in ("/stocks", "/indices", "/options"):
        if base.endswith(name):
            base = base[: -len(name)]
    return f"{base}/{cluster}"


def subscriptions(symbols: Sequence[str], cluster: Cluster) -> tuple[str, ...]:
    """Channels of one cluster: ``AM``, ``Q``, ``T`` per stock; ``AM`` per index (indices have no book)."""
    if cluster == "indices":
        return tuple(f"AM.{polygon_ticker(s)}" for s in symbols if cluster_of(s) == "indices")
    return tuple(f"{ch}.{s}" for s in symbols if cluster_of(s) == "stocks" for ch in ("AM", "Q", "T"))


@dataclass(frozen=True, slots=True)
class LiveFeedConfig:
    """What the live feed connects to and how it behaves (built from SessionConfig's ``market_data.polygon``)."""

    symbols: tuple[str, ...]
    ws_url: str = "wss://socket.polygon.io"
    rest_url: str = "https://api.polygon.io"
    heartbeat_secs: float = 5.0
    chain_every_s: float = 60.0
    chain_strike_pct: float = 0.03
    max_reconnects: int | None = 20
    backoff_s: float = 0.5
    backoff_max_s: float = 30.0
    snapshot_path: Path | None = None
    snapshot_rotate_mb: float = 100.0
    duration_s: float | None = None
    idle_exit_s: float | None = None

    def clusters(self) -> dict[Cluster, tuple[str, ...]]:
        """Subscriptions per cluster in use."""
        out: dict[Cluster, tuple[str, ...]] = {}
        for cluster in CLUSTERS:
            subs = subscriptions(self.symbols, cluster)
            if subs:
                out[cluster] = subs
        return out


# --- the venue: REST answers, live or read back --------------------------------------------------


class Venue(Protocol):
    """What the assembler asks the venue for, besides the stream."""

    def chain(self, underlying: str, spot: float, now_ns: int) -> ChainSnapshot | None:
        """The option chain snapshot (0DTE/1DTE, strikes near ``spot``), None when unavailable."""

    def backfill(self, symbol: str, start_ns: int, end_ns: int) -> list[Bar]:
        """Minute bars of ``symbol`` starting in [start_ns, end_ns)."""


def chain_expiries(calendar: MarketCalendar, now_ns: int) -> tuple[dt.date, dt.date]:
    """The expiries a scalper trades at ``now_ns``: today's session (0DTE) and the next (1DTE); after
    today's close (or on a day off), the next two."""
    day = ny_date(now_ns)
    session = calendar.session(day)
    first = session.date if session is not None and now_ns < session.close_ns else calendar.next_session(day).date
    return first, calendar.next_session(first).date


class RestVenue:
    """The REST client as the assembler's venue; each answer is also written to ``capture``."""

    def __init__(self, rest: PolygonRest, calendar: MarketCalendar, strike_pct: float,
                 capture: CaptureWriter | None = None) -> None:
        self.rest = rest
        self.calendar = calendar
        self.strike_pct = strike_pct
        self.capture = capture
        self.chain_failures = 0
        self.backfill_failures = 0

    def chain(self, underlying: str, spot: float, now_ns: int) -> ChainSnapshot | None:
        first, second = chain_expiries(self.calendar, now_ns)
        snap: ChainSnapshot | None
        try:
            snap = self.rest.option_chain(
                polygon_ticker(underlying), expiration_gte=first, expiration_lte=second,
                strike_gte=round(spot * (1 - self.strike_pct), 2), strike_lte=round(spot * (1 + self.strike_pct), 2))
        except PolygonAuthError as exc:
            raise PolygonFeedError(str(exc)) from None
        except PolygonRestError as exc:
            self.chain_failures += 1
            log.warning("polygon chain snapshot failed", extra={"underlying": underlying, "error": str(exc)})
            snap = None
        if snap is not None and snap.underlying != underlying:
            snap = replace(snap, underlying=underlying)
        if self.capture is not None:
            self.capture.write({"k": "chain", "sym": underlying,
                                "e": msgspec.to_builtins(snap) if snap is not None else None})
        return snap

    def backfill(self, symbol: str, start_ns: int, end_ns: int) -> list[Bar]:
        try:
            got = self.rest.aggregates(polygon_ticker(symbol), 1, "minute", start_ns // NS_PER_MS,
                                       (end_ns - 1) // NS_PER_MS)
        except PolygonAuthError as exc:
            raise PolygonFeedError(str(exc)) from None
        except PolygonRestError as exc:
            self.backfill_failures += 1
            log.warning("polygon backfill failed; minutes stay missing",
                        extra={"symbol": symbol, "error": str(exc)})
            got = []
        bars = [replace(b, symbol=symbol) for b in got if start_ns <= b.ts < end_ns]
        if self.capture is not None:
            self.capture.write({"k": "backfill", "sym": symbol, "e": [msgspec.to_builtins(b) for b in bars]})
        return bars


class CapturedVenue:
    """The venue's answers as a capture recorded them: each request takes the capture's next record,
    which must be the answer to that request (else the replay is out of step: CaptureError)."""

    def __init__(self, records: Iterator[dict[str, Any]]) -> None:
        self._records = records

    def _next(self, kind: str, symbol: str) -> Any:
        record = next(self._records, None)
        if record is None or record.get("k") != kind or record.get("sym") != symbol:
            got = "end of capture" if record is None else f"{record.get('k')} {record.get('sym')}"
            raise CaptureError(f"capture out of step: the replay asked for {kind} {symbol}, the capture has {got}")
        return record.get("e")

    def chain(self, underlying: str, spot: float, now_ns: int) -> ChainSnapshot | None:
        raw = self._next("chain", underlying)
        return None if raw is None else msgspec.convert(raw, ChainSnapshot)

    def backfill(self, symbol: str, start_ns: int, end_ns: int) -> list[Bar]:
        return msgspec.convert(self._next("backfill", symbol), list[Bar])


# --- the assembler -------------------------------------------------------------------------------


@dataclass(slots=True)
class AssemblerStats:
    """Counters the ingest exports (and tests read)."""

    bars: int = 0
    quotes: int = 0
    trades: int = 0
    chains: int = 0
    backfilled: int = 0
    backfills: int = 0
    duplicates: int = 0
    stale: int = 0
    malformed: int = 0
    reconnects: int = 0
    heartbeats: int = 0


@dataclass(slots=True)
class _Symbol:
    last_bar: Bar | None = None
    closed_until: int = 0  # end of the last emitted bar: older quotes and trades are stale
    last_chain_end: int | None = None
    gap: bool = False


class MinuteAssembler:
    """Decoded frames in, md.* outputs out (see the module doc); writes the heartbeat to ``state``."""

    def __init__(self, symbols: Sequence[str], venue: Venue, state: StateStore | None, calendar: MarketCalendar,
                 *, heartbeat_secs: float, chain_every_s: float) -> None:
        self.venue = venue
        self.state = state
        self.calendar = calendar
        self.heartbeat_ns = round(heartbeat_secs * NS_PER_S)
        self.chain_every_ns = round(chain_every_s * NS_PER_S)
        self._symbols = {s: _Symbol() for s in symbols}
        self._by_ticker = {polygon_ticker(s): s for s in symbols}
        self._connection: dict[str, int] = {}
        self.newest_ts = 0
        self.seq = 0
        self._heartbeat_ts: int | None = None
        self.stats = AssemblerStats()

    # -- inputs ---------------------------------------------------------------------------------

    def on_frame(self, cluster: str, connection: int, parsed: ParsedFrame) -> list[Output]:
        """One decoded websocket frame of ``cluster`` that arrived on connection number ``connection``."""
        seen = self._connection.get(cluster, 0)
        if connection > seen:
            self._connection[cluster] = connection
            if seen > 0:
                self.stats.reconnects += 1
                for sym, st in self._symbols.items():
                    if cluster_of(sym) == cluster and st.last_bar is not None:
                        st.gap = True
        self.stats.malformed += len(parsed.errors)
        out: list[Output] = []
        for event in parsed.events:
            if isinstance(event, Bar):
                self._on_bar(event, out)
            elif isinstance(event, Quote | Trade):
                self._on_tick(event, out)
        if self._heartbeat_ts is None or self.newest_ts - self._heartbeat_ts >= self.heartbeat_ns:
            self.heartbeat()
        return out

    def heartbeat(self) -> None:
        """Write the ingest heartbeat (the timer's tick; also called as event time moves on)."""
        if self.state is None or self.newest_ts == 0:
            return
        self.state.set(keys.INGEST_HEARTBEAT, shared_state.encode(IngestHeartbeat(ts=self.newest_ts, seq=self.seq)))
        self._heartbeat_ts = self.newest_ts
        self.stats.heartbeats += 1

    # -- events ---------------------------------------------------------------------------------

    def _symbol(self, ticker: str) -> tuple[str, _Symbol] | None:
        sym = self._by_ticker.get(ticker)
        return None if sym is None else (sym, self._symbols[sym])

    def _on_bar(self, bar: Bar, out: list[Output]) -> None:
        found = self._symbol(bar.symbol)
        if found is None:
            return
        sym, st = found
        if sym != bar.symbol:
            bar = replace(bar, symbol=sym)
        last = st.last_bar
        if last is not None and bar.ts <= last.ts:
            self.stats.duplicates += 1
            return
        if st.gap and last is not None:
            start = last.ts + last.interval_s * NS_PER_S
            if bar.ts > start:
                self.stats.backfills += 1
                for missing in self.venue.backfill(sym, start, bar.ts):
                    if st.last_bar is None or missing.ts > st.last_bar.ts:
                        self.stats.backfilled += 1
                        self._emit_bar(sym, st, missing, out, live=False)
        st.gap = False
        self._emit_bar(sym, st, bar, out, live=True)

    def _emit_bar(self, sym: str, st: _Symbol, bar: Bar, out: list[Output], *, live: bool) -> None:
        end = bar.ts + bar.interval_s * NS_PER_S
        if live and self.calendar.is_open(bar.ts) and (
                st.last_chain_end is None or end - st.last_chain_end >= self.chain_every_ns):
            st.last_chain_end = end
            chain = self.venue.chain(sym, bar.close, end)
            if chain is not None:
                self.stats.chains += 1
                self._advance(chain.ts)
                out.append(Output(topics.MD_CHAIN, sym, chain))
        st.last_bar = bar
        st.closed_until = max(st.closed_until, end)
        self.stats.bars += 1
        self._advance(end)
        out.append(Output(topics.MD_BARS, sym, bar))

    def _on_tick(self, event: Quote | Trade, out: list[Output]) -> None:
        found = self._symbol(event.symbol)
        if found is None:
            return
        sym, st = found
        if event.ts < st.closed_until:
            self.stats.stale += 1
            return
        self._advance(event.ts)
        if isinstance(event, Quote):
            self.stats.quotes += 1
            out.append(Output(topics.MD_QUOTES, sym, event))
        else:
            self.stats.trades += 1
            out.append(Output(topics.MD_TRADES, sym, event))

    def _advance(self, ts: int) -> None:
        self.seq += 1
        if ts > self.newest_ts:
            self.newest_ts = ts


# --- capture header ------------------------------------------------------------------------------


def _meta(config: LiveFeedConfig) -> dict[str, Any]:
    """The first record of a captured session: what its assembler needs to decide the same way."""
    return {"k": "meta", "symbols": list(config.symbols), "heartbeat_secs": config.heartbeat_secs,
            "chain_every_s": config.chain_every_s, "chain_strike_pct": config.chain_strike_pct,
            "started_ns": time.time_ns()}


# --- the live driver -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Frame:
    cluster: Cluster
    connection: int
    data: str


@dataclass(frozen=True, slots=True)
class _Tick:
    pass


@dataclass(frozen=True, slots=True)
class _Failed:
    error: BaseException


@dataclass(frozen=True, slots=True)
class _Ended:
    reason: str


_Item = _Frame | _Tick | _Failed | _Ended


@dataclass(slots=True)
class _Loop:
    thread: threading.Thread
    loop: asyncio.AbstractEventLoop | None = None
    stop: asyncio.Event | None = None
    ready: threading.Event = field(default_factory=threading.Event)


class PolygonLiveFeed:
    """The live feed: iterate it (blocks until the feed ends) or :meth:`poll` it (services mode).

    It ends after ``duration_s`` (wall clock), after ``idle_exit_s`` without a data frame, on
    :meth:`close`, or with a :class:`PolygonFeedError` (key refused, reconnects exhausted)."""

    def __init__(self, config: LiveFeedConfig, api_key: SecretStr, state: StateStore | None,
                 calendar: MarketCalendar, *, rest_config: PolygonRestConfig | None = None,
                 rng: random.Random | None = None) -> None:
        if not api_key.get_secret_value().strip():
            raise PolygonFeedError("no Polygon API key: set POLYGON_API_KEY in the environment or .env")
        self.config = config
        self._key = api_key
        self._rng = rng or random.Random()
        self._queue: queue.Queue[_Item] = queue.Queue(maxsize=10_000)
        self.capture = (CaptureWriter(config.snapshot_path, config.snapshot_rotate_mb)
                        if config.snapshot_path is not None else None)
        rest_cfg = (rest_config or PolygonRestConfig()).model_copy(update={"base_url": config.rest_url})
        self.rest = PolygonRest(rest_cfg, api_key)
        self.venue = RestVenue(self.rest, calendar, config.chain_strike_pct, self.capture)
        self.assembler = MinuteAssembler(config.symbols, self.venue, state, calendar,
                                         heartbeat_secs=config.heartbeat_secs, chain_every_s=config.chain_every_s)
        self.streams: dict[Cluster, PolygonStream] = {
            cluster: PolygonStream(PolygonStreamConfig(
                url=cluster_url(config.ws_url, cluster), subscriptions=subs, backoff_s=config.backoff_s,
                backoff_max_s=max(config.backoff_max_s, config.backoff_s), max_reconnects=config.max_reconnects),
                api_key, rng=self._rng)
            for cluster, subs in config.clusters().items()}
        self._runner: _Loop | None = None
        self._finished = False
        self._started = 0.0
        self._last_data = 0.0
        self.end_reason = ""

    def __repr__(self) -> str:
        c = self.config
        return f"PolygonLiveFeed(ws={c.ws_url!r}, rest={c.rest_url!r}, symbols={c.symbols})"

    # -- consumer side --------------------------------------------------------------------------

    def __iter__(self) -> Iterator[Output]:
        while True:
            batch = self.poll(1.0)
            if batch is None:
                return
            yield from batch

    def poll(self, wait_s: float, max_items: int = 1000) -> list[Output] | None:
        """Outputs ready now (waiting up to ``wait_s`` for the first); None once the feed has ended."""
        if self._finished:
            return None
        self._start()
        out: list[Output] = []
        deadline = time.monotonic() + wait_s
        handled = 0
        while handled < max_items:
            timeout = deadline - time.monotonic() if handled == 0 else 0.0
            try:
                item = self._queue.get(timeout=max(timeout, 0.0)) if timeout > 0 else self._queue.get_nowait()
            except queue.Empty:
                break
            handled += 1
            if isinstance(item, _Failed):
                self._finish("error")
                if isinstance(item.error, PolygonStreamAuthError | PolygonStreamError):
                    raise PolygonFeedError(str(item.error)) from None
                raise item.error
            if isinstance(item, _Ended):
                self._finish(item.reason)
                return out or None
            out.extend(self._handle(item))
        self._check_limits()
        return out

    def _handle(self, item: _Frame | _Tick) -> list[Output]:
        if isinstance(item, _Tick):
            if self.capture is not None:
                self.capture.write({"k": "tick"})
            self.assembler.heartbeat()
            return []
        self._last_data = time.monotonic()
        if self.capture is not None:
            self.capture.write({"k": "ws", "c": item.cluster, "n": item.connection, "f": item.data})
        parsed = self.streams[item.cluster].parse(item.data)
        try:
            out = self.assembler.on_frame(item.cluster, item.connection, parsed)
        except PolygonFeedError:
            self._finish("error")
            raise
        self._last_data = time.monotonic()  # time spent on REST answers is not time without data
        return out

    def _check_limits(self) -> None:
        if self._finished:
            return
        now = time.monotonic()
        cfg = self.config
        if cfg.duration_s is not None and now - self._started >= cfg.duration_s:
            self.close("duration reached")
        elif cfg.idle_exit_s is not None and now - max(self._last_data, self._started) >= cfg.idle_exit_s:
            self.close(f"no data for {cfg.idle_exit_s:g} s")

    def _finish(self, reason: str) -> None:
        if self._finished:
            return
        self._finished = True
        self.end_reason = self.end_reason or reason
        self._stop_loop()
        self.rest.close()
        if self.capture is not None:
            self.capture.close()
        log.info("polygon live feed ended", extra={"reason": self.end_reason, "bars": self.assembler.stats.bars})

    def close(self, reason: str = "closed") -> None:
        """Stop the streams and the timer; the iteration ends."""
        self.end_reason = self.end_reason or reason
        self._finish(reason)

    # -- the asyncio side -----------------------------------------------------------------------

    def _start(self) -> None:
        if self._runner is not None:
            return
        self._started = time.monotonic()
        if self.capture is not None:
            self.capture.write(_meta(self.config))
        runner = _Loop(threading.Thread(target=self._thread, name="polygon-live", daemon=True))
        self._runner = runner
        runner.thread.start()
        runner.ready.wait(10.0)

    def _stop_loop(self) -> None:
        runner = self._runner
        if runner is None or runner.loop is None or runner.stop is None:
            return
        if runner.thread.is_alive():
            runner.loop.call_soon_threadsafe(runner.stop.set)
            runner.thread.join(10.0)

    def _put(self, item: _Item) -> None:
        while True:
            try:
                self._queue.put(item, timeout=0.5)
                return
            except queue.Full:
                if self._finished:
                    return

    def _thread(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:  # anything the loop could not handle ends the feed with it
            self._put(_Failed(exc))

    async def _main(self) -> None:
        assert self._runner is not None
        self._runner.loop = asyncio.get_running_loop()
        stop = self._runner.stop = asyncio.Event()
        self._runner.ready.set()
        tasks = [asyncio.create_task(self._pump(cluster, stream)) for cluster, stream in self.streams.items()]
        tasks.append(asyncio.create_task(self._timer(stop)))
        waiter = asyncio.create_task(stop.wait())
        await asyncio.wait([*tasks, waiter], return_when=asyncio.FIRST_COMPLETED)
        for stream in self.streams.values():
            await stream.close()
        for task in [*tasks, waiter]:
            task.cancel()
        await asyncio.gather(*tasks, waiter, return_exceptions=True)

    async def _pump(self, cluster: Cluster, stream: PolygonStream) -> None:
        frames = stream.frames()
        assert isinstance(frames, AsyncGenerator)  # frames() is an async generator: close it when done
        try:
            async for raw in frames:
                item = _Frame(cluster, raw.connection, raw.data)
                try:
                    self._queue.put_nowait(item)
                except queue.Full:  # the consumer is behind: wait for room off the loop
                    await asyncio.to_thread(self._put, item)
            self._put(_Ended(f"{cluster} stream closed"))
        except Exception as exc:  # reconnects exhausted, key refused, or a bug: the consumer raises it
            self._put(_Failed(exc))
        finally:
            await frames.aclose()

    async def _timer(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await asyncio.wait_for(stop.wait(), self.config.heartbeat_secs)
            except TimeoutError:
                self._put(_Tick())


# --- replay of a capture -------------------------------------------------------------------------


class CaptureReplayFeed:
    """A capture read back through the same assembly as live: the same outputs in the same order, and
    the same heartbeat writes between them (``state``)."""

    def __init__(self, path: Path, state: StateStore | None, calendar: MarketCalendar,
                 symbols: Sequence[str] | None = None) -> None:
        self.path = path
        self.state = state
        self.calendar = calendar
        self.symbols = tuple(symbols) if symbols is not None else None
        self.sessions = 0
        self.assembler: MinuteAssembler | None = None

    def __iter__(self) -> Iterator[Output]:
        records = read_capture(self.path)
        venue = CapturedVenue(records)
        wanted = set(self.symbols) if self.symbols is not None else None
        for record in records:
            kind = record["k"]
            if kind == "meta":
                self.sessions += 1
                self.assembler = self._assembler(record, venue)
            elif self.assembler is None:
                raise CaptureError(f"{self.path}: capture does not start with a meta record")
            elif kind == "ws":
                parsed = parse_frame(str(record["f"]), "stocks")
                for out in self.assembler.on_frame(str(record["c"]), int(record["n"]), parsed):
                    if wanted is None or out.key in wanted:
                        yield out
            elif kind == "tick":
                self.assembler.heartbeat()
            else:
                raise CaptureError(f"{self.path}: a {kind} record where a frame or a tick was expected")

    def _assembler(self, meta: Mapping[str, Any], venue: Venue) -> MinuteAssembler:
        try:
            return MinuteAssembler([str(s) for s in meta["symbols"]], venue, self.state, self.calendar,
                                   heartbeat_secs=float(meta["heartbeat_secs"]),
                                   chain_every_s=float(meta["chain_every_s"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise CaptureError(f"{self.path}: malformed meta record ({exc})") from None


class LiveSource:
    """The live feed as a services-mode source (:class:`services.runtime.lockstep.Participant` pumps a
    source in batches and publishes each batch when it ends): every pass over it hands over what has
    arrived, waiting for the first output, and then ends, so each output reaches Kafka as soon as the
    feed has it instead of after a full batch. A pass that ends empty means the feed is over."""

    def __init__(self, feed: PolygonLiveFeed, wait_s: float = 1.0) -> None:
        self.feed = feed
        self.wait_s = wait_s
        self._ready: deque[Output] = deque()
        self._in_pass = False

    def __iter__(self) -> LiveSource:
        return self

    def __next__(self) -> Output:
        if self._ready:
            self._in_pass = True
            return self._ready.popleft()
        if self._in_pass:  # drained: end this pass so the runner publishes it
            self._in_pass = False
            raise StopIteration
        while True:
            got = self.feed.poll(self.wait_s)
            if got is None:
                raise StopIteration
            if got:
                self._ready.extend(got)
                self._in_pass = True
                return self._ready.popleft()
