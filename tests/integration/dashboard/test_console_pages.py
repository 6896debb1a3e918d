"""The trading pages in a real browser over a replayed real session.

``replayed_session`` (conftest) ran ``dreambot run`` over the real SPY recording of 2025-07-09; the
console (a subprocess, real redis-server, real Prometheus) reads its journal via ``--backtest-dir``.
Every expected value here comes from the recording CSV, ``trades.json`` or the journal's parquet files
read with pyarrow — never from the console's own code:

- chart: one candle per recorded minute with the CSV's prices, the session VWAP and ±1/2/3σ bands equal
  a VWAP computed here from the CSV's regular-session bars, every trade's entry and exit marker at the
  trades.json time and price, the brackets at the orders' take-profit and stop-loss prices;
- chain: the snapshot before a trade's exit, the IV smile's points equal the chain rows, the held
  contract (from trades.json) highlighted in the smile and the table;
- PnL: the curve ends at the sum of trades.json PnL, its drawdown equals one computed here;
- orders: one row per order leg in the journal, with every status each went through.

Live updates: with the whole day drawn, new bars are appended to the journal as new parquet parts; the
browser measures (performance.now() around each refresh request and plotly's redraw) how long an update
takes and the test PRINTS it (never asserts a wall-clock bound). A screenshot of each page goes to
``storage/screenshots/<page>.png``.
"""

from __future__ import annotations

import csv
import math
import statistics
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from selenium.webdriver.common.by import By

from tests.harness.ports import free_port
from tests.harness.prometheus_server import PrometheusServer
from tests.integration.dashboard.conftest import (
    OPERATOR_PASSWORD,
    Console,
    ReplayedSession,
    figure_data,
    screenshot,
    sign_in,
    until,
    wait_text,
)

pytestmark = pytest.mark.integration

NY = ZoneInfo("America/New_York")
UPDATES = 20
REFRESH_S = 0.5


def ny(ts_ns: int) -> str:
    """The wall-clock New York text of a ns time (computed with zoneinfo, not the console's pandas path)."""
    return datetime.fromtimestamp(ts_ns / 1e9, NY).strftime("%Y-%m-%d %H:%M:%S")


def iso_ny(text: str) -> str:
    """trades.json's ISO time with offset as New York wall-clock text."""
    return datetime.fromisoformat(text).astimezone(NY).strftime("%Y-%m-%d %H:%M:%S")


def iso_ns(text: str) -> int:
    return int(datetime.fromisoformat(text).timestamp()) * 10**9


def table(journal: Path, name: str) -> list[dict[str, Any]]:
    """Every row of a journal table, read straight from its parquet parts with pyarrow."""
    rows: list[dict[str, Any]] = []
    for part in sorted(journal.glob(f"{name}/session=*/date=*/*.parquet")):
        if part.name.startswith((".", "_")):
            continue
        rows.extend(pq.read_table(part).to_pylist())
    return sorted(rows, key=lambda r: r["ts"])


def recording(path: Path) -> list[dict[str, Any]]:
    """The CSV's bars: New York text time, ns time, OHLCV."""
    out = []
    with path.open() as f:
        for row in csv.DictReader(f):
            t = datetime.fromisoformat(row["Datetime"])
            out.append({"x": t.astimezone(NY).strftime("%Y-%m-%d %H:%M:%S"), "t": t.astimezone(NY),
                        "open": float(row["Open"]), "high": float(row["High"]), "low": float(row["Low"]),
                        "close": float(row["Close"]), "volume": float(row["Volume"])})
    return out


def session_vwap(bars: list[dict[str, Any]]) -> dict[str, tuple[float, float]]:
    """(VWAP, sigma) per regular-session bar (09:30 <= t < 16:00 New York) from typical prices,
    volume weighted; blank before the session's first volume."""
    out: dict[str, tuple[float, float]] = {}
    v = pv = pv2 = 0.0
    for b in bars:
        minutes = b["t"].hour * 60 + b["t"].minute
        if not 570 <= minutes < 960:
            continue
        p = (b["high"] + b["low"] + b["close"]) / 3
        v += b["volume"]
        pv += b["volume"] * p
        pv2 += b["volume"] * p * p
        if v > 0:
            mean = pv / v
            out[b["x"]] = (mean, math.sqrt(max(pv2 / v - mean * mean, 0.0)))
    return out


def trace(data: list[dict[str, Any]], name: str) -> dict[str, Any]:
    found = [t for t in data if t.get("name") == name]
    assert len(found) == 1, (name, [t.get("name") for t in data])
    return found[0]


def points(t: dict[str, Any], field: str = "y") -> list[tuple[str, float]]:
    """(x, value) pairs of a trace, gaps (None) left out."""
    return [(x, v) for x, v in zip(t["x"], t[field], strict=True) if x is not None and v is not None]


