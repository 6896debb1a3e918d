"""The backtest reports bad bars by kind (summary.json, summary.csv, stdout of the backtest and
`dreambot run`): one-bar spikes and zero-volume regular-hours bars flagged, missing minutes counted."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from services.backtest.main import main
from services.cli import main as dreambot
from services.core.datasets import SPY_1MIN
from tests.realdata import require_real


def _spy_frame(path: Path) -> pd.DataFrame:
    df = pd.read_csv(path)
    df["ny"] = pd.to_datetime(df["Datetime"], utc=True).dt.tz_convert("America/New_York")
    return df


def _missing_regular_minutes(df: pd.DataFrame) -> int:
    """Regular-hours minutes (09:30-15:59, full days) inside the data's span with no bar, by pandas."""
    present = set(df["ny"])
    missing = 0
    for day in sorted({t.date() for t in df["ny"]}):
        slots = pd.date_range(f"{day} 09:30", f"{day} 15:59", freq="1min", tz="America/New_York")
        missing += sum(1 for s in slots if df["ny"].iloc[0] <= s <= df["ny"].iloc[-1] and s not in present)
    return missing


def _wick_spikes(df: pd.DataFrame) -> int:
    body_lo = df[["Open", "Close"]].min(axis=1)
    body_hi = df[["Open", "Close"]].max(axis=1)
    return int((np.maximum(body_lo - df["Low"], df["High"] - body_hi) > 0.005 * df["Close"]).sum())


@pytest.mark.realdata
def test_real_spy_recording_reports_its_bad_bars(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = require_real(SPY_1MIN)
    df = _spy_frame(path)
    spikes, missing = _wick_spikes(df), _missing_regular_minutes(df)
    zero_rth = int(((df["Volume"] == 0) & (df["ny"].dt.strftime("%H:%M").between("09:30", "15:59"))).sum())
    assert (spikes, missing, zero_rth) == (11, 9, 0)  # the recording's bad prints and real gaps
    code = main(["--symbol", "SPY", "--data", str(path), "--calibration", "none",
                 "--output", str(tmp_path / "summary.json"), "--trades-output", str(tmp_path / "trades.json"),
                 "--reports-dir", str(tmp_path)])
    assert code == 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["flagged_bars"] == {"SPY": {"spike": spikes, "zero_volume": zero_rth, "missing_regular": missing}}
    row = next(csv.DictReader((tmp_path / "summary.csv").open()))
    assert (row["playbook"], row["bad_bars_spike"], row["bad_bars_zero_volume"], row["bad_bars_missing_regular"]) == (
        "ALL", "11", "0", "9")
    out = capsys.readouterr().out
    assert ("  SPY bad bars: 11 flagged (spike 11, zero_volume 0), kept out of every indicator; "
            "9 regular-hours bars missing") in out


def _hand_built_day(path: Path) -> None:
    """A calm SPY session with two zero-volume regular-hours minutes and one bad print."""
    t0 = pd.Timestamp("2025-07-09 09:30", tz="America/New_York")
    rows = []
    for i in range(390):
        if i in (200, 201):  # two missing minutes
            continue
        px = 620.0 + 0.02 * ((i * 7) % 11)
        low = px - 0.05 - (12.0 if i == 150 else 0.0)  # one print 12 dollars under the body
        volume = 0 if i in (100, 300) else 5000
        rows.append(((t0 + pd.Timedelta(minutes=i)).isoformat(), px, px + 0.05, low, px, volume))
    pd.DataFrame(rows, columns=["Datetime", "Open", "High", "Low", "Close", "Volume"]).to_csv(path, index=False)


def test_dreambot_run_reports_hand_built_bad_bars(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "spy_1min_2025-07-09.csv"
    _hand_built_day(data)
    code = dreambot(["run", "--data", str(data), "--symbol", "SPY", "--speed", "0", "--calibration", "none",
                     "--output-dir", str(tmp_path / "run")])
    assert code == 0
    out = capsys.readouterr().out
    assert ("  SPY bad bars: 3 flagged (spike 1, zero_volume 2), kept out of every indicator; "
            "2 regular-hours bars missing") in out
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["flagged_bars"]["SPY"] == {"spike": 1, "zero_volume": 2, "missing_regular": 2}
