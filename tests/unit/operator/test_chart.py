"""The chart's copy of the CRD, the CRD's shape, the alert rules (promtool) and skaffold.yaml."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[3]
CRDS = ROOT / "crds"
CHART = ROOT / "charts" / "dreambot"
ALERTS = CHART / "files" / "alerts.yaml"


def crd() -> dict[str, Any]:
    with (CRDS / "tradingsessions.dreambot.io.yaml").open() as fh:
        return dict(yaml.safe_load(fh))


def test_chart_crds_are_byte_identical_copies_of_crds() -> None:
    source = sorted(p.name for p in CRDS.glob("*.yaml"))
    copies = sorted(p.name for p in (CHART / "crds").glob("*.yaml"))
    assert source == copies and source
    for name in source:
        assert (CHART / "crds" / name).read_bytes() == (CRDS / name).read_bytes(), (
            f"charts/dreambot/crds/{name} differs from crds/{name}: cp crds/{name} charts/dreambot/crds/")


def test_crd_names_columns_and_status_subresource() -> None:
    doc = crd()
    assert doc["metadata"]["name"] == "tradingsessions.dreambot.io"
    assert doc["spec"]["group"] == "dreambot.io"
    assert doc["spec"]["names"]["shortNames"] == ["ts"]
    (version,) = doc["spec"]["versions"]
    assert version["name"] == "v1alpha1" and version["storage"] and version["served"]
    assert version["subresources"] == {"status": {}}
    columns = {c["name"]: c for c in version["additionalPrinterColumns"]}
    assert list(columns) == ["Mode", "Phase", "Ready", "Kill", "Symbols", "Age"]
    assert columns["Symbols"]["priority"] == 1
    assert columns["Ready"]["jsonPath"] == '.status.conditions[?(@.type=="Ready")].status'


def test_crd_schema_encodes_the_rules() -> None:
    schema = crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    spec = schema["properties"]["spec"]
    props = spec["properties"]
    assert props["mode"]["enum"] == ["paper", "live"]
    assert props["symbols"]["minItems"] == 1
    assert props["symbols"]["items"]["enum"] == ["SPX", "NDX", "SPY", "QQQ"]
    assert props["stages"]["properties"]["oms"]["properties"]["replicas"]["maximum"] == 1
    assert set(props["stages"]["properties"]) == {"ingest", "features", "signals", "risk", "oms", "learner"}
    from dreambot_operator.render import RISK_FIELDS

    assert set(props["risk"]["properties"]) == set(RISK_FIELDS)  # every limit the risk stage has, no other
    for limit in props["risk"]["properties"].values():
        assert limit["minimum"] >= 0 and (limit["minimum"] > 0 or limit.get("exclusiveMinimum"))
    rules = " ".join(r["rule"] for r in spec["x-kubernetes-validations"])
    assert "broker.secretRef" in rules and "I-UNDERSTAND-THIS-TRADES-REAL-MONEY" in rules
    phases = schema["properties"]["status"]["properties"]["phase"]["enum"]
    assert phases == ["Pending", "Deploying", "Running", "Suspended", "Halted", "Degraded", "Failed", "Deleting"]
    conditions = schema["properties"]["status"]["properties"]["conditions"]
    assert conditions["x-kubernetes-list-map-keys"] == ["type"]
    assert set(conditions["items"]["required"]) == {"type", "status", "lastTransitionTime", "reason", "message"}


def _promtool() -> str:
    exe = shutil.which("promtool")
    if exe is None:  # a failure, not a skip: CI (scripts/test) installs it and must run the rule tests
        pytest.fail("promtool not installed: run scripts/install-system-deps.sh (Debian's prometheus)")
    return exe


def test_alert_rules_pass_promtool_check() -> None:
    out = subprocess.run([_promtool(), "check", "rules", str(ALERTS)], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def test_kill_switch_alert_fires_in_a_promtool_unit_test(tmp_path: Path) -> None:
    tests = {
        "rule_files": [str(ALERTS)],
        "evaluation_interval": "1m",
        "tests": [{
            "interval": "1m",
            "input_series": [
                {"series": 'dreambot_kill_switch_engaged{session="paper-etf",stage="risk"}',
                 "values": "0 0 1 1 1"},
                {"series": 'dreambot_kill_switch_engaged{session="live-index",stage="risk"}',
                 "values": "0 0 0 0 0"},
            ],
            "alert_rule_test": [
                {"eval_time": "1m", "alertname": "DreamBotKillSwitchEngaged", "exp_alerts": []},
                {"eval_time": "3m", "alertname": "DreamBotKillSwitchEngaged", "exp_alerts": [{
                    "exp_labels": {"severity": "critical", "session": "paper-etf"},
                    "exp_annotations": {
                        "runbook_url": "https://github.com/dreambot/dreambot/blob/main/ops/runbook.md"
                                       "#dreambotkillswitchengaged",
                        "summary": "Kill switch engaged in session paper-etf",
                        "description": "Session paper-etf refuses new entries; the OMS protects open "
                                       "positions (the reason is in Redis and on the console).",
                    },
                }]},
            ],
        }],
    }
    path = tmp_path / "alerts_test.yaml"
    path.write_text(yaml.safe_dump(tests, sort_keys=False))
    out = subprocess.run([_promtool(), "test", "rules", str(path)], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def test_values_yaml_matches_its_schema_shape() -> None:
    with (CHART / "values.yaml").open() as fh:
        values = yaml.safe_load(fh)
    import json

    schema = json.loads((CHART / "values.schema.json").read_text())
    assert set(schema["required"]) <= set(values)
    assert set(values) <= set(schema["properties"])


def test_skaffold_builds_the_image_and_deploys_the_chart_with_a_sandbox_profile() -> None:
    with (ROOT / "skaffold.yaml").open() as fh:
        doc = yaml.safe_load(fh)
    assert doc["apiVersion"].startswith("skaffold/v4beta")
    assert doc["build"]["artifacts"][0]["image"] == "dreambot"
    (release,) = doc["deploy"]["helm"]["releases"]
    assert release["chartPath"] == "charts/dreambot"
    assert release["setValueTemplates"] == {"image.repository": "{{.IMAGE_REPO_dreambot}}",
                                           "image.tag": "{{.IMAGE_TAG_dreambot}}"}
    (sandbox,) = [p for p in doc["profiles"] if p["name"] == "sandbox"]
    (sandbox_release,) = sandbox["deploy"]["helm"]["releases"]
    assert sandbox_release["setValues"]["sim.enabled"] is True
    assert sandbox_release["setValueTemplates"] == release["setValueTemplates"]