@pytest.fixture(scope="module")
def prometheus() -> Iterator[PrometheusServer]:
    """A real Prometheus (scraping itself) for the console's overview."""
    port = free_port()
    server = PrometheusServer([f"127.0.0.1:{port}"], port=port)
    try:
        server.start()
        yield server
    finally:
        server.close()


@pytest.fixture
def console(replayed_session: ReplayedSession, prometheus: PrometheusServer, session_name: str) -> Iterator[Console]:
    c = Console({"DREAMBOT_SESSION": session_name, "DREAMBOT_REDIS_URL": replayed_session.redis.url,
                 "DREAMBOT_PROMETHEUS_URL": prometheus.url},
                args=["--backtest-dir", str(replayed_session.output_dir)], refresh_s=REFRESH_S)
    try:
        yield c.wait()
    finally:
        c.close()


def _open(browser: Any, console: Console, path: str, ready_id: str) -> None:
    sign_in(browser, console, "alice", OPERATOR_PASSWORD, path)
    until(lambda: "/login" not in browser.current_url and bool(browser.find_elements(By.ID, ready_id)),
          f"the {path} page")


def _figure(browser: Any, graph: str, check: Any, what: str) -> list[dict[str, Any]]:
    holder: list[list[dict[str, Any]]] = []

    def ready() -> bool:
        data = figure_data(browser, graph)
        if data and check(data):
            holder[:] = [data]
            return True
        return False

    until(ready, what, timeout_s=40)
    return holder[0]


def test_chart_shows_the_day_with_bands_trades_and_brackets(browser: Any, console: Console,
                                                            replayed_session: ReplayedSession) -> None:
    bars = recording(replayed_session.data)
    trades = replayed_session.trades()
    orders = table(replayed_session.journal, "orders")
    _open(browser, console, "/chart", "chart-graph")
    data = _figure(browser, "chart-graph", lambda d: len(d) > 1 and len(d[0].get("x", [])) == len(bars),
                   f"{len(bars)} candles on the chart")

    # One candle per recorded minute, at its New York time, with the recording's prices.
    candles = data[0]
    assert candles["x"] == [b["x"] for b in bars]
    for field in ("open", "high", "low", "close"):
        assert candles[field] == pytest.approx([b[field] for b in bars], abs=1e-3), field

    # Session VWAP and bands, against the VWAP computed here from the CSV.
    expected = session_vwap(bars)
    vwap = dict(points(trace(data, "VWAP")))
    assert set(vwap) == set(expected) and len(vwap) > 300
    for x, (mean, _) in expected.items():
        assert vwap[x] == pytest.approx(mean, abs=2e-3), x
    for k in (1, 2, 3):
        for sign, name in ((1, f"VWAP +{k}σ"), (-1, f"VWAP −{k}σ")):
            band = dict(points(trace(data, name)))
            assert set(band) == set(expected), name
            for x, (mean, sigma) in expected.items():
                assert band[x] == pytest.approx(mean + sign * k * sigma, abs=5e-3), (name, x)

    # Every trade's entry and exit where trades.json says, at its fill prices.
    entries = sorted(points(trace(data, "entry")))
    exits = sorted(points(trace(data, "exit")))
    want_entries = sorted((iso_ny(t["entry_time"]), float(t["entry_price"])) for t in trades)
    want_exits = sorted((iso_ny(t["exit_time"]), float(t["exit_price"])) for t in trades)
    assert [x for x, _ in entries] == [x for x, _ in want_entries]
    assert [y for _, y in entries] == pytest.approx([y for _, y in want_entries], abs=1e-9)
    assert [x for x, _ in exits] == [x for x, _ in want_exits]
    assert [y for _, y in exits] == pytest.approx([y for _, y in want_exits], abs=1e-9)
    assert len(points(trace(data, "entry (underlying)"))) == len(trades)

    # Brackets at the orders' take-profit limits and stop-loss stops.
    tp_prices = {r["limit_price"] for r in orders if r["leg"] == "take_profit" and r["limit_price"] is not None}
    sl_prices = {r["stop_price"] for r in orders if r["leg"] == "stop_loss" and r["stop_price"] is not None}
    assert tp_prices and sl_prices
    assert {y for _, y in points(trace(data, "take profit"))} == tp_prices
    assert {y for _, y in points(trace(data, "stop loss"))} == sl_prices
    assert "SPY: " in wait_text(browser, "chart-status", f"{len(bars)} bars", f"{len(trades)} trades")
    screenshot(browser, "chart")


