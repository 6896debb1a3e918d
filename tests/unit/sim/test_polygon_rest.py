"""The real Polygon REST client against the local sim: bars, chain snapshot, pagination, errors, retries."""

from __future__ import annotations

import datetime as dt

import httpx
import pytest
from msgspec.structs import replace

from services.core.events import Bar
from services.core.settings import ConfigError
from services.ingest.polygon_rest import PolygonAuthError, PolygonRest, PolygonRestConfig, PolygonRestError
from services.ingest.synthetic_chain import synthetic_chain
from services.sim import SimServer
from services.sim.polygon import PolygonSim, chain_expiries

from .conftest import POLYGON_KEY, leaked, start_polygon

DAY = "2025-07-09"


def client(server: SimServer, key: str = POLYGON_KEY, **kw: object) -> PolygonRest:
    config = PolygonRestConfig(base_url=server.url, backoff_s=0.0, **kw)  # type: ignore[arg-type]
    return PolygonRest(config, key, sleep=lambda _s: None)


def test_aggregates_equal_the_file_following_next_url(
    polygon: tuple[SimServer, PolygonSim], sample_bars: list[Bar]
) -> None:
    server, _ = polygon
    with client(server, aggs_page_limit=100) as rest:
        bars = rest.aggregates("SPY", 1, "minute", DAY, DAY)
        pages = rest.requests
    assert pages == -(-len(sample_bars) // 100)  # every page fetched, by next_url
    assert [replace(b, vwap=None, trades=None) for b in bars] == sample_bars
    assert all(b.low <= (b.vwap or 0) <= b.high and (b.trades or 0) >= 0 for b in bars)


def test_aggregates_by_unix_ms_range_descending(polygon: tuple[SimServer, PolygonSim], sample_bars: list[Bar]) -> None:
    server, _ = polygon
    lo, hi = sample_bars[10].ts // 10**6, sample_bars[19].ts // 10**6
    with client(server, aggs_page_limit=3) as rest:
        bars = rest.aggregates("SPY", 1, "minute", lo, hi, sort="desc")
    assert [replace(b, vwap=None, trades=None) for b in bars] == sample_bars[10:20][::-1]


def test_five_minute_and_day_bars_roll_up_the_minutes(
    polygon: tuple[SimServer, PolygonSim], sample_bars: list[Bar]
) -> None:
    server, _ = polygon
    with client(server) as rest:
        five = rest.aggregates("SPY", 5, "minute", DAY, DAY)
        (day,) = rest.aggregates("SPY", 1, "day", DAY, DAY)
    assert all(b.interval_s == 300 and b.ts % (300 * 10**9) == 0 for b in five)
    first = [b for b in sample_bars if b.ts - b.ts % (300 * 10**9) == five[0].ts]
    assert (five[0].open, five[0].close) == (first[0].open, first[-1].close)
    assert five[0].high == max(b.high for b in first) and five[0].volume == sum(b.volume for b in first)
    assert day.volume == sum(b.volume for b in sample_bars) and day.interval_s == 86_400
    assert day.ts == int(dt.datetime(2025, 7, 9, tzinfo=dt.timezone(dt.timedelta(hours=-4))).timestamp()) * 10**9


def test_unknown_ticker_is_an_empty_list(polygon: tuple[SimServer, PolygonSim]) -> None:
    server, _ = polygon
    with client(server) as rest:
        assert rest.aggregates("QQQ", 1, "minute", DAY, DAY) == []


def test_option_chain_is_the_synthetic_chain_across_pages() -> None:
    asof = int(dt.datetime(2025, 7, 9, 10, 30, tzinfo=dt.timezone(dt.timedelta(hours=-4))).timestamp()) * 10**9
    server, sim = start_polygon(asof_ns=asof)
    try:
        with client(server, chain_page_limit=50) as rest:
            chain = rest.option_chain("SPY")
            pages = rest.requests
            calls = rest.option_chain(
                "SPY", contract_type="call", expiration_date="2025-07-09", strike_gte=620, strike_lte=625
            )
    finally:
        server.stop()
    spot = sim.market.spot_at(asof)
    expected = synthetic_chain("SPY", spot, asof, chain_expiries(asof), seed=20250709)
    assert pages == -(-len(expected.quotes) // 50) > 1
    assert chain.underlying == "SPY" and chain.underlying_price == spot and chain.ts == asof
    assert sorted(chain.quotes, key=lambda q: q.symbol) == sorted(expected.quotes, key=lambda q: q.symbol)
    assert calls.quotes and all(
        q.right == "C" and q.expiry == "2025-07-09" and 620 <= q.strike <= 625 for q in calls.quotes
    )


def test_snapshot_rows_carry_greeks_and_iv(polygon: tuple[SimServer, PolygonSim]) -> None:
    server, _ = polygon
    body = httpx.get(
        f"{server.url}/v3/snapshot/options/SPY",
        params={"limit": 100, "contract_type": "call"},
        headers={"Authorization": f"Bearer {POLYGON_KEY}"},
    ).json()
    assert body["status"] == "OK" and len(body["results"]) == 100 and "cursor=" in body["next_url"]
    row = min(body["results"], key=lambda r: abs(r["details"]["strike_price"] - r["underlying_asset"]["price"]))
    assert set(row) >= {
        "break_even_price",
        "day",
        "details",
        "greeks",
        "implied_volatility",
        "last_quote",
        "open_interest",
        "underlying_asset",
    }
    assert 0.3 < row["greeks"]["delta"] < 0.7 and row["greeks"]["theta"] < 0 < row["implied_volatility"]
    assert row["details"]["ticker"].startswith("O:SPY")


def test_wrong_or_missing_key_gives_the_real_error_without_the_key(
    polygon: tuple[SimServer, PolygonSim], all_logs: pytest.LogCaptureFixture
) -> None:
    server, _ = polygon
    wrong = "pk-WRONG-9c0e41d27f3a"
    with client(server, key=wrong) as rest, pytest.raises(PolygonAuthError) as err:
        rest.aggregates("SPY", 1, "minute", DAY, DAY)
    assert "HTTP 401 ERROR: Unknown API Key" in str(err.value) and "POLYGON_API_KEY" in str(err.value)
    assert wrong not in str(err.value) and wrong not in repr(rest)
    assert leaked(wrong, all_logs) == []
    bare = httpx.get(f"{server.url}/v2/aggs/ticker/SPY/range/1/minute/{DAY}/{DAY}")
    assert bare.status_code == 401
    assert bare.json() == {"status": "ERROR", "request_id": "", "error": "API Key was not provided"}
    query_key = httpx.get(f"{server.url}/v2/aggs/ticker/SPY/range/1/minute/{DAY}/{DAY}?apiKey={POLYGON_KEY}")
    assert query_key.status_code == 200 and query_key.json()["status"] == "OK"


def test_not_entitled_is_not_authorized() -> None:
    server, _ = start_polygon(entitlements=frozenset({"stocks"}))
    try:
        with (
            client(server) as rest,
            pytest.raises(PolygonAuthError, match="HTTP 403 NOT_AUTHORIZED: You are not entitled"),
        ):
            rest.option_chain("SPY")
    finally:
        server.stop()


def test_rate_limits_and_server_errors_are_retried(polygon: tuple[SimServer, PolygonSim]) -> None:
    server, _ = polygon
    httpx.post(f"{server.url}/sim/fail", json={"status": 429, "count": 2})
    with client(server, retries=3) as rest:
        assert len(rest.aggregates("SPY", 1, "minute", DAY, DAY)) > 0
        assert rest.requests == 3
    httpx.post(f"{server.url}/sim/fail", json={"status": 503, "count": 5})
    with client(server, retries=2) as rest, pytest.raises(PolygonRestError, match="HTTP 503 ERROR"):
        rest.aggregates("SPY", 1, "minute", DAY, DAY)


def test_next_url_to_another_host_is_refused() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            200,
            json={
                "status": "OK",
                "ticker": "SPY",
                "results": [{"o": 1, "h": 1, "l": 1, "c": 1, "v": 1, "t": 0}],
                "next_url": "https://evil.example/v2/aggs?cursor=x",
            },
        )

    config = PolygonRestConfig(base_url="https://api.polygon.io")
    with (
        PolygonRest(config, POLYGON_KEY, transport=httpx.MockTransport(handler)) as rest,
        pytest.raises(PolygonRestError, match=r"refusing to follow next_url to https://evil\.example"),
    ):
        rest.aggregates("SPY", 1, "minute", DAY, DAY)


def test_missing_key_is_one_config_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("POLYGON_API_KEY", raising=False)
    monkeypatch.delenv("MASSIVE_API_KEY", raising=False)
    with pytest.raises(ConfigError, match="no Polygon API key: set POLYGON_API_KEY"):
        PolygonRest()
    monkeypatch.setenv("MASSIVE_API_KEY", "from-env")
    PolygonRest().close()
