"""The operator against a real API server: children, spec edits, suspend, kill switch, readiness,
garbage collection and the live-mode finalizer."""

from __future__ import annotations

import json
import sys
from typing import Any

import redis

from services.core import shared_state
from services.core.shared_state import OmsKillSwitch, OmsSnapshot, OrderLegState, PositionState
from tests.harness.redis_server import RedisServer
from tests.k8s.conftest import Cluster, OperatorProcess, condition, env_of, wait_for

STAGES = ("ingest", "features", "signals", "risk", "oms", "learner")
SELECTOR = "app.kubernetes.io/instance=paper-etf"


def _session(cluster: Cluster, name: str = "paper-etf") -> dict[str, Any]:
    body = cluster.get("tradingsession", name)
    assert body is not None
    return body


def _wait_phase(cluster: Cluster, phase: str, name: str = "paper-etf", timeout_s: float = 30) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        body = _session(cluster, name)
        return body if (body.get("status") or {}).get("phase") == phase else None

    return wait_for(check, timeout_s, what=f"phase {phase}")


def _wait_children(cluster: Cluster) -> None:
    wait_for(lambda: len(cluster.names("deployments", SELECTOR)) == 6
             and len(cluster.names("cronjobs", SELECTOR)) == 2, 30, what="children")


def _replicas(cluster: Cluster, stage: str) -> int:
    dep = cluster.get("deployment", f"paper-etf-{stage}")
    assert dep is not None
    return int(dep["spec"]["replicas"])


def _kill_flag(server: RedisServer, session: str = "paper-etf") -> dict[str, Any] | None:
    raw = redis.Redis.from_url(server.url).get(f"{session}:dreambot:kill_switch")
    return None if raw is None else dict(json.loads(raw))


def test_example_session_gets_exactly_its_children(
    cluster: Cluster, operator: OperatorProcess, paper_session: dict[str, Any]
) -> None:
    cluster.apply(paper_session)
    _wait_children(cluster)
    session = _session(cluster)
    uid = session["metadata"]["uid"]

    expected = {f"paper-etf-{s}" for s in STAGES}
    assert cluster.names("deployments", SELECTOR) == expected
    assert cluster.names("services", SELECTOR) == expected
    assert cluster.names("cronjobs", SELECTOR) == {"paper-etf-training", "paper-etf-calibration"}
    wait_for(lambda: cluster.names("configmaps", SELECTOR) == {"paper-etf-config"}, 10)
    assert cluster.names("serviceaccounts", SELECTOR) == {"paper-etf-session"}
    assert cluster.names("roles", SELECTOR) == {"paper-etf-session"}
    assert cluster.names("rolebindings", SELECTOR) == {"paper-etf-session"}

    oms = cluster.get("deployment", "paper-etf-oms")
    assert oms is not None
    owner = oms["metadata"]["ownerReferences"][0]
    assert (owner["kind"], owner["name"], owner["uid"], owner["controller"]) == (
        "TradingSession", "paper-etf", uid, True)
    assert oms["spec"]["strategy"]["type"] == "Recreate"
    env = env_of(oms)
    assert env["DREAMBOT_SESSION"] == "paper-etf"
    assert env["DREAMBOT_SYMBOLS"] == "SPY,QQQ"
    assert env["DREAMBOT_REDIS_URL"] == paper_session["spec"]["redis"]["url"]
    training = cluster.get("cronjob", "paper-etf-training")
    assert training is not None
    assert training["spec"]["schedule"] == "30 16 * * 1-5"
    assert training["spec"]["timeZone"] == "America/New_York"

    # No kubelet: nothing becomes available, and the status says so from the real objects.
    body = _wait_phase(cluster, "Deploying")
    ready = condition(body, "Ready")
    assert ready is not None and ready["status"] == "False" and ready["reason"] == "StagesUnavailable"
    assert body["status"]["observedGeneration"] == body["metadata"]["generation"]
    assert set(body["status"]["stages"]) == set(STAGES)
    assert set(body["status"]["jobs"]) == {"training", "calibration"}
    printed = cluster.cp.kubectl("get", "-n", cluster.ns, "ts", "paper-etf", "-o", "wide").stdout
    assert "Deploying" in printed and "paper" in printed and "SPY" in printed


