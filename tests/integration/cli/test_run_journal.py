"""`dreambot run` writes the session's parquet journal: what it holds is what the run reported.

The run's own outputs (summary.json, trades.json) and the recording (read here with ``csv``) are the
references; the journal is read with pandas (``read_table``) and DuckDB over the hive layout.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import duckdb
import pytest

from services.core.datasets import SAMPLE_BARS
from services.core.journal import read_table

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[3]


def _run(out: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DREAMBOT_")}
    done = subprocess.run([sys.executable, "-m", "services.cli", "run", "--output-dir", str(out), *extra],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def _recording_minutes() -> int:
    with SAMPLE_BARS.open(newline="") as fh:
        return sum(1 for _ in csv.DictReader(fh))


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("run")
    done = _run(out)
    assert f"journal {out / 'parquet'} (session default)" in done.stdout
    return out


def test_the_journal_holds_what_the_run_reported(run_dir: Path) -> None:
    journal = run_dir / "parquet"
    summary = json.loads((run_dir / "summary.json").read_text())
    trades: list[dict[str, Any]] = json.loads((run_dir / "trades.json").read_text())
    features = read_table(journal, "features")
    assert len(features) == summary["bars"] == _recording_minutes()
    assert features["ts"].is_monotonic_increasing and set(features["session"]) == {"default"}
    fills = read_table(journal, "fills")
    assert len(fills) == summary["fills"] and (fills["filled_quantity"] > 0).all()
    orders = read_table(journal, "orders")
    assert set(fills["id"]) <= set(orders["id"])
    assert {"accepted", "filled"} <= set(orders["status"])
    got = read_table(journal, "trades")
    assert sorted(got["id"]) == sorted(t["id"] for t in trades)
    by_id = {t["id"]: t for t in trades}
    for row in got.itertuples(index=False):
        want = by_id[row.id]
        assert (row.entry_price, row.exit_price, row.quantity) == pytest.approx(
            (want["entry_price"], want["exit_price"], want["quantity"]))
        assert row.pnl == pytest.approx(want["pnl"])
    chain = read_table(journal, "chain")
    # Around the money: 21 strikes x 2 rights of one expiry per snapshot, the held contracts among them.
    per_snapshot = chain.groupby("ts").agg(n=("strike", "size"), expiries=("expiry", "nunique"))
    assert (per_snapshot["expiries"] == 1).all() and per_snapshot["n"].max() == 42
    assert chain["iv"].notna().mean() > 0.5


def test_duckdb_reads_the_hive_layout(run_dir: Path) -> None:
    journal = run_dir / "parquet"
    summary = json.loads((run_dir / "summary.json").read_text())
    con = duckdb.connect()
    rows = con.execute(
        "select session, date, count(*) from read_parquet(?, hive_partitioning = true) group by all",
        [str(journal / "features" / "*" / "*" / "*.parquet")]).fetchall()
    assert [(s, str(d)) for s, d, _ in rows] == [("default", "2025-07-09")]
    assert rows[0][2] == summary["bars"]
    (pnl,) = con.execute("select sum(pnl) from read_parquet(?, hive_partitioning = true)",
                         [str(journal / "trades" / "*" / "*" / "*.parquet")]).fetchone() or (None,)
    assert pnl == pytest.approx(summary["net_pnl"], abs=0.01)


def test_a_rerun_replaces_its_session_and_no_journal_writes_none(run_dir: Path, tmp_path: Path) -> None:
    journal = run_dir / "parquet"
    before = {t: len(read_table(journal, t)) for t in ("features", "orders", "trades")}
    _run(run_dir)
    assert {t: len(read_table(journal, t)) for t in before} == before
    _run(tmp_path, "--no-journal")
    assert not (tmp_path / "parquet").exists()
