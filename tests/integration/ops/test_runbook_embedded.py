"""The runbook's embedded-session commands, run verbatim by bash: the bundled real SPY day, and a
bounded live session on the Polygon sim (its own process, streaming a recorded window at 600x)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from services.core.settings import PROJECT_ROOT
from tests.unit.sim.conftest import SAMPLE, SimProcess

pytestmark = pytest.mark.integration

RUN = "dreambot run"
RUN_LIVE = "dreambot run --live --duration 120 --idle-exit 10"
COMMANDS = (RUN, RUN_LIVE)

KEY = "pk-SENTINEL-runbook-5e1a"
WINDOW = ("09:20", "11:10")  # New York: the sample day holds regular hours only, so 09:30-11:10, 100 bars


def sh(cmd: str, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("DREAMBOT_", "OMS_", "POLYGON_"))}
    base.update(PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}", DREAMBOT_CALIBRATION="none",
                **env)
    proc = subprocess.run(["bash", "-c", cmd], cwd=cwd, env=base, capture_output=True, text=True, timeout=600,
                          stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, f"{cmd}\n{proc.stdout}\n{proc.stderr[-3000:]}"
    assert "Traceback" not in proc.stderr
    return proc


@pytest.fixture
def sim(tmp_path: Path) -> Iterator[SimProcess]:
    lines = SAMPLE.read_text().splitlines()
    day = tmp_path / "spy_window.csv"
    day.write_text("\n".join([lines[0]] + [ln for ln in lines[1:] if WINDOW[0] <= ln[11:16] < WINDOW[1]]) + "\n")
    proc = SimProcess("services.sim.polygon", "--data", str(day), "--symbol", "SPY", "--api-key", KEY,
                      "--speed", "600x", "--asof", f"2025-07-09T{WINDOW[0]}:00-04:00")
    yield proc
    proc.stop()


def test_the_bundled_day_runs_as_a_paper_session(tmp_path: Path) -> None:
    (tmp_path / "data").symlink_to(PROJECT_ROOT / "data")
    out = sh(RUN, tmp_path).stdout
    assert "spy_1min_2025-07-09.csv: 937 accepted, 0 rejected" in out  # 09:30-16:00 less missing minutes
    assert re.search(r"^session: SPY paper, 937 bars from ", out, flags=re.M), out
    done = next(ln for ln in out.splitlines() if ln.startswith("done: "))
    assert re.match(r"done: \d+ signals, \d+ orders \(\d+ refused by risk\), \d+ fills, \d+ trades, net pnl ", done)
    trades = json.loads((tmp_path / "storage" / "run" / "trades.json").read_text())
    summary = json.loads((tmp_path / "storage" / "run" / "summary.json").read_text())
    assert summary["trade_count"] == len([t for t in trades if t["status"] == "closed"])


def test_a_live_session_is_bounded_and_says_why_it_ended(sim: SimProcess, tmp_path: Path) -> None:
    out = sh(RUN_LIVE, tmp_path, POLYGON_API_KEY=KEY, POLYGON_BASE_URL=sim.url,
             POLYGON_WS_URL=sim.url.replace("http://", "ws://")).stdout
    ws = sim.url.replace("http://", "ws://")
    assert out.splitlines()[0] == f"session: SPY paper, live from {ws} (REST {sim.url}) for up to 120 s", out
    done = next(ln for ln in out.splitlines() if ln.startswith("done ("))
    assert done.startswith("done (no data for 10 s): 100 bars "), done  # the window ends long before 120 s
    summary = json.loads((tmp_path / "storage" / "run" / "live_summary.json").read_text())
    assert summary["bars"] == 100 and summary["reconnects"] == 0
    assert KEY not in out