def test_spec_edits_patch_the_children(
    cluster: Cluster, operator: OperatorProcess, paper_session: dict[str, Any]
) -> None:
    cluster.apply(paper_session)
    _wait_children(cluster)
    before = cluster.get("deployment", "paper-etf-features")
    assert before is not None

    cluster.patch("tradingsession", "paper-etf", {"spec": {
        "symbols": ["SPY"],
        "stages": {"features": {"replicas": 3}},
        "jobs": {"training": {"schedule": "0 17 * * 1-5"}},
        "restartNonce": "2",
    }})

    def patched() -> bool:
        dep = cluster.get("deployment", "paper-etf-features")
        cron = cluster.get("cronjob", "paper-etf-training")
        assert dep is not None and cron is not None
        return (dep["spec"]["replicas"] == 3 and env_of(dep)["DREAMBOT_SYMBOLS"] == "SPY"
                and cron["spec"]["schedule"] == "0 17 * * 1-5")

    wait_for(patched, 30, what="children patched")
    after = cluster.get("deployment", "paper-etf-features")
    assert after is not None
    annotations = after["spec"]["template"]["metadata"]["annotations"]
    assert annotations["dreambot.io/restart-nonce"] == "2"
    assert after["metadata"]["uid"] == before["metadata"]["uid"]  # patched in place, not recreated
    assert env_of(cluster.get("deployment", "paper-etf-oms") or {})["DREAMBOT_SYMBOLS"] == "SPY"

    # Dropping a job from the spec removes its CronJob.
    cluster.cp.kubectl("patch", "-n", cluster.ns, "tradingsession", "paper-etf", "--type=json",
                       "-p", '[{"op": "remove", "path": "/spec/jobs/calibration"}]')
    wait_for(lambda: cluster.names("cronjobs", SELECTOR) == {"paper-etf-training"}, 30,
             what="calibration CronJob pruned")


def test_suspend_scales_to_zero_and_back(
    cluster: Cluster, operator: OperatorProcess, paper_session: dict[str, Any]
) -> None:
    cluster.apply(paper_session)
    _wait_children(cluster)

    cluster.patch("tradingsession", "paper-etf", {"spec": {"suspend": True}})
    wait_for(lambda: all(_replicas(cluster, s) == 0 for s in STAGES), 30, what="stages at zero")
    for job in ("training", "calibration"):
        cron = cluster.get("cronjob", f"paper-etf-{job}")
        assert cron is not None and cron["spec"]["suspend"] is True
    body = _wait_phase(cluster, "Suspended")
    suspended = condition(body, "Suspended")
    assert suspended is not None and suspended["status"] == "True"
    since = suspended["lastTransitionTime"]

    cluster.patch("tradingsession", "paper-etf", {"spec": {"suspend": False}})
    wait_for(lambda: all(_replicas(cluster, s) == 1 for s in STAGES), 30, what="stages back")
    cron = cluster.get("cronjob", "paper-etf-training")
    assert cron is not None and cron["spec"]["suspend"] is False
    body = _wait_phase(cluster, "Deploying")
    resumed = condition(body, "Suspended")
    assert resumed is not None and resumed["status"] == "False"
    assert resumed["lastTransitionTime"] >= since


