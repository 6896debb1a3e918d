"""`python -m services.backtest.main` on each real bar recording reports what it assumed and found.

Per recording (``../shared/data`` or ``$DREAMBOT_DATA_DIR``) the documented command runs once as a
subprocess; its ``summary.json``, ``trades.json`` and stdout are checked against numbers this test
works out itself from the CSV with pandas and exchange_calendars, by the README's rules:

- the bar interval: the most common spacing of consecutive bars of one New York date;
- rows rejected, by reason (``services/ingest/validation.py``'s documented checks, in order: NaN,
  non-positive price, high < low, open/close outside [low, high], negative volume, implausible size,
  then duplicate / out-of-order against the previous accepted row);
- bars flagged, by kind (``services/features/bar_quality.py``'s rule): ``zero_volume`` = a
  regular-hours bar with volume 0; ``spike`` = a wick more than T beyond both its body and the median
  close of the last 20 good bars, T = max(10 x Wilder ATR(14) of the good bars, 50 bps of that median),
  once 20 good closes and the ATR are there; ``missing_regular`` = regular-hours minute slots between the
  first and the last bar of the file with no bar;
- the option-price source (synthetic: bar files carry no quotes) and the positions open at the end.
"""

from __future__ import annotations

import json
import math
import os
import statistics
import subprocess
import sys
from collections import Counter, deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import exchange_calendars as xcals
import pandas as pd
import pytest

from services.core.datasets import real_data_dir
from services.core.settings import PROJECT_ROOT

pytestmark = [pytest.mark.integration, pytest.mark.realdata]

NAMES = ("spy_1min_2025-07-08_2025-07-10.csv", "qqq_1min_utc_2025-04-30_2025-06-13.csv")
RECORDINGS = [real_data_dir() / n for n in NAMES if (real_data_dir() / n).is_file()]
NS = 1_000_000_000


# --- the independent reading of the CSV ----------------------------------------------------------


def read_bars(path: Path) -> pd.DataFrame:
    """Rows as the file says: timestamps with their offset, or UTC when the name says utc (README)."""
    frame = pd.read_csv(path)
    stamps = pd.to_datetime(frame["Datetime"], utc=True) if "utc" not in path.name else \
        pd.to_datetime(frame["Datetime"]).dt.tz_localize("UTC")
    out = pd.DataFrame({"ts": stamps.dt.as_unit("ns").astype("int64"), "open": frame["Open"], "high": frame["High"],
                        "low": frame["Low"], "close": frame["Close"], "volume": frame["Volume"]})
    out["ny_date"] = stamps.dt.tz_convert("America/New_York").dt.date
    return out


def rejected_by_reason(bars: pd.DataFrame) -> dict[str, int]:
    counts: Counter[str] = Counter()
    last: int | None = None
    for ts, o, h, lo, c, v in bars[["ts", "open", "high", "low", "close", "volume"]].itertuples(index=False):
        if not all(math.isfinite(x) for x in (o, h, lo, c, v)):
            reason = "nan"
        elif min(o, h, lo, c) <= 0:
            reason = "non_positive_price"
        elif h < lo:
            reason = "high_below_low"
        elif not (lo <= o <= h and lo <= c <= h):
            reason = "ohlc_outside_range"
        elif v < 0:
            reason = "negative_volume"
        elif h > 1_000_000 or v > 1e12:
            reason = "implausible"
        elif last is not None and ts == last:
            reason = "duplicate"
        elif last is not None and ts < last:
            reason = "out_of_order"
        else:
            last = ts
            continue
        counts[reason] += 1
    return dict(counts)


def sessions(bars: pd.DataFrame) -> dict[Any, tuple[int, int]]:
    """Regular hours (open, close in ns) of each date in the file, early closes included."""
    schedule = xcals.get_calendar("XNYS").schedule
    out = {}
    for day in sorted(set(bars["ny_date"])):
        label = pd.Timestamp(day)
        if label in schedule.index:
            out[day] = (schedule.at[label, "open"].value, schedule.at[label, "close"].value)
    return out


