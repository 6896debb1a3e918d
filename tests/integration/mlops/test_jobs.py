"""The training and calibration CronJob entry points against a REAL MLflow tracking server.

``python -m mlops.train`` and ``python -m mlops.calibrate`` run as subprocesses (as the CronJobs
run them) with MLFLOW_TRACKING_URI / DREAMBOT_MLFLOW_EXPERIMENT pointing at the server started by
tests/harness/mlflow_server.py; the MLflow client then reads the run back.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from services.core.learner_policy import POOLED, PolicyIndex, decode_policy
from services.learner.engine import LearnerEngine
from tests.harness.mlflow_server import MlflowServer
from tests.harness.ports import free_port

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[3]
NY = dt.timezone(dt.timedelta(hours=-4))


def run_job(
    module: str, args: list[str], env: Mapping[str, str], timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "DREAMBOT_MLFLOW_EXPERIMENT")}
    full_env.update(env)
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=ROOT,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def synthetic_trades(n: int, seed: int) -> list[dict[str, Any]]:
    """Backtest-shaped trade records (with a context) whose outcome follows adx_14: learnable."""
    rng = np.random.default_rng(seed)
    start = dt.datetime(2025, 6, 2, 9, 45, tzinfo=NY)
    out = []
    for i in range(n):
        day, slot = divmod(i, 20)
        entry = start + dt.timedelta(days=day, minutes=15 * slot)
        adx = float(rng.uniform(10, 45))
        win = rng.random() < 1 / (1 + np.exp(-(adx - 27) / 3))
        playbook = "orb_calls" if i % 3 else "vwap_reversion_puts"
        out.append(
            {
                "id": f"ord-SPY-{playbook}-{i}",
                "entry_time": entry.isoformat(),
                "exit_time": (entry + dt.timedelta(minutes=10)).isoformat(),
                "entry_price": 1.0,
                "exit_price": 1.5 if win else 0.7,
                "quantity": 2,
                "pnl": 100.0 if win else -60.0,
                "mae": 0.0,
                "mfe": 0.0,
                "exit_reason": "take_profit" if win else "stop_loss",
                "playbook": playbook,
                "underlying": "SPY",
                "contract": "SPY250602C00600000",
                "reason": f"{playbook} buy on SPY: entry [adx_14={adx:.4f} >= 10]",
                "context": {"adx_14": adx, "minutes_since_open": 15.0 + 15 * slot, "atm_iv": 0.15},
            }
        )
    return out


def test_server_started(mlflow_server: MlflowServer) -> None:
    assert mlflow_server.startup_s is not None
    print(f"mlflow server healthy after {mlflow_server.startup_s:.1f}s on {mlflow_server.uri}")


def test_train_from_a_trades_json(mlflow_server: MlflowServer, experiment: str, tmp_path: Path) -> None:
    trades_path = tmp_path / "trades.json"
    trades_path.write_text(json.dumps(synthetic_trades(300, seed=5)))
    state_path = tmp_path / "state.json"
    policy_path = tmp_path / "policy.json"
    proc = run_job(
        "mlops.train",
        ["--trades", str(trades_path), "--output", str(state_path), "--policy-output", str(policy_path)],
        {"MLFLOW_TRACKING_URI": mlflow_server.uri, "DREAMBOT_MLFLOW_EXPERIMENT": experiment},
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    run_id = lines[-1]
    assert "trained on 300 trades" in lines[-2]

    client = MlflowClient(mlflow_server.uri)
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert client.get_experiment(run.info.experiment_id).name == experiment
    params, metrics = run.data.params, run.data.metrics
    assert params["source"] == str(trades_path)
    assert params["test_fraction"] == "0.3"
    assert params["learner.meta_label.l2"] == "0.02"
    assert params["learner.combine.mode"] == "thompson"
    assert run.data.tags["dreambot.job"] == "training"
    assert metrics["n_trades"] == 300
    assert metrics["n_test"] == 90
    assert metrics["n_train"] + metrics["n_purged"] == 210
    assert metrics["test_auc"] > 0.8  # outcomes follow adx_14
    assert metrics["test_log_loss"] < metrics["baseline_log_loss"]
    assert metrics["test_brier"] < metrics["baseline_brier"]
    assert 0.5 < metrics["test_hit_rate"] <= 1.0
    assert metrics["trades.orb_calls"] == 200 and metrics["trades.vwap_reversion_puts"] == 100

    listed = {f.path for f in client.list_artifacts(run_id)} | {f.path for f in client.list_artifacts(run_id, "config")}
    assert {"learner_state.json", "evaluation.json", "config/learner.yaml", "policy.json"} <= listed
    # The policy signals applies (--learner frozen): scikit-learn meta models and bandit arms of all 300 trades.
    policy = decode_policy(policy_path.read_bytes())
    assert policy.trades == 300 and policy.arms
    assert {m.playbook for m in policy.meta} == {"orb_calls", "vwap_reversion_puts", POOLED}
    (tmp_path / "dl").mkdir()
    logged = json.loads(Path(client.download_artifacts(run_id, "policy.json", str(tmp_path / "dl"))).read_text())
    assert decode_policy(json.dumps(logged)) == policy
    orb = PolicyIndex(policy).meta("orb_calls")
    assert orb is not None
    assert orb.probability({"adx_14": 40.0}, "orb_calls") > orb.probability({"adx_14": 12.0}, "orb_calls")
    state = json.loads(Path(client.download_artifacts(run_id, "learner_state.json", str(tmp_path))).read_text())
    assert state == json.loads(state_path.read_text())
    engine = LearnerEngine()
    engine.load_state(state)
    assert engine.outcomes == 300
    hi = engine.mean_probability("orb_calls", {"adx_14": 40.0, "minutes_since_open": 100.0})
    lo = engine.mean_probability("orb_calls", {"adx_14": 12.0, "minutes_since_open": 100.0})
    assert hi > 0.7 > 0.3 > lo
    evaluation = json.loads(Path(client.download_artifacts(run_id, "evaluation.json", str(tmp_path))).read_text())
    assert len(evaluation["predictions"]) == 90
    entries = [p["entry_ts"] for p in evaluation["predictions"]]
    assert entries == sorted(entries)  # the test set is the latest trades, in time order


def test_train_from_a_backtest_replay(mlflow_server: MlflowServer, experiment: str, tmp_path: Path) -> None:
    proc = run_job(
        "mlops.train",
        ["--symbols", "SPY", "--sessions", "3", "--calibration", str(tmp_path / "none.json"), "--min-trades", "5"],
        {"MLFLOW_TRACKING_URI": mlflow_server.uri, "DREAMBOT_MLFLOW_EXPERIMENT": experiment},
    )
    assert proc.returncode == 0, proc.stderr
    run_id = proc.stdout.strip().splitlines()[-1]
    client = MlflowClient(mlflow_server.uri)
    run = client.get_run(run_id)
    assert run.data.params["source"].startswith("synthetic (seed 7, 3 session(s)")
    n = run.data.metrics["n_trades"]
    assert n >= 5
    assert run.data.metrics["n_test"] == n - int(n * 0.7)
    state = json.loads(Path(client.download_artifacts(run_id, "learner_state.json", str(tmp_path))).read_text())
    engine = LearnerEngine()
    engine.load_state(state)
    assert engine.outcomes == n
    # A replay's trades carry their intent's context: the meta-labelers learned from real features.
    assert any(m.count[m.features.index("adx_14")] > 0 for m in engine.meta.values())


def test_calibrate_logs_the_calibration(mlflow_server: MlflowServer, experiment: str, tmp_path: Path) -> None:
    output = tmp_path / "calibration.json"
    proc = run_job(
        "mlops.calibrate",
        ["--symbols", "SPY", "--sessions", "2", "--output", str(output)],
        {"MLFLOW_TRACKING_URI": mlflow_server.uri, "DREAMBOT_MLFLOW_EXPERIMENT": experiment},
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert lines[-2].startswith("calibration: ")  # the calibration CLI's own summary line
    run_id = lines[-1]
    doc = json.loads(output.read_text())
    client = MlflowClient(mlflow_server.uri)
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.data.tags["dreambot.job"] == "calibration"
    assert run.data.params["symbols"] == "SPY"
    assert run.data.params["rule"] == doc["rule"]
    metrics = run.data.metrics
    assert metrics["risk_multiplier"] == doc["risk_multiplier"]
    assert metrics["pot_threshold"] == doc["pot_threshold"]
    assert metrics["kelly"] == doc["derivation"]["kelly"]
    assert metrics["global.trade_count"] == doc["global"]["trade_count"]
    assert metrics["symbol.SPY.win_rate"] == doc["symbols"]["SPY"]["win_rate"]
    for name, stats in doc["playbooks"].items():
        assert metrics[f"playbook.{name}.net_pnl"] == stats["net_pnl"]
    logged = json.loads(Path(client.download_artifacts(run_id, "calibration.json", str(tmp_path / "dl"))).read_text())
    assert logged == doc


@pytest.mark.parametrize(
    ("module", "args", "env", "message"),
    [
        ("mlops.train", ["--trades", "x.json"], {}, "MLFLOW_TRACKING_URI is not set"),
        ("mlops.train", ["--trades", "x.json"], {"MLFLOW_TRACKING_URI": "ftp://x"}, "scheme must be one of"),
        (
            "mlops.train",
            ["--trades", "x.json", "--test-fraction", "1.5"],
            {"MLFLOW_TRACKING_URI": "http://h:1"},
            "--test-fraction must be in (0, 1)",
        ),
        (
            "mlops.train",
            [],
            {"MLFLOW_TRACKING_URI": "http://h:1"},
            "one of the arguments --trades --symbols is required",
        ),
        (
            "mlops.train",
            ["--trades", "x.json"],
            {"MLFLOW_TRACKING_URI": "http://h:1", "DREAMBOT_MLFLOW_EXPERIMENT": " "},
            "DREAMBOT_MLFLOW_EXPERIMENT is empty",
        ),
        ("mlops.calibrate", ["--symbols", "SPY"], {}, "MLFLOW_TRACKING_URI is not set"),
        ("mlops.calibrate", ["--symbols", "XYZ"], {}, "invalid choice: 'XYZ'"),
    ],
)
def test_bad_arguments_and_environment_are_one_line(
    module: str, args: list[str], env: Mapping[str, str], message: str
) -> None:
    proc = run_job(module, args, env, timeout=60)
    assert proc.returncode == 2
    err = proc.stderr.strip()
    assert len(err.splitlines()) == 1, err
    assert err.startswith(f"python -m {module}: error: ")
    assert message in err


def test_unreachable_server_and_bad_inputs_fail_fast(mlflow_server: MlflowServer, tmp_path: Path) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    proc = run_job("mlops.train", ["--trades", str(tmp_path / "t.json")], {"MLFLOW_TRACKING_URI": dead}, timeout=60)
    assert proc.returncode == 2
    assert f"cannot reach MLflow at {dead}" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    live = {"MLFLOW_TRACKING_URI": mlflow_server.uri}
    proc = run_job("mlops.train", ["--trades", str(tmp_path / "missing.json")], live, timeout=60)
    assert proc.returncode == 2
    assert "missing.json: file not found" in proc.stderr
    few = tmp_path / "few.json"
    few.write_text(json.dumps(synthetic_trades(4, seed=1)))
    proc = run_job("mlops.train", ["--trades", str(few)], live, timeout=60)
    assert proc.returncode == 2
    assert "4 trades, need at least 10 (--min-trades)" in proc.stderr