def test_kill_switch_sets_the_redis_flag_and_halts_entries(
    cluster: Cluster, operator: OperatorProcess, paper_session: dict[str, Any], redis_server: RedisServer
) -> None:
    paper_session["metadata"]["name"] = "paper-etf"
    cluster.apply(paper_session)
    _wait_children(cluster)

    cluster.patch("tradingsession", "paper-etf", {"spec": {"killSwitch": True}})
    flag = wait_for(lambda: (f := _kill_flag(redis_server)) and f["engaged"] and f, 30, what="kill flag")
    assert flag["reason"] == "Manual" and flag["source"] == "operator" and flag["ts"] > 0
    wait_for(lambda: _replicas(cluster, "signals") == 0, 30, what="signals at zero")
    assert _replicas(cluster, "risk") == 1 and _replicas(cluster, "oms") == 1
    body = _wait_phase(cluster, "Halted")
    kill = condition(body, "KillSwitchEngaged")
    assert kill is not None and (kill["status"], kill["reason"]) == ("True", "Manual")
    printed = cluster.cp.kubectl("get", "-n", cluster.ns, "ts", "paper-etf").stdout
    assert "Halted" in printed

    cluster.patch("tradingsession", "paper-etf", {"spec": {"killSwitch": False, "flattenNonce": "f1"}})
    wait_for(lambda: (f := _kill_flag(redis_server)) is not None and not f["engaged"], 30, what="flag released")
    raw = redis.Redis.from_url(redis_server.url).get("paper-etf:dreambot:flatten_request")
    assert raw is not None and json.loads(raw)["nonce"] == "f1"
    wait_for(lambda: (_session(cluster).get("status") or {}).get("flattenNonce") == "f1", 30, what="flattenNonce")
    wait_for(lambda: _replicas(cluster, "signals") == 1, 30, what="signals back")
    body = _wait_phase(cluster, "Deploying")
    kill = condition(body, "KillSwitchEngaged")
    assert kill is not None and kill["status"] == "False"


def test_daily_loss_limit_flag_from_risk_is_reported(
    cluster: Cluster, operator: OperatorProcess, paper_session: dict[str, Any], redis_server: RedisServer
) -> None:
    paper_session["metadata"]["name"] = "loss-limit"
    cluster.apply(paper_session)
    flag = {"engaged": True, "reason": "DailyLossLimit", "ts": 1, "source": "risk"}
    client = redis.Redis.from_url(redis_server.url)
    client.set("loss-limit:dreambot:kill_switch", json.dumps(flag))
    try:
        body = _wait_phase(cluster, "Halted", name="loss-limit")
        kill = condition(body, "KillSwitchEngaged")
        assert kill is not None and (kill["status"], kill["reason"]) == ("True", "DailyLossLimit")
    finally:
        client.delete("loss-limit:dreambot:kill_switch")


def test_ready_once_the_deployments_report_available(
    cluster: Cluster, operator: OperatorProcess, paper_session: dict[str, Any]
) -> None:
    cluster.apply(paper_session)
    _wait_children(cluster)
    before = _wait_phase(cluster, "Deploying")
    not_ready = condition(before, "Ready")
    assert not_ready is not None and not_ready["status"] == "False"

    for stage in STAGES:
        dep = cluster.get("deployment", f"paper-etf-{stage}")
        assert dep is not None
        n = dep["spec"]["replicas"]
        cluster.patch("deployment", f"paper-etf-{stage}", {"status": {
            "observedGeneration": dep["metadata"]["generation"], "replicas": n, "updatedReplicas": n,
            "readyReplicas": n, "availableReplicas": n}}, subresource="status")

    body = _wait_phase(cluster, "Running")
    ready = condition(body, "Ready")
    assert ready is not None and (ready["status"], ready["reason"]) == ("True", "SessionReady")
    assert ready["lastTransitionTime"] >= not_ready["lastTransitionTime"]
    available = condition(body, "StagesAvailable")
    assert available is not None and available["status"] == "True"
    assert body["status"]["stages"]["oms"]["readyReplicas"] == 1

    # One stage losing its pods after rollout: Degraded, not Deploying.
    cluster.patch("deployment", "paper-etf-risk", {"status": {"readyReplicas": 0, "availableReplicas": 0}},
                  subresource="status")
    body = _wait_phase(cluster, "Degraded")
    degraded = condition(body, "Degraded")
    assert degraded is not None and degraded["status"] == "True" and "risk" in degraded["message"]