class WilderAtr:
    def __init__(self, n: int = 14) -> None:
        self.n, self.trs, self.prev, self.value = n, 0, None, math.nan

    def add(self, high: float, low: float, close: float) -> None:
        if self.prev is not None:
            tr = max(high - low, abs(high - self.prev), abs(low - self.prev))
            self.trs += 1
            if self.trs < self.n:
                self.value = tr if self.trs == 1 else self.value + tr
            elif self.trs == self.n:
                self.value = (self.value + tr) / self.n
            else:
                self.value = (self.value * (self.n - 1) + tr) / self.n
        self.prev = close

    @property
    def ready(self) -> bool:
        return self.trs >= self.n


def flagged_by_kind(bars: pd.DataFrame, hours: dict[Any, tuple[int, int]]) -> dict[str, int]:
    counts = {"missing_regular": 0, "spike": 0, "zero_volume": 0}
    closes: deque[float] = deque(maxlen=20)
    atr = WilderAtr(14)
    for ts, o, h, lo, c, v, day in bars.itertuples(index=False):
        session = hours.get(day)
        regular = session is not None and session[0] <= ts < session[1]
        if regular and v == 0:
            counts["zero_volume"] += 1
            continue
        if len(closes) == 20 and atr.ready:
            m = statistics.median(closes)
            t = max(10 * atr.value, 50e-4 * m)
            if (h - max(o, c) > t and h - m > t) or (min(o, c) - lo > t and m - lo > t):
                counts["spike"] += 1
                continue
        closes.append(c)
        atr.add(h, lo, c)
    first, last = int(bars["ts"].iloc[0]), int(bars["ts"].iloc[-1])
    present = set(bars["ts"].tolist())
    for start, end in hours.values():
        for slot in range(start, end, 60 * NS):
            if first <= slot <= last and slot not in present:
                counts["missing_regular"] += 1
    return counts


