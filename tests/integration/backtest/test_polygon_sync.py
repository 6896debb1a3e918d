"""The seed's sync command, verbatim, against the Polygon sim (REST) and moto's S3 server (flat files).

The written tree is checked against the source bars read independently (plain ``csv`` on the history the
fixtures wrote, and the sim's own JSON for the fields only the sim knows), and the resume drill SIGKILLs
a sync mid-run and reruns it.
"""

from __future__ import annotations

import csv
import datetime as dt
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.integration.backtest.conftest import (
    INDICES,
    POLYGON_KEY,
    SYMBOLS,
    FlatfileBucket,
    History,
    PolygonSimProcess,
    rest_env,
    run_cli,
)

pytestmark = pytest.mark.integration

SEED = ["services.backtest.polygon_sync", "--symbols", "SPY", "QQQ", "SPX", "NDX", "--days", "60",
        "--dest", "data/flatfiles"]
HEADER = ["ticker", "volume", "open", "close", "high", "low", "window_start", "transactions", "vwap"]


def read_day(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as fh:
        reader = csv.DictReader(fh)
        assert reader.fieldnames == HEADER
        return list(reader)


def assert_tree_equals_source(tree: Path, history: History) -> int:
    """Every (symbol, day) file holds exactly the source's bars: same minutes, prices and volume."""
    assert sorted(p.name for p in tree.iterdir() if p.is_dir()) == sorted(SYMBOLS)
    rows = 0
    for symbol in SYMBOLS:
        assert sorted(p.name for p in (tree / symbol).iterdir()) == [f"{d}.csv" for d in history.days], symbol
        for day in history.days:
            got, want = read_day(tree / symbol / f"{day}.csv"), history.source(symbol, day)
            assert [r["window_start"] for r in got] == [r["window_start"] for r in want], (symbol, day)
            for g, w in zip(got, want, strict=True):
                assert g["ticker"] == symbol
                assert [float(g[k]) for k in ("open", "high", "low", "close")] == [
                    float(w[k]) for k in ("open", "high", "low", "close")
                ]
                assert float(g["volume"]) == (0.0 if symbol in INDICES else float(w["volume"]))
            rows += len(got)
    return rows


def test_seed_command_over_rest_writes_the_bars_the_sim_served(
    sim: PolygonSimProcess, history: History, tmp_path: Path
) -> None:
    out = run_cli(SEED, rest_env(sim), tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    tree = tmp_path / "data" / "flatfiles"
    rows = assert_tree_equals_source(tree, history)
    assert rows == 4 * sum(len(history.source("SPY", d)) for d in history.days)
    assert f"240 files written ({rows} bars), 0 already complete, 0 without bars" in out.stdout
    # An early close (13:00) has its 210 minutes, the last at 12:59 New York.
    short = [d for d in history.days if len(history.source("SPY", d)) == 210]
    for day in short:
        assert len(read_day(tree / "SPY" / f"{day}.csv")) == 210
    # VWAP and trade counts come from the sim alone: compare with its own JSON answer, fetched here.
    day = history.days[len(history.days) // 2]
    served = httpx.get(f"{sim.url}/v2/aggs/ticker/QQQ/range/1/minute/{day}/{day}",
                       params={"limit": 50000}, headers={"Authorization": f"Bearer {POLYGON_KEY}"}).json()
    got = read_day(tree / "QQQ" / f"{day}.csv")
    assert [(int(r["window_start"]) // 1_000_000, float(r["vwap"]), int(r["transactions"])) for r in got] == [
        (b["t"], b["vw"], b["n"]) for b in served["results"]
    ]
    index_day = read_day(tree / "SPX" / f"{day}.csv")
    assert {(r["volume"], r["transactions"], r["vwap"]) for r in index_day} == {("0", "", "")}
    # The second run is a no-op: every day is complete, no request is made, no file changes.
    before = {p: p.stat().st_mtime_ns for p in tree.rglob("*.csv")}
    again = run_cli(SEED, rest_env(sim), tmp_path)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "0 files written (0 bars), 240 already complete" in again.stdout
    assert "0 requests" in again.stdout
    assert {p: p.stat().st_mtime_ns for p in tree.rglob("*.csv")} == before


def test_resume_drill_sigkill_mid_run_then_rerun(sim: PolygonSimProcess, history: History, tmp_path: Path) -> None:
    tree = tmp_path / "data" / "flatfiles"
    sim.admin("/sim/latency", {"seconds": 0.05})
    proc = subprocess.Popen([sys.executable, "-m", *SEED], cwd=tmp_path, env=rest_env(sim),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 300
        while len(list(tree.glob("*/*.csv"))) < 40:
            assert proc.poll() is None, "the sync finished before it could be killed"
            assert time.monotonic() < deadline
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    sim.admin("/sim/latency", {"seconds": 0})
    done = sorted(tree.glob("*/*.csv"))
    assert 40 <= len(done) < 240
    # Whatever the kill interrupted, every day file in place is whole.
    for path in done:
        symbol, day = path.parent.name, dt.date.fromisoformat(path.stem)
        assert [r["window_start"] for r in read_day(path)] == [r["window_start"] for r in history.source(symbol, day)]
    # A write cut short leaves only a hidden temporary file; plant one as a kill during a write would.
    stale = tree / "QQQ" / f".{history.days[-1]}.csv.999999.part"
    stale.write_text("ticker,volume\nQQQ,1\n")
    out = run_cli(SEED, rest_env(sim), tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    assert f"{240 - len(done)} files written" in out.stdout and f"{len(done)} already complete" in out.stdout
    assert not list(tree.rglob("*.part"))
    assert_tree_equals_source(tree, history)  # no missing day, no duplicate or foreign row


def test_429s_back_off_and_the_sync_completes(sim: PolygonSimProcess, history: History, tmp_path: Path) -> None:
    sim.admin("/sim/fail", {"status": 429, "count": 2})
    args = ["services.backtest.polygon_sync", "--symbols", "SPY", "--start", str(history.days[-2]), "--dest", "t"]
    started = time.monotonic()
    out = run_cli(args, rest_env(sim), tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "2 files written" in out.stdout and "4 requests" in out.stdout  # 2 days + 2 refused
    assert time.monotonic() - started > 0.5 + 1.0  # backed off 0.5 s, then 1 s
    assert "polygon request retried" in out.stderr


def test_bad_arguments_and_configuration_are_one_line_exit_2(sim: PolygonSimProcess, tmp_path: Path) -> None:
    env = rest_env(sim)
    cases = {
        ("--symbols", "SPY", "--days", "0"): "--days must be >= 1",
        ("--symbols", "SPY", "--days", "3", "--start", "2025-01-02"): "give --days or --start, not both",
        ("--symbols", "SPY", "--start", "2025-13-01"): "invalid date '2025-13-01'",
        ("--symbols", "SPY", "--start", "2025-07-04", "--end", "2025-07-04"): "no completed trading session",
        ("--symbols", "SPY", "--days", "3", "--sync-method", "s3"): "needs POLYGON_S3_ACCESS_KEY and",
        ("--symbols", "SPY", "--days", "3", "--sync-method", "s3", "--unadjusted"): "--unadjusted applies to",
    }
    for args, message in cases.items():
        out = run_cli(["services.backtest.polygon_sync", *args, "--dest", "t"], env, tmp_path)
        assert out.returncode == 2, (args, out.stderr)
        lines = out.stderr.strip().splitlines()
        assert len(lines) == 1 and message in lines[0], (args, lines)
    wrong_key = dict(env, POLYGON_API_KEY="pk-wrong")
    out = run_cli(["services.backtest.polygon_sync", "--symbols", "SPY", "--days", "1", "--dest", "t"], wrong_key,
                  tmp_path)
    assert out.returncode == 2 and "Unknown API Key" in out.stderr.strip().splitlines()[-1]
    assert "Traceback" not in out.stderr and "pk-wrong" not in out.stderr
    # A tree of adjusted bars is not topped up with unadjusted ones.
    (tmp_path / "adj").mkdir()
    (tmp_path / "adj" / ".polygon_sync.json").write_text('{"adjusted": true, "source": "rest"}\n')
    out = run_cli(["services.backtest.polygon_sync", "--symbols", "SPY", "--days", "1", "--dest", "adj",
                   "--unadjusted"], env, tmp_path)
    assert out.returncode == 2 and "use another --dest" in out.stderr


def test_seed_command_over_s3_flat_files(flatfile_bucket: FlatfileBucket, history: History, tmp_path: Path) -> None:
    out = run_cli([*SEED, "--sync-method", "s3"], flatfile_bucket.env(), tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    tree = tmp_path / "data" / "flatfiles"
    assert_tree_equals_source(tree, history)  # the decoys SPYG and I:SPXEW are left out
    assert "240 files written" in out.stdout and "120 requests" in out.stdout  # 2 objects a day
    spy = read_day(tree / "SPY" / f"{history.days[0]}.csv")
    src = history.source("SPY", history.days[0])
    assert [r["transactions"] for r in spy] == [r["transactions"] for r in src]  # kept as published


def test_s3_day_not_published_yet_is_reported_then_fetched(
    flatfile_bucket: FlatfileBucket, history: History, tmp_path: Path
) -> None:
    s3 = flatfile_bucket.client
    last = history.days[-1]
    key = f"us_indices/minute_aggs_v1/{last:%Y/%m}/{last}.csv.gz"
    body = s3.get_object(Bucket=flatfile_bucket.bucket, Key=key)["Body"].read()  # type: ignore[attr-defined]
    s3.delete_object(Bucket=flatfile_bucket.bucket, Key=key)  # type: ignore[attr-defined]
    try:
        args = ["services.backtest.polygon_sync", "--symbols", "SPY", "SPX", "--days", "3", "--dest", "t",
                "--sync-method", "s3"]
        out = run_cli(args, flatfile_bucket.env(), tmp_path)
        assert out.returncode == 1
        assert "5 files written" in out.stdout and f"no bars for SPX {last}" in out.stdout
        assert not (tmp_path / "t" / "SPX" / f"{last}.csv").exists()
    finally:
        s3.put_object(Bucket=flatfile_bucket.bucket, Key=key, Body=body)  # type: ignore[attr-defined]
    out = run_cli(args, flatfile_bucket.env(), tmp_path)
    assert out.returncode == 0 and "1 files written" in out.stdout and "5 already complete" in out.stdout


def test_a_terminal_gets_a_progress_bar_and_a_pipe_plain_lines(
    sim: PolygonSimProcess, history: History, tmp_path: Path
) -> None:
    import fcntl
    import pty
    import struct
    import termios

    args = [sys.executable, "-m", "services.backtest.polygon_sync", "--symbols", "SPY", "QQQ", "--start",
            str(history.days[-3]), "--dest", "tty"]
    main, child = pty.openpty()
    fcntl.ioctl(child, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))  # a terminal has a size
    proc = subprocess.Popen(args, cwd=tmp_path, env=rest_env(sim), stdout=subprocess.PIPE, stderr=child)
    os.close(child)
    chunks = []
    while True:
        try:
            data = os.read(main, 4096)
        except OSError:  # the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    proc.wait(120)
    os.close(main)
    assert proc.returncode == 0
    screen = b"".join(chunks).decode()
    assert "polygon_sync: 100%" in screen and "6/6" in screen and "\r" in screen
    assert "bars -> " not in screen
    piped = run_cli(["services.backtest.polygon_sync", "--symbols", "SPY", "QQQ", "--start", str(history.days[-3]),
                     "--dest", "pipe"], rest_env(sim), tmp_path)
    lines = piped.stderr.strip().splitlines()
    assert [ln.split(": ", 1)[0] for ln in lines[1:]] == [f"{s} {d}" for d in history.days[-3:] for s in ("SPY", "QQQ")]
    assert "%" not in piped.stderr
