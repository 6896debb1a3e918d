"""The Grafana dashboards the chart ships: regenerated verbatim by the README's command, exactly what
the Grafana SDK's typed dashboard model (generated from Grafana's schema) holds, with their template
variables and units, and querying only series that exist (services/core/metrics.py, or
kube-state-metrics' standard ones)."""

from __future__ import annotations

import copy
import json
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models.dashboard import Dashboard
from prometheus_client import CollectorRegistry

from services.core.metrics import StageMetrics

ROOT = Path(__file__).resolve().parents[3]
DASHBOARDS = ROOT / "charts" / "dreambot" / "files" / "dashboards"
NAMES = ("trading", "pipeline", "jobs")
REGENERATE = "python -m ops.grafana.generate"

# kube-state-metrics' standard CronJob and Job series (its docs: cronjob-metrics.md, job-metrics.md).
KUBE_STATE_METRICS = {
    "kube_cronjob_info", "kube_cronjob_next_schedule_time", "kube_cronjob_status_active",
    "kube_cronjob_status_last_schedule_time", "kube_cronjob_status_last_successful_time",
    "kube_cronjob_spec_suspend", "kube_job_status_succeeded", "kube_job_status_failed",
    "kube_job_status_active", "kube_job_status_start_time", "kube_job_status_completion_time",
    "kube_job_owner",
}
PROMQL_WORDS = {"and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring",
                "group_left", "group_right", "inf", "nan"}


def load(name: str) -> dict[str, Any]:
    return dict(json.loads((DASHBOARDS / f"{name}.json").read_text()))


def panels(board: dict[str, Any]) -> list[dict[str, Any]]:
    return [p for p in board["panels"] if p["type"] != "row"]


def exprs(board: dict[str, Any]) -> list[str]:
    return [t["expr"] for p in panels(board) for t in p["targets"]]


