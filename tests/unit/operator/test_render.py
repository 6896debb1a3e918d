"""Rendered children of representative TradingSession specs, asserted against the design: names,
replicas, env, secret references, probes, owner references and schedules."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml
from dreambot_operator.render import (
    STAGES,
    RenderContext,
    SessionRef,
    SpecError,
    render_children,
)

from services.core.session_config import SessionConfig

ROOT = Path(__file__).resolve().parents[3]
REF = SessionRef(name="paper-etf", namespace="trading", uid="0f1e2d3c-0000-4000-8000-000000000001")
LIVE_REF = SessionRef(name="live-index", namespace="trading", uid="0f1e2d3c-0000-4000-8000-000000000002")
CTX = RenderContext(default_image="registry.local/dreambot:1.2.3",
                    base_config={p.name: p.read_text() for p in sorted((ROOT / "config").glob("*.yaml"))})


def example_spec(name: str) -> dict[str, Any]:
    with (ROOT / "manifests" / name).open() as fh:
        return dict(yaml.safe_load(fh)["spec"])


def by_kind_name(children: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(c["kind"], c["metadata"]["name"]): c for c in children}


def container(manifest: dict[str, Any]) -> dict[str, Any]:
    if manifest["kind"] == "CronJob":
        return dict(manifest["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0])
    return dict(manifest["spec"]["template"]["spec"]["containers"][0])


def env(manifest: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container(manifest)["env"]}


@pytest.fixture
def paper() -> dict[tuple[str, str], dict[str, Any]]:
    return by_kind_name(render_children(REF, example_spec("tradingsession-paper.yaml"), CTX))


@pytest.fixture
def live() -> dict[tuple[str, str], dict[str, Any]]:
    return by_kind_name(render_children(LIVE_REF, example_spec("tradingsession-live.yaml"), CTX))


def test_children_have_deterministic_names(paper: dict[tuple[str, str], dict[str, Any]]) -> None:
    expected = {("ServiceAccount", "paper-etf-session"), ("Role", "paper-etf-session"),
                ("RoleBinding", "paper-etf-session"), ("ConfigMap", "paper-etf-config"),
                ("CronJob", "paper-etf-training"), ("CronJob", "paper-etf-calibration"),
                ("PersistentVolumeClaim", "paper-etf-data")}
    expected |= {("Deployment", f"paper-etf-{s}") for s in STAGES}
    expected |= {("Service", f"paper-etf-{s}") for s in STAGES}
    assert set(paper) == expected


def test_every_child_is_owned_labelled_and_namespaced(paper: dict[tuple[str, str], dict[str, Any]]) -> None:
    for (kind, name), child in paper.items():
        meta = child["metadata"]
        assert meta["namespace"] == "trading", name
        assert meta["ownerReferences"] == [{
            "apiVersion": "dreambot.io/v1alpha1", "kind": "TradingSession", "name": "paper-etf",
            "uid": REF.uid, "controller": True, "blockOwnerDeletion": True}], name
        labels = meta["labels"]
        assert labels["app.kubernetes.io/name"] == "dreambot"
        assert labels["app.kubernetes.io/instance"] == "paper-etf"
        assert labels["app.kubernetes.io/part-of"] == "dreambot"
        assert labels["app.kubernetes.io/managed-by"] == "dreambot-operator"
        if kind in ("Deployment", "Service"):
            assert labels["app.kubernetes.io/component"] == name.removeprefix("paper-etf-")


def test_stage_deployments_run_their_module_with_probes_and_metrics(
    paper: dict[tuple[str, str], dict[str, Any]]
) -> None:
    for stage in STAGES:
        dep = paper[("Deployment", f"paper-etf-{stage}")]
        c = container(dep)
        assert c["command"] == ["python", "-m", f"services.{stage}.main"]
        assert c["image"] == "registry.local/dreambot:1.2.3"
        assert c["ports"] == [{"name": "http", "containerPort": 9100, "protocol": "TCP"}]
        assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
        assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
        annotations = dep["spec"]["template"]["metadata"]["annotations"]
        assert annotations["prometheus.io/scrape"] == "true"
        assert annotations["prometheus.io/port"] == "9100"
        assert {"name": "config", "mountPath": "/etc/dreambot", "readOnly": True} in c["volumeMounts"]
        volumes = dep["spec"]["template"]["spec"]["volumes"]
        assert {"name": "config", "configMap": {"name": "paper-etf-config"}} in volumes
        assert dep["spec"]["template"]["spec"]["serviceAccountName"] == "paper-etf-session"
        selector = dep["spec"]["selector"]["matchLabels"]
        assert selector.items() <= dep["spec"]["template"]["metadata"]["labels"].items()
        svc = paper[("Service", f"paper-etf-{stage}")]
        assert svc["spec"]["selector"] == selector
        assert svc["spec"]["ports"] == [{"name": "http", "port": 9100, "targetPort": "http", "protocol": "TCP"}]


def test_session_env_comes_from_the_spec(paper: dict[tuple[str, str], dict[str, Any]]) -> None:
    e = env(paper[("Deployment", "paper-etf-signals")])
    assert e["DREAMBOT_SESSION"] == "paper-etf"
    assert e["DREAMBOT_MODE"] == "paper"
    assert e["DREAMBOT_LIVE_CONFIRM"] == "false"
    assert e["DREAMBOT_SYMBOLS"] == "SPY,QQQ"
    assert e["DREAMBOT_KAFKA_BOOTSTRAP"] == "dreambot-kafka:9092"
    assert e["DREAMBOT_KAFKA_TOPIC_PREFIX"] == "paper-etf"  # defaults to the session name
    assert e["DREAMBOT_KAFKA_PARTITIONS"] == "3"
    assert e["DREAMBOT_REDIS_URL"] == "redis://dreambot-redis:6379/0"
    assert e["DREAMBOT_CONFIG_DIR"] == "/etc/dreambot"
    assert e["DREAMBOT_HTTP_PORT"] == "9100"
    for stage in STAGES:  # a paper session carries no broker or market-data credentials
        names = set(env(paper[("Deployment", f"paper-etf-{stage}")]))
        assert not names & {"TRADIER_ACCESS_TOKEN", "TRADIER_ACCOUNT_ID", "POLYGON_API_KEY"}


def test_replicas_strategy_and_resources(paper: dict[tuple[str, str], dict[str, Any]]) -> None:
    for stage in STAGES:
        dep = paper[("Deployment", f"paper-etf-{stage}")]
        assert dep["spec"]["replicas"] == 1
        expected = "Recreate" if stage == "oms" else "RollingUpdate"
        assert dep["spec"]["strategy"]["type"] == expected
    learner = container(paper[("Deployment", "paper-etf-learner")])
    assert learner["resources"] == {"requests": {"cpu": "250m", "memory": "512Mi"}, "limits": {"memory": "2Gi"}}
    ingest = container(paper[("Deployment", "paper-etf-ingest")])
    assert ingest["resources"]["requests"]["memory"] == "256Mi"  # the default


def test_cron_jobs_follow_the_job_specs(paper: dict[tuple[str, str], dict[str, Any]]) -> None:
    training = paper[("CronJob", "paper-etf-training")]
    assert training["spec"]["schedule"] == "30 16 * * 1-5"
    assert training["spec"]["timeZone"] == "America/New_York"
    assert training["spec"]["concurrencyPolicy"] == "Forbid"
    assert training["spec"]["suspend"] is False
    assert container(training)["command"] == ["python", "-m", "mlops.train"]
    e = env(training)
    assert e["MLFLOW_TRACKING_URI"] == "http://dreambot-mlflow:5000"
    assert e["DREAMBOT_MLFLOW_EXPERIMENT"] == "paper-etf-learner"
    assert e["DREAMBOT_RUN_ID"] == {"fieldRef": {"fieldPath": "metadata.labels['batch.kubernetes.io/job-name']"}}
    assert e["DREAMBOT_SESSION"] == "paper-etf"
    calibration = paper[("CronJob", "paper-etf-calibration")]
    assert calibration["spec"]["schedule"] == "0 2 * * 2-6"
    assert container(calibration)["command"] == ["python", "-m", "ops.nightly_calibration"]
    pod = calibration["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    assert pod["restartPolicy"] == "Never"


def test_live_credentials_are_secret_references_on_the_stages_that_need_them(
    live: dict[tuple[str, str], dict[str, Any]]
) -> None:
    oms = env(live[("Deployment", "live-index-oms")])
    assert oms["DREAMBOT_MODE"] == "live"
    assert oms["DREAMBOT_LIVE_CONFIRM"] == "true"
    assert oms["DREAMBOT_SYMBOLS"] == "SPX,NDX"
    assert oms["TRADIER_ACCESS_TOKEN"] == {"secretKeyRef": {"name": "tradier-live", "key": "TRADIER_ACCESS_TOKEN"}}
    assert oms["TRADIER_ACCOUNT_ID"] == {"secretKeyRef": {"name": "tradier-live", "key": "TRADIER_ACCOUNT_ID"}}
    ingest = env(live[("Deployment", "live-index-ingest")])
    assert ingest["POLYGON_API_KEY"] == {"secretKeyRef": {"name": "polygon", "key": "POLYGON_API_KEY"}}
    assert "TRADIER_ACCESS_TOKEN" not in ingest
    assert "POLYGON_API_KEY" not in oms
    assert env(live[("CronJob", "live-index-calibration")])["POLYGON_API_KEY"] == {
        "secretKeyRef": {"name": "polygon", "key": "POLYGON_API_KEY"}}
    assert live[("Deployment", "live-index-features")]["spec"]["replicas"] == 2
    for child in live.values():
        if child["kind"] in ("Deployment", "CronJob"):
            for item in container(child)["env"]:
                if item["name"] in ("TRADIER_ACCESS_TOKEN", "TRADIER_ACCOUNT_ID", "POLYGON_API_KEY"):
                    assert "value" not in item


def test_live_without_the_exact_phrase_is_refused() -> None:
    spec = example_spec("tradingsession-live.yaml")
    spec["liveConfirmation"] = "yes"
    with pytest.raises(SpecError, match="live_confirm"):
        render_children(LIVE_REF, spec, CTX)


def test_suspend_scales_every_stage_to_zero_and_suspends_jobs() -> None:
    spec = example_spec("tradingsession-paper.yaml") | {"suspend": True}
    children = by_kind_name(render_children(REF, spec, CTX))
    assert all(children[("Deployment", f"paper-etf-{s}")]["spec"]["replicas"] == 0 for s in STAGES)
    assert children[("CronJob", "paper-etf-training")]["spec"]["suspend"] is True
    assert children[("CronJob", "paper-etf-calibration")]["spec"]["suspend"] is True


def test_kill_switch_stops_entries_but_keeps_risk_and_oms() -> None:
    spec = example_spec("tradingsession-paper.yaml") | {"killSwitch": True}
    children = by_kind_name(render_children(REF, spec, CTX))
    replicas = {s: children[("Deployment", f"paper-etf-{s}")]["spec"]["replicas"] for s in STAGES}
    assert replicas == {"ingest": 1, "features": 1, "signals": 0, "risk": 1, "oms": 1, "learner": 1}


def test_oms_never_runs_more_than_one_replica() -> None:
    spec = example_spec("tradingsession-paper.yaml")
    spec["stages"]["oms"] = {"replicas": 3}
    children = by_kind_name(render_children(REF, spec, CTX))
    assert children[("Deployment", "paper-etf-oms")]["spec"]["replicas"] == 1


def test_restart_nonce_and_config_changes_roll_the_pods() -> None:
    spec = example_spec("tradingsession-paper.yaml")
    base = by_kind_name(render_children(REF, spec, CTX))
    assert by_kind_name(render_children(REF, copy.deepcopy(spec), CTX)) == base  # deterministic

    def annotations(children: dict[tuple[str, str], dict[str, Any]]) -> dict[str, str]:
        return dict(children[("Deployment", "paper-etf-risk")]["spec"]["template"]["metadata"]["annotations"])

    bumped = by_kind_name(render_children(REF, spec | {"restartNonce": 7}, CTX))
    assert annotations(bumped)["dreambot.io/restart-nonce"] == "7"
    assert annotations(bumped)["dreambot.io/config-hash"] == annotations(base)["dreambot.io/config-hash"]
    stricter = copy.deepcopy(spec)
    stricter["risk"]["maxDailyLoss"] = 500
    changed = by_kind_name(render_children(REF, stricter, CTX))
    assert annotations(changed)["dreambot.io/config-hash"] != annotations(base)["dreambot.io/config-hash"]


def test_config_map_holds_project_config_and_session_yaml(paper: dict[tuple[str, str], dict[str, Any]]) -> None:
    data = paper[("ConfigMap", "paper-etf-config")]["data"]
    assert data["playbooks.yaml"] == (ROOT / "config" / "playbooks.yaml").read_text()
    assert data["risk.yaml"] == (ROOT / "config" / "risk.yaml").read_text()
    session = yaml.safe_load(data["session.yaml"])
    assert session["name"] == "paper-etf"
    assert session["symbols"] == ["SPY", "QQQ"]
    assert session["risk"] == {"max_daily_loss_usd": 1500.0, "max_open_positions": 3, "max_contracts_per_order": 5}
    assert session["market_data"] == {"source": "replay", "replay": {"path": "data/sample/spy_1min_2025-07-09.csv"}}
    assert session["playbooks"] == {"enabled": ["orb_calls", "orb_puts"]}
    assert session["broker"] == {"provider": "paper"}
    config = SessionConfig(**session)  # the stages' own model reads it back
    assert config.risk.max_daily_loss_usd == 1500 and config.playbooks.enabled == ("orb_calls", "orb_puts")


@pytest.mark.parametrize(("change", "message"), [
    ({"risk": {"maxLossPerTrade": 300}}, "maxLossPerTrade not supported"),
    ({"playbooks": {"enabled": ["orb_breakout"]}}, "unknown playbook(s) orb_breakout"),
    ({"playbooks": {"overrides": {"orb_calls": {"sizing": {"bogus": 1}}}}}, "orb_calls"),
    ({"symbols": ["SPY", "spy x"]}, "symbols"),
])
def test_a_spec_the_stages_cannot_honour_is_refused(change: dict[str, Any], message: str) -> None:
    spec = example_spec("tradingsession-paper.yaml") | change
    with pytest.raises(SpecError) as err:
        render_children(REF, spec, CTX)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_session_role_grants_only_reads_of_its_own_objects(paper: dict[tuple[str, str], dict[str, Any]]) -> None:
    rules = paper[("Role", "paper-etf-session")]["rules"]
    for rule in rules:
        assert set(rule["verbs"]) <= {"get", "watch"}
        assert rule["resourceNames"]
    assert {tuple(r["resourceNames"]) for r in rules} == {("paper-etf-config",), ("paper-etf",)}
    binding = paper[("RoleBinding", "paper-etf-session")]
    assert binding["roleRef"]["name"] == "paper-etf-session"
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "paper-etf-session", "namespace": "trading"}]


def test_sessions_without_jobs_get_no_cron_jobs_and_custom_topics() -> None:
    spec = {"symbols": ["SPX"], "kafka": {"bootstrap": "k:9092", "topicPrefix": "desk1", "partitions": 6},
            "redis": {"url": "redis://r:6379/2"}, "image": "own:1"}
    children = by_kind_name(render_children(REF, spec))
    assert not [k for k in children if k[0] == "CronJob"]
    e = env(children[("Deployment", "paper-etf-features")])
    assert e["DREAMBOT_KAFKA_TOPIC_PREFIX"] == "desk1"
    assert e["DREAMBOT_KAFKA_PARTITIONS"] == "6"
    assert e["DREAMBOT_MODE"] == "paper"
    assert container(children[("Deployment", "paper-etf-features")])["image"] == "own:1"


def test_stage_image_overrides_the_session_image() -> None:
    spec = example_spec("tradingsession-paper.yaml") | {"image": "session:2"}
    spec["stages"]["oms"] = {"replicas": 1, "image": "oms:9"}
    children = by_kind_name(render_children(REF, spec, CTX))
    assert container(children[("Deployment", "paper-etf-oms")])["image"] == "oms:9"
    assert container(children[("Deployment", "paper-etf-risk")])["image"] == "session:2"


def test_endpoint_overrides_reach_the_stages() -> None:
    spec = example_spec("tradingsession-live.yaml")
    spec["broker"]["baseUrl"] = "http://sim-tradier:8080"
    spec["marketData"]["polygon"]["baseUrl"] = "http://sim-polygon:8080"
    spec["marketData"]["polygon"]["websocketUrl"] = "ws://sim-polygon:8080"
    children = by_kind_name(render_children(LIVE_REF, spec, CTX))
    assert env(children[("Deployment", "live-index-oms")])["TRADIER_BASE_URL"] == "http://sim-tradier:8080"
    ingest = env(children[("Deployment", "live-index-ingest")])
    assert ingest["POLYGON_BASE_URL"] == "http://sim-polygon:8080"
    assert ingest["POLYGON_WS_URL"] == "ws://sim-polygon:8080"
