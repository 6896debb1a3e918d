"""Every backtest output says where option prices came from; the synthetic surface follows realised vol;
positions open at the end of the data are reported, marked to the last quote."""

from __future__ import annotations

import csv
import dataclasses
import datetime as dt
import json
import math
from pathlib import Path

import numpy as np
import pytest

from services.app.market_data import MarketData, load_market_data, synthetic_chain_source
from services.backtest.main import main, run_backtest, write_outputs
from services.core.calendar import NS_PER_S, default_calendar, ny_date
from services.core.datasets import SAMPLE_BARS, SPY_1MIN
from services.core.events import Bar, ChainSnapshot
from services.core.session_config import SessionConfig
from services.ingest.synthetic_chain import DEFAULT_SURFACES, TrailingVolRule, synthetic_chain
from tests.realdata import require_real

UNCALIBRATED = SessionConfig(symbols=("SPY",), calibration={"path": None})
CAL = default_calendar()


def test_every_output_names_the_option_price_source(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    code = main(["--symbol", "SPY", "--data", str(SAMPLE_BARS), "--calibration", "none",
                 "--output", str(out / "summary.json"), "--trades-output", str(out / "trades.json"),
                 "--reports-dir", str(out)])
    assert code == 0
    stdout = capsys.readouterr().out
    assert "option prices: synthetic" in stdout and "option spreads: bid/ask = Black-76" in stdout
    assert "interval 60 s (read from the data)" in stdout
    assert "session rules: " in stdout and "bracket(s) flattened before the close" in stdout
    summary = json.loads((out / "summary.json").read_text())
    assert summary["option_prices"]["source"] == "synthetic"
    assert isinstance(summary["entries_expired"], int) and isinstance(summary["flattened_before_close"], int)
    assert "vrp 0.1" in summary["option_prices"]["vol_rule"] and summary["option_prices"]["spread_model"]
    trades = json.loads((out / "trades.json").read_text())
    assert trades and all(t["option_price_source"] == "synthetic" for t in trades)
    for name in ("summary.csv", "fill_quality.csv"):
        rows = list(csv.DictReader((out / name).open()))
        assert rows and all(r["option_price_source"] == "synthetic" for r in rows), name


def _rth_bars(day: dt.date) -> list[Bar]:
    data = load_market_data(["SPY"], require_real(SPY_1MIN))
    return [b for b in data.bars["SPY"] if CAL.is_open(b.ts) and ny_date(b.ts) == day]


@pytest.mark.realdata
def test_the_synthetic_surface_follows_trailing_realised_vol() -> None:
    day = dt.date(2025, 7, 9)
    bars = _rth_bars(day)
    source = synthetic_chain_source(seed=7, calendar=CAL)
    chains: list[ChainSnapshot | None] = []
    for b in bars:
        chains.append(source("SPY", b.close, b.ts + 60 * NS_PER_S))
    base = DEFAULT_SURFACES["SPY"]
    expiries = [day, CAL.next_session(day).date]
    # Warming up (fewer than 15 returns in the window): the model's own fixed level.
    early = bars[10]
    assert chains[10] == synthetic_chain("SPY", early.close, early.ts + 60 * NS_PER_S, expiries, seed=7,
                                         calendar=CAL, surface=base)
    # At 11:30 the level is realised vol over the last 60 minutes (elapsed time) x 1.1, by numpy.
    i = next(k for k, b in enumerate(bars) if b.ts + 60 * NS_PER_S == bars[0].ts + 121 * 60 * NS_PER_S)
    now = bars[i].ts + 60 * NS_PER_S
    window = [(b.ts + 60 * NS_PER_S, b.close) for b in bars[: i + 1] if b.ts + 60 * NS_PER_S >= now - 3600 * NS_PER_S]
    t = np.array([w[0] for w in window], dtype=np.float64)
    px = np.array([w[1] for w in window])
    rv = math.sqrt(float(np.sum(np.diff(np.log(px)) ** 2)) / ((t[-1] - t[0]) / 1e9 / (252 * 23_400)))
    expected = synthetic_chain("SPY", bars[i].close, now, expiries, seed=7, calendar=CAL,
                               surface=dataclasses.replace(base, short_vol=rv * 1.1))
    assert chains[i] == expected
    assert 0.03 < rv < 0.5  # a plausible SPY intraday realised vol
    assert rv * 1.1 != pytest.approx(base.short_vol, abs=1e-3)  # and not the fixed level


def test_busier_markets_price_dearer_options() -> None:
    rule = TrailingVolRule()
    quiet, busy = synthetic_chain_source(seed=1, vol_rule=rule), synthetic_chain_source(seed=1, vol_rule=rule)
    session = CAL.session(dt.date(2025, 7, 9))
    assert session is not None
    open_ns = session.open_ns
    last_q = last_b = None
    for k in range(40):
        ts = open_ns + (k + 1) * 60 * NS_PER_S
        last_q = quiet("SPY", 620.0 * (1 + 0.0002 * (-1) ** k), ts)
        last_b = busy("SPY", 620.0 * (1 + 0.002 * (-1) ** k), ts)
    assert last_q is not None and last_b is not None

    def atm_ask(chain: ChainSnapshot) -> float:
        return next(q.ask for q in chain.quotes if q.strike == 620.0 and q.right == "C" and q.expiry == "2025-07-09")

    assert atm_ask(last_b) > 3 * atm_ask(last_q)


@pytest.mark.realdata
def test_a_position_open_when_the_data_ends_is_reported_marked_to_the_last_quote(tmp_path: Path) -> None:
    full = load_market_data(["SPY"], require_real(SPY_1MIN))
    outcomes = run_backtest(UNCALIBRATED, full).record.outcomes
    first = next(o for o in outcomes if o.exit_ts - o.entry_ts > 2 * 60 * NS_PER_S)
    # Cut the data two minutes after that trade's entry, before its exit.
    cut = first.entry_ts + 2 * 60 * NS_PER_S
    assert cut < first.exit_ts
    bars = [b for b in full.bars["SPY"] if b.ts + 60 * NS_PER_S <= cut]
    result = run_backtest(UNCALIBRATED, MarketData({"SPY": bars}, {}, "cut"))
    # Open at the cut: exactly the full run's trades entered before it and exited after it.
    held = sorted(o.id for o in outcomes if o.entry_ts < cut < o.exit_ts)
    assert sorted(p["id"] for p in result.open_positions) == held
    pos = next(p for p in result.open_positions if p["id"] == first.id)
    assert (pos["status"], pos["id"], pos["contract"], pos["pnl"]) == ("open", first.id, first.contract, None)
    # The mark: the mid of the contract's quote in the last chain, rebuilt here from the bars.
    source = synthetic_chain_source(seed=7, calendar=CAL)
    last_chain = None
    for b in bars:
        if CAL.is_open(b.ts):
            last_chain = source("SPY", b.close, b.ts + 60 * NS_PER_S)
    assert last_chain is not None
    quote = next(q for q in last_chain.quotes if q.symbol == first.contract)
    mid = (quote.bid + quote.ask) / 2
    entry = [f for f in result.session.oms.fill_reports if f.leg == "entry" and f.contract == first.contract]
    qty = sum(f.quantity for f in entry)
    price = sum(f.price * f.quantity for f in entry) / qty
    fees = sum(f.fees for f in entry)
    assert pos["mark"] == pytest.approx(mid) and pos["quantity"] == qty
    assert pos["unrealized_pnl"] == pytest.approx((mid - price) * qty * 100 - fees, abs=1e-6)
    total = sum(p["unrealized_pnl"] for p in result.open_positions)
    assert result.summary["unrealized_pnl"] == pytest.approx(total)
    assert result.summary["open_positions"] == result.open_positions
    write_outputs(result, tmp_path / "s.json", tmp_path / "t.json", tmp_path)
    trades = json.loads((tmp_path / "t.json").read_text())
    opened = [t for t in trades if t["status"] == "open"]
    assert [t["id"] for t in opened] == [p["id"] for p in result.open_positions]
    assert len(trades) - len(opened) == len(result.record.outcomes)
    row = next(csv.DictReader((tmp_path / "summary.csv").open()))
    assert (int(row["open_positions"]), float(row["unrealized_pnl"])) == (len(held), pytest.approx(total))
