"""promtool unit tests for every alert rule in charts/dreambot/files/alerts.yaml, firing and not firing,
with the labels and annotations each alert carries; every rule has a severity and a runbook_url whose
anchor is a heading of ops/runbook.md; the rules helm renders (ConfigMap and PrometheusRule) are these.

Expected values are computed by hand in the comments next to each case (Prometheus 2.42 semantics:
range selectors include both ends, so a 5m window over 1m samples spans exactly 5m and ``increase`` of
a step is the step). promtool missing is a failure, not a skip: scripts/install-system-deps.sh installs
it (Debian's prometheus) and CI must run these.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[3]
CHART = ROOT / "charts" / "dreambot"
ALERTS = CHART / "files" / "alerts.yaml"
RUNBOOK = ROOT / "ops" / "runbook.md"
RUNBOOK_URL = "https://github.com/dreambot/dreambot/blob/main/ops/runbook.md#"
SEVERITIES = {"critical", "warning"}


def promtool() -> str:
    exe = shutil.which("promtool")
    if exe is None:
        pytest.fail("promtool not installed: run scripts/install-system-deps.sh (Debian's prometheus); "
                    "the alert rule tests must run, not skip")
    return exe


def rules(path: Path = ALERTS) -> list[dict[str, Any]]:
    doc = yaml.safe_load(path.read_text())
    return [r for g in doc["groups"] for r in g["rules"] if "alert" in r]


def url(alert: str) -> str:
    return RUNBOOK_URL + alert.lower()


def alert(alertname: str, labels: dict[str, str], summary: str, description: str) -> dict[str, Any]:
    """One expected alert: its labels (severity from the rule) and every annotation."""
    severity = {r["alert"]: r["labels"]["severity"] for r in rules()}[alertname]
    return {"exp_labels": {**labels, "severity": severity},
            "exp_annotations": {"runbook_url": url(alertname), "summary": summary, "description": description}}


# Each case: the alert, its input series (1m apart) and checks (eval_time, expected alerts: [] = silent).
S = 'session="paper-etf"'
CASES: list[dict[str, Any]] = [
    {"alert": "DreamBotKillSwitchEngaged",
     "series": [(f'dreambot_kill_switch_engaged{{{S},stage="risk"}}', "0 0 1 1 1"),
                ('dreambot_kill_switch_engaged{session="live-index",stage="risk"}', "0 0 0 0 0")],
     "checks": [("1m", []),
                ("3m", [alert("DreamBotKillSwitchEngaged", {"session": "paper-etf"},
                              "Kill switch engaged in session paper-etf",
                              "Session paper-etf refuses new entries; the OMS protects open positions (the reason "
                              "is in Redis and on the console).")])]},
    # 6 rejections a minute = 0.1/s > 0.05, for 5m; humanize(0.1) = "100m". 1 a minute (0.0167/s) stays quiet.
    {"alert": "DreamBotOrderRejections",
     "series": [(f'dreambot_orders_total{{{S},stage="oms",status="rejected"}}', "0+6x20"),
                ('dreambot_orders_total{session="live-index",stage="oms",status="rejected"}', "0+1x20")],
     "checks": [("3m", []),
                ("12m", [alert("DreamBotOrderRejections", {"session": "paper-etf"},
                               "The broker rejects orders in session paper-etf",
                               "100m rejected orders per second over 5 minutes.")])]},
    # Every observation in (0.1, 0.5]: p99 = 0.1 + 0.4 * 0.99 = 0.496 s > 0.25 -> "496ms"; all <= 0.1: quiet.
    {"alert": "DreamBotTickToIntentLatencyHigh",
     "series": [(f'dreambot_tick_to_intent_seconds_bucket{{{S},stage="signals",le="0.1"}}', "0x20"),
                (f'dreambot_tick_to_intent_seconds_bucket{{{S},stage="signals",le="0.5"}}', "0+10x20"),
                (f'dreambot_tick_to_intent_seconds_bucket{{{S},stage="signals",le="+Inf"}}', "0+10x20"),
                ('dreambot_tick_to_intent_seconds_bucket{session="live-index",stage="signals",le="0.1"}', "0+10x20"),
                ('dreambot_tick_to_intent_seconds_bucket{session="live-index",stage="signals",le="0.5"}', "0+10x20"),
                ('dreambot_tick_to_intent_seconds_bucket{session="live-index",stage="signals",le="+Inf"}',
                 "0+10x20")],
     "checks": [("4m", []),
                ("12m", [alert("DreamBotTickToIntentLatencyHigh", {"session": "paper-etf"},
                               "Slow signals in session paper-etf", "p99 tick-to-intent latency is 496ms.")])]},
    # Every observation in (0.5, 1]: p99 = 0.5 + 0.5 * 0.99 = 0.995 s > 0.5 -> "995ms".
    {"alert": "DreamBotIntentToOrderLatencyHigh",
     "series": [(f'dreambot_intent_to_order_seconds_bucket{{{S},stage="oms",le="0.5"}}', "0x20"),
                (f'dreambot_intent_to_order_seconds_bucket{{{S},stage="oms",le="1"}}', "0+10x20"),
                (f'dreambot_intent_to_order_seconds_bucket{{{S},stage="oms",le="+Inf"}}', "0+10x20")],
     "checks": [("4m", []),
                ("12m", [alert("DreamBotIntentToOrderLatencyHigh", {"session": "paper-etf"},
                               "Slow order routing in session paper-etf",
                               "p99 intent-to-order latency is 995ms.")])]},
    # 1500 > 1000 for 2m fires; 500 never does.
    {"alert": "DreamBotKafkaConsumerLag",
     "series": [(f'dreambot_kafka_lag_messages{{{S},stage="signals",topic="features"}}', "1500x10"),
                (f'dreambot_kafka_lag_messages{{{S},stage="risk",topic="signals"}}', "500x10")],
     "checks": [("1m", []),
                ("5m", [alert("DreamBotKafkaConsumerLag", {"session": "paper-etf", "stage": "signals"},
                              "Stage signals lags in session paper-etf", "1500 messages behind.")])]},
    # 0 until 5m, 3 from 6m: increase over [0m, 10m] = 3; over [10m, 20m] = 0.
    {"alert": "DreamBotDeadLetters",
     "series": [(f'dreambot_dead_letters_total{{{S},stage="features"}}', "0x5 3x20")],
     "checks": [("5m", []), ("20m", []),
                ("10m", [alert("DreamBotDeadLetters", {"session": "paper-etf", "stage": "features"},
                               "Stage features dead-lettered input in session paper-etf",
                               "3 messages went to the dlq topic in 10 minutes.")])]},
    # 0 from 2m: pending at 2m, firing once it has held for 1m.
    {"alert": "DreamBotStateUnavailable",
     "series": [(f'dreambot_state_available{{{S},stage="risk"}}', "1 1 0 0 0 0"),
                (f'dreambot_state_available{{{S},stage="oms"}}', "1 1 1 1 1 1")],
     "checks": [("2m", []),
                ("4m", [alert("DreamBotStateUnavailable", {"session": "paper-etf", "stage": "risk"},
                              "Stage risk cannot reach Redis in session paper-etf",
                              "Risk refuses new entries until Redis answers; the OMS keeps protecting positions.")])]},
    # Limit 1000 USD: warning for -1000 < PnL <= -800, critical from PnL <= -1000.
    # t:   0   1    2    3     4       5     6
    # PnL: 0 -500 -799 -800 -999.5 -1000 -1200
    {"alert": "DreamBotDailyLossNearLimit",
     "series": [(f'dreambot_daily_pnl_usd{{{S},stage="risk"}}', "0 -500 -799 -800 -999.5 -1000 -1200"),
                (f'dreambot_daily_loss_limit_usd{{{S},stage="risk"}}', "1000x6")],
     "checks": [("1m", []), ("2m", []), ("5m", []), ("6m", []),
                ("3m", [alert("DreamBotDailyLossNearLimit", {"session": "paper-etf"},
                              "Session paper-etf has lost 80% or more of its daily loss limit",
                              "Daily PnL is -800.00 USD; at the limit risk engages the kill switch and flattens.")]),
                ("4m", [alert("DreamBotDailyLossNearLimit", {"session": "paper-etf"},
                              "Session paper-etf has lost 80% or more of its daily loss limit",
                              "Daily PnL is -999.50 USD; at the limit risk engages the kill switch and flattens.")])]},
    {"alert": "DreamBotDailyLossLimitReached",
     "series": [(f'dreambot_daily_pnl_usd{{{S},stage="risk"}}', "0 -500 -799 -800 -999.5 -1000 -1200"),
                (f'dreambot_daily_loss_limit_usd{{{S},stage="risk"}}', "1000x6")],
     "checks": [("3m", []), ("4m", []),
                ("5m", [alert("DreamBotDailyLossLimitReached", {"session": "paper-etf"},
                              "Session paper-etf reached its daily loss limit",
                              "Daily PnL is -1000.00 USD: the kill switch is engaged and positions are being "
                              "flattened.")]),
                ("6m", [alert("DreamBotDailyLossLimitReached", {"session": "paper-etf"},
                              "Session paper-etf reached its daily loss limit",
                              "Daily PnL is -1200.00 USD: the kill switch is engaged and positions are being "
                              "flattened.")])]},
    # Stale from 2m to 5m: pending at 2m, firing from 3m, resolved when it is 0 again at 6m.
    {"alert": "DreamBotMarketDataStale",
     "series": [(f'dreambot_feed_stale{{{S},stage="risk"}}', "0 0 1 1 1 1 0 0")],
     "checks": [("1m", []), ("2m", []), ("6m", []),
                ("4m", [alert("DreamBotMarketDataStale", {"session": "paper-etf"},
                              "Stale market data in session paper-etf",
                              "Risk refuses new entries (rule stale_feed): an underlying's next bar is overdue in "
                              "regular hours (dreambot_market_data_age_seconds says which).")])]},
    # http_429: 0 until 5m, 6 from 6m -> increase over [5m, 10m] = 6 > 5; timeouts: 3 in the window, not > 5.
    {"alert": "DreamBotBrokerErrors",
     "series": [(f'dreambot_broker_errors_total{{{S},stage="oms",kind="http_429"}}', "0x5 6x20"),
                (f'dreambot_broker_errors_total{{{S},stage="oms",kind="timeout"}}', "0x5 3x20")],
     "checks": [("5m", []), ("20m", []),
                ("10m", [alert("DreamBotBrokerErrors", {"session": "paper-etf", "kind": "http_429"},
                               "Broker http_429 errors in session paper-etf",
                               "6 http_429 errors from the venue in 5 minutes.")])]},
    # One 401 at 2m: increase over [0m, 5m] = 1 > 0; timeouts alone never fire it.
    {"alert": "DreamBotBrokerAuthFailed",
     "series": [(f'dreambot_broker_errors_total{{{S},stage="oms",kind="auth"}}', "0 0 1x10"),
                ('dreambot_broker_errors_total{session="live-index",stage="oms",kind="timeout"}', "0+1x10")],
     "checks": [("1m", []),
                ("5m", [alert("DreamBotBrokerAuthFailed", {"session": "paper-etf"},
                              "The broker refused the access token in session paper-etf",
                              "Tradier answered HTTP 401: no order can be placed or worked until the credentials "
                              "are fixed.")])]},
    # paper-etf: not reconciled while handling events (rate > 0 from 1m) -> pending 1m..2m, firing from 3m.
    # idle: not reconciled but handling nothing (counter flat): quiet. ok: reconciled: quiet.
    {"alert": "DreamBotNotReconciled",
     "series": [(f'dreambot_reconciled{{{S},stage="oms"}}', "0x10"),
                (f'dreambot_events_in_total{{{S},stage="oms",topic="features"}}', "0+10x10"),
                ('dreambot_reconciled{session="idle",stage="oms"}', "0x10"),
                ('dreambot_events_in_total{session="idle",stage="oms",topic="features"}', "5x10"),
                ('dreambot_reconciled{session="ok",stage="oms"}', "1x10"),
                ('dreambot_events_in_total{session="ok",stage="oms",topic="features"}', "0+10x10")],
     "checks": [("2m", []),
                ("4m", [alert("DreamBotNotReconciled", {"session": "paper-etf"},
                              "OMS book and venue disagree in session paper-etf",
                              "The OMS refuses new entries until its book and the venue's orders and positions "
                              "agree.")])]},
]


def promtool_tests(rule_file: Path) -> dict[str, Any]:
    """The promtool `test rules` document for every case."""
    tests = []
    for case in CASES:
        tests.append({
            "name": case["alert"],
            "interval": "1m",
            "input_series": [{"series": s, "values": v} for s, v in case["series"]],
            "alert_rule_test": [{"eval_time": t, "alertname": case["alert"], "exp_alerts": exp}
                                for t, exp in case["checks"]],
        })
    return {"rule_files": [str(rule_file)], "evaluation_interval": "1m", "tests": tests}


def run_promtool_tests(rule_file: Path, tmp_path: Path) -> None:
    path = tmp_path / "alerts_test.yaml"
    path.write_text(yaml.safe_dump(promtool_tests(rule_file), sort_keys=False))
    out = subprocess.run([promtool(), "test", "rules", str(path)], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def test_every_alert_fires_and_stays_quiet_as_expected_in_promtool(tmp_path: Path) -> None:
    run_promtool_tests(ALERTS, tmp_path)


def test_every_rule_has_a_firing_and_a_not_firing_case() -> None:
    names = [r["alert"] for r in rules()]
    assert len(names) == len(set(names)), "alert names are unique"
    firing = {c["alert"] for c in CASES for _t, exp in c["checks"] if exp}
    quiet = {c["alert"] for c in CASES for _t, exp in c["checks"] if not exp}
    assert set(names) - firing == set(), "rules without a firing case"
    assert set(names) - quiet == set(), "rules without a not-firing case"
    assert {c["alert"] for c in CASES} <= set(names), "cases for rules that do not exist"


def test_the_money_alerts_exist() -> None:
    names = {r["alert"] for r in rules()}
    assert {"DreamBotDailyLossNearLimit", "DreamBotDailyLossLimitReached", "DreamBotMarketDataStale",
            "DreamBotBrokerErrors", "DreamBotBrokerAuthFailed", "DreamBotNotReconciled"} <= names


def test_every_rule_has_a_severity_and_a_runbook_url() -> None:
    for rule in rules():
        assert rule["labels"]["severity"] in SEVERITIES, rule["alert"]
        assert rule["annotations"]["runbook_url"] == url(rule["alert"]), rule["alert"]


def github_slug(heading: str, seen: dict[str, int]) -> str:
    """GitHub's anchor for a Markdown heading: lower case, punctuation dropped, spaces to hyphens,
    repeats suffixed -1, -2..."""
    text = re.sub(r"`", "", heading.strip().lower())
    slug = re.sub(r"[^\w\- ]", "", text).replace(" ", "-")
    n = seen.get(slug, 0)
    seen[slug] = n + 1
    return slug if n == 0 else f"{slug}-{n}"


def runbook_anchors() -> set[str]:
    seen: dict[str, int] = {}
    text = re.sub(r"```.*?```", "", RUNBOOK.read_text(), flags=re.S)  # no headings inside code blocks
    return {github_slug(m.group(1), seen) for m in re.finditer(r"^#{1,6} +(.+?) *#*$", text, flags=re.M)}


def test_the_slug_rules_match_githubs() -> None:
    seen: dict[str, int] = {}
    assert github_slug("DreamBotKillSwitchEngaged", seen) == "dreambotkillswitchengaged"
    assert github_slug("Sync the history (`services.backtest.polygon_sync`)", seen) == \
        "sync-the-history-servicesbacktestpolygon_sync"
    assert github_slug("A Tradier outage", seen) == "a-tradier-outage"
    assert github_slug("A Tradier outage", seen) == "a-tradier-outage-1"


def test_every_runbook_url_anchor_is_a_runbook_heading() -> None:
    anchors = runbook_anchors()
    missing = sorted(r["alert"] for r in rules() if r["annotations"]["runbook_url"].split("#", 1)[1] not in anchors)
    assert missing == [], f"ops/runbook.md has no heading for {missing}"


def alerts_section() -> str:
    text = RUNBOOK.read_text()
    start = text.index("\n## Alerts\n")
    return text[start:]


def test_the_alerts_section_is_last_and_has_one_entry_per_rule_with_threshold_severity_and_a_link() -> None:
    section = alerts_section()
    assert "\n## " not in section[len("\n## Alerts\n"):], "## Alerts is the runbook's final section"
    assert "```sh" not in section
    entries = dict(re.findall(r"^### (\S+)\n(.*?)(?=^### |\Z)", section, flags=re.M | re.S))
    by_name = {r["alert"]: r for r in rules()}
    assert set(entries) == set(by_name)
    for name, raw in entries.items():
        body = " ".join(raw.split())  # wrapped lines read as one
        assert f"Severity: **{by_name[name]['labels']['severity']}**" in body, name
        assert "Threshold:" in body, name
        assert re.search(r"\]\(#[a-z0-9-]+\)", body), f"{name}: no link to the section to act on"


def test_the_alerts_sections_own_links_point_at_runbook_headings() -> None:
    anchors = runbook_anchors()
    links = set(re.findall(r"\]\(#([a-z0-9_-]+)\)", alerts_section()))
    assert links and links - anchors == set(), f"ops/runbook.md has no heading for {sorted(links - anchors)}"


def _helm() -> Path | None:
    from tests.harness.control_plane import bin_dir

    exe = bin_dir() / "helm"
    return exe if exe.is_file() else None


@pytest.mark.parametrize("kind", ["ConfigMap", "PrometheusRule"])
def test_the_rules_helm_renders_are_the_tested_ones(kind: str, tmp_path: Path) -> None:
    helm = _helm()
    if helm is None:
        pytest.skip("helm is built with the Kubernetes binaries (scripts/build-k8s.sh); tests/k8s renders it too")
    env = {"HELM_CACHE_HOME": str(tmp_path / "c"), "HELM_CONFIG_HOME": str(tmp_path / "cf"),
           "HELM_DATA_HOME": str(tmp_path / "d"), "PATH": "/usr/bin:/bin"}
    out = subprocess.run([str(helm), "template", "dreambot", str(CHART), "--set", f"prometheusRules.kind={kind}"],
                         capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    (doc,) = [d for d in yaml.safe_load_all(out.stdout) if d and d["kind"] == kind and
              d["metadata"]["name"] == "dreambot-alerts"]
    rendered = tmp_path / "rendered.yaml"
    if kind == "ConfigMap":
        rendered.write_text(doc["data"]["alerts.yaml"])
    else:
        rendered.write_text(yaml.safe_dump(doc["spec"]))
    assert [r["alert"] for r in rules(rendered)] == [r["alert"] for r in rules()]
    run_promtool_tests(rendered, tmp_path)
