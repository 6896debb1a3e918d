"""Every entry point: --help with no service around, its broker and feed built from SessionConfig,
refusals as one line, and `dreambot config` telling where each value came from."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from services.core.settings import PROJECT_ROOT

STAGES = ("ingest", "features", "signals", "risk", "oms", "learner")
TOKEN = "tt-SENTINEL-5b8e2d6f90ac"


def _env(**extra: str) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("DREAMBOT_", "TRADIER_", "POLYGON_", "OMS_"))}
    # Nothing listens there: an entry point that tried Kafka or Redis would hang or fail.
    base.update(DREAMBOT_KAFKA_BOOTSTRAP="127.0.0.1:1", DREAMBOT_REDIS_URL="redis://127.0.0.1:1/0")
    # Services-mode risk and OMS refuse to start without risk's approval key.
    base.update(DREAMBOT_APPROVAL_KEY="entry-point-test-approval-key-0123456789")
    base.update(extra)
    return base


def _run(*args: str, env: dict[str, str] | None = None, cwd: Path = PROJECT_ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=cwd, timeout=120,
                          env=env or _env())


@pytest.mark.parametrize("argv", [
    *[["-m", f"services.{s}.main", "--help"] for s in STAGES],
    ["-m", "services.cli", "--help"],
    ["-m", "services.cli", "run", "--help"],
    ["-m", "services.cli", "backtest", "--help"],
    ["-m", "services.cli", "calibrate", "--help"],
    ["-m", "services.cli", "services", "--help"],
    ["-m", "services.cli", "config", "--help"],
    ["-m", "services.backtest.main", "--help"],
    ["-m", "services.backtest.calibrate", "--help"],
])
def test_help_works_without_any_service(argv: list[str]) -> None:
    proc = _run(*argv)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("usage: ") and proc.stderr == ""


def test_dreambot_backtest_takes_the_seed_flags(tmp_path: Path) -> None:
    out, trades = tmp_path / "summary.json", tmp_path / "trades.json"
    proc = _run("-m", "services.cli", "backtest", "--symbol", "SPY", "--data", "data/sample/spy_1min_2025-07-09.csv",
                "--output", str(out), "--trades-output", str(trades), "--reports-dir", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(out.read_text())
    assert summary["symbols"] == ["SPY"] and summary["bars"] > 300
    assert isinstance(json.loads(trades.read_text()), list)


@pytest.mark.parametrize("stage", STAGES)
def test_each_stage_builds_from_session_config(stage: str, tmp_path: Path) -> None:
    proc = _run("-m", f"services.{stage}.main", "--check", env=_env(OMS_AUDIT_PATH=str(tmp_path / "a.jsonl")))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(f"{stage}: ok (") and "mode paper" in proc.stdout
    if stage == "oms":
        assert "broker PaperBroker" in proc.stdout


def test_the_oms_builds_tradier_when_configured(tmp_path: Path) -> None:
    env = _env(DREAMBOT_BROKER="tradier", TRADIER_ACCESS_TOKEN=TOKEN, TRADIER_ACCOUNT_ID="VA1",
               TRADIER_BASE_URL="http://127.0.0.1:1/v1", OMS_AUDIT_PATH=str(tmp_path / "a.jsonl"))
    proc = _run("-m", "services.oms.main", "--check", env=env)
    assert proc.returncode == 0, proc.stderr
    assert "broker TradierBroker" in proc.stdout and TOKEN not in proc.stdout + proc.stderr


@pytest.mark.parametrize("argv", [
    ["-m", "services.oms.main"],
    ["-m", "services.risk.main"],
    ["-m", "services.cli", "run"],
    ["-m", "services.cli", "backtest", "--symbol", "SPY"],
    ["-m", "services.cli", "calibrate", "--symbols", "SPY"],
    ["-m", "services.cli", "services", "up", "--session", "s1"],
])
def test_live_mode_with_the_paper_broker_is_refused_everywhere(argv: list[str]) -> None:
    proc = _run(*argv, env=_env(DREAMBOT_MODE="live", DREAMBOT_LIVE_CONFIRM="true"))
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "mode live with the paper broker" in lines[0], proc.stderr


@pytest.mark.parametrize("argv", [["-m", "services.cli", "run"], ["-m", "services.cli", "backtest", "--symbol", "SPY"]])
def test_embedded_runners_refuse_a_real_broker(argv: list[str]) -> None:
    proc = _run(*argv, env=_env(DREAMBOT_BROKER="tradier", TRADIER_ACCESS_TOKEN=TOKEN, TRADIER_ACCOUNT_ID="VA1"))
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "paper broker" in proc.stderr and TOKEN not in proc.stderr


@pytest.mark.parametrize("stage", ["ingest", "features", "signals", "risk", "oms"])
def test_a_stage_process_exits_2_with_one_line(stage: str) -> None:
    proc = _run("-m", f"services.{stage}.main", env=_env(DREAMBOT_HTTP_PORT="not-a-port"))
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"python -m services.{stage}.main: error: environment variable DREAMBOT_HTTP_PORT: http.port: "
        "Input should be a valid integer, unable to parse string as an integer"]


def test_dreambot_config_prints_values_and_their_sources(tmp_path: Path) -> None:
    f = tmp_path / "session.yaml"
    f.write_text("name: paper-7\nsymbols: [SPY, QQQ]\nrisk:\n  max_daily_loss_usd: 400\n")
    proc = _run("-m", "services.cli", "config", "--session-file", str(f),
                env=_env(TRADIER_ACCESS_TOKEN=TOKEN, DREAMBOT_KAFKA_PARTITIONS="6"))
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert f"name = paper-7  (session file {f})" in lines
    assert f"risk.max_daily_loss_usd = 400.0  (session file {f})" in lines
    assert "kafka.partitions = 6  (environment variable DREAMBOT_KAFKA_PARTITIONS)" in lines
    assert "mode = paper  (default)" in lines
    assert "broker.access_token = **********  (environment variable TRADIER_ACCESS_TOKEN)" in lines
    assert TOKEN not in proc.stdout
    as_json = _run("-m", "services.cli", "config", "--session-file", str(f), "--json")
    doc = json.loads(as_json.stdout)
    assert doc["name"] == "paper-7" and "access_token" not in doc["broker"]


def test_dreambot_config_refuses_an_invalid_file_with_one_line(tmp_path: Path) -> None:
    f = tmp_path / "session.yaml"
    f.write_text("mode: live\n")
    proc = _run("-m", "services.cli", "config", "--session-file", str(f))
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "live_confirm" in proc.stderr
    f.write_text("kafka: {partitions: 0}\n")
    proc = _run("-m", "services.cli", "config", "--session-file", str(f))
    assert proc.returncode == 2
    assert proc.stderr.strip() == (f"dreambot: error: session file {f}: kafka.partitions: "
                                   "Input should be greater than or equal to 1")


def test_a_dotenv_file_is_loaded(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("DREAMBOT_SESSION=from-dotenv\n")
    proc = _run("-m", "services.cli", "config", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "name = from-dotenv  (.env: DREAMBOT_SESSION)" in proc.stdout.splitlines()
