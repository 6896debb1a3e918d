"""Every query of the shipped Grafana dashboards against a real Prometheus: each parses (a parse error
is HTTP 400), and the stage series' queries compute what their panels say from real stage exporters
(services.core.metrics.StageMetrics with known values; expected numbers worked out by hand)."""

from __future__ import annotations

import json
import re
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, start_http_server

from services.core.metrics import StageMetrics
from tests.harness.ports import free_port
from tests.harness.prometheus_server import PrometheusServer

pytestmark = pytest.mark.integration

DASHBOARDS = Path(__file__).resolve().parents[3] / "charts" / "dreambot" / "files" / "dashboards"
NAMESPACE, SESSION = "dreambot", "paper-etf"
# What Grafana puts in for the template variables with one namespace and one session selected.
SUBSTITUTE = {"$namespace": NAMESPACE, "$session": SESSION, "$__rate_interval": "1m", "$__range": "1h"}


def substitute(expr: str) -> str:
    for var, value in SUBSTITUTE.items():
        expr = expr.replace(var, value)
    assert "$" not in expr, expr
    return expr


def boards() -> dict[str, dict[str, Any]]:
    return {p.stem: json.loads(p.read_text()) for p in sorted(DASHBOARDS.glob("*.json"))}


def panel_queries() -> list[tuple[str, str, str, str]]:
    """(dashboard, panel title, legend, substituted expr) of every target."""
    return [(name, p["title"], t.get("legendFormat", ""), substitute(t["expr"]))
            for name, b in boards().items() for p in b["panels"] if p["type"] != "row" for t in p["targets"]]


def variable_queries() -> list[tuple[str, str, str, str]]:
    """(dashboard, variable, label, the series selector inside label_values(selector, label))."""
    out = []
    for name, board in boards().items():
        for var in board["templating"]["list"]:
            if var["type"] == "query":
                match = re.fullmatch(r"label_values\((.+), (\w+)\)", var["query"])
                assert match, var["query"]
                out.append((name, var["name"], match.group(2), substitute(match.group(1))))
    return out


def query(prom: PrometheusServer, expr: str) -> tuple[int, dict[str, Any]]:
    """HTTP status and body of an instant query (Prometheus answers a parse error with 400)."""
    url = f"{prom.url}/api/v1/query?{urllib.parse.urlencode({'query': expr})}"
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def values(prom: PrometheusServer, expr: str, label: str) -> dict[str, float]:
    status, doc = query(prom, expr)
    assert status == 200, doc
    return {r["metric"].get(label, ""): float(r["value"][1]) for r in doc["data"]["result"]}


