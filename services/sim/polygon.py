"""A local Polygon.io (Massive) server: websocket clusters and REST, derived from a bar file.

``python -m services.sim.polygon --port P --data FILE --symbol SPY [--rest-symbols SPY,QQQ,SPX] [--speed 0]
[--api-key KEY]``

Websocket (``ws://127.0.0.1:P/stocks`` and ``/options``), as the real clusters behave
(sources: :mod:`services.ingest.polygon_parsing`):

- on connect: ``[{"ev":"status","status":"connected","message":"Connected Successfully"}]``;
- ``{"action":"auth","params":KEY}`` -> ``auth_success`` / "authenticated", or ``auth_failed`` /
  "authentication failed" and the connection is closed; anything else before auth gets
  ``status: error`` / "not authorized";
- ``subscribe`` / ``unsubscribe`` with comma-separated ``CH.SYM`` params (``*`` for all symbols) ->
  one ``status: success`` element per channel ("subscribed to: AM.SPY");
- a second authenticated connection with the same key ends the first one with
  ``status: max_connections`` (one connection per cluster, as Massive's plans allow).

The stocks cluster replays the file, bar by bar: a frame of ``T`` trades and ``Q`` quotes synthesised
deterministically inside the bar (the path open -> low -> high -> close, or open -> high -> low -> close
for a down bar, each print a quarter of the volume, each preceded by a one-cent quote it trades
against, and a closing quote around the close), then a frame with the bar's ``AM`` aggregate
(``vw`` the file's VWAP or the typical price (h+l+c)/3, ``av``/``a`` running day totals, ``op`` the
day's first regular-hours open, ``z`` the average synthesised print). Quote sizes are round lots.
The replay position is kept per API key, so a reconnecting client resumes where it was cut off
(``--drop-after N`` cuts the first connection after N frames, at a bar boundary, to test that).
``--speed 0`` streams as fast as the socket takes it; ``--speed 60`` plays a minute bar per second.
The options cluster streams ``Q`` quotes (sizes in contracts) of subscribed contracts from the
synthetic chain (:func:`services.ingest.synthetic_chain.synthetic_chain`) at each regular-hours bar.

REST (same port), key as ``Authorization: Bearer KEY`` or ``?apiKey=KEY``:

- ``GET /v2/aggs/ticker/{T}/range/{m}/{minute|hour|day}/{from}/{to}`` (from/to ``YYYY-MM-DD``, New York
  days inclusive, or Unix ms) with ``adjusted``, ``sort``, ``limit`` (default 5000, max 50000) and
  ``next_url`` pagination (``cursor``), for ``--symbol`` and every ``--rest-symbols`` symbol (read from
  ``--data``, then a flat-file tree or a file with a Symbol column). Indices are asked for as ``I:SPX``
  (the ``indices`` entitlement) and, as on the real API, their bars have no ``v``/``vw``/``n``;
- ``GET /v3/snapshot/options/{underlying}`` with ``contract_type``, ``expiration_date``,
  ``strike_price`` (and ``.gte/.gt/.lte/.lt``), ``order``, ``sort``, ``limit`` (default 10, max 250) and
  ``next_url`` pagination: the synthetic chain at the sim's clock (the latest streamed bar's end,
  or ``--asof``), IV and greeks from the project's Black-76 code;
- errors as the real API sends them: 401 ``{"status":"ERROR","error":"Unknown API Key"}`` (or "API
  Key was not provided"), 403 ``{"status":"NOT_AUTHORIZED","message":...}`` for a cluster not in
  ``--entitlements``, 400 ``ERROR`` for bad parameters, and injected 429/5xx for retry tests.

Admin (tests): ``POST /sim/fail {"status":429,"count":2}``, ``POST /sim/clock {"asof_ns":N}``,
``POST /sim/drop`` (close every socket with 1011; ``{"skip_bars":N}`` also moves every replay position N bars
on, the minutes a real client would miss while away), ``POST /sim/latency {"seconds":0.2}`` (delay every REST
answer), ``GET /sim/stats``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import bisect
import datetime as dt
import itertools
import json
import math
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Final

import numpy as np
from aiohttp import WSMsgType, web

from services.cliutil import OneLineParser, fail, parse_speed
from services.core.calendar import NEW_YORK, NS_PER_S, default_calendar, ny_date
from services.core.events import Bar, ChainSnapshot, OptionQuote
from services.ingest.polygon_parsing import INDEX_PREFIX, INDEX_SYMBOLS
from services.ingest.sources import DataSourceError, open_bars
from services.sim import LOOPBACK, serve

NS_PER_MS: Final = 1_000_000
MAX_AGGS_LIMIT: Final = 50_000
MAX_CHAIN_LIMIT: Final = 250
EXCHANGE_ID: Final = 12  # the exchange id the sim stamps on quotes and trades
TAPE_B: Final = 2
OPTION_EXCHANGE_ID: Final = 316
RATE_LIMIT_TEXT: Final = (
    "You've exceeded the maximum requests per minute, please wait or upgrade your subscription to continue. "
    "https://polygon.io/pricing"
)
NOT_ENTITLED_TEXT: Final = "You are not entitled to this data. Please upgrade your plan at https://polygon.io/pricing"
MAX_CONNECTIONS_TEXT: Final = "Maximum number of websocket connections exceeded."


@dataclass(frozen=True, slots=True)
class PolygonSimConfig:
    """What the sim serves and how."""

    data: Path
    symbol: str
    api_key: str
    speed: float = 0.0
    drop_after: int | None = None
    asof_ns: int | None = None
    entitlements: frozenset[str] = frozenset({"stocks", "options", "indices"})
    rest_symbols: tuple[str, ...] = ()


def _dumps(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"))


def _typical(b: Bar) -> float:
    """(h + l + c) / 3 to 4 decimals, kept inside [low, high]."""
    return min(max(round((b.high + b.low + b.close) / 3, 4), b.low), b.high)


def _num(x: float) -> float | int:
    """Integral floats as ints (volumes and sizes are integers on the wire)."""
    return int(x) if float(x).is_integer() else x


# --- the market: bars and what is derived from them ---------------------------------------------


class SimMarket:
    """The file's bars plus everything the sim derives from them, deterministically."""

    def __init__(self, bars: Sequence[Bar], symbol: str, asof_ns: int | None = None) -> None:
        if not bars:
            raise DataSourceError(f"no bars for {symbol}")
        self.symbol = symbol
        self.bars = list(bars)
        n = len(self.bars)
        self.vw = [b.vwap if b.vwap is not None else _typical(b) for b in self.bars]
        self.prints = [self._prints(b) for b in self.bars]
        self.av = [0.0] * n
        self.day_vwap = [0.0] * n
        self.official_open = [0.0] * n
        cal = default_calendar()
        day: dt.date | None = None
        cum_v = cum_pv = 0.0
        opening = 0.0
        for i, b in enumerate(self.bars):
            d = ny_date(b.ts)
            if d != day:
                day, cum_v, cum_pv = d, 0.0, 0.0
                session = cal.session(d)
                first_rth = next(
                    (x for x in self.bars[i:] if ny_date(x.ts) == d and session and x.ts >= session.open_ns), b
                )
                opening = first_rth.open
            cum_v += b.volume
            cum_pv += self.vw[i] * b.volume
            self.av[i] = cum_v
            self.day_vwap[i] = round(cum_pv / cum_v, 4) if cum_v > 0 else self.vw[i]
            session = cal.session(d)
            self.official_open[i] = opening if session and b.ts >= session.open_ns else self.bars[i].open
        self.first_asof = self.end_ns(0)
        self._t_ms = [b.ts // NS_PER_MS for b in self.bars]
        self.asof_ns = asof_ns if asof_ns is not None else self.end_ns(n - 1)

    def end_ns(self, i: int) -> int:
        b = self.bars[i]
        return b.ts + b.interval_s * NS_PER_S

    @staticmethod
    def _prints(b: Bar) -> list[tuple[float, int]]:
        path = [b.open, b.low, b.high, b.close] if b.close >= b.open else [b.open, b.high, b.low, b.close]
        total = round(b.volume)
        if total <= 0:
            return [(p, 0) for p in path]
        base = total // 4
        return list(zip(path, [base, base, base, total - 3 * base], strict=True))

    def advance(self, ts_ns: int) -> None:
        """Move the market clock (chain snapshots price at the clock) forward to ``ts_ns``."""
        self.asof_ns = max(self.asof_ns, ts_ns)

    # -- websocket messages -------------------------------------------------------------------

    def bar_messages(self, i: int) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        """The ``T``/``Q`` messages inside bar ``i`` (wire order) and its ``AM`` message."""
        b = self.bars[i]
        sym = self.symbol
        s_ms = b.ts // NS_PER_MS
        e_ms = self.end_ns(i) // NS_PER_MS
        inside: list[dict[str, Any]] = []
        seq = i * 16
        trades = 0
        for k, (price, size) in enumerate(self.prints[i]):
            t = s_ms + (k + 1) * (b.interval_s * 1000 // 5)
            bid, ask = (round(price - 0.01, 2), price) if k % 2 == 0 else (price, round(price + 0.01, 2))
            if bid > 0:
                inside.append(
                    self._quote(sym, bid, ask, t - 1, seq, 1 + (i * 31 + k * 17) % 9, 1 + (i * 13 + k * 29) % 9)
                )
            seq += 1
            if size > 0:
                trades += 1
                inside.append(
                    {
                        "ev": "T",
                        "sym": sym,
                        "x": EXCHANGE_ID,
                        "i": str(seq),
                        "z": TAPE_B,
                        "p": price,
                        "s": size,
                        "t": t,
                        "q": seq,
                    }
                )
            seq += 1
        bid = math.floor(b.close * 100 + 1e-6) / 100
        inside.append(self._quote(sym, bid, round(bid + 0.01, 2), e_ms - 1, seq, 1 + i % 7, 1 + (i * 3) % 7))
        am = {
            "ev": "AM",
            "sym": sym,
            "v": _num(b.volume),
            "av": _num(self.av[i]),
            "op": self.official_open[i],
            "vw": self.vw[i],
            "o": b.open,
            "c": b.close,
            "h": b.high,
            "l": b.low,
            "a": self.day_vwap[i],
            "z": int(b.volume // trades) if trades else 0,
            "s": s_ms,
            "e": e_ms,
        }
        return inside, am

    @staticmethod
    def _quote(sym: str, bid: float, ask: float, t: int, seq: int, bs: int, as_: int) -> dict[str, Any]:
        return {
            "ev": "Q",
            "sym": sym,
            "bx": EXCHANGE_ID,
            "bp": bid,
            "bs": bs,
            "ax": EXCHANGE_ID,
            "ap": ask,
            "as": as_,
            "c": 0,
            "i": [],
            "t": t,
            "q": seq,
            "z": TAPE_B,
        }

    def trade_count(self, i: int) -> int:
        return sum(1 for _, size in self.prints[i] if size > 0)

    # -- REST aggregates ----------------------------------------------------------------------

    def aggregates(self, multiplier: int, timespan: str, start_ms: int, end_ms: int) -> list[dict[str, Any]]:
        """Bars (``o,h,l,c,v,vw,n,t``) of the requested size whose start lies in [start_ms, end_ms]."""
        rows: list[dict[str, Any]] = []
        groups: dict[int, list[int]] = {}
        # Bars are in time order (the replay refuses anything else), so the range is a slice.
        lo, hi = bisect.bisect_left(self._t_ms, start_ms), bisect.bisect_right(self._t_ms, end_ms)
        for i in range(lo, hi):
            b = self.bars[i]
            t_ms = self._t_ms[i]
            if timespan == "day":
                d = ny_date(b.ts)
                key = int(dt.datetime.combine(d, dt.time(0), tzinfo=NEW_YORK).timestamp() * 1000)
            else:
                width = multiplier * (60_000 if timespan == "minute" else 3_600_000)
                key = t_ms - t_ms % width
            groups.setdefault(key, []).append(i)
        for key, idx in groups.items():
            vol = sum(self.bars[i].volume for i in idx)
            vw = sum(self.vw[i] * self.bars[i].volume for i in idx) / vol if vol > 0 else self.vw[idx[-1]]
            rows.append(
                {
                    "v": _num(vol),
                    "vw": min(
                        max(round(vw, 4), min(self.bars[i].low for i in idx)), max(self.bars[i].high for i in idx)
                    ),
                    "o": self.bars[idx[0]].open,
                    "c": self.bars[idx[-1]].close,
                    "h": max(self.bars[i].high for i in idx),
                    "l": min(self.bars[i].low for i in idx),
                    "t": key,
                    "n": sum(self.trade_count(i) for i in idx),
                }
            )
        return rows

    # -- option chain -------------------------------------------------------------------------

    def spot_at(self, ts_ns: int) -> float:
        """Close of the latest bar finished by ``ts_ns`` (the first bar's open before that)."""
        last = None
        for i in range(len(self.bars)):
            if self.end_ns(i) <= ts_ns:
                last = i
            else:
                break
        return self.bars[last].close if last is not None else self.bars[0].open

    def chain(self, asof_ns: int | None = None) -> tuple[ChainSnapshot, list[dict[str, Any]]]:
        """The synthetic chain at ``asof_ns`` (default: the clock) and its snapshot rows."""
        asof = self.asof_ns if asof_ns is None else asof_ns
        return _chain_cached(self.symbol, self.spot_at(asof), asof)

    def option_quotes(self, i: int, contracts: set[str]) -> list[dict[str, Any]]:
        """Options-cluster ``Q`` messages of ``contracts`` (``O:`` symbols) at the end of bar ``i``."""
        end = self.end_ns(i)
        if not contracts or not default_calendar().is_open(end - 1):
            return []
        snap, _ = _chain_cached(self.symbol, self.bars[i].close, end)
        out: list[dict[str, Any]] = []
        for q in snap.quotes:
            sym = f"O:{q.symbol}"
            if sym in contracts or "*" in contracts:
                out.append(
                    {
                        "ev": "Q",
                        "sym": sym,
                        "bx": OPTION_EXCHANGE_ID,
                        "ax": OPTION_EXCHANGE_ID,
                        "bp": q.bid,
                        "ap": q.ask,
                        "bs": _num(q.bid_size),
                        "as": _num(q.ask_size),
                        "t": end // NS_PER_MS,
                        "q": i,
                    }
                )
        return out


def chain_expiries(asof_ns: int) -> list[dt.date]:
    """The session of ``asof_ns`` (0DTE) and the next two sessions: SPY/QQQ/SPX list dailies."""
    cal = default_calendar()
    day = ny_date(asof_ns)
    first = cal.session(day) or cal.next_session(day)
    second = cal.next_session(first.date)
    return [first.date, second.date, cal.next_session(second.date).date]


@lru_cache(maxsize=64)
def _chain_cached(symbol: str, spot: float, asof_ns: int) -> tuple[ChainSnapshot, list[dict[str, Any]]]:
    from services.ingest.synthetic_chain import synthetic_chain
    from services.options.black_scholes import year_fraction
    from services.options.implied_vol import implied_vol_greeks

    day = ny_date(asof_ns)
    snap = synthetic_chain(symbol, spot, asof_ns, chain_expiries(asof_ns), seed=int(day.strftime("%Y%m%d")))
    cal = default_calendar()
    quotes = snap.quotes
    if not quotes:
        return snap, []
    mids = np.array([(q.bid + q.ask) / 2 for q in quotes])
    strikes = np.array([q.strike for q in quotes])
    ts = np.array([year_fraction(asof_ns, cal.expiry_close_ns(dt.date.fromisoformat(q.expiry))) for q in quotes])
    calls = np.array([q.right == "C" for q in quotes])
    iv, greeks = implied_vol_greeks(mids, spot, strikes, ts, calls, spot=spot)
    rows = []
    for j, q in enumerate(quotes):
        mid = round(float(mids[j]), 4)
        row: dict[str, Any] = {
            "break_even_price": round(q.strike + mid if q.right == "C" else q.strike - mid, 4),
            "day": {
                "change": 0,
                "change_percent": 0,
                "close": mid,
                "high": mid,
                "low": mid,
                "open": mid,
                "previous_close": mid,
                "volume": 0,
                "vwap": mid,
                "last_updated": asof_ns,
            },
            "details": {
                "contract_type": "call" if q.right == "C" else "put",
                "exercise_style": "european" if symbol in ("SPX", "NDX") else "american",
                "expiration_date": q.expiry,
                "shares_per_contract": 100,
                "strike_price": _num(q.strike),
                "ticker": f"O:{q.symbol}",
            },
            "last_quote": {
                "ask": q.ask,
                "ask_size": _num(q.ask_size),
                "ask_exchange": OPTION_EXCHANGE_ID,
                "bid": q.bid,
                "bid_size": _num(q.bid_size),
                "bid_exchange": OPTION_EXCHANGE_ID,
                "last_updated": asof_ns,
                "midpoint": mid,
                "timeframe": "REAL-TIME",
            },
            "open_interest": _num(q.open_interest),
            "underlying_asset": {
                "change_to_break_even": round((q.strike + mid if q.right == "C" else q.strike - mid) - spot, 4),
                "last_updated": asof_ns,
                "price": spot,
                "ticker": symbol,
                "timeframe": "REAL-TIME",
            },
        }
        if int(iv.status[j]) == 0 and math.isfinite(float(iv.iv[j])):
            row["implied_volatility"] = round(float(iv.iv[j]), 6)
            row["greeks"] = {
                "delta": round(float(greeks.delta[j]), 6),
                "gamma": round(float(greeks.gamma[j]), 6),
                "theta": round(float(greeks.theta[j]) / 365.0, 6),
                "vega": round(float(greeks.vega[j]) / 100.0, 6),
            }
        rows.append(row)
    return snap, rows


# --- the server ---------------------------------------------------------------------------------


@dataclass(slots=True)
class _Cursor:
    index: int = 0


@dataclass(slots=True)
class _Stats:
    connections: int = 0
    auth_failures: int = 0
    drops: int = 0
    frames: int = 0
    rest_requests: int = 0
    subscriptions: list[str] = field(default_factory=list)


class PolygonSim:
    """State and handlers of one sim instance (build the aiohttp app with :meth:`app`)."""

    def __init__(self, config: PolygonSimConfig, market: SimMarket) -> None:
        self.config = config
        self.market = market
        self.stats = _Stats()
        self._cursors: dict[str, _Cursor] = {}
        self._live: dict[tuple[str, str], web.WebSocketResponse] = {}
        self._sockets: set[web.WebSocketResponse] = set()
        self._dropped = False
        self._fail: list[int] = []
        self._latency_s = 0.0
        self._request_ids = itertools.count(1)
        self.rest_markets: dict[str, SimMarket] = {market.symbol: market}

    @classmethod
    def from_config(cls, config: PolygonSimConfig) -> PolygonSim:
        symbol = config.symbol.upper()
        sim = cls(config, SimMarket(list(open_bars(config.data, symbol)), symbol, config.asof_ns))
        for extra in dict.fromkeys(s.upper() for s in config.rest_symbols):
            if extra not in sim.rest_markets:
                sim.rest_markets[extra] = SimMarket(list(open_bars(config.data, extra)), extra, config.asof_ns)
        return sim

    def rest_market(self, ticker: str) -> tuple[SimMarket | None, str]:
        """The market behind a REST ticker (``I:SPX`` for an index) and the cluster it belongs to."""
        if ticker.startswith(INDEX_PREFIX):
            name = ticker[len(INDEX_PREFIX) :]
            return (self.rest_markets.get(name) if name in INDEX_SYMBOLS else None), "indices"
        # A bare index name is no stock ticker; only the sim's own --symbol keeps its old bare form.
        if ticker in INDEX_SYMBOLS and ticker != self.market.symbol:
            return None, "stocks"
        return self.rest_markets.get(ticker), "stocks"

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/stocks", self._ws_stocks)
        app.router.add_get("/options", self._ws_options)
        app.router.add_get("/v2/aggs/ticker/{ticker}/range/{multiplier}/{timespan}/{start}/{end}", self._aggs)
        app.router.add_get("/v3/snapshot/options/{underlying}", self._chain)
        app.router.add_post("/sim/fail", self._admin_fail)
        app.router.add_post("/sim/clock", self._admin_clock)
        app.router.add_post("/sim/drop", self._admin_drop)
        app.router.add_post("/sim/latency", self._admin_latency)
        app.router.add_get("/sim/stats", self._admin_stats)
        app.on_shutdown.append(self._close_sockets)
        return app

    # -- websocket ----------------------------------------------------------------------------

    async def _ws_stocks(self, request: web.Request) -> web.WebSocketResponse:
        return await self._ws(request, "stocks")

    async def _ws_options(self, request: web.Request) -> web.WebSocketResponse:
        return await self._ws(request, "options")

    async def _ws(self, request: web.Request, cluster: str) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(autoping=True)
        await ws.prepare(request)
        self._sockets.add(ws)
        await self._status(ws, "connected", "Connected Successfully")
        key: str | None = None
        subs: set[str] = set()
        wake = asyncio.Event()
        feed: asyncio.Task[None] | None = None
        try:
            async for msg in ws:
                if msg.type != WSMsgType.TEXT:
                    continue
                try:
                    doc = json.loads(msg.data)
                    action, params = doc["action"], str(doc.get("params", ""))
                except (ValueError, KeyError, TypeError):
                    await self._status(ws, "error", "Invalid message")
                    continue
                if action == "auth":
                    if params != self.config.api_key:
                        self.stats.auth_failures += 1
                        await self._status(ws, "auth_failed", "authentication failed")
                        await ws.close()
                        break
                    key = params
                    await self._take_slot(key, cluster, ws)
                    self.stats.connections += 1
                    await self._status(ws, "auth_success", "authenticated")
                elif key is None:
                    await self._status(ws, "error", "not authorized")
                elif action in ("subscribe", "unsubscribe"):
                    channels = [p.strip() for p in params.split(",") if p.strip()]
                    verb = "subscribed to" if action == "subscribe" else "unsubscribed to"
                    for ch in channels:
                        (subs.add if action == "subscribe" else subs.discard)(ch)
                    self.stats.subscriptions = sorted(subs)
                    await ws.send_str(
                        _dumps([{"ev": "status", "status": "success", "message": f"{verb}: {ch}"} for ch in channels])
                    )
                    wake.set()
                    if feed is None and subs:
                        feed = asyncio.create_task(self._feed(ws, key, cluster, subs, wake))
                else:
                    await self._status(ws, "error", f"unknown action: {action}")
        finally:
            if feed is not None:
                feed.cancel()
                await asyncio.gather(feed, return_exceptions=True)
            self._sockets.discard(ws)
            if key is not None and self._live.get((key, cluster)) is ws:
                del self._live[(key, cluster)]
        return ws

    async def _take_slot(self, key: str, cluster: str, ws: web.WebSocketResponse) -> None:
        old = self._live.get((key, cluster))
        self._live[(key, cluster)] = ws
        if old is not None and not old.closed:
            await self._status(old, "max_connections", MAX_CONNECTIONS_TEXT)
            await old.close(code=1008, message=b"max_connections")

    @staticmethod
    async def _status(ws: web.WebSocketResponse, status: str, message: str) -> None:
        if not ws.closed:
            await ws.send_str(_dumps([{"ev": "status", "status": status, "message": message}]))

    async def _feed(
        self, ws: web.WebSocketResponse, key: str, cluster: str, subs: set[str], wake: asyncio.Event
    ) -> None:
        m = self.market
        cursor = self._cursors.setdefault(f"{cluster}:{key}", _Cursor())
        sent = 0
        sym = m.symbol
        while cursor.index < len(m.bars) and not ws.closed:
            if not subs:
                wake.clear()
                await wake.wait()
                continue
            i = cursor.index
            frames: list[list[dict[str, Any]]] = []
            if cluster == "stocks":
                inside, am = m.bar_messages(i)
                chosen = [x for x in inside if f"{x['ev']}.{sym}" in subs or f"{x['ev']}.*" in subs]
                if chosen:
                    frames.append(chosen)
                if f"AM.{sym}" in subs or "AM.*" in subs:
                    frames.append([am])
            else:
                contracts = {s.split(".", 1)[1] for s in subs if s.startswith("Q.")}
                quotes = m.option_quotes(i, contracts)
                if quotes:
                    frames.append(quotes)
            for frame in frames:
                await ws.send_str(_dumps(frame))
                sent += 1
                self.stats.frames += 1
            cursor.index += 1
            m.advance(m.end_ns(i))
            drop = self.config.drop_after
            if drop is not None and not self._dropped and sent >= drop:
                self._dropped = True
                self.stats.drops += 1
                await ws.close(code=1011, message=b"sim: connection dropped")
                return
            if self.config.speed > 0:
                await asyncio.sleep(m.bars[i].interval_s / self.config.speed)
            else:
                await asyncio.sleep(0)

    async def _close_sockets(self, _app: web.Application) -> None:
        for ws in list(self._sockets):
            await ws.close(code=1001, message=b"server shutdown")

    # -- REST ---------------------------------------------------------------------------------

    def _rid(self) -> str:
        return f"{next(self._request_ids):032x}"

    def _error(self, status: int, text: str, kind: str = "ERROR") -> web.Response:
        key = "message" if kind == "NOT_AUTHORIZED" else "error"
        return web.json_response({"status": kind, "request_id": self._rid(), key: text}, status=status)

    def _check(self, request: web.Request, cluster: str) -> web.Response | None:
        """Auth, entitlement and injected failures; None when the request may proceed."""
        self.stats.rest_requests += 1
        header = request.headers.get("Authorization", "")
        key = header[7:] if header.startswith("Bearer ") else request.query.get("apiKey")
        if not key:
            return web.json_response(
                {"status": "ERROR", "request_id": "", "error": "API Key was not provided"}, status=401
            )
        if key != self.config.api_key:
            return self._error(401, "Unknown API Key")
        if cluster not in self.config.entitlements:
            return self._error(403, NOT_ENTITLED_TEXT, "NOT_AUTHORIZED")
        if self._fail:
            status = self._fail.pop(0)
            text = RATE_LIMIT_TEXT if status == 429 else "Internal server error"
            return self._error(status, text)
        return None

    def _next_url(self, request: web.Request, state: dict[str, Any]) -> str:
        token = base64.urlsafe_b64encode(_dumps(state).encode()).decode().rstrip("=")
        return f"{request.scheme}://{request.host}{request.path}?cursor={token}"

    @staticmethod
    def _cursor(request: web.Request) -> dict[str, Any] | None:
        token = request.query.get("cursor")
        if token is None:
            return None
        try:
            state: dict[str, Any] = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        except ValueError:
            return {}
        return state

    async def _aggs(self, request: web.Request) -> web.Response:
        info = request.match_info
        ticker = info["ticker"].upper()
        market, cluster = self.rest_market(ticker)
        denied = self._check(request, cluster)
        if denied is not None:
            return denied
        if self._latency_s > 0:
            await asyncio.sleep(self._latency_s)
        state = self._cursor(request)
        if state == {}:
            return self._error(400, "Invalid cursor")
        q = state or {
            "adjusted": request.query.get("adjusted", "true"),
            "sort": request.query.get("sort", "asc"),
            "limit": request.query.get("limit", "5000"),
            "offset": 0,
        }
        try:
            multiplier = int(info["multiplier"])
            limit = int(q["limit"])
            start_ms, end_ms = _range_ms(info["start"], info["end"])
        except ValueError as exc:
            return self._error(400, f"Could not parse the request parameters: {exc}")
        timespan = info["timespan"]
        if timespan not in ("minute", "hour", "day") or multiplier <= 0:
            return self._error(
                400, f"The sim serves minute, hour and day bars with a positive multiplier, got {timespan}"
            )
        if not 0 < limit <= MAX_AGGS_LIMIT or q["sort"] not in ("asc", "desc"):
            return self._error(400, f"limit must be 1..{MAX_AGGS_LIMIT} and sort asc or desc")
        rows = market.aggregates(multiplier, timespan, start_ms, end_ms) if market is not None else []
        if cluster == "indices":
            # Index values are not trades: the real API sends no volume, VWAP or trade count for them.
            rows = [{k: v for k, v in row.items() if k not in ("v", "vw", "n")} for row in rows]
        if q["sort"] == "desc":
            rows.reverse()
        offset = int(q["offset"])
        page = rows[offset : offset + limit]
        body: dict[str, Any] = {
            "ticker": ticker,
            "queryCount": len(page),
            "resultsCount": len(page),
            "adjusted": q["adjusted"] != "false",
            "status": "OK",
            "request_id": self._rid(),
            "count": len(page),
        }
        if page:
            body["results"] = page
        if offset + limit < len(rows):
            body["next_url"] = self._next_url(request, {**q, "offset": offset + limit})
        return web.json_response(body)

    async def _chain(self, request: web.Request) -> web.Response:
        denied = self._check(request, "options")
        if denied is not None:
            return denied
        underlying = request.match_info["underlying"].upper()
        state = self._cursor(request)
        if state == {}:
            return self._error(400, "Invalid cursor")
        q: dict[str, Any] = state or {k: v for k, v in request.query.items() if k != "apiKey"}
        offset = int(q.pop("offset", 0))
        try:
            limit = int(q.get("limit", 10))
            rows = _filter_chain(self.market.chain()[1] if underlying == self.market.symbol else [], q)
        except ValueError as exc:
            return self._error(400, str(exc))
        if not 0 < limit <= MAX_CHAIN_LIMIT:
            return self._error(400, f"limit must be between 1 and {MAX_CHAIN_LIMIT}")
        body: dict[str, Any] = {"request_id": self._rid(), "results": rows[offset : offset + limit], "status": "OK"}
        if offset + limit < len(rows):
            body["next_url"] = self._next_url(request, {**q, "offset": offset + limit})
        return web.json_response(body)

    # -- admin --------------------------------------------------------------------------------

    async def _admin_fail(self, request: web.Request) -> web.Response:
        doc = await request.json()
        self._fail.extend([int(doc.get("status", 503))] * int(doc.get("count", 1)))
        return web.json_response({"pending_failures": len(self._fail)})

    async def _admin_latency(self, request: web.Request) -> web.Response:
        doc = await request.json()
        self._latency_s = max(float(doc.get("seconds", 0.0)), 0.0)
        return web.json_response({"latency_s": self._latency_s})

    async def _admin_clock(self, request: web.Request) -> web.Response:
        doc = await request.json()
        self.market.asof_ns = int(doc["asof_ns"])
        return web.json_response({"asof_ns": self.market.asof_ns})

    async def _admin_drop(self, request: web.Request) -> web.Response:
        # {"skip_bars": N}: the market moves on while the clients are away (their next N bars are never sent).
        doc = await request.json() if request.can_read_body else {}
        skip = max(int(doc.get("skip_bars", 0)), 0)
        sockets = list(self._sockets)
        for ws in sockets:
            await ws.close(code=1011, message=b"sim: connection dropped")
        for cursor in self._cursors.values():
            cursor.index = min(cursor.index + skip, len(self.market.bars))
        self.stats.drops += len(sockets)
        return web.json_response({"dropped": len(sockets), "skipped_bars": skip})

    async def _admin_stats(self, _request: web.Request) -> web.Response:
        s = self.stats
        return web.json_response(
            {
                "connections": s.connections,
                "auth_failures": s.auth_failures,
                "drops": s.drops,
                "frames": s.frames,
                "rest_requests": s.rest_requests,
                "subscriptions": s.subscriptions,
                "asof_ns": self.market.asof_ns,
                "cursors": {k: c.index for k, c in self._cursors.items()},
            }
        )


def _day_bounds_ms(text: str) -> tuple[int, int]:
    d = dt.date.fromisoformat(text)
    start = dt.datetime.combine(d, dt.time(0), tzinfo=NEW_YORK)
    end = dt.datetime.combine(d + dt.timedelta(days=1), dt.time(0), tzinfo=NEW_YORK)
    return int(start.timestamp() * 1000), int(end.timestamp() * 1000) - 1


def _range_ms(start: str, end: str) -> tuple[int, int]:
    """Path ``from``/``to`` (``YYYY-MM-DD`` New York days, inclusive, or Unix ms) as an ms range."""
    lo = int(start) if start.isdigit() else _day_bounds_ms(start)[0]
    hi = int(end) if end.isdigit() else _day_bounds_ms(end)[1]
    return lo, hi


_OPS = {
    "": lambda a, b: a == b,
    "gte": lambda a, b: a >= b,
    "gt": lambda a, b: a > b,
    "lte": lambda a, b: a <= b,
    "lt": lambda a, b: a < b,
}


def _filter_chain(rows: list[dict[str, Any]], q: dict[str, Any]) -> list[dict[str, Any]]:
    """Apply the snapshot's filters, sort and order to its rows."""
    out = rows
    for name, value in q.items():
        base, _, op = name.partition(".")
        if base == "contract_type":
            out = [r for r in out if r["details"]["contract_type"] == value]
        elif base in ("strike_price", "expiration_date") and op in _OPS:
            target: Any = float(value) if base == "strike_price" else dt.date.fromisoformat(value).isoformat()
            out = [r for r in out if _OPS[op](r["details"][base], target)]
        elif base not in ("limit", "order", "sort", "cursor"):
            raise ValueError(f"unknown parameter {name!r}")
    sort = q.get("sort", "ticker")
    if sort not in ("ticker", "expiration_date", "strike_price"):
        raise ValueError(f"sort must be ticker, expiration_date or strike_price, got {sort!r}")
    out = sorted(out, key=lambda r: (r["details"][sort], r["details"]["ticker"]), reverse=q.get("order") == "desc")
    return out


def option_quotes_of(rows: list[dict[str, Any]]) -> list[OptionQuote]:
    """Snapshot rows back as OptionQuotes (what a faithful client must produce from them)."""
    return [
        OptionQuote(
            ts=r["last_quote"]["last_updated"],
            symbol=r["details"]["ticker"].removeprefix("O:"),
            underlying=r["underlying_asset"]["ticker"],
            expiry=r["details"]["expiration_date"],
            strike=float(r["details"]["strike_price"]),
            right="C" if r["details"]["contract_type"] == "call" else "P",
            bid=r["last_quote"]["bid"],
            ask=r["last_quote"]["ask"],
            bid_size=float(r["last_quote"]["bid_size"]),
            ask_size=float(r["last_quote"]["ask_size"]),
            open_interest=float(r["open_interest"]),
            underlying_price=r["underlying_asset"]["price"],
        )
        for r in rows
    ]


# --- CLI ----------------------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog="python -m services.sim.polygon", description=__doc__.splitlines()[0])
    p.add_argument("--port", type=int, required=True, help="TCP port on 127.0.0.1")
    p.add_argument("--data", required=True, help="bar file or flat-file tree (services.ingest.sources formats)")
    p.add_argument("--symbol", required=True, help="symbol to serve, e.g. SPY")
    p.add_argument("--rest-symbols", default="", help="more symbols REST aggregates serve from --data, "
                   "comma-separated (indices as I:SPX)")
    p.add_argument("--speed", type=parse_speed, default=0.0, help="replay pace: 0 = unpaced, 60x = a bar a second")
    p.add_argument("--api-key", default=None, help="accepted key (default: env POLYGON_API_KEY)")
    p.add_argument("--asof", default=None, help="chain snapshot time, ISO 8601 with offset (default: last bar)")
    p.add_argument("--drop-after", type=int, default=None, help="drop the first connection after N frames")
    p.add_argument("--entitlements", default="stocks,options,indices", help="clusters the key may use")
    p.add_argument("--host", default=LOOPBACK, help="listen address (loopback only by default)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    prog = "python -m services.sim.polygon"
    key = args.api_key or os.environ.get("POLYGON_API_KEY", "")
    if not key:
        fail(prog, "no API key: pass --api-key or set POLYGON_API_KEY")
    asof = None
    if args.asof:
        try:
            stamp = dt.datetime.fromisoformat(args.asof)
        except ValueError:
            fail(prog, f"--asof {args.asof!r} is not ISO 8601 (e.g. 2025-07-09T10:30:00-04:00)")
        if stamp.tzinfo is None:
            fail(prog, f"--asof {args.asof!r} needs a UTC offset")
        asof = int(stamp.timestamp()) * NS_PER_S
    config = PolygonSimConfig(
        data=Path(args.data),
        symbol=args.symbol.upper(),
        api_key=key,
        speed=args.speed,
        drop_after=args.drop_after,
        asof_ns=asof,
        entitlements=frozenset(x.strip() for x in args.entitlements.split(",") if x.strip()),
        rest_symbols=tuple(x.strip().upper() for x in args.rest_symbols.split(",") if x.strip()),
    )
    try:
        sim = PolygonSim.from_config(config)
    except DataSourceError as exc:
        fail(prog, str(exc))
    sys.stderr.write(f"polygon sim: {config.symbol} from {config.data} on {args.host}:{args.port}\n")
    serve(sim.app(), args.host, args.port)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
