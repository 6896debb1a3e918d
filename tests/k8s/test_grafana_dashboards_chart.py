"""The chart's Grafana dashboards with the built helm: one ConfigMap per generated dashboard, carrying
the sidecar's label (configurable, with annotations), holding the committed JSON unchanged; off when
disabled; a bad label refused by the values schema; and accepted by a real API server."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import yaml

from tests.harness.control_plane import PROJECT_ROOT, ControlPlane

CHART = str(PROJECT_ROOT / "charts" / "dreambot")
DASHBOARDS = PROJECT_ROOT / "charts" / "dreambot" / "files" / "dashboards"


def _template(k8s_bin: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(k8s_bin / "helm"), "template", "dreambot", CHART, "--namespace", "ops", *args],
                          capture_output=True, text=True, timeout=120)


def _dashboards(k8s_bin: Path, *args: str) -> dict[str, dict[str, Any]]:
    out = _template(k8s_bin, *args)
    assert out.returncode == 0, out.stderr
    docs = [d for d in yaml.safe_load_all(out.stdout) if d]
    return {d["metadata"]["name"]: d for d in docs
            if d["kind"] == "ConfigMap" and d["metadata"]["labels"].get("app.kubernetes.io/component") == "dashboards"}


def test_one_configmap_per_dashboard_with_the_sidecar_label_and_the_committed_json(k8s_bin: Path) -> None:
    maps = _dashboards(k8s_bin)
    assert sorted(maps) == ["dreambot-dashboard-jobs", "dreambot-dashboard-pipeline", "dreambot-dashboard-trading"]
    for name, cm in maps.items():
        stem = name.removeprefix("dreambot-dashboard-")
        assert cm["metadata"]["namespace"] == "ops"
        assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"  # a string, as label values must be
        assert "annotations" not in cm["metadata"]
        assert list(cm["data"]) == [f"{stem}.json"]
        committed = (DASHBOARDS / f"{stem}.json").read_text()
        assert json.loads(cm["data"][f"{stem}.json"]) == json.loads(committed)
        assert cm["data"][f"{stem}.json"] == committed.rstrip("\n")  # |- keeps the text, minus the last newline
    uids = {json.loads(next(iter(cm["data"].values())))["uid"] for cm in maps.values()}
    assert uids == {"dreambot-trading", "dreambot-pipeline", "dreambot-jobs"}


def test_label_key_value_and_annotations_come_from_values(k8s_bin: Path) -> None:
    maps = _dashboards(k8s_bin, "--set", "grafana.dashboards.label=example.com/dashboard",
                       "--set-string", "grafana.dashboards.labelValue=dreambot",
                       "--set", "grafana.dashboards.annotations.grafana_folder=Trading")
    assert len(maps) == 3
    for cm in maps.values():
        assert cm["metadata"]["labels"]["example.com/dashboard"] == "dreambot"
        assert "grafana_dashboard" not in cm["metadata"]["labels"]
        assert cm["metadata"]["annotations"] == {"grafana_folder": "Trading"}


def test_disabled_renders_no_dashboard(k8s_bin: Path) -> None:
    assert _dashboards(k8s_bin, "--set", "grafana.dashboards.enabled=false") == {}


def test_a_label_kubernetes_would_refuse_is_refused_by_the_values_schema(k8s_bin: Path) -> None:
    out = _template(k8s_bin, "--set", "grafana.dashboards.label=not a label")
    assert out.returncode != 0 and "grafana" in out.stderr and "label" in out.stderr


def test_the_dashboard_configmaps_apply_with_server_dry_run(control_plane: ControlPlane, namespace: str) -> None:
    out = control_plane.helm("template", "dreambot", CHART, "--namespace", namespace,
                             "--show-only", "templates/grafana-dashboards.yaml")
    applied = control_plane.kubectl("apply", "--dry-run=server", "-n", namespace, "-f", "-",
                                    input=out.stdout, check=False)
    assert applied.returncode == 0, applied.stdout + applied.stderr
    for stem in ("trading", "pipeline", "jobs"):
        assert f"configmap/dreambot-dashboard-{stem} created (server dry run)" in applied.stdout, applied.stdout
