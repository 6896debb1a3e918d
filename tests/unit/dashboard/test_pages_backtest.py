"""The backtest report page's pure parts: reading an output folder, the equity curve, the tables."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from dash import dcc, html

from services.dashboard.pages import backtest
from services.dashboard.pages.base import Page, PageContext


def trade(i: int, pnl: float, playbook: str = "orb_calls", exit_min: int | None = None, **kw: Any) -> dict[str, Any]:
    exit_m = exit_min if exit_min is not None else 10 + i
    return {"id": f"t{i}", "entry_time": f"2025-07-09T10:{i:02d}:00-04:00",
            "exit_time": f"2025-07-09T11:{exit_m:02d}:00-04:00", "pnl": pnl, "playbook": playbook,
            "contract": "SPY250710C00625000", "quantity": 1, "status": "closed", **kw}


def write(folder: Path, trades: list[dict[str, Any]], summary: dict[str, Any] | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "trades.json").write_text(json.dumps(trades))
    if summary is not None:
        (folder / "summary.json").write_text(json.dumps(summary))
    return folder


def find(component: Any, component_id: str) -> Any:
    if getattr(component, "id", None) == component_id:
        return component
    children = getattr(component, "children", None)
    for child in children if isinstance(children, list | tuple) else [children] if children is not None else []:
        hit = find(child, component_id)
        if hit is not None:
            return hit
    return None


def rows(table: html.Table) -> list[list[str]]:
    return [[td.children for td in tr.children] for tr in table.children[1].children]


def test_equity_curve_orders_by_exit_time_and_tracks_drawdown() -> None:
    # Listed out of exit order: exits at 11:12 (+50), 11:11 (-30), 11:13 (-40), 11:14 (+100).
    trades = [trade(1, 50.0, exit_min=12), trade(2, -30.0, exit_min=11), trade(3, -40.0, exit_min=13),
              trade(4, 100.0, exit_min=14), {"contract": "X", "status": "open", "quantity": 1}]
    curve = backtest.equity_curve(trades)
    assert curve.times[0] == "2025-07-09T10:01:00-04:00"  # starts at 0 on the first entry
    assert curve.equity == (0.0, -30.0, 20.0, -20.0, 80.0)
    assert curve.drawdown == (0.0, -30.0, 0.0, -40.0, 0.0)
    assert curve.final == 80.0 and curve.max_drawdown == 40.0


def test_ties_in_exit_time_are_broken_by_id() -> None:
    curve = backtest.equity_curve([trade(2, 5.0, exit_min=30), trade(1, -7.0, exit_min=30)])
    assert curve.equity == (0.0, -7.0, -2.0)


def test_report_uses_summary_playbooks_and_lists_trades(tmp_path: Path) -> None:
    summary = {"trade_count": 2, "net_pnl": 15.0, "win_rate": 0.5,
               "playbooks": {"vwap": {"trade_count": 1, "net_pnl": -5.0}, "orb_calls": {"trade_count": 1,
                                                                                       "net_pnl": 20.0}}}
    folder = write(tmp_path / "run", [trade(1, 20.0), trade(2, -5.0, playbook="vwap")], summary)
    report = backtest.load_report(folder)
    page = backtest.render_report(report)
    assert rows(find(page, "backtest-playbooks")) == [
        ["orb_calls", "1", "20", "–", "–", "–", "–", "–", "–"], ["vwap", "1", "-5", "–", "–", "–", "–", "–", "–"]]
    listed = rows(find(page, "backtest-trades"))
    assert [r[3] for r in listed] == ["orb_calls", "vwap"] and [r[8] for r in listed] == ["20", "-5"]
    assert find(page, "backtest-equity-final").children == "15.00"
    assert find(page, "backtest-summary-net_pnl").children == "15"
    assert isinstance(find(page, "backtest-equity"), dcc.Graph)


def test_without_summary_json_the_csv_or_the_trades_give_the_playbooks(tmp_path: Path) -> None:
    folder = write(tmp_path / "live", [trade(1, 20.0), trade(2, -5.0), trade(3, 1.0, playbook="vwap")])
    assert backtest.load_report(folder).playbooks == (
        {"playbook": "orb_calls", "trade_count": 2, "net_pnl": 15.0, "win_rate": 0.5},
        {"playbook": "vwap", "trade_count": 1, "net_pnl": 1.0, "win_rate": 1.0})
    (folder / "summary.csv").write_text(
        "playbook,trade_count,net_pnl,expectancy,win_rate,average_win,average_loss,profit_factor,max_drawdown,"
        "open_positions,unrealized_pnl,option_price_source\nALL,3,16,,,,,,,0,0,\norb_calls,2,15,7.5,0.5,20,-5,4,5,,,\n")
    pb = backtest.load_report(folder).playbooks
    assert [(r["playbook"], r["trade_count"], r["profit_factor"]) for r in pb] == [("orb_calls", 2.0, 4.0)]


@pytest.mark.parametrize(("content", "message"), [
    (None, "no trades.json"),
    ("{not json", "not JSON"),
    ('{"a": 1}', "not a list of trade objects"),
    ('[{"entry_time": "2025-07-09T10:00:00-04:00", "exit_time": "later", "pnl": 1, "playbook": "p"}]',
     "trade 0 has a malformed time or pnl"),
    ('[{"exit_time": "2025-07-09T10:00:00-04:00"}]', "trade 0 has no entry_time, pnl, playbook"),
])
def test_bad_folders_are_one_line(tmp_path: Path, content: str | None, message: str) -> None:
    if content is not None:
        (tmp_path / "trades.json").write_text(content)
    with pytest.raises(backtest.ReportError, match=message) as err:
        backtest.load_report(tmp_path)
    assert "\n" not in str(err.value)
    ctx = PageContext("s", None, None, None, tmp_path, 500)
    _, shown = backtest.body(ctx)
    assert message.split(" (")[0] in shown.children


def test_page_contract_and_unchanged_files_keep_their_digest(tmp_path: Path) -> None:
    assert isinstance(backtest.PAGE, Page)
    folder = write(tmp_path / "r", [trade(1, 3.0)])
    ctx = PageContext("s", None, None, None, folder, 500)
    first, _ = backtest.body(ctx)
    assert backtest.body(ctx)[0] == first
    write(folder, [trade(1, 3.0), trade(2, 4.0)])
    assert backtest.body(ctx)[0] != first
    assert "no output folder" in backtest.body(PageContext("s", None, None, None, None, 500))[1].children
