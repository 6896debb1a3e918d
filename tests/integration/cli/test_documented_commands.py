"""The README's run command and the seed's backtest/calibration commands, run verbatim."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from services.core.datasets import QQQ_1MIN_UTC
from services.core.learner_policy import decode_policy
from services.core.settings import PROJECT_ROOT
from tests.harness.mlflow_server import MlflowServer
from tests.realdata import require_real

BACKTEST = ("python -m services.backtest.main --symbol SPY --data data/backtests/spy_1m.csv "
            "--output storage/backtests/spy_summary.json --trades-output storage/backtests/spy_trades.json")
CALIBRATE = ("python -m services.backtest.calibrate --symbols SPY QQQ --data data/backtests/spy_1m.duckdb "
             "--table bars_intraday --output backtests/calibration.json")


def _sh(cmd: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    argv = shlex.split(cmd)
    if argv[0] == "python":
        argv[0] = sys.executable
    return subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=900, stdin=subprocess.DEVNULL,
                          env=env)


def test_readme_first_lines_are_the_two_commands() -> None:
    lines = [ln.strip() for ln in (PROJECT_ROOT / "README.md").read_text().splitlines() if ln.strip()]
    assert lines[1].startswith("scripts/run") and lines[2].startswith("scripts/test")
    ci = (PROJECT_ROOT / ".ci" / "run").read_text()
    assert "scripts/test" in ci


@pytest.mark.integration
def test_readme_run_command_runs_a_paper_session() -> None:
    proc = subprocess.run(["bash", "scripts/run"], cwd=PROJECT_ROOT, capture_output=True, text=True,
                          timeout=900, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "spy_1min_2025-07-09.csv: 937 accepted, 0 rejected" in proc.stdout
    assert "done:" in proc.stdout and "Traceback" not in proc.stderr
    trades = json.loads((PROJECT_ROOT / "storage" / "run" / "trades.json").read_text())
    assert isinstance(trades, list)


LEARNER_HEADING = "### The learner"


def _indented(section: str) -> list[str]:
    return [ln.strip() for ln in section.splitlines() if ln.startswith("    ") and ln.strip()]


def _commands_section() -> str:
    text = (PROJECT_ROOT / "README.md").read_text()
    return text.split("## Commands", 1)[1].split("\n## ", 1)[0]


def _readme_commands() -> list[str]:
    """The indented commands of the Commands section before its learner part (run below on their own)."""
    return _indented(_commands_section().split(LEARNER_HEADING, 1)[0])


def _learner_commands() -> list[str]:
    return _indented(_commands_section().split(LEARNER_HEADING, 1)[1].split("\n### ", 1)[0])


@pytest.mark.integration
def test_readme_and_seed_commands_verbatim(tmp_path: Path) -> None:
    commands = _readme_commands()
    assert BACKTEST in commands and CALIBRATE in commands
    # Relative paths in the commands resolve against the project's data/ but write into tmp_path.
    (tmp_path / "data").symlink_to(PROJECT_ROOT / "data")
    for cmd in commands:
        if cmd.startswith("dreambot "):
            cmd = f"{Path(sys.executable).parent / 'dreambot'} {cmd.removeprefix('dreambot ')}"
        proc = _sh(cmd, tmp_path)
        assert proc.returncode == 0, f"{cmd}\n{proc.stderr[-2000:]}"

    features = (tmp_path / "storage/spy_features.csv").read_text().splitlines()
    header = features[0].split(",")
    assert header[:7] == ["ts", "open", "high", "low", "close", "volume", "vwap"]
    assert {"vwap_upper_3", "vwap_lower_3", "atr_14", "adx_14", "plus_di_14", "minus_di_14"} <= set(header)
    assert len(features) == 1 + 937

    summary = json.loads((tmp_path / "storage/backtests/spy_summary.json").read_text())
    for key in ("expectancy", "win_rate", "average_win", "average_loss", "max_drawdown", "profit_factor",
                "sharpe", "trade_count", "playbooks"):
        assert key in summary
    trades = json.loads((tmp_path / "storage/backtests/spy_trades.json").read_text())
    assert trades, "the real SPY recording should trade"
    closed = [t for t in trades if t["status"] == "closed"]
    for t in closed:
        assert {"entry_time", "exit_time", "entry_price", "exit_price", "contract", "quantity", "pnl", "mae",
                "mfe", "exit_reason", "playbook", "reason"} <= set(t)
        assert t["entry_time"][-6:] in ("-04:00", "-05:00")
    # Closed round trips sum to the net pnl; positions open at the end of the data carry no pnl yet.
    assert abs(sum(t["pnl"] for t in closed) - summary["net_pnl"]) < 1e-6
    assert all(t["pnl"] is None for t in trades if t["status"] == "open")
    assert summary["option_prices"]["source"] == "synthetic" and summary["bar_interval_s"] == {"SPY": 60}
    for name in ("summary.csv", "fill_quality.csv"):
        assert (tmp_path / "backtests" / name).stat().st_size > 0

    doc = json.loads((tmp_path / "backtests/calibration.json").read_text())
    assert {"risk_multiplier", "pot_threshold", "global", "playbooks", "rule"} <= set(doc)
    assert set(doc["symbols"]) == {"SPY", "QQQ"}
    assert 0.25 <= doc["risk_multiplier"] <= 1.5 and 0.0 < doc["pot_threshold"] < 1.0
    assert doc["global"]["trade_count"] == sum(p["trade_count"] for p in doc["playbooks"].values())


@pytest.mark.integration
def test_readme_learner_commands_verbatim(tmp_path: Path, mlflow_server: MlflowServer, experiment: str) -> None:
    """Train on real QQQ sessions 1-8, then replay 9-12 frozen and 1-12 walk-forward, as the README says."""
    commands = _learner_commands()
    assert [c.split()[:3] for c in commands] == [["python", "-m", "mlops.train"], ["dreambot", "backtest", "--symbol"],
                                                ["dreambot", "backtest", "--symbol"]]
    frame = pd.read_csv(require_real(QQQ_1MIN_UTC))
    days = sorted(frame["Datetime"].str[:10].unique())
    for name, chosen in (("earlier.csv", days[:8]), ("later.csv", days[8:12]), ("all.csv", days[:12])):
        frame[frame["Datetime"].str[:10].isin(chosen)].to_csv(tmp_path / name, index=False)
    env = dict(os.environ, MLFLOW_TRACKING_URI=mlflow_server.uri, DREAMBOT_MLFLOW_EXPERIMENT=experiment)
    reasons: dict[str, list[str]] = {}
    for cmd in commands:
        if cmd.startswith("dreambot "):
            cmd = f"{Path(sys.executable).parent / 'dreambot'} {cmd.removeprefix('dreambot ')}"
        proc = _sh(cmd, tmp_path, env)
        assert proc.returncode == 0, f"{cmd}\n{proc.stderr[-2000:]}"
        if "mlops.train" in cmd:
            run_id = proc.stdout.strip().splitlines()[-1]
            client = MlflowClient(tracking_uri=mlflow_server.uri)
            assert client.get_run(run_id).info.status == "FINISHED"
            logged = Path(client.download_artifacts(run_id, "policy.json", str(tmp_path)))
            written = (tmp_path / "storage" / "policy.json").read_bytes()
            policy = decode_policy(written)
            assert decode_policy(logged.read_bytes()) == policy
            assert policy.trades >= 10 and policy.arms and policy.meta, "the policy holds what it was trained on"
        else:
            mode = cmd.split("--learner ", 1)[1].split()[0]
            trades = json.loads((tmp_path / "storage" / "backtests" / "trades.json").read_text())
            reasons[mode] = [t["reason"] for t in trades]
    # Every trade says what the learner contributed (arm, probability, regime); walk-forward has no
    # policy before its first retrain, and says so.
    assert set(reasons) == {"frozen", "walk-forward"}
    assert reasons["frozen"] and all("learner [frozen policy" in r and "bandit chose" in r and "meta p=" in r
                                     and "regime '" in r for r in reasons["frozen"])
    walk = reasons["walk-forward"]
    assert walk and all("learner [walk-forward" in r and "regime '" in r for r in walk)
    assert any("walk-forward policy v" in r and "bandit chose" in r for r in walk), "it never retrained"
