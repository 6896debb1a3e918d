"""charts/dreambot with the built helm: lint, server-side dry-run of the rendered output, and a real
install into a fresh control plane (which must create the CRD and the operator)."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.harness.control_plane import PROJECT_ROOT, ControlPlane

CHART = str(PROJECT_ROOT / "charts" / "dreambot")
SANDBOX = ["--set", "session.enabled=true", "--set", "sim.enabled=true", "--set", "session.name=sandbox",
           "--set", "session.spec.mode=live",
           "--set", "session.spec.liveConfirmation=I-UNDERSTAND-THIS-TRADES-REAL-MONEY"]


def test_helm_lint(control_plane: ControlPlane) -> None:
    for extra in ([], SANDBOX):
        out = control_plane.helm("lint", "--strict", CHART, *extra, check=False)
        assert out.returncode == 0, out.stdout + out.stderr
        assert "1 chart(s) linted, 0 chart(s) failed" in out.stdout


def test_helm_refuses_bad_values(control_plane: ControlPlane) -> None:
    out = control_plane.helm("template", "x", CHART, "--set", "image.pullPolicy=Sometimes", check=False)
    assert out.returncode != 0 and "pullPolicy" in out.stderr


@pytest.mark.parametrize("extra", [[], ["--set", "session.enabled=true"], SANDBOX],
                         ids=["defaults", "with-session", "sandbox"])
def test_helm_template_applies_with_server_dry_run(
    control_plane: ControlPlane, namespace: str, extra: list[str]
) -> None:
    rendered = control_plane.helm("template", "dreambot", CHART, "--namespace", namespace,
                                  "--include-crds", *extra).stdout
    out = control_plane.kubectl("apply", "--dry-run=server", "-n", namespace, "-f", "-",
                                input=rendered, check=False)
    assert out.returncode == 0, out.stdout + out.stderr
    applied = out.stdout
    for expected in ("deployment.apps/dreambot-operator", "clusterrole.rbac.authorization.k8s.io/dreambot-operator",
                     "deployment.apps/dreambot-console", "service/dreambot-console",
                     "deployment.apps/dreambot-kafka", "deployment.apps/dreambot-redis",
                     "deployment.apps/dreambot-mlflow", "configmap/dreambot-alerts",
                     "customresourcedefinition.apiextensions.k8s.io/tradingsessions.dreambot.io"):
        assert expected in applied, applied
    if extra:
        assert "tradingsession.dreambot.io/" in applied


@pytest.fixture(scope="module")
def fresh_control_plane(k8s_bin: Path) -> Iterator[ControlPlane]:
    """A second API server without the CRD, so `helm install` has to create it."""
    with ControlPlane(k8s_bin, controller_manager=False) as cp:
        yield cp


def test_helm_install_creates_the_crd_and_the_operator(fresh_control_plane: ControlPlane) -> None:
    cp = fresh_control_plane
    assert cp.kubectl("get", "crd", "tradingsessions.dreambot.io", check=False).returncode != 0
    out = cp.helm("install", "dreambot", CHART, "--namespace", "dreambot", "--create-namespace",
                  "--set", "image.tag=test", check=False)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "Start a paper session" in out.stdout  # NOTES.txt

    crd = json.loads(cp.kubectl("get", "crd", "tradingsessions.dreambot.io", "-o", "json").stdout)
    assert crd["spec"]["names"]["shortNames"] == ["ts"]
    operator = json.loads(cp.kubectl("get", "-n", "dreambot", "deployment", "dreambot-operator", "-o", "json").stdout)
    container = operator["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == "dreambot:test"
    assert container["command"][:3] == ["python", "-m", "dreambot_operator"]
    assert "--all-namespaces" in container["command"]
    assert operator["spec"]["template"]["spec"]["serviceAccountName"] == "dreambot-operator"
    binding = json.loads(cp.kubectl("get", "clusterrolebinding", "dreambot-operator", "-o", "json").stdout)
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "dreambot-operator", "namespace": "dreambot"}]
    can = cp.kubectl("auth", "can-i", "patch", "tradingsessions.dreambot.io/status",
                     "--as=system:serviceaccount:dreambot:dreambot-operator", "-n", "anywhere", check=False)
    assert can.stdout.strip() == "yes"
    status = cp.helm("status", "dreambot", "--namespace", "dreambot")
    assert "STATUS: deployed" in status.stdout


def test_plain_manifests_apply(control_plane: ControlPlane) -> None:
    """manifests/: namespace and RBAC apply for real; the operator's ClusterRole covers its needs."""
    for name in ("namespace.yaml", "rbac.yaml"):
        out = control_plane.kubectl("apply", "-f", str(PROJECT_ROOT / "manifests" / name), check=False)
        assert out.returncode == 0, out.stdout + out.stderr
    sa = "--as=system:serviceaccount:dreambot:dreambot-operator"
    for verb, resource in (("create", "deployments.apps"), ("patch", "cronjobs.batch"),
                           ("create", "rolebindings.rbac.authorization.k8s.io"), ("list", "jobs.batch")):
        out = control_plane.kubectl("auth", "can-i", verb, resource, sa, "-n", "dreambot", check=False)
        assert out.stdout.strip() == "yes", (verb, resource)
    out = control_plane.kubectl("auth", "can-i", "delete", "secrets", sa, "-n", "dreambot", check=False)
    assert out.stdout.strip() == "no"
    subprocess.run([str(control_plane.bin / "kubectl"), "--kubeconfig", str(control_plane.kubeconfig),
                    "delete", "-f", str(PROJECT_ROOT / "manifests" / "rbac.yaml"), "--wait=false"],
                   capture_output=True, check=False)


def _docs(text: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(text) if d]


def test_chart_and_plain_manifests_grant_the_operator_the_same_rules(control_plane: ControlPlane) -> None:
    rendered = _docs(control_plane.helm("template", "dreambot", CHART, "--namespace", "dreambot").stdout)
    (chart_role,) = [d for d in rendered if d["kind"] == "ClusterRole"]
    with (PROJECT_ROOT / "manifests" / "rbac.yaml").open() as fh:
        (plain_role,) = [d for d in yaml.safe_load_all(fh) if d and d["kind"] == "ClusterRole"]
    assert chart_role["rules"] == plain_role["rules"]


def test_alert_rules_render_as_a_prometheus_rule(control_plane: ControlPlane) -> None:
    rendered = _docs(control_plane.helm("template", "dreambot", CHART,
                                        "--set", "prometheusRules.kind=PrometheusRule").stdout)
    (rule,) = [d for d in rendered if d["kind"] == "PrometheusRule"]
    with (PROJECT_ROOT / "charts" / "dreambot" / "files" / "alerts.yaml").open() as fh:
        assert rule["spec"] == yaml.safe_load(fh)
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
