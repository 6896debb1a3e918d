"""The TradingSession CRD at a real API server: the examples are accepted, bad resources are
refused with readable messages, and the printer columns show."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from tests.harness.control_plane import PROJECT_ROOT, ControlPlane
from tests.k8s.conftest import load_example

PHRASE = "I-UNDERSTAND-THIS-TRADES-REAL-MONEY"


def _apply(cp: ControlPlane, namespace: str, body: dict[str, Any], *, dry_run: bool = True) -> tuple[int, str]:
    args = ["apply", "-n", namespace, "-f", "-"]
    if dry_run:
        args.append("--dry-run=server")
    out = cp.kubectl(*args, input=json.dumps(body), check=False)
    return out.returncode, out.stdout + out.stderr


def test_crds_and_examples_apply(control_plane: ControlPlane, namespace: str) -> None:
    out = control_plane.kubectl("apply", "-f", str(PROJECT_ROOT / "crds"))
    assert "tradingsessions.dreambot.io" in out.stdout
    for example in ("tradingsession-paper.yaml", "tradingsession-live.yaml"):
        code, text = _apply(control_plane, namespace, load_example(example), dry_run=False)
        assert code == 0, text
    listing = control_plane.kubectl("get", "-n", namespace, "ts", "-o", "wide").stdout
    header = listing.splitlines()[0].split()
    assert header == ["NAME", "MODE", "PHASE", "READY", "KILL", "SYMBOLS", "AGE"]
    assert "live-index" in listing and '["SPX","NDX"]' in listing
    live = json.loads(control_plane.kubectl("get", "-n", namespace, "ts", "live-index", "-o", "json").stdout)
    assert live["spec"]["broker"]["provider"] == "tradier"  # defaulted by the schema
    assert live["spec"]["suspend"] is False and live["spec"]["killSwitch"] is False
    control_plane.kubectl("delete", "-n", namespace, "ts", "--all", "--wait=true")


def _paper() -> dict[str, Any]:
    return copy.deepcopy(load_example("tradingsession-paper.yaml"))


def _live() -> dict[str, Any]:
    return copy.deepcopy(load_example("tradingsession-live.yaml"))


def _set(body: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    node = body["spec"]
    *parents, leaf = path.split(".")
    for key in parents:
        node = node.setdefault(key, {})
    if value is _DELETE:
        node.pop(leaf, None)
    else:
        node[leaf] = value
    return body


_DELETE = object()

INVALID = [
    ("unknown mode", _paper, "mode", "yolo", 'Unsupported value: "yolo"'),
    ("no symbols", _paper, "symbols", [], "should have at least 1 items"),
    ("unsupported symbol", _paper, "symbols", ["TSLA"], 'Unsupported value: "TSLA"'),
    ("negative daily loss limit", _paper, "risk.maxDailyLoss", -100, "should be greater than 0"),
    ("zero daily loss limit", _paper, "risk.maxDailyLoss", 0, "should be greater than 0"),
    ("1e300 daily loss limit", _paper, "risk.maxDailyLoss", 1e300, "should be less than or equal to 1e+07"),
    ("per-symbol premium over the total", _paper, "risk", {"maxPremiumPerSymbol": 5000, "maxPremiumTotal": 1000},
     "risk.maxPremiumPerSymbol cannot exceed risk.maxPremiumTotal"),
    ("megabyte string", _paper, "restartNonce", "x" * 1_000_000, "Too long"),
    ("negative replicas", _paper, "stages.features.replicas", -1, "should be greater than or equal to 0"),
    ("two OMS replicas", _paper, "stages.oms.replicas", 2, "should be less than or equal to 1"),
    ("live without a broker secret", _live, "broker.secretRef", _DELETE,
     "mode=live requires spec.broker.secretRef"),
    ("live without the confirmation", _live, "liveConfirmation", _DELETE,
     f"mode=live requires spec.liveConfirmation: {PHRASE}"),
    ("live with a wrong confirmation", _live, "liveConfirmation", "yes", "mode=live requires spec.liveConfirmation"),
    ("live broker on a paper session", _paper, "broker", {"environment": "live", "secretRef": {"name": "t"}},
     "spec.broker.environment=live is only allowed with spec.mode=live"),
    ("two market-data sources", _paper, "marketData.polygon", {"secretRef": {"name": "p"}},
     "spec.marketData needs exactly one of polygon or replay"),
    ("bad schedule", _paper, "jobs.training.schedule", "every day", "spec.jobs.training.schedule"),
    ("bad redis url", _paper, "redis.url", "localhost:6379", "spec.redis.url"),
]


@pytest.mark.parametrize(("case", "make", "path", "value", "message"), INVALID, ids=[c[0] for c in INVALID])
def test_invalid_sessions_are_refused_with_a_readable_message(
    control_plane: ControlPlane, namespace: str, case: str, make: Any, path: str, value: Any, message: str
) -> None:
    body = _set(make(), path, value)
    code, text = _apply(control_plane, namespace, body)
    assert code != 0, f"{case}: accepted"
    assert "is invalid" in text and message in text, text


def test_a_too_long_name_is_refused(control_plane: ControlPlane, namespace: str) -> None:
    body = _paper()
    body["metadata"]["name"] = "a" * 41
    code, text = _apply(control_plane, namespace, body)
    assert code != 0 and "at most 40 characters" in text, text
