"""History for the sync tests: 60 real trading sessions of synthetic minute bars, served two ways.

``history`` writes the source bars (the last 60 completed XNYS sessions, taken from exchange_calendars
directly, not from the code under test) as plain CSV files. ``polygon_sim`` serves them over REST from a
``python -m services.sim.polygon`` subprocess; ``flatfile_bucket`` uploads them to a real S3-protocol
server (moto's standalone server, a subprocess) as gzip CSV flat files in the venue's key layout, next to
decoy tickers the sync must leave out.
"""

from __future__ import annotations

import csv
import datetime as dt
import gzip
import io
import os
import subprocess
import sys
import time
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import boto3
import exchange_calendars as xcals
import httpx
import pandas as pd
import pytest

from services.core.calendar import ny_date
from services.ingest.synthetic import synthetic_bars
from tests.harness.moto_server import MotoServer
from tests.harness.ports import free_port, wait_for_port

ROOT = Path(__file__).resolve().parents[3]
POLYGON_KEY = "pk-SYNC-3c1d7e09"
SYMBOLS = ("SPY", "QQQ", "SPX", "NDX")
START_PRICES = {"SPY": 600.0, "QQQ": 520.0, "SPX": 6000.0, "NDX": 21000.0}
INDICES = frozenset({"SPX", "NDX"})
SOURCE_COLUMNS = ("ticker", "volume", "open", "close", "high", "low", "window_start", "transactions")
BUCKET = "flatfiles"


def completed_sessions(n: int) -> list[dt.date]:
    """The last ``n`` XNYS sessions whose bars are final (20:15 New York has passed), oldest first, from
    exchange_calendars itself."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # exchange_calendars trips a pandas deprecation internally
        cal = xcals.get_calendar("XNYS", start="2020-01-01")
    now = pd.Timestamp.now(tz="America/New_York")
    final = [d.date() for d in cal.schedule.index
             if pd.Timestamp(f"{d.date()} 20:15", tz="America/New_York") <= now]
    return final[-n:]


@dataclass(frozen=True)
class History:
    root: Path
    days: list[dt.date]

    def source(self, symbol: str, day: dt.date) -> list[dict[str, str]]:
        with (self.root / symbol / f"{day}.csv").open(newline="") as fh:
            return list(csv.DictReader(fh))


@pytest.fixture(scope="session")
def history(tmp_path_factory: pytest.TempPathFactory) -> History:
    root = tmp_path_factory.mktemp("history")
    days = completed_sessions(60)
    for i, symbol in enumerate(SYMBOLS):
        by_day: dict[dt.date, list[list[object]]] = {}
        for b in synthetic_bars(symbol, days[0], len(days), seed=31 + i, start_price=START_PRICES[symbol]):
            by_day.setdefault(ny_date(b.ts), []).append(
                [symbol, int(b.volume), b.open, b.close, b.high, b.low, b.ts, 3 + b.ts % 97]
            )
        assert sorted(by_day) == days
        for day, rows in by_day.items():
            path = root / symbol / f"{day}.csv"
            path.parent.mkdir(parents=True, exist_ok=True)
            with path.open("w", newline="") as fh:
                w = csv.writer(fh)
                w.writerow(SOURCE_COLUMNS)
                w.writerows(rows)
    return History(root, days)


class PolygonSimProcess:
    """``python -m services.sim.polygon`` serving the history's four symbols over REST."""

    def __init__(self, data: Path) -> None:
        self.port = free_port()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "services.sim.polygon", "--port", str(self.port), "--data", str(data),
             "--symbol", "SPY", "--rest-symbols", "QQQ,SPX,NDX", "--api-key", POLYGON_KEY],
            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + 120
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"polygon sim exited {self.proc.returncode}: {self.stop()[-2000:]}")
            try:
                wait_for_port(self.port, timeout_s=0.5)
                return
            except TimeoutError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def admin(self, path: str, doc: Mapping[str, object]) -> None:
        httpx.post(f"{self.url}{path}", json=dict(doc), timeout=10).raise_for_status()

    def stop(self) -> str:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.stderr.read().decode() if self.proc.stderr else ""


