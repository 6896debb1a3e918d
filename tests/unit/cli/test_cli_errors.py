"""Bad CLI arguments and bad inputs give one readable line on stderr and exit 2, never a traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from services.core.settings import PROJECT_ROOT


def _run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=PROJECT_ROOT,
                          timeout=120, env=env)


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["-m", "services.cli", "bogus"], "invalid choice"),
        (["-m", "services.cli", "features", "--symbol", "SPY"], "required"),
        (["-m", "services.cli", "features", "--data", "nope.csv", "--symbol", "SPY", "--output", "x.csv"],
         "nope.csv"),
        (["-m", "services.cli", "features", "--data", "data/sample/spy_1min_2025-07-09.csv", "--symbol", "SPY",
          "--output", "x.txt"], ".csv or .parquet"),
        (["-m", "services.cli", "run", "--speed", "fast"], "invalid speed"),
        (["-m", "services.backtest.main", "--symbol", "XYZ"], "invalid choice"),
        (["-m", "services.backtest.main", "--symbol", "SPY", "--data", "missing.parquet"], "missing.parquet"),
        (["-m", "services.backtest.main", "--symbol", "SPY", "--data", "data/sample/spy_1min_2025-07-09.csv",
          "--table", "bars_intraday"], "table"),
        (["-m", "services.backtest.calibrate", "--symbols"], "--symbols"),
        (["-m", "services.backtest.main", "--symbol", "SPY", "--sessions", "0"], "--sessions"),
    ],
)
def test_one_line_errors(argv: list[str], needle: str) -> None:
    proc = _run(*argv)
    assert proc.returncode == 2, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, proc.stderr
    assert needle in lines[0] and "Traceback" not in proc.stderr


def test_bad_config_is_one_line(tmp_path: Path) -> None:
    cfg = tmp_path / "config"
    cfg.mkdir()
    for name in ("playbooks.yaml", "broker.yaml", "events.yaml"):
        (cfg / name).write_text((PROJECT_ROOT / "config" / name).read_text())
    (cfg / "risk.yaml").write_text((PROJECT_ROOT / "config" / "risk.yaml").read_text() + "\nbogus_limit: 3\n")
    proc = _run("-m", "services.backtest.main", "--symbol", "SPY", "--config-dir", str(cfg),
                "--output", str(tmp_path / "s.json"), "--trades-output", str(tmp_path / "t.json"))
    assert proc.returncode == 2
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "bogus_limit" in lines[0], proc.stderr
