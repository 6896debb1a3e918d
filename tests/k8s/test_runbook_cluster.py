"""The runbook's cluster commands, run verbatim by bash against a real kube-apiserver/controller-manager
with the operator watching: start, kill switch, flatten and stop a session; a live session's deletion
held until the OMS (real OmsStage + OmsHooks over the test Redis) has flattened; rotating the Tradier,
Polygon, approval-key and console Secrets with a rollout restart of the stages that read them.

No node runs pods here, so what is checked is what the API server shows: the Secret's new data, the
pod template's ``kubectl.kubernetes.io/restartedAt`` annotation (a new ReplicaSet in a real cluster),
that the stage reads the Secret it was rotated in, and that the operator's next apply keeps the annotation.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import yaml

from services.core import keys, shared_state, topics
from services.core.events import RiskCommand
from services.core.redis_state import RedisState
from tests.harness.control_plane import PROJECT_ROOT, ControlPlane
from tests.harness.redis_server import RedisServer
from tests.k8s.conftest import Cluster, OperatorProcess, env_of, load_example, wait_for
from tests.unit.oms.service_support import OmsService
from tests.unit.oms.support import NS, SPY_C620, T0, make_quote, make_request

APPLY = "kubectl apply -f manifests/tradingsession-paper.yaml"
GET = "kubectl get tradingsession paper-etf"
KILL_ON = """kubectl patch tradingsession paper-etf --type merge -p '{"spec":{"killSwitch":true}}'"""
KILL_OFF = """kubectl patch tradingsession paper-etf --type merge -p '{"spec":{"killSwitch":false}}'"""
FLATTEN = """kubectl patch tradingsession paper-etf --type merge -p '{"spec":{"flattenNonce":"flatten-1"}}'"""
DELETE = "kubectl delete tradingsession paper-etf"
APPLY_LIVE = "kubectl apply -f manifests/tradingsession-live.yaml"
DELETE_LIVE = "kubectl delete tradingsession live-index"
RERUN_CALIBRATION = "kubectl create job --from=cronjob/paper-etf-calibration paper-etf-calibration-rerun"
SESSION_COMMANDS = (APPLY, GET, KILL_ON, KILL_OFF, FLATTEN, DELETE, APPLY_LIVE, DELETE_LIVE, RERUN_CALIBRATION)

TRADIER = ('kubectl create secret generic tradier-live --from-literal=TRADIER_ACCESS_TOKEN="$TRADIER_ACCESS_TOKEN" '
           '--from-literal=TRADIER_ACCOUNT_ID="$TRADIER_ACCOUNT_ID" --dry-run=client -o yaml | kubectl apply -f -')
RESTART_OMS = "kubectl rollout restart deployment/live-index-oms"
POLYGON = ('kubectl create secret generic polygon --from-literal=POLYGON_API_KEY="$POLYGON_API_KEY" '
           "--dry-run=client -o yaml | kubectl apply -f -")
RESTART_INGEST = "kubectl rollout restart deployment/live-index-ingest"
APPROVAL = ('kubectl create secret generic live-index-approval '
            '--from-literal=DREAMBOT_APPROVAL_KEY="$(openssl rand -hex 32)" '
            "--dry-run=client -o yaml | kubectl apply -f -")
RESTART_RISK_OMS = "kubectl rollout restart deployment/live-index-risk deployment/live-index-oms"
CONSOLE = ('kubectl create secret generic dreambot-console-auth --from-literal=admin-password="$NEW_CONSOLE_PASSWORD" '
           '--from-literal=session-key="$(openssl rand -hex 32)" --dry-run=client -o yaml | kubectl apply -f -')
RESTART_CONSOLE = "kubectl rollout restart deployment/dreambot-console"
ROTATION_COMMANDS = (TRADIER, RESTART_OMS, POLYGON, RESTART_INGEST, APPROVAL, RESTART_RISK_OMS, CONSOLE,
                     RESTART_CONSOLE)

RESTARTED_AT = "kubectl.kubernetes.io/restartedAt"
CHART = PROJECT_ROOT / "charts" / "dreambot"


class Shell:
    """Runs runbook lines with bash in a folder holding the manifests, kubectl defaulting to ``ns``."""

    def __init__(self, cp: ControlPlane, namespace: str, cwd: Path, redis_url: str) -> None:
        self.cwd = cwd
        kubeconfig = cwd / "kubeconfig"
        shutil.copy(cp.kubeconfig, kubeconfig)
        self.env = {k: v for k, v in cp.env().items() if not k.startswith(("DREAMBOT_", "OMS_"))}
        self.env.update(KUBECONFIG=str(kubeconfig), DREAMBOT_REDIS_URL=redis_url,
                        PATH=f"{cp.bin}{os.pathsep}{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
        self.run(f"kubectl config set-context --current --namespace={namespace}")
        # The example manifests, pointed at this Redis (the edit the runbook asks for: spec.redis.url).
        (cwd / "manifests").mkdir()
        for name in ("tradingsession-paper.yaml", "tradingsession-live.yaml"):
            body = load_example(name)
            body["spec"]["redis"]["url"] = redis_url
            (cwd / "manifests" / name).write_text(yaml.safe_dump(body))

    def run(self, cmd: str, **extra: str) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(["bash", "-c", cmd], cwd=self.cwd, env={**self.env, **extra}, capture_output=True,
                              text=True, timeout=120, stdin=subprocess.DEVNULL)
        assert proc.returncode == 0, f"{cmd}\n{proc.stdout}\n{proc.stderr}"
        return proc

    def popen(self, cmd: str) -> subprocess.Popen[str]:
        return subprocess.Popen(["bash", "-c", cmd], cwd=self.cwd, env=self.env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL)


@pytest.fixture
def shell(control_plane: ControlPlane, namespace: str, tmp_path: Path, redis_server: RedisServer) -> Shell:
    return Shell(control_plane, namespace, tmp_path, redis_server.url)


@pytest.fixture
def client(redis_server: RedisServer) -> Iterator[redis.Redis]:
    c = redis.Redis.from_url(redis_server.url)
    yield c
    for session in ("paper-etf", "live-index"):
        for key in c.keys(f"{session}:*"):
            c.delete(key)
    c.close()


def _flag(c: redis.Redis, session: str) -> shared_state.KillSwitchState | None:
    raw = c.get(f"{session}:{keys.KILL_SWITCH}")
    return None if raw is None else shared_state.decode_kill_switch(raw)


def _replicas(cluster: Cluster, name: str) -> int | None:
    body = cluster.get("deployment", name)
    return None if body is None else int(body["spec"]["replicas"])


def _secret(cluster: Cluster, name: str) -> dict[str, str]:
    body = cluster.get("secret", name)
    assert body is not None, name
    return {k: base64.b64decode(v).decode() for k, v in body["data"].items()}


def _restarted_at(cluster: Cluster, name: str) -> str | None:
    body = cluster.get("deployment", name)
    assert body is not None, name
    return (body["spec"]["template"]["metadata"].get("annotations") or {}).get(RESTARTED_AT)


def test_start_halt_flatten_and_stop_a_paper_session(shell: Shell, cluster: Cluster, operator: OperatorProcess,
                                                     client: redis.Redis) -> None:
    # The tier shares one redis-server and other tests run sessions named paper-etf too (their flatten
    # request and kill-switch flag would answer this test's waits): start from none of their keys.
    for key in client.scan_iter("paper-etf:*"):
        client.delete(key)
    assert shell.run(APPLY).stdout == "tradingsession.dreambot.io/paper-etf created\n"
    stages = ("ingest", "features", "signals", "risk", "oms", "learner")
    wait_for(lambda: all(cluster.get("deployment", f"paper-etf-{s}") for s in stages), 30, what="the stages")

    def printed() -> list[str] | None:  # the operator writes the phase once it applied the children
        got = shell.run(GET).stdout.splitlines()
        return got if got[1].split()[:3] == ["paper-etf", "paper", "Deploying"] else None

    got = wait_for(printed, 30, what="phase Deploying")  # no node runs pods here: never Running
    assert got[0].split()[:5] == ["NAME", "MODE", "PHASE", "READY", "KILL"], got

    assert shell.run(KILL_ON).stdout == "tradingsession.dreambot.io/paper-etf patched\n"
    flag = wait_for(lambda: (f := _flag(client, "paper-etf")) is not None and f.engaged and f, 30, what="flag")
    assert (flag.reason, flag.source) == ("Manual", "operator")
    wait_for(lambda: _replicas(cluster, "paper-etf-signals") == 0, 30, what="signals scaled to zero")
    assert _replicas(cluster, "paper-etf-risk") == 1 and _replicas(cluster, "paper-etf-oms") == 1
    status = shell.run('dreambot kill-switch status --session paper-etf --redis-url "$DREAMBOT_REDIS_URL"')
    assert re.match(r"kill switch: ENGAGED \(session paper-etf\), reason Manual, since .* UTC, by operator\n",
                    status.stdout), status.stdout
    wait_for(lambda: "Halted" in shell.run(GET).stdout, 30, what="phase Halted")

    shell.run(KILL_OFF)
    wait_for(lambda: (f := _flag(client, "paper-etf")) is not None and not f.engaged, 30, what="flag released")
    wait_for(lambda: _replicas(cluster, "paper-etf-signals") == 1, 30, what="signals back")

    shell.run(FLATTEN)

    def requested() -> shared_state.FlattenRequest | None:
        raw = client.get(f"paper-etf:{keys.FLATTEN_REQUEST}")
        return None if raw is None else shared_state.decode_flatten_request(raw)

    request = wait_for(requested, 30, what="the operator's flatten request")
    assert (request.nonce, request.source) == ("flatten-1", "operator")

    # A failed nightly job, rerun once from the CronJob's own template.
    assert shell.run(RERUN_CALIBRATION).stdout == "job.batch/paper-etf-calibration-rerun created\n"
    cron, job = cluster.get("cronjob", "paper-etf-calibration"), cluster.get("job", "paper-etf-calibration-rerun")
    assert cron is not None and job is not None
    container = job["spec"]["template"]["spec"]["containers"][0]
    want = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]
    assert (container["image"], container.get("command"), container.get("args")) == \
        (want["image"], want.get("command"), want.get("args"))
    assert [o["name"] for o in job["metadata"]["ownerReferences"]] == ["paper-etf-calibration"]

    assert shell.run(DELETE).stdout == f'tradingsession.dreambot.io "paper-etf" deleted from {cluster.ns} namespace\n'
    assert cluster.get("tradingsession", "paper-etf") is None
    wait_for(lambda: not any(cluster.get("deployment", f"paper-etf-{s}") for s in stages), 60,
             what="garbage collection of the stages")


def test_deleting_a_live_session_returns_once_the_oms_has_flattened(
    shell: Shell, cluster: Cluster, operator: OperatorProcess, redis_server: RedisServer, client: redis.Redis,
    tmp_path: Path,
) -> None:
    store = RedisState(redis_server.url, "live-index", retries=1, backoff_cap_s=0.05)
    oms = OmsService(store, tmp_path)
    try:
        oms.chain(T0, make_quote(SPY_C620, T0, 1.00, 1.05, bid_size=20, ask_size=20))
        oms.handle((topics.ORDERS, make_request("r1", SPY_C620, 2, 1.10, 1.50, 0.80, ts=T0 + NS)))
        assert oms.manager.book.live(), "the OMS has working orders"
        assert shell.run(APPLY_LIVE).stdout == "tradingsession.dreambot.io/live-index created\n"
        wait_for(lambda: cluster.get("deployment", "live-index-oms"), 30, what="the OMS deployment")

        deleting = shell.popen(DELETE_LIVE)
        wait_for(lambda: client.get(f"live-index:{keys.FLATTEN_REQUEST}"), 30, what="the finalizer's flatten request")
        flag = _flag(client, "live-index")
        assert flag is not None and flag.engaged and flag.source == "operator"
        time.sleep(2)  # the operator polls the book every second: still held
        assert deleting.poll() is None, "kubectl delete returned while the book is not flat"
        assert cluster.get("tradingsession", "live-index") is not None

        deadline = time.monotonic() + 30
        while not [e for e in oms.publisher.on(topics.RISK_COMMANDS) if isinstance(e, RiskCommand)]:
            assert time.monotonic() < deadline, "the OMS never saw the flatten request"
            oms.wall.now += 1.0
            oms.hooks.periodic()
            time.sleep(0.1)
        oms.deliver()  # Kafka hands the command back; the OMS flattens and writes its snapshot
        assert oms.manager.is_flat()
        out, err = deleting.communicate(timeout=60)
        assert deleting.returncode == 0, err
        assert out == f'tradingsession.dreambot.io "live-index" deleted from {cluster.ns} namespace\n'
        assert cluster.get("tradingsession", "live-index") is None
    finally:
        store.close()


def _console_objects(cp: ControlPlane, namespace: str) -> list[dict[str, Any]]:
    rendered = cp.helm("template", "dreambot", str(CHART), "--namespace", namespace,
                       "--show-only", "templates/console.yaml").stdout
    return [d for d in yaml.safe_load_all(rendered) if d]


def test_rotating_credentials_updates_the_secrets_and_restarts_their_readers(
    shell: Shell, cluster: Cluster, operator: OperatorProcess, control_plane: ControlPlane, namespace: str,
) -> None:
    old = {"TRADIER_ACCESS_TOKEN": "old-token-1", "TRADIER_ACCOUNT_ID": "VA000001", "POLYGON_API_KEY": "old-poly"}
    new = {"TRADIER_ACCESS_TOKEN": "new-token-2", "TRADIER_ACCOUNT_ID": "VA000002", "POLYGON_API_KEY": "new-poly",
           "NEW_CONSOLE_PASSWORD": "correct horse battery staple"}
    # The first run of the same commands creates the Secrets the live example names.
    assert shell.run(TRADIER, **old).stdout == "secret/tradier-live created\n"
    shell.run(POLYGON, **old)
    shell.run(APPLY_LIVE)
    wait_for(lambda: all(cluster.get("deployment", f"live-index-{s}") for s in ("ingest", "risk", "oms")), 30,
             what="the stages")
    approval_before = wait_for(lambda: cluster.get("secret", "live-index-approval"), 30, what="the approval Secret")
    # Helm creates the console's Secret and Deployment (create, not apply: no last-applied annotation).
    for doc in _console_objects(control_plane, namespace):
        control_plane.kubectl("create", "-n", namespace, "-f", "-", input=json.dumps(doc))
    console_before = _secret(cluster, "dreambot-console-auth")
    for name in ("live-index-oms", "live-index-ingest", "live-index-risk", "dreambot-console"):
        assert _restarted_at(cluster, name) is None

    # Tradier: the OMS reads the Secret through secretKeyRefs; restart it.
    assert shell.run(TRADIER, **new).stdout == "secret/tradier-live configured\n"
    assert _secret(cluster, "tradier-live") == {k: new[k] for k in ("TRADIER_ACCESS_TOKEN", "TRADIER_ACCOUNT_ID")}
    oms_env = env_of(cluster.get("deployment", "live-index-oms") or {})
    assert oms_env["TRADIER_ACCESS_TOKEN"] == {"secretKeyRef": {"name": "tradier-live", "key": "TRADIER_ACCESS_TOKEN"}}
    assert shell.run(RESTART_OMS).stdout == "deployment.apps/live-index-oms restarted\n"
    assert _restarted_at(cluster, "live-index-oms") is not None
    assert _restarted_at(cluster, "live-index-risk") is None

    # Polygon: the ingest.
    shell.run(POLYGON, **new)
    assert _secret(cluster, "polygon") == {"POLYGON_API_KEY": "new-poly"}
    assert env_of(cluster.get("deployment", "live-index-ingest") or {})["POLYGON_API_KEY"] == \
        {"secretKeyRef": {"name": "polygon", "key": "POLYGON_API_KEY"}}
    assert shell.run(RESTART_INGEST).stdout == "deployment.apps/live-index-ingest restarted\n"
    assert _restarted_at(cluster, "live-index-ingest") is not None

    # The approval key: risk and the OMS in one restart, with the same restartedAt.
    before_key = base64.b64decode(approval_before["data"]["DREAMBOT_APPROVAL_KEY"]).decode()
    assert shell.run(APPROVAL).stdout == "secret/live-index-approval configured\n"
    after = cluster.get("secret", "live-index-approval") or {}
    after_key = base64.b64decode(after["data"]["DREAMBOT_APPROVAL_KEY"]).decode()
    assert re.fullmatch(r"[0-9a-f]{64}", after_key) and after_key != before_key
    assert after["metadata"]["ownerReferences"] == approval_before["metadata"]["ownerReferences"], \
        "still owned by the session (deleted with it)"
    oms_restarted = _restarted_at(cluster, "live-index-oms")
    out = shell.run(RESTART_RISK_OMS).stdout
    assert out == "deployment.apps/live-index-risk restarted\ndeployment.apps/live-index-oms restarted\n"
    risk_at, oms_at = _restarted_at(cluster, "live-index-risk"), _restarted_at(cluster, "live-index-oms")
    assert risk_at is not None and risk_at == oms_at and oms_restarted is not None
    # The operator's next apply (a spec change) keeps kubectl's annotation: it applies its own fields only.
    cluster.patch("tradingsession", "live-index", {"spec": {"stages": {"risk": {"replicas": 2}}}})
    wait_for(lambda: _replicas(cluster, "live-index-risk") == 2, 30, what="the operator's apply")
    assert _restarted_at(cluster, "live-index-risk") == risk_at

    # The console: its admin password (and session key: everyone signs in again).
    shell.run(CONSOLE, **new)
    console_after = _secret(cluster, "dreambot-console-auth")
    assert console_after["admin-password"] == "correct horse battery staple"
    assert console_after["session-key"] != console_before["session-key"] and len(console_after["session-key"]) == 64
    assert console_after["users"] == console_before["users"], "keys the command does not name are kept"
    assert shell.run(RESTART_CONSOLE).stdout == "deployment.apps/dreambot-console restarted\n"
    assert _restarted_at(cluster, "dreambot-console") is not None