@pytest.fixture(scope="session")
def polygon_sim(history: History) -> Iterator[PolygonSimProcess]:
    sim = PolygonSimProcess(history.root)
    yield sim
    sim.stop()


@pytest.fixture
def sim(polygon_sim: PolygonSimProcess) -> Iterator[PolygonSimProcess]:
    """The session's sim with no latency or injected failures left over from another test."""
    yield polygon_sim
    polygon_sim.admin("/sim/latency", {"seconds": 0})


def rest_env(sim: PolygonSimProcess) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("POLYGON_", "MASSIVE_", "MLFLOW_"))}
    env.update(POLYGON_API_KEY=POLYGON_KEY, POLYGON_BASE_URL=sim.url)
    return env


# --- flat files on S3 --------------------------------------------------------------------------------


def flatfile_bytes(history: History, day: dt.date, tickers: Sequence[tuple[str, str]], index: bool) -> bytes:
    """One day's gzip CSV as the venue lays it out: rows grouped by ticker; indices without volume."""
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    cols = ["ticker", "open", "close", "high", "low", "window_start"] if index else list(SOURCE_COLUMNS)
    w.writerow(cols)
    for ticker, symbol in sorted(tickers):
        decoy = ticker not in (symbol, f"I:{symbol}")
        for rec in history.source(symbol, day):
            rec = dict(rec, ticker=ticker)
            if decoy:  # another instrument: different prices, same minutes
                rec.update({k: str(round(float(rec[k]) * 0.5, 2)) for k in ("open", "close", "high", "low")})
            w.writerow([rec[c] for c in cols])
    return gzip.compress(out.getvalue().encode())


@dataclass(frozen=True)
class FlatfileBucket:
    endpoint: str
    bucket: str
    client: object

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("POLYGON_", "MASSIVE_", "MLFLOW_"))}
        env.update(POLYGON_S3_ACCESS_KEY="AKIA-SYNC-TEST", POLYGON_S3_SECRET_KEY="secret-sync-test",
                   POLYGON_S3_ENDPOINT=self.endpoint, POLYGON_S3_BUCKET=self.bucket)
        return env


@pytest.fixture(scope="session")
def moto_server() -> Iterator[MotoServer]:
    server = MotoServer().start()
    yield server
    server.close()


@pytest.fixture(scope="session")
def flatfile_bucket(moto_server: MotoServer, history: History) -> FlatfileBucket:
    s3 = boto3.client("s3", endpoint_url=moto_server.endpoint, aws_access_key_id="x", aws_secret_access_key="y",
                      region_name="us-east-1")
    s3.create_bucket(Bucket=BUCKET)
    stocks = [("SPY", "SPY"), ("QQQ", "QQQ"), ("SPYG", "SPY")]
    indices = [("I:SPX", "SPX"), ("I:NDX", "NDX"), ("I:SPXEW", "SPX")]
    for day in history.days:
        s3.put_object(Bucket=BUCKET, Key=f"us_stocks_sip/minute_aggs_v1/{day:%Y/%m}/{day}.csv.gz",
                      Body=flatfile_bytes(history, day, stocks, index=False))
        s3.put_object(Bucket=BUCKET, Key=f"us_indices/minute_aggs_v1/{day:%Y/%m}/{day}.csv.gz",
                      Body=flatfile_bytes(history, day, indices, index=True))
    return FlatfileBucket(moto_server.endpoint, BUCKET, s3)


def run_cli(
    args: Sequence[str], env: Mapping[str, str], cwd: Path, timeout: float = 600
) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", *args], cwd=cwd, env=dict(env), capture_output=True, text=True,
                          timeout=timeout, check=False)