def test_deleting_the_session_collects_every_child(
    cluster: Cluster, operator: OperatorProcess, paper_session: dict[str, Any]
) -> None:
    cluster.apply(paper_session)
    _wait_children(cluster)
    cluster.delete("tradingsession", "paper-etf", wait=True)

    def all_gone() -> bool:
        return not any(cluster.names(kind, SELECTOR) for kind in (
            "deployments", "services", "cronjobs", "configmaps", "serviceaccounts", "roles", "rolebindings"))

    wait_for(all_gone, 60, what="garbage collection of the children")


def _oms_snapshot(*, held: bool) -> bytes:
    """The OMS's snapshot (what services.oms.hooks writes): 2 SPXW calls and their working stop, or flat."""
    contract = "SPXW251125C06000000"
    stop = OrderLegState(order_id="tradier-7", client_order_id="r1", underlying="SPX", contract=contract,
                         leg="stop_loss", side="sell", status="working", quantity=2, filled_quantity=0,
                         limit_price=None, stop_price=3.1)
    position = PositionState(underlying="SPX", contract=contract, quantity=2, avg_price=4.2, mark=4.0,
                             realized_pnl=-1.3, unrealized_pnl=-40.0, fees=1.3)
    return shared_state.encode(OmsSnapshot(
        ts=1, broker="tradier", kill_switch=OmsKillSwitch(engaged=False, reason=""), flat=not held,
        orders=(stop,) if held else (), positions=(position,) if held else (), realized_pnl=-1.3,
        unrealized_pnl=-40.0 if held else 0.0))


def test_live_session_deletion_waits_for_a_flat_book(
    cluster: Cluster, operator: OperatorProcess, redis_server: RedisServer
) -> None:
    from tests.k8s.conftest import load_example

    body = load_example("tradingsession-live.yaml")
    body["spec"]["redis"]["url"] = redis_server.url
    client = redis.Redis.from_url(redis_server.url)
    client.set("live-index:dreambot:positions", _oms_snapshot(held=True))
    try:
        cluster.apply(body)
        wait_for(lambda: "dreambot.io/finalizer"
                 in (_session(cluster, "live-index")["metadata"].get("finalizers") or []), 30, what="finalizer")
        # The finalizer can land a moment before the reconcile handler has applied the children.
        wait_for(lambda: cluster.get("deployment", "live-index-oms") is not None, 30, what="OMS deployment")
        oms = cluster.get("deployment", "live-index-oms")
        assert oms is not None
        assert env_of(oms)["TRADIER_ACCESS_TOKEN"] == {
            "secretKeyRef": {"name": "tradier-live", "key": "TRADIER_ACCESS_TOKEN"}}
        assert env_of(oms)["DREAMBOT_LIVE_CONFIRM"] == "true"

        cluster.delete("tradingsession", "live-index")
        held = _wait_phase(cluster, "Deleting", name="live-index")
        assert held["metadata"].get("deletionTimestamp")
        flag = _kill_flag(redis_server, "live-index")
        assert flag is not None and flag["engaged"]
        assert client.get("live-index:dreambot:flatten_request") is not None

        client.set("live-index:dreambot:positions", _oms_snapshot(held=False))  # what the OMS writes once flat
        wait_for(lambda: cluster.get("tradingsession", "live-index") is None, 30, what="live session gone")
    finally:
        client.delete("live-index:dreambot:positions", "live-index:dreambot:kill_switch",
                      "live-index:dreambot:flatten_request")