def interval_s(bars: pd.DataFrame) -> int:
    same_day = bars["ny_date"].eq(bars["ny_date"].shift())
    spacing = (bars["ts"].diff()[same_day] // NS).astype(int)
    return int(spacing.value_counts().sort_index().idxmax())


# --- the documented command, once per recording --------------------------------------------------


@dataclass
class Run:
    path: Path
    symbol: str
    summary: dict[str, Any]
    trades: list[dict[str, Any]]
    stdout: str
    bars: pd.DataFrame


@pytest.fixture(scope="module", params=RECORDINGS, ids=lambda p: p.name)
def run(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Run:
    path: Path = request.param
    symbol = path.name.split("_")[0].upper()
    out = tmp_path_factory.mktemp(symbol.lower())
    args = [sys.executable, "-m", "services.backtest.main", "--symbol", symbol, "--data", str(path),
            "--output", str(out / "summary.json"), "--trades-output", str(out / "trades.json"),
            "--reports-dir", str(out / "reports")]
    proc = subprocess.run(args, cwd=PROJECT_ROOT, env=dict(os.environ), capture_output=True, text=True,
                          timeout=1500, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    trades = json.loads((out / "trades.json").read_text())
    return Run(path, symbol, json.loads((out / "summary.json").read_text()),
               trades["trades"] if isinstance(trades, dict) else trades, proc.stdout, read_bars(path))


pytestmark.append(pytest.mark.skipif(not RECORDINGS, reason=f"no real bar recordings in {real_data_dir()}"))


@pytest.mark.timeout(1800)
def test_the_bar_interval_is_the_files_and_stdout_says_so(run: Run) -> None:
    expected = interval_s(run.bars)
    assert expected == 60
    assert run.summary["bar_interval_s"] == {run.symbol: expected}
    assert run.summary["bar_spacing"][run.symbol]["interval_source"] == "data"
    assert f"{run.symbol} bars: interval {expected} s (read from the data)" in run.stdout
    assert "timestamps are bar starts" in run.stdout


@pytest.mark.timeout(1800)
def test_rejected_rows_by_reason_match_the_documented_checks(run: Run) -> None:
    expected = rejected_by_reason(run.bars)
    assert run.summary["rejected_rows"] == {run.symbol: expected}
    total = sum(expected.values())
    accepted = len(run.bars) - total
    assert f"{run.symbol} rows: {run.path}: {accepted} accepted, {total} rejected" in run.stdout
    assert run.summary["bars"] == accepted


@pytest.mark.timeout(1800)
def test_flagged_bars_by_kind_match_the_documented_rule(run: Run) -> None:
    expected = flagged_by_kind(run.bars, sessions(run.bars))
    assert run.summary["flagged_bars"] == {run.symbol: expected}
    assert run.summary["bar_spacing"][run.symbol]["missing_regular_bars"] == expected["missing_regular"]
    flagged = expected["spike"] + expected["zero_volume"]
    assert (f"{run.symbol} bad bars: {flagged} flagged (spike {expected['spike']}, zero_volume "
            f"{expected['zero_volume']}), kept out of every indicator; {expected['missing_regular']} "
            "regular-hours bars missing") in run.stdout
    # The real files do have bad bars: the check is not vacuous on either of them.
    assert expected["spike"] > 0


@pytest.mark.timeout(1800)
def test_option_prices_are_disclosed_as_synthetic(run: Run) -> None:
    prices = run.summary["option_prices"]
    assert prices["source"] == "synthetic"
    assert prices["spread_model"] and prices["vol_rule"]
    assert "option prices: synthetic" in run.stdout
    assert f"option spreads: {prices['spread_model']}" in run.stdout
    assert run.trades and {t["option_price_source"] for t in run.trades} == {"synthetic"}


@pytest.mark.timeout(1800)
def test_open_positions_at_the_end_are_reported_and_agree_with_the_trades(run: Run) -> None:
    s = run.summary
    open_trades = [t for t in run.trades if t["status"] == "open"]
    closed = [t for t in run.trades if t["status"] != "open"]
    assert isinstance(s["open_positions"], list)
    assert len(s["open_positions"]) == len(open_trades)
    assert sorted(p["contract"] for p in s["open_positions"]) == sorted(t["contract"] for t in open_trades)
    assert all(t["pnl"] is None for t in open_trades)
    assert s["unrealized_pnl"] == pytest.approx(sum(p["unrealized_pnl"] for p in s["open_positions"]))
    assert s["trade_count"] == len(closed)
    assert s["net_pnl"] == pytest.approx(sum(t["pnl"] for t in closed), abs=0.01)
    assert s["net_pnl_with_open"] == pytest.approx(s["net_pnl"] + s["unrealized_pnl"])
    assert (f"open at the end of the data: {len(open_trades)} position(s), unrealized pnl "
            f"{s['unrealized_pnl']:.2f} (net pnl with open positions {s['net_pnl_with_open']:.2f})") in run.stdout


@pytest.mark.timeout(1800)
def test_stdout_names_the_summary_fields(run: Run) -> None:
    s = run.summary
    first = run.stdout.splitlines()[0]
    assert first.startswith(f"{run.symbol}: {s['bars']} bars, {s['signals']} signals, {s['orders']} orders, "
                            f"{s['trade_count']} trades, net pnl {s['net_pnl']:.2f}")
    assert (f"session rules: {s['entries_expired']} entr(y/ies) expired unfilled at the playbook's TTL, "
            f"{s['flattened_before_close']} bracket(s) flattened before the close") in run.stdout
    refused = ", ".join(f"{rule} {n}" for rule, n in s["risk_rejections_by_rule"].items())
    if refused:
        assert f"risk refused {s['risk_rejections']} intent(s): {refused}" in run.stdout
    assert s["sessions"] == sorted(str(d) for d in set(run.bars["ny_date"]))