_MEASURE_JS = """
window.__lat = {requests: [], draws: []};
const origFetch = window.fetch;
window.fetch = function(url, opts) {
  const body = (opts && typeof opts.body === 'string') ? opts.body : '';
  if (String(url).includes('_dash-update-component') && body.includes('chart-refresh')) {
    const rec = {start: performance.now(), end: null, status: null};
    window.__lat.requests.push(rec);
    return origFetch.apply(this, arguments).then(r => {
      rec.end = performance.now(); rec.status = r.status; return r; });
  }
  return origFetch.apply(this, arguments);
};
const gd = document.querySelector('#chart-graph .js-plotly-plot');
gd.on('plotly_afterplot', () => window.__lat.draws.push(
  {at: performance.now(), wall: Date.now(), n: gd.data[0].x.length}));
return true;
"""


def _candles(browser: Any) -> int:
    data = figure_data(browser, "chart-graph")
    return len(data[0]["x"]) if data else 0


def _append_bar(journal: Path, template: Path, row: dict[str, Any], seq: int) -> None:
    """A new parquet part with one bar (the journal's own schema), written then renamed like a writer."""
    schema = pq.read_schema(template)
    part = template.parent / f"part-test-{seq:04d}.parquet"
    tmp = template.parent / f".part-test-{seq:04d}.parquet.tmp"
    pq.write_table(pa.Table.from_pylist([row], schema=schema), tmp)
    tmp.rename(part)


def test_a_full_day_updates_live_and_the_update_time_is_reported(
        browser: Any, console: Console, replayed_session: ReplayedSession) -> None:
    bars = recording(replayed_session.data)
    features = table(replayed_session.journal, "features")
    _open(browser, console, "/chart", "chart-graph")
    _figure(browser, "chart-graph", lambda d: len(d[0].get("x", [])) == len(bars), "the full day drawn")
    # The browser's own trim/parseInt, not Dash's core-js 2 polyfills (plotly parses a colour per candle
    # through them on every redraw). U+180E is whitespace to core-js 2 only.
    assert browser.execute_script(
        "return ['\u180e'.trim().length, Number.isNaN(parseInt('\u180e7')), Number.isNaN(parseFloat('\u180e7'))]"
    ) == [1, True, True]
    assert browser.execute_script(_MEASURE_JS)
    template = sorted(replayed_session.journal.glob("features/session=*/date=*/*.parquet"))[-1]
    last = dict(features[-1])
    written: list[tuple[int, float]] = []
    for i in range(1, UPDATES + 1):
        row = dict(last)
        row["ts"] = int(last["ts"]) + i * 60 * 10**9
        row["close"] = 700.0 + i  # far from the day's prices: unmistakably the appended bar
        row["high"] = max(float(row["high"]), row["close"])
        _append_bar(replayed_session.journal, template, row, i)
        written.append((len(bars) + i, time.time() * 1000))
        expect = written[-1][0]

        def appended(n: int = expect) -> bool:
            return _candles(browser) == n

        until(appended, f"bar {i} appended live", timeout_s=20)
    drawn = figure_data(browser, "chart-graph")
    assert drawn is not None
    assert drawn[0]["close"][-UPDATES:] == pytest.approx([700.0 + i for i in range(1, UPDATES + 1)])
    assert drawn[0]["x"][-1] == ny(int(last["ts"]) + (UPDATES - 1) * 60 * 10**9)  # rows at a bar's close

    lat = browser.execute_script("return window.__lat;")
    served = [r for r in lat["requests"] if r["status"] == 200 and r["end"] is not None]
    per_update: list[float] = []
    server: list[float] = []
    staleness: list[float] = []
    for n, wall_ms in written:
        draw = next((d for d in lat["draws"] if d["n"] == n), None)
        if draw is None:
            continue
        req = max((r for r in served if r["start"] <= draw["at"]), key=lambda r: r["start"], default=None)
        if req is not None:
            per_update.append(draw["at"] - req["start"])
            server.append(req["end"] - req["start"])
        staleness.append(draw["wall"] - wall_ms)
    assert per_update, lat
    redraw = [total - s for total, s in zip(per_update, server, strict=True)]
    # Printed, never asserted: a wall-clock bound would fail on a loaded machine, not on a slow console.
    print(f"\nconsole chart, full day ({len(bars)} bars) loaded, {len(per_update)} live updates "
          f"(refresh every {REFRESH_S * 1000:.0f} ms):\n"
          f"  request->redrawn   {_stats(per_update)}  target < 200 ms: "
          f"{'met' if statistics.median(per_update) < 200 else 'NOT met'} at the median, "
          f"{'met' if _p95(per_update) < 200 else 'NOT met'} at p95\n"
          f"    of which server (request->response) {_stats(server)}, "
          f"browser (response->plotly redrawn) {_stats(redraw)}\n"
          f"  data written->on screen {_stats(staleness)}  target < 1000 ms: "
          f"{'met' if max(staleness) < 1000 else 'NOT met'} (waits up to one refresh, then the update; "
          f"the 200 ms target is the update's)")