def metric_names(expr: str) -> set[str]:
    """Series names a PromQL expression selects: identifiers that are neither functions, keywords,
    label names (inside {} or a by/on clause), strings nor durations."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    text = re.sub(r"\{[^}]*\}", " ", text)
    text = re.sub(r"\[[^\]]*\]", " ", text)
    text = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    names = re.findall(r"(?<![\w:.$])([A-Za-z_:][\w:]*)\b(?!\s*\()", text)
    return {n for n in names if n.lower() not in PROMQL_WORDS}


def exported_series() -> set[str]:
    """What a stage's /metrics serves, by the exposition rules for each family's type."""
    families = StageMetrics("oms", CollectorRegistry()).registry.collect()
    suffixes = {"counter": ("_total", "_created"), "gauge": ("",), "histogram": ("_bucket", "_sum", "_count",
                                                                                  "_created")}
    return {f.name + s for f in families for s in suffixes[f.type]}


def test_the_metric_name_reader_finds_series_and_skips_labels_functions_and_durations() -> None:
    expr = ('histogram_quantile(0.99, sum by (session, le) (rate(a_bucket{stage="x", le!="1"}[5m]))) '
            '/ on (session) group_left(kind) b_total offset 5m - time() + c > bool 2')
    assert metric_names(expr) == {"a_bucket", "b_total", "c"}


def test_committed_dashboards_equal_a_fresh_run_of_the_readme_command(tmp_path: Path) -> None:
    readme = (ROOT / "README.md").read_text()
    assert f"`{REGENERATE}`" in readme, "the README documents the regenerate command"
    argv = shlex.split(REGENERATE)
    assert argv[0] == "python"
    # Verbatim, from an empty folder: the command writes below the current directory, so the committed
    # files stay untouched and are compared with what it wrote.
    out = subprocess.run([sys.executable, *argv[1:]], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    fresh = tmp_path / "charts" / "dreambot" / "files" / "dashboards"
    assert sorted(p.name for p in fresh.iterdir()) == sorted(p.name for p in DASHBOARDS.iterdir()) == sorted(
        f"{n}.json" for n in NAMES)
    for name in NAMES:
        assert (fresh / f"{name}.json").read_bytes() == (DASHBOARDS / f"{name}.json").read_bytes(), (
            f"charts/dreambot/files/dashboards/{name}.json is stale or hand-edited: run `{REGENERATE}`")


def test_an_unwritable_output_folder_is_one_line_and_exit_status_1(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    out = subprocess.run([sys.executable, "-m", "ops.grafana.generate", "--out", str(blocker / "x")],
                         cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert out.returncode == 1
    assert out.stderr.startswith(f"cannot write dashboards to {blocker / 'x'}:") and out.stderr.count("\n") == 1


def round_trip(board: dict[str, Any]) -> dict[str, Any]:
    """The board decoded by the SDK's typed dashboard model (generated from Grafana's dashboard schema)
    and encoded again: a key the model does not know is dropped, a wrong shape fails to decode."""
    return dict(json.loads(json.dumps(Dashboard.from_json(board), cls=JSONEncoder)))


@pytest.mark.parametrize("name", NAMES)
def test_each_dashboard_is_exactly_what_grafanas_dashboard_model_holds(name: str) -> None:
    board = load(name)
    assert round_trip(copy.deepcopy(board)) == board


def test_the_model_check_refuses_what_grafana_would_not_load() -> None:
    """The check is strict enough to catch a mistake (else passing it proves nothing)."""
    board = load("trading")
    typo = copy.deepcopy(board)
    typo["panels"][1]["gridpos"] = typo["panels"][1].pop("gridPos")
    no_templating = copy.deepcopy(board)
    del no_templating["templating"]
    unit_typo = copy.deepcopy(board)
    unit_typo["panels"][1]["fieldConfig"]["defaults"]["unitt"] = "s"
    for broken in (typo, no_templating, unit_typo):
        assert round_trip(copy.deepcopy(broken)) != broken
    bad_grid = copy.deepcopy(board)
    bad_grid["panels"][1]["gridPos"] = "x"
    with pytest.raises(TypeError):
        round_trip(bad_grid)


@pytest.mark.parametrize("name", NAMES)
def test_template_variables_for_datasource_namespace_and_session(name: str) -> None:
    board = load(name)
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert list(variables) == ["datasource", "namespace", "session"]
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    for var in ("namespace", "session"):
        assert variables[var]["type"] == "query"
        assert variables[var]["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        assert variables[var]["query"].startswith("label_values(")
    assert 'namespace=~"$namespace"' in variables["session"]["query"]
    for panel in panels(board):
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        for target in panel["targets"]:
            assert '"$namespace"' in target["expr"] and "$session" in target["expr"], target["expr"]
    ids = [p["id"] for p in board["panels"]]
    assert ids == list(range(1, len(ids) + 1))
    assert len({p["title"] for p in panels(board)}) == len(panels(board))


def units(name: str) -> dict[str, str]:
    return {p["title"]: p["fieldConfig"]["defaults"]["unit"] for p in panels(load(name))}


def test_units_are_set_on_every_panel() -> None:
    trading, pipeline, jobs = units("trading"), units("pipeline"), units("jobs")
    assert trading["Daily PnL against the loss limit"] == "currencyUSD"
    assert trading["Realised and unrealised PnL"] == "currencyUSD"
    assert trading["Daily PnL"] == "currencyUSD"
    assert trading["Market-data age"] == "s"
    assert trading["Orders in the time range"] == "short"
    for title in ("Tick to intent p50 / p99", "Intent to order p50 / p99", "Tick to order p50 / p99",
                  "Processing time per stage p50 / p99"):
        assert pipeline[title] == "s"
    assert pipeline["Kafka consumer lag"] == "short"
    assert jobs["Since last success"] == "s" and jobs["Run duration"] == "s"
    for table in (trading, pipeline, jobs):
        assert all(table.values()), table


def test_trading_shows_what_the_issue_asks_for() -> None:
    queried = {n for e in exprs(load("trading")) for n in metric_names(e)}
    assert queried == {
        "dreambot_kill_switch_engaged", "dreambot_daily_pnl_usd", "dreambot_daily_loss_limit_usd",
        "dreambot_pnl_usd", "dreambot_orders_total", "dreambot_entries_refused_total", "dreambot_feed_stale",
        "dreambot_market_data_age_seconds", "dreambot_reconciled", "dreambot_broker_errors_total",
    }
    (kill,) = [p for p in panels(load("trading")) if p["title"] == "Kill switch"]
    texts = {k: v["text"] for m in kill["fieldConfig"]["defaults"]["mappings"] for k, v in m["options"].items()}
    assert texts == {"0": "off", "1": "ENGAGED"}


def test_pipeline_has_p50_and_p99_of_each_latency_histogram() -> None:
    found = set()
    for expr in exprs(load("pipeline")):
        match = re.fullmatch(r"histogram_quantile\((0\.5|0\.99), sum by \(([\w, ]+), le\) \(rate\((\w+)_bucket"
                             r'\{namespace=~"\$namespace", session=~"\$session"\}\[\$__rate_interval\]\)\)\)', expr)
        if match:
            found.add((match.group(3), match.group(1)))
    assert found == {(h, q) for h in ("dreambot_tick_to_intent_seconds", "dreambot_intent_to_order_seconds",
                                      "dreambot_tick_to_order_seconds", "dreambot_processing_seconds")
                     for q in ("0.5", "0.99")}
    queried = {n for e in exprs(load("pipeline")) for n in metric_names(e)}
    assert {"dreambot_events_in_total", "dreambot_events_out_total", "dreambot_kafka_lag_messages",
            "dreambot_dead_letters_total", "dreambot_duplicate_events_total",
            "dreambot_state_available"} <= queried


def test_jobs_reads_kube_state_metrics_and_says_so() -> None:
    board = load("jobs")
    assert "kube-state-metrics" in board["description"]
    assert "<session>-training" in board["description"] and "<session>-calibration" in board["description"]
    calibration = {"dreambot_calibration_info", "dreambot_calibration_loaded_timestamp_seconds"}
    queried = {n for e in exprs(board) for n in metric_names(e)}
    assert queried & KUBE_STATE_METRICS and queried - KUBE_STATE_METRICS == calibration
    for expr in exprs(board):
        if metric_names(expr) <= KUBE_STATE_METRICS:  # kube-state-metrics knows the objects by name only
            assert 'cronjob=~"($session)-(training|calibration)"' in expr or (
                'job_name=~"($session)-(training|calibration)-[0-9]+"' in expr), expr
        else:
            assert 'namespace=~"$namespace", session=~"$session"' in expr, expr
    (table,) = [p for p in panels(board) if p["type"] == "table"]
    assert table["targets"][0]["format"] == "table" and table["targets"][0]["instant"] is True
    assert "mlflow_run_id" in table["targets"][0]["expr"]


@pytest.mark.parametrize("name", NAMES)
def test_every_queried_series_exists(name: str) -> None:
    known = exported_series() | KUBE_STATE_METRICS
    for expr in exprs(load(name)):
        missing = metric_names(expr) - known
        assert not missing, f"{name}: {expr} queries {missing}, exported by no stage (services/core/metrics.py)"


@pytest.mark.parametrize("name", NAMES)
def test_panels_tile_the_24_column_grid_without_overlapping(name: str) -> None:
    cells: dict[tuple[int, int], str] = {}
    for panel in load(name)["panels"]:
        pos = panel["gridPos"]
        assert pos["x"] >= 0 and pos["x"] + pos["w"] <= 24 and pos["h"] > 0, panel["title"]
        for x in range(pos["x"], pos["x"] + pos["w"]):
            for y in range(pos["y"], pos["y"] + pos["h"]):
                assert (x, y) not in cells, f"{panel['title']} overlaps {cells[(x, y)]}"
                cells[(x, y)] = panel["title"]
