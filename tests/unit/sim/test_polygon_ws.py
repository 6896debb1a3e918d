"""The real Polygon websocket client against the local sim: auth, subscribe, data, reconnect, secrecy."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable

import httpx
import pytest
from msgspec.structs import replace
from websockets.asyncio.client import connect

from services.core.events import Bar, OptionQuote, Quote, Trade
from services.ingest.polygon_parsing import PolygonMessageError
from services.ingest.polygon_ws import (
    PolygonStream,
    PolygonStreamAuthError,
    PolygonStreamConfig,
    PolygonStreamError,
    StreamItem,
    load_polygon_config,
)
from services.sim import SimServer
from services.sim.polygon import PolygonSim

from .conftest import POLYGON_KEY, SAMPLE, SimProcess, leaked, start_polygon


def stream(
    server: SimServer, *subs: str, cluster: str = "stocks", key: str = POLYGON_KEY, **kw: object
) -> PolygonStream:
    config = PolygonStreamConfig(
        url=f"{server.ws_url}/{cluster}", subscriptions=subs, backoff_s=0.01, backoff_max_s=0.05, **kw
    )  # type: ignore[arg-type]
    return PolygonStream(config, key)


async def collect(s: PolygonStream, done: Callable[[list[StreamItem]], bool], timeout: float = 30) -> list[StreamItem]:
    items: list[StreamItem] = []

    async def run() -> None:
        events = s.events()
        try:
            async for item in events:
                items.append(item)
                if done(items):
                    break
        finally:
            await s.close()
            await events.aclose()

    await asyncio.wait_for(run(), timeout)
    return items


def bars_of(items: list[StreamItem]) -> list[Bar]:
    return [i for i in items if isinstance(i, Bar)]


def test_wire_handshake_is_the_documented_one(polygon: tuple[SimServer, PolygonSim]) -> None:
    server, _ = polygon

    async def run() -> list[object]:
        async with connect(f"{server.ws_url}/stocks", max_queue=None) as ws:
            got = [json.loads(await ws.recv())]
            await ws.send(json.dumps({"action": "subscribe", "params": "AM.SPY"}))
            got.append(json.loads(await ws.recv()))
            await ws.send(json.dumps({"action": "auth", "params": POLYGON_KEY}))
            got.append(json.loads(await ws.recv()))
            await ws.send(json.dumps({"action": "subscribe", "params": "AM.SPY,Q.SPY"}))
            got.append(json.loads(await ws.recv()))
            return got

    connected, early, authed, subscribed = asyncio.run(run())
    assert connected == [{"ev": "status", "status": "connected", "message": "Connected Successfully"}]
    assert early == [{"ev": "status", "status": "error", "message": "not authorized"}]
    assert authed == [{"ev": "status", "status": "auth_success", "message": "authenticated"}]
    assert subscribed == [
        {"ev": "status", "status": "success", "message": "subscribed to: AM.SPY"},
        {"ev": "status", "status": "success", "message": "subscribed to: Q.SPY"},
    ]


def test_auth_success_then_every_bar_of_the_file_as_events(
    polygon: tuple[SimServer, PolygonSim], sample_bars: list[Bar]
) -> None:
    server, _ = polygon
    s = stream(server, "AM.SPY", "Q.SPY", "T.SPY")
    items = asyncio.run(collect(s, lambda got: len(bars_of(got)) == len(sample_bars)))
    bars = bars_of(items)
    # The sim adds a VWAP (the file has none): everything else is the file's bar.
    assert [replace(b, vwap=None) for b in bars] == sample_bars
    assert all(b.low <= (b.vwap or 0) <= b.high for b in bars)
    quotes = [i for i in items if isinstance(i, Quote)]
    trades = [i for i in items if isinstance(i, Trade)]
    assert not [i for i in items if isinstance(i, PolygonMessageError)]
    assert len(quotes) >= len(sample_bars)  # at least the closing quote of each bar
    traded = sum(round(b.volume) for b in sample_bars)
    assert sum(t.size for t in trades) == traded
    by_bar = {b.ts: b for b in sample_bars}
    for t in trades:
        bar = by_bar[t.ts - t.ts % (60 * 10**9)]
        assert bar.low <= t.price <= bar.high
    assert all(q.bid < q.ask and q.bid_size % 100 == 0 for q in quotes)
    assert s.stats.connects == 1 and s.stats.malformed == 0


def test_only_subscribed_channels_arrive(polygon: tuple[SimServer, PolygonSim]) -> None:
    server, _ = polygon
    s = stream(server, "T.SPY")
    items = asyncio.run(collect(s, lambda got: len(got) >= 200))
    assert {type(i) for i in items} == {Trade}


def test_wrong_key_is_refused_with_the_documented_status_and_no_secret(
    polygon: tuple[SimServer, PolygonSim], all_logs: pytest.LogCaptureFixture
) -> None:
    server, sim = polygon
    wrong = "pk-WRONG-0e41d27f3a9c"
    s = stream(server, "AM.SPY", key=wrong)
    with pytest.raises(PolygonStreamAuthError) as err:
        asyncio.run(collect(s, lambda got: False, timeout=10))
    assert "auth_failed" in str(err.value) and "authentication failed" in str(err.value)
    assert wrong not in str(err.value) and wrong not in repr(err.value) and wrong not in repr(s)
    assert sim.stats.auth_failures == 1 and s.stats.connects == 0
    assert leaked(wrong, all_logs) == []


def test_the_key_never_reaches_logs(polygon: tuple[SimServer, PolygonSim], all_logs: pytest.LogCaptureFixture) -> None:
    server, _ = polygon
    s = stream(server, "AM.SPY")
    asyncio.run(collect(s, lambda got: len(got) >= 5))
    assert all_logs.records  # something was logged at DEBUG (the check below is not vacuous)
    assert leaked(POLYGON_KEY, all_logs) == []
    assert POLYGON_KEY not in repr(s) and POLYGON_KEY not in repr(s.config)


def test_reconnects_after_the_sim_drops_the_connection_and_resumes(sample_bars: list[Bar]) -> None:
    server, sim = start_polygon(drop_after=40)
    try:
        s = stream(server, "AM.SPY", "Q.SPY")
        items = asyncio.run(collect(s, lambda got: len(bars_of(got)) == len(sample_bars)))
    finally:
        server.stop()
    assert sim.stats.drops == 1
    assert s.stats.connects == 2 and s.stats.disconnects == 1
    assert [replace(b, vwap=None) for b in bars_of(items)] == sample_bars  # no gap, no duplicate


def test_gives_up_after_max_reconnects_when_nothing_listens() -> None:
    from tests.harness.ports import free_port

    config = PolygonStreamConfig(url=f"ws://127.0.0.1:{free_port()}/stocks", backoff_s=0.01, max_reconnects=2)
    s = PolygonStream(config, POLYGON_KEY)
    with pytest.raises(PolygonStreamError, match="gave up after 2 reconnects"):
        asyncio.run(collect(s, lambda got: False, timeout=10))
    assert s.stats.disconnects == 3


def test_a_second_connection_with_the_same_key_ends_the_first(polygon: tuple[SimServer, PolygonSim]) -> None:
    server, _ = polygon

    async def run() -> list[object]:
        async with connect(f"{server.ws_url}/stocks", max_queue=None) as first:
            await first.recv()
            await first.send(json.dumps({"action": "auth", "params": POLYGON_KEY}))
            await first.recv()
            async with connect(f"{server.ws_url}/stocks", max_queue=None) as second:
                await second.recv()
                await second.send(json.dumps({"action": "auth", "params": POLYGON_KEY}))
                await second.recv()
                return [json.loads(await first.recv())]

    (kicked,) = asyncio.run(run())
    assert kicked == [
        {"ev": "status", "status": "max_connections", "message": "Maximum number of websocket connections exceeded."}
    ]


def test_options_cluster_streams_quotes_of_subscribed_contracts() -> None:
    server, sim = start_polygon()
    try:
        snap, _ = sim.market.chain(sim.market.end_ns(400))  # a regular-hours minute
        near = min(snap.quotes, key=lambda q: (q.expiry, abs(q.strike - snap.underlying_price), q.right))
        contract = near.symbol
        s = stream(server, f"Q.O:{contract}", cluster="options")
        items = asyncio.run(collect(s, lambda got: len(got) >= 20))
    finally:
        server.stop()
    quotes = [i for i in items if isinstance(i, OptionQuote)]
    assert len(quotes) == 20 and {q.symbol for q in quotes} == {contract}
    assert all(0 < q.bid < q.ask for q in quotes)  # at the money: two-sided
    stamps = [q.ts for q in quotes]
    assert stamps == sorted(set(stamps)) and all(t % (60 * 10**9) == 0 for t in stamps)  # one per bar end


def test_subscribe_and_unsubscribe_while_connected(polygon: tuple[SimServer, PolygonSim]) -> None:
    server, sim = polygon
    s = stream(server, "T.SPY")

    async def run() -> list[StreamItem]:
        items: list[StreamItem] = []
        async for item in s.events():
            items.append(item)
            if len(items) == 3:
                await s.subscribe("AM.SPY")
                await s.unsubscribe("T.SPY")
            if len(bars_of(items)) == 3:
                await s.close()
        return items

    items = asyncio.run(asyncio.wait_for(run(), 30))
    assert s.subscriptions == ("AM.SPY",)
    assert isinstance(items[-1], Bar)
    assert "AM.SPY" in sim.stats.subscriptions and "T.SPY" not in sim.stats.subscriptions


def test_cli_sim_serves_the_same_stream(sample_bars: list[Bar]) -> None:
    proc = SimProcess("services.sim.polygon", "--data", str(SAMPLE), "--symbol", "SPY", "--api-key", POLYGON_KEY)
    try:
        config = PolygonStreamConfig(url=f"ws://127.0.0.1:{proc.port}/stocks", subscriptions=("AM.SPY",))
        s = PolygonStream(config, POLYGON_KEY)
        items = asyncio.run(collect(s, lambda got: len(bars_of(got)) == 10))
        stats = httpx.get(f"{proc.url}/sim/stats").json()
    finally:
        proc.stop()
    assert [replace(b, vwap=None) for b in bars_of(items)] == sample_bars[:10]
    assert stats["connections"] == 1


def test_cli_refuses_a_missing_key_in_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    import subprocess
    import sys

    env = {k: v for k, v in __import__("os").environ.items() if k != "POLYGON_API_KEY"}
    out = subprocess.run(
        [sys.executable, "-m", "services.sim.polygon", "--port", "1", "--data", str(SAMPLE), "--symbol", "SPY"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == [
        "python -m services.sim.polygon: error: no API key: pass --api-key or set POLYGON_API_KEY"
    ]


def test_config_file_loads() -> None:
    config = load_polygon_config()
    assert config.websocket.market == "stocks"
    assert logging.getLogger("services.ingest.polygon_ws.wire").level == logging.WARNING
