"""Summary statistics against numbers worked out by hand."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest

from services.backtest.reports import summarize, write_trades
from services.core.events import TradeOutcome

NS = 1_000_000_000


def _t(i: int, pnl: float, day: int, playbook: str = "a") -> TradeOutcome:
    # Exits at 14:00 UTC (10:00 New York, EDT) on 2025-07-<day>.
    exit_ts = int(dt.datetime(2025, 7, day, 14, i, tzinfo=dt.UTC).timestamp()) * NS
    return TradeOutcome(ts=exit_ts, id=f"t{i}", underlying="SPY", playbook=playbook, contract="C",
                        entry_ts=exit_ts - 60 * NS, exit_ts=exit_ts, entry_price=1.0, exit_price=1.5,
                        quantity=1, pnl=pnl, mae=-1.0, mfe=2.0, exit_reason="take_profit", reason="why")


def test_summary_by_hand() -> None:
    trades = [_t(1, 100.0, 8), _t(2, -50.0, 8, "b"), _t(3, -80.0, 9), _t(4, 60.0, 10, "b"), _t(5, 0.0, 10)]
    s = summarize(trades)
    # pnl: 100, -50, -80, 60, 0 -> sum 30, mean 6
    assert s["trade_count"] == 5
    assert s["expectancy"] == pytest.approx(6.0)
    assert s["win_rate"] == pytest.approx(2 / 5)
    assert s["average_win"] == pytest.approx(80.0)  # (100 + 60) / 2
    assert s["average_loss"] == pytest.approx(-65.0)  # (-50 - 80) / 2
    assert s["profit_factor"] == pytest.approx(160 / 130)
    # equity 100, 50, -30, 30, 30: peak 100, trough -30 -> drawdown 130
    assert s["max_drawdown"] == pytest.approx(130.0)
    # daily pnl: 8th 50, 9th -80, 10th 60; mean 10, sample var = (1600 + 8100 + 2500) / 2 = 6100
    assert s["sharpe"] == pytest.approx(10 / 6100 ** 0.5 * 252 ** 0.5, rel=1e-6)
    assert s["playbooks"]["a"]["trade_count"] == 3 and s["playbooks"]["b"]["expectancy"] == pytest.approx(5.0)


def test_no_trades_and_no_losses() -> None:
    assert summarize([])["trade_count"] == 0
    s = summarize([_t(1, 10.0, 8)])
    assert s["profit_factor"] is None and s["sharpe"] is None and s["max_drawdown"] == 0.0


def test_trades_file_has_required_keys_and_offsets(tmp_path: Path) -> None:
    out = tmp_path / "t.json"
    write_trades([_t(2, 1.0, 8), _t(1, 2.0, 8)], out)
    doc = json.loads(out.read_text())
    assert [d["pnl"] for d in doc] == [2.0, 1.0]  # exit order
    for key in ("entry_time", "exit_time", "entry_price", "exit_price", "contract", "quantity", "pnl",
                "mae", "mfe", "exit_reason", "playbook", "reason"):
        assert key in doc[0]
    assert doc[0]["exit_time"] == "2025-07-08T10:01:00-04:00"
