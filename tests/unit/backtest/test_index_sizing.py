"""SPX/NDX sizing: the start-up check says when no playbook can size one index contract, and the
shipped per-symbol budgets do trade them (synthetic sessions: the project has no index recordings)."""

from __future__ import annotations

import math
import re
import shutil
from pathlib import Path

import pytest
import yaml

from services.app.market_data import load_market_data
from services.app.sizing_check import sizing_check
from services.app.stages import session_playbooks
from services.backtest.main import run_backtest
from services.core.calendar import default_calendar
from services.core.session_config import SessionConfig
from services.core.settings import CONFIG_DIR

CAL = default_calendar()
BUDGET = {"SPX": 600.0, "NDX": 800.0}  # config/playbooks.yaml symbols.<X>.risk_per_trade_usd


@pytest.mark.parametrize("symbol", ["SPX", "NDX"])
def test_the_shipped_budgets_trade_index_contracts_within_the_budget(symbol: str) -> None:
    config = SessionConfig(symbols=(symbol,), calibration={"path": None})
    data = load_market_data([symbol], None, sessions=1)
    said: list[str] = []
    result = run_backtest(config, data, on_start=said.extend)
    assert len(said) == 1 and said[0].startswith(f"{symbol} sizing check at ")
    assert "NO playbook" not in said[0] and f"budget ${BUDGET[symbol]:g} per trade" in said[0]
    assert result.summary["sizing_check"] == said
    orders = result.record.orders
    assert orders and result.summary["trade_count"] > 0
    root = {"SPX": "SPXW", "NDX": "NDXP"}[symbol]
    for o in orders:
        assert o.contract.startswith(root) and o.quantity >= 1
        # The intent's size never risks more than the symbol's budget: (limit - stop) x 100 x contracts.
        intent = next(i for i in result.record.intents if i.id == o.intent_id)
        assert (intent.limit_price - intent.stop_loss) * 100 * intent.quantity <= BUDGET[symbol] + 1e-6


def test_with_the_playbooks_own_budget_the_check_says_ndx_trades_nothing(tmp_path: Path) -> None:
    target = tmp_path / "config"
    shutil.copytree(CONFIG_DIR, target)
    raw = yaml.safe_load((target / "playbooks.yaml").read_text())
    for sym in ("SPX", "NDX"):
        raw["symbols"][sym].pop("risk_per_trade_usd", None)
        raw["symbols"][sym].pop("max_spread", None)
    (target / "playbooks.yaml").write_text(yaml.safe_dump(raw))
    config = SessionConfig(symbols=("NDX",), calibration={"path": None}, config_dir=target)
    playbooks = session_playbooks(config)
    (line,) = sizing_check(playbooks, load_market_data(["NDX"], None, sessions=1), CAL)
    assert "NO playbook can size one contract, so NDX will trade nothing" in line and "budget $200" in line
    m = re.search(r"cheapest: (\w+) risks \$([\d.]+) per contract @ (\d+(?:\.\d+)?)", line)
    assert m is not None
    name, risk, entry = m.group(1), float(m.group(2)), float(m.group(3))
    assert risk > 200
    pb = next(p for p in playbooks.playbooks if p.name == name)
    if pb.bracket.mode == "premium":
        # By hand: the stop is entry x (1 - stop_loss_pct) rounded half up to the index tick (0.05 at or
        # above $3, 0.01 below), and one contract risks (entry - stop) x 100.
        assert pb.bracket.stop_loss_pct is not None
        raw_stop = entry * (1 - pb.bracket.stop_loss_pct)
        tick = 0.05 if raw_stop >= 3 else 0.01
        stop = math.floor(raw_stop / tick + 0.5) * tick
        assert risk == pytest.approx((entry - stop) * 100, abs=0.01)