def test_operator_works_with_only_its_own_rbac(
    cluster: Cluster, paper_session: dict[str, Any], request: Any
) -> None:
    """Run the operator as the ServiceAccount of manifests/rbac.yaml (not as cluster admin): its
    ClusterRole must cover every child, including the Role it grants the session's pods."""
    from tests.harness.control_plane import PROJECT_ROOT

    cp = cluster.cp
    cp.kubectl("apply", "-f", str(PROJECT_ROOT / "manifests" / "namespace.yaml"))
    cp.kubectl("apply", "-f", str(PROJECT_ROOT / "manifests" / "rbac.yaml"))
    token = cp.kubectl("create", "token", "dreambot-operator", "-n", "dreambot", "--duration=1h").stdout.strip()
    kubeconfig = cp.dir / f"operator-sa-{cluster.ns}.kubeconfig"
    kubeconfig.write_text(cp.kubeconfig.read_text().replace(f"token: {cp.token}", f"token: {token}"))
    proc = OperatorProcess(cp, cluster.ns, kubeconfig=kubeconfig)
    try:
        proc.wait_ready()
        cluster.apply(paper_session)
        _wait_children(cluster)
        assert cluster.names("roles", SELECTOR) == {"paper-etf-session"}
        body = _wait_phase(cluster, "Deploying")
        assert body["metadata"]["finalizers"] == ["dreambot.io/finalizer"]
        cluster.patch("tradingsession", "paper-etf", {"spec": {"suspend": True}})
        _wait_phase(cluster, "Suspended")
        cluster.delete("tradingsession", "paper-etf", wait=True)
    except BaseException:
        sys.stderr.write(proc.output()[-6000:])
        raise
    finally:
        proc.stop()


def test_job_runs_show_up_in_the_status(
    cluster: Cluster, operator: OperatorProcess, paper_session: dict[str, Any]
) -> None:
    """A Job created from the training CronJob's template (as the CronJob controller would) becomes
    status.jobs.training.lastRunId; the CronJob's own status feeds lastScheduleTime."""
    cluster.apply(paper_session)
    _wait_children(cluster)
    cron = cluster.get("cronjob", "paper-etf-training")
    assert cron is not None
    template = cron["spec"]["jobTemplate"]
    owner = {"apiVersion": "batch/v1", "kind": "CronJob", "name": cron["metadata"]["name"],
             "uid": cron["metadata"]["uid"], "controller": True}
    job = {"apiVersion": "batch/v1", "kind": "Job",
           "metadata": {"name": "paper-etf-training-29391230", "labels": template["metadata"]["labels"],
                        "ownerReferences": [owner]},
           "spec": template["spec"]}
    cluster.apply(job)
    cluster.patch("cronjob", "paper-etf-training", {"status": {"lastScheduleTime": "2026-01-05T21:30:00Z"}},
                  subresource="status")

    def recorded() -> dict[str, Any] | None:
        jobs = (_session(cluster).get("status") or {}).get("jobs") or {}
        training = jobs.get("training") or {}
        return training if training.get("lastRunId") == "paper-etf-training-29391230" else None

    training = wait_for(recorded, 30, what="lastRunId")
    assert training["lastScheduleTime"] == "2026-01-05T21:30:00Z"
    assert training["schedule"] == "30 16 * * 1-5"


def test_a_child_the_api_server_refuses_fails_the_session_until_fixed(
    cluster: Cluster, operator: OperatorProcess, paper_session: dict[str, Any]
) -> None:
    """The CRD cannot know every time zone; the CronJob validation can. The refusal shows in the
    status (phase Failed, Degraded=True ApplyFailed) and a corrected spec recovers."""
    paper_session["spec"]["jobs"]["training"]["timeZone"] = "Mars/Olympus_Mons"
    cluster.apply(paper_session)
    body = _wait_phase(cluster, "Failed")
    degraded = condition(body, "Degraded")
    assert degraded is not None and (degraded["status"], degraded["reason"]) == ("True", "ApplyFailed")
    assert "paper-etf-training" in degraded["message"] and "time zone" in degraded["message"].lower()
    ready = condition(body, "Ready")
    assert ready is not None and (ready["status"], ready["reason"]) == ("False", "ApplyFailed")
    time_failed = degraded["lastTransitionTime"]

    cluster.patch("tradingsession", "paper-etf", {"spec": {"jobs": {"training": {"timeZone": "America/Chicago"}}}})
    body = _wait_phase(cluster, "Deploying")
    recovered = condition(body, "Degraded")
    assert recovered is not None and recovered["status"] == "False"
    assert recovered["lastTransitionTime"] >= time_failed
    cron = cluster.get("cronjob", "paper-etf-training")
    assert cron is not None and cron["spec"]["timeZone"] == "America/Chicago"