def _p95(values: list[float]) -> float:
    """Nearest-rank 95th percentile."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(0.95 * len(ordered)) - 1)]


def _stats(values: list[float]) -> str:
    return (f"median {statistics.median(values):6.1f} ms, p95 {_p95(values):6.1f} ms, "
            f"max {max(values):6.1f} ms")


def test_chain_page_shows_the_smile_with_the_held_contract(browser: Any, console: Console,
                                                           replayed_session: ReplayedSession) -> None:
    trades = replayed_session.trades()
    chain_rows = table(replayed_session.journal, "chain")
    trade = trades[0]
    at = iso_ns(trade["exit_time"]) - 1
    snap_ts = max(r["ts"] for r in chain_rows if r["ts"] <= at)
    snap = [r for r in chain_rows if r["ts"] == snap_ts]
    held = {t["contract"] for t in trades if iso_ns(t["entry_time"]) <= snap_ts < iso_ns(t["exit_time"])}
    assert trade["contract"] in held
    contract = trade["contract"]  # OCC: root, yymmdd, C/P, strike x 1000
    right, strike = contract[-9], int(contract[-8:]) / 1000
    _open(browser, console, f"/chain?at={at}", "chain-smile")
    data = _figure(browser, "chain-smile", lambda d: any(t.get("name") == "held" and t.get("x") for t in d),
                   "the smile with the held contract")
    smile = {(r["strike"], r["right"]): r["iv"] for r in snap}
    for name, r in (("IV calls", "C"), ("IV puts", "P")):
        got = points(trace(data, name))
        want = sorted((k, v) for (k, rr), v in smile.items() if rr == r and v is not None and math.isfinite(v))
        assert [float(k) for k, _ in sorted(got)] == [k for k, _ in want], name
        assert [v for _, v in sorted(got)] == pytest.approx([v for _, v in want]), name
    marked = trace(data, "held")
    assert [float(x) for x in marked["x"]] == [strike]
    assert marked["y"] == [pytest.approx(smile[(strike, right)])]
    row = browser.find_element(By.ID, f"chain-row-{strike:g}")
    assert f"held-{right}" in (row.get_attribute("class") or "")
    assert contract in wait_text(browser, "chain-status", ny(snap_ts))
    screenshot(browser, "chain")


def test_pnl_page_shows_the_days_curve_and_drawdown(browser: Any, console: Console,
                                                    replayed_session: ReplayedSession) -> None:
    trades = sorted(replayed_session.trades(), key=lambda t: iso_ns(t["exit_time"]))
    total, peak, dd = 0.0, 0.0, [0.0]
    for t in trades:
        total += t["pnl"]
        peak = max(peak, total)
        dd.append(total - peak)
    _open(browser, console, "/pnl", "pnl-graph")
    data = _figure(browser, "pnl-graph", lambda d: len(d) == 2 and len(d[0].get("y", [])) == len(trades) + 1,
                   "the PnL curve")
    assert data[0]["y"][-1] == pytest.approx(total, abs=1e-6)
    assert data[0]["x"][1:] == [iso_ny(t["exit_time"]) for t in trades]
    assert data[1]["y"] == pytest.approx(dd, abs=1e-6)
    net = f"-${abs(total):,.2f}" if total < 0 else f"${total:,.2f}"
    assert wait_text(browser, "pnl-net", net) == net
    assert wait_text(browser, "pnl-trades", str(len(trades))) == str(len(trades))
    screenshot(browser, "pnl")


def test_orders_page_lists_every_leg_with_its_lifecycle(browser: Any, console: Console,
                                                        replayed_session: ReplayedSession) -> None:
    orders = table(replayed_session.journal, "orders")
    by_id: dict[str, list[dict[str, Any]]] = {}
    for r in orders:
        by_id.setdefault(r["order_id"], []).append(r)
    _open(browser, console, "/orders", "orders-lifecycle")
    wait_text(browser, "orders-status", f"{len(by_id)} order legs", f"from {len(orders)} order events")
    rows = browser.find_elements(By.CSS_SELECTOR, "#orders-lifecycle-table tbody tr")
    assert len(rows) == len(by_id)
    for order_id, events in by_id.items():
        text = browser.find_element(By.ID, f"orders-row-{order_id}").text
        assert events[-1]["status"] in text and events[0]["contract"] in text
        for e in events:
            assert f"{e['status']} {ny(e['ts'])[11:]}" in text, (order_id, e["status"])
    screenshot(browser, "orders")
