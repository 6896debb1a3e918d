"""The training and calibration CronJobs carry the arguments their CLIs require, and the calibration
job publishes where signals and risk read it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from dreambot_operator.render import (
    JOB_MODULES,
    JOB_OUTPUT_DIR,
    RenderContext,
    SessionRef,
    job_args,
    render_children,
)

from mlops import train
from ops import nightly_calibration

SPEC: dict[str, Any] = {"symbols": ["SPY", "qqq"], "jobs": {"training": {"schedule": "@daily"},
                                                          "calibration": {"schedule": "@daily"}},
                        "marketData": {"polygon": {"secretRef": {"name": "polygon-creds"}}},
                        "kafka": {"bootstrap": "kafka:9092"}, "redis": {"url": "redis://redis:6379/0"}}
REF = SessionRef("s1", "ns", "uid-1")


def test_training_args_parse_with_the_training_cli() -> None:
    args = train.parser().parse_args(job_args(SPEC, "training"))
    assert args.symbols == ["SPY", "QQQ"] and args.trades is None
    assert args.output == Path(JOB_OUTPUT_DIR) / "learner_state.json"
    assert args.policy_output == Path(JOB_OUTPUT_DIR) / "policy.json"


def test_calibration_job_runs_the_nightly_command_onto_the_data_volume() -> None:
    assert JOB_MODULES["calibration"] == "ops.nightly_calibration"
    args = nightly_calibration.parser().parse_args(job_args(SPEC, "calibration"))
    assert args.symbols == ["SPY", "QQQ"] and args.days == 60 and args.sync_method == "rest"
    assert args.dest == Path("/var/lib/dreambot/flatfiles")
    assert args.calibration_output == Path("/var/lib/dreambot/calibration.json")


def _by_name(children: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {f"{c['kind']}/{c['metadata']['name']}": c for c in children}


def _pod(manifest: dict[str, Any]) -> dict[str, Any]:
    spec = manifest["spec"]
    template = spec["jobTemplate"]["spec"]["template"] if manifest["kind"] == "CronJob" else spec["template"]
    pod: dict[str, Any] = template["spec"]
    return pod


def test_the_job_and_the_calibration_readers_share_the_session_data_claim() -> None:
    children = _by_name(render_children(REF, SPEC, RenderContext()))
    claim = children["PersistentVolumeClaim/s1-data"]
    assert claim["metadata"]["ownerReferences"][0]["uid"] == "uid-1"
    job = _pod(children["CronJob/s1-calibration"])
    (container,) = job["containers"]
    assert container["command"] == ["python", "-m", "ops.nightly_calibration"]
    assert {"name": "data", "persistentVolumeClaim": {"claimName": "s1-data"}} in job["volumes"]
    assert {"name": "data", "mountPath": "/var/lib/dreambot", "readOnly": False} in container["volumeMounts"]
    env = {e["name"]: e for e in container["env"]}
    assert env["POLYGON_API_KEY"]["valueFrom"]["secretKeyRef"]["name"] == "polygon-creds"
    for key in ("POLYGON_S3_ACCESS_KEY", "POLYGON_S3_SECRET_KEY", "POLYGON_S3_ENDPOINT", "POLYGON_S3_BUCKET"):
        assert env[key]["valueFrom"]["secretKeyRef"] == {"name": "polygon-creds", "key": key, "optional": True}
    for stage in ("signals", "risk"):
        pod = _pod(children[f"Deployment/s1-{stage}"])
        (c,) = pod["containers"]
        assert {"name": "data", "persistentVolumeClaim": {"claimName": "s1-data"}} in pod["volumes"]
        assert {"name": "data", "mountPath": "/var/lib/dreambot", "readOnly": True} in c["volumeMounts"]
        assert {"name": "DREAMBOT_CALIBRATION", "value": "/var/lib/dreambot/calibration.json"} in c["env"]
    oms = _pod(children["Deployment/s1-oms"])
    assert all(v["name"] != "data" for v in oms["volumes"])


def test_no_calibration_job_no_data_claim() -> None:
    spec = {k: v for k, v in SPEC.items() if k != "jobs"}
    children = _by_name(render_children(REF, spec, RenderContext()))
    assert not [n for n in children if n.startswith("PersistentVolumeClaim/")]
    (c,) = _pod(children["Deployment/s1-signals"])["containers"]
    assert all(e["name"] != "DREAMBOT_CALIBRATION" for e in c["env"])


def test_every_pod_writes_its_storage_under_the_writable_tmp_mount() -> None:
    children = render_children(REF, SPEC, RenderContext())
    for child in children:
        if child["kind"] not in ("Deployment", "CronJob"):
            continue
        (c,) = _pod(child)["containers"]
        storage = next(e["value"] for e in c["env"] if e["name"] == "DREAMBOT_STORAGE_DIR")
        writable = [m["mountPath"] for m in c["volumeMounts"] if not m.get("readOnly")]
        assert any(storage.startswith(p.rstrip("/") + "/") for p in writable), (child["metadata"]["name"], storage)