def _wait(prom: PrometheusServer, expr: str, want: float, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        status, doc = query(prom, expr)
        if status == 200 and any(float(r["value"][1]) == want for r in doc["data"]["result"]):
            return
        time.sleep(0.2)
    raise TimeoutError(f"{expr} never reached {want}")


@pytest.fixture(scope="module")
def prometheus() -> Iterator[PrometheusServer]:
    """risk, signals and oms exporters with known values, scraped with the session's labels."""
    stages = {name: StageMetrics(name, CollectorRegistry()) for name in ("risk", "signals", "oms")}
    risk, signals, oms = stages["risk"], stages["signals"], stages["oms"]
    risk.kill_switch.labels("risk").set(1)
    risk.feed_stale.labels("risk").set(0)
    risk.daily_pnl.labels("risk").set(-420.5)
    risk.daily_loss_limit.labels("risk").set(1500)
    risk.market_data_age.labels("risk", "SPY").set(3.0)
    risk.entries_refused.labels("risk", "stale_feed").inc(2)
    risk.pnl.labels("risk", "realized").set(999)  # risk's own view: the PnL panel must not add it
    risk.set_lag({"intents": 7})
    risk.count_in("intents")
    risk.observe_processing(0.003)
    signals.tick_to_intent.labels("signals")
    signals.count_out("intents")
    oms.pnl.labels("oms", "realized").set(125.5)
    oms.pnl.labels("oms", "unrealized").set(-20)
    oms.orders.labels("oms", "filled").inc(3)
    oms.orders.labels("oms", "rejected").inc(1)
    oms.broker_errors.labels("oms", "timeout").inc()
    oms.reconciled.labels("oms").set(1)
    oms.dead_letters.labels("oms").inc()
    oms.duplicates.labels("oms").inc()
    oms.state_failed("get")
    oms.tick_to_order.labels("oms")
    oms.intent_to_order.labels("oms")
    for m in stages.values():
        m.ready.labels(m.stage).set(1)
    risk.state_ok()
    for m in (risk, signals):  # the calibration in force, as services.app.stages.calibration_gauges sets it
        m.calibration_loaded.labels(m.stage).set(1_764_000_000)
        m.calibration_info.labels(m.stage, "2026-11-02", "2026-11-27", "run-7f3a", "ab12").set(1)
    servers, ports = [], []
    for m in stages.values():
        port = free_port()
        servers.append(start_http_server(port, addr="127.0.0.1", registry=m.registry))
        ports.append(port)
    prom = PrometheusServer([f"127.0.0.1:{p}" for p in ports], labels={"namespace": NAMESPACE, "session": SESSION},
                            scrape_interval_s=0.5)
    try:
        prom.start()
        counts = [f'dreambot_{h}_seconds_count{{session="{SESSION}"}}' for h in ("tick_to_order", "tick_to_intent")]
        for count in counts:  # both exporters scraped at 0 before the observations below
            prom.wait_for(count)
        # Ten orders 12 ms after their tick, seen between two scrapes: every bucket from le=0.02 up
        # gains 10 and le=0.01 none, so the rate's p50 is 0.01 + 0.01 * 5/10 and p99 0.01 + 0.01 * 9.9/10.
        for _ in range(10):
            oms.observe(oms.tick_to_order, 0.012)
            signals.observe(signals.tick_to_intent, 0.012)
        for count in counts:
            _wait(prom, count, 10)
        time.sleep(1.5)  # a few more scrapes, so rate() has its two samples on each side
        yield prom
    finally:
        prom.close()
        for server, _thread in servers:
            server.shutdown()


def test_a_broken_query_is_refused_with_400(prometheus: PrometheusServer) -> None:
    status, doc = query(prometheus, 'sum by (session (rate(dreambot_orders_total{session="x"}[1m]))')
    assert status == 400 and doc["errorType"] == "bad_data"


@pytest.mark.parametrize(("board", "title", "legend", "expr"), panel_queries(),
                         ids=[f"{b}:{t}:{i}" for i, (b, t, _, _) in enumerate(panel_queries())])
def test_every_panel_query_parses_and_selects_what_the_stages_export(
    prometheus: PrometheusServer, board: str, title: str, legend: str, expr: str
) -> None:
    status, doc = query(prometheus, expr)
    assert status == 200 and doc["status"] == "success", (title, expr, doc)
    if "kube_" not in expr:  # kube-state-metrics' series (the jobs board) are not served here: parse only
        assert doc["data"]["result"], f"{title}: {expr} selects nothing the stages export"
        for series in doc["data"]["result"]:
            for label in re.findall(r"\{\{(\w+)\}\}", legend):  # every legend label is on the series
                assert series["metric"].get(label), (title, label, series["metric"])


@pytest.mark.parametrize(("board", "var", "label", "selector"), variable_queries())
def test_every_variable_query_parses_and_offers_the_session(prometheus: PrometheusServer, board: str, var: str,
                                                            label: str, selector: str) -> None:
    status, doc = query(prometheus, selector)
    assert status == 200, doc
    if board != "jobs":
        assert {r["metric"][label] for r in doc["data"]["result"]} == {NAMESPACE if var == "namespace" else SESSION}


def _expr(board: str, title: str, ref: int = 0) -> str:
    (panel,) = [p for p in boards()[board]["panels"] if p["type"] != "row" and p["title"] == title]
    return substitute(panel["targets"][ref]["expr"])


def test_trading_queries_compute_the_panels_values(prometheus: PrometheusServer) -> None:
    assert values(prometheus, _expr("trading", "Kill switch"), "session") == {SESSION: 1.0}
    assert values(prometheus, _expr("trading", "Market data feed"), "session") == {SESSION: 0.0}
    assert values(prometheus, _expr("trading", "Reconciliation"), "session") == {SESSION: 1.0}
    assert values(prometheus, _expr("trading", "Daily PnL against the loss limit", 0), "session") == {SESSION: -420.5}
    assert values(prometheus, _expr("trading", "Daily PnL against the loss limit", 1), "session") == {SESSION: -1500.0}
    assert values(prometheus, _expr("trading", "Realised and unrealised PnL"), "kind") == {
        "realized": 125.5, "unrealized": -20.0}
    assert values(prometheus, _expr("trading", "Market-data age"), "symbol") == {"SPY": 3.0}
    assert set(values(prometheus, _expr("trading", "Orders by status"), "status")) == {"filled", "rejected"}


def test_pipeline_latency_quantiles_from_the_buckets(prometheus: PrometheusServer) -> None:
    p50 = values(prometheus, _expr("pipeline", "Tick to order p50 / p99", 0), "session")
    p99 = values(prometheus, _expr("pipeline", "Tick to order p50 / p99", 1), "session")
    assert p50[SESSION] == pytest.approx(0.015)
    assert p99[SESSION] == pytest.approx(0.0199)
    intent = values(prometheus, _expr("pipeline", "Tick to intent p50 / p99", 0), "session")
    assert intent[SESSION] == pytest.approx(0.015)
    assert values(prometheus, _expr("pipeline", "Kafka consumer lag"), "topic") == {"intents": 7.0}
    assert values(prometheus, _expr("pipeline", "State store"), "stage") == {"risk": 1.0, "oms": 0.0}


def test_jobs_calibration_table_names_the_calibration_each_stage_uses(prometheus: PrometheusServer) -> None:
    status, doc = query(prometheus, _expr("jobs", "Calibration in force"))
    assert status == 200
    rows = sorted((r["metric"]["stage"], r["metric"]["first_session"], r["metric"]["last_session"],
                   r["metric"]["mlflow_run_id"], r["value"][1]) for r in doc["data"]["result"])
    assert rows == [("risk", "2026-11-02", "2026-11-27", "run-7f3a", "1"),
                    ("signals", "2026-11-02", "2026-11-27", "run-7f3a", "1")]
