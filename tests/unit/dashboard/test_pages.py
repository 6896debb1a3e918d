"""The trading pages' pure builders: figures, tables and the journal tail, on hand-built rows."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from dash.exceptions import PreventUpdate

from services.dashboard.pages import chain, chart, orders, pnl
from services.dashboard.pages.base import Page, PageContext
from services.dashboard.pages.tail import TableTail, journal_root, resolve_session
from services.dashboard.pages.timefmt import ny_text

# 2025-07-09 14:17:00 UTC = 10:17:00 New York (EDT, UTC-4).
T0 = 1752070620 * 10**9
MIN = 60 * 10**9


def test_times_are_new_york_wall_clock() -> None:
    assert ny_text([T0, T0 + 90 * 10**9]) == ["2025-07-09 10:17:00", "2025-07-09 10:18:30"]
    # Winter: 2025-01-02 14:30 UTC is 09:30 EST (UTC-5).
    assert ny_text([1735828200 * 10**9]) == ["2025-01-02 09:30:00"]
    assert ny_text([]) == []


def test_short_and_long_time_lists_format_alike() -> None:
    # Short lists take a per-value path, long ones pandas': the same text either way, across both DST
    # switches and with sub-second times (floored to the second).
    spring, autumn = 1741503600 * 10**9, 1762063200 * 10**9
    times = [t + d for t in (spring, autumn, T0) for d in (-10**9 - 1, -1, 0, 1, 1800 * 10**9 + 999_999_999)]
    long = ny_text(times * 40)
    assert len(long) == len(times) * 40 and long[: len(times)] == ny_text(times)
    assert ny_text([spring - 1, spring, autumn + 1800 * 10**9]) == [
        "2025-03-09 01:59:59", "2025-03-09 03:00:00", "2025-11-02 01:30:00"]


def _bars(n: int) -> pd.DataFrame:
    return pd.DataFrame({
        "symbol": ["SPY"] * n, "ts": [T0 + (i + 1) * MIN for i in range(n)],  # a bar's row is at its close
        "open": [600.0 + i for i in range(n)], "high": [601.0 + i for i in range(n)],
        "low": [599.0 + i for i in range(n)], "close": [600.5 + i for i in range(n)],
        "vwap": [float("nan")] + [600.0] * (n - 1), "vwap_upper_1": [601.0] * n, "vwap_lower_1": [599.0] * n,
    })


def _trade(entry: int, exit_: int, pnl_: float, contract: str = "SPY250710C00625000", **kw: Any) -> dict[str, Any]:
    row = {"id": f"ord-{entry}", "underlying": "SPY", "playbook": "orb_calls", "contract": contract,
           "entry_ts": entry, "exit_ts": exit_, "entry_price": 0.58, "exit_price": 0.49, "quantity": 5,
           "pnl": pnl_, "exit_reason": "stop_loss"}
    row.update(kw)
    return row


def test_chart_marks_trades_at_their_fill_prices_and_the_underlying_close() -> None:
    bars = _bars(5)
    trades = pd.DataFrame([_trade(T0 + MIN + 7 * 10**9, T0 + 3 * MIN, -45.0, entry_price=0.58, exit_price=0.49)])
    marks = chart.trade_marks(bars, trades, pd.DataFrame())
    assert marks.entry_p == {"x": ["2025-07-09 10:18:07"], "y": [0.58], "text": ["SPY250710C00625000 orb_calls ×5"]}
    assert marks.exit_p["x"] == ["2025-07-09 10:20:00"] and marks.exit_p["y"] == [0.49]
    # On the underlying: the close of the minute bar containing the fill (10:18 bar close 601.5).
    assert marks.entry_u["y"] == [601.5] and marks.exit_u["y"] == [603.5]


def test_brackets_follow_each_price_level_until_the_leg_ends() -> None:
    rows = [
        {"ts": T0, "order_id": "b1-tp", "leg": "take_profit", "status": "working", "limit_price": 0.8,
         "stop_price": None},
        {"ts": T0, "order_id": "b1-sl", "leg": "stop_loss", "status": "working", "limit_price": None,
         "stop_price": 0.4},
        {"ts": T0 + 2 * MIN, "order_id": "b1-sl", "leg": "stop_loss", "status": "modified", "limit_price": None,
         "stop_price": 0.5},
        {"ts": T0 + 3 * MIN, "order_id": "b1-sl", "leg": "stop_loss", "status": "filled", "limit_price": None,
         "stop_price": 0.5},
        {"ts": T0 + 3 * MIN, "order_id": "b1-tp", "leg": "take_profit", "status": "canceled", "limit_price": 0.8,
         "stop_price": None},
    ]
    frame = pd.DataFrame(rows)
    tp = chart.bracket_segments(frame, "take_profit", T0 + 10 * MIN)
    assert tp["x"] == ["2025-07-09 10:17:00", "2025-07-09 10:20:00", None] and tp["y"] == [0.8, 0.8, None]
    sl = chart.bracket_segments(frame, "stop_loss", T0 + 10 * MIN)
    assert sl["y"] == [0.4, 0.4, None, 0.5, 0.5, None]
    assert sl["x"] == ["2025-07-09 10:17:00", "2025-07-09 10:19:00", None,
                       "2025-07-09 10:19:00", "2025-07-09 10:20:00", None]
    # Still working: the level runs to ``until``.
    open_leg = chart.bracket_segments(frame.iloc[:1], "take_profit", T0 + 5 * MIN)  # ``until``: the newest bar
    assert open_leg["x"][1] == "2025-07-09 10:22:00"


def test_the_live_patch_appends_only_the_new_bars() -> None:
    bars = _bars(4)
    fig = chart.chart_figure("SPY", bars.iloc[:3], chart.trade_marks(bars.iloc[:3], pd.DataFrame(), pd.DataFrame()))
    assert [t.name for t in fig.data][: chart.ENTRY_U] == ["candles", "VWAP"] + [n for n, _ in chart.BANDS]
    assert list(fig.data[chart.CANDLES].close) == [600.5, 601.5, 602.5]
    assert fig.data[chart.VWAP].y[0] is None  # NaN VWAP (warming up) is a gap, not 0
    ops = chart.chart_patch(bars.iloc[3:], None).to_plotly_json()["operations"]
    extended = {(tuple(o["location"]), tuple(o["params"]["value"])) for o in ops}
    assert (("data", chart.CANDLES, "close"), (603.5,)) in extended
    assert (("data", chart.CANDLES, "x"), ("2025-07-09 10:20:00",)) in extended
    assert all(o["operation"] == "Extend" for o in ops)
    assert {o["location"][1] for o in ops} == set(chart.BAR_TRACES)


def _patched(ops: list[dict[str, Any]]) -> dict[tuple[str, int, str], tuple[str, list[Any]]]:
    return {(o["location"][0], o["location"][1], o["location"][2]): (o["operation"], o["params"]["value"])
            for o in ops}


def test_a_live_refresh_sends_the_new_bars_and_only_the_marks_that_changed(tmp_path: Path) -> None:
    features = tmp_path / "features" / "session=s1" / "date=2025-07-09"
    orders_dir = tmp_path / "orders" / "session=s1" / "date=2025-07-09"
    rows = _bars(6).to_dict("records")
    _part(features / "part-0001.parquet", rows[:3])
    tp = {"ts": T0 + MIN, "order_id": "b1-tp", "underlying": "SPY", "leg": "take_profit", "status": "working",
          "limit_price": 0.8, "stop_price": None}
    _part(orders_dir / "part-0001.parquet", [tp])
    page = chart.ChartPage()
    ctx = PageContext("s1", None, None, tmp_path, None, 1000)
    fig, cursor, *_ = page.update(ctx, None, None, False)
    assert list(fig.data[chart.CANDLES].close) == [600.5, 601.5, 602.5]
    with pytest.raises(PreventUpdate):  # nothing new
        page.update(ctx, "SPY", cursor, False)

    # A new bar (its row at its close, 10:21): appended; the working take-profit now runs to it, so the
    # bracket trace is sent again.
    _part(features / "part-0002.parquet", rows[3:4])
    patch, cursor, *_ = page.update(ctx, "SPY", cursor, False)
    ops = _patched(patch.to_plotly_json()["operations"])
    assert ops[("data", chart.CANDLES, "close")] == ("Extend", [603.5])
    assert ops[("data", chart.TAKE_PROFIT, "x")] == ("Assign", ["2025-07-09 10:18:00", "2025-07-09 10:21:00", None])

    # The leg ends; later bars leave every mark as it was, so only the bars travel.
    _part(orders_dir / "part-0002.parquet", [{**tp, "ts": T0 + 210 * 10**9, "status": "canceled"}])
    _part(features / "part-0003.parquet", rows[4:5])
    patch, cursor, *_ = page.update(ctx, "SPY", cursor, False)
    assert _patched(patch.to_plotly_json()["operations"])[("data", chart.TAKE_PROFIT, "x")][1][1] == (
        "2025-07-09 10:20:30")
    _part(features / "part-0004.parquet", rows[5:6])
    patch, cursor, *_ = page.update(ctx, "SPY", cursor, False)
    ops = _patched(patch.to_plotly_json()["operations"])
    assert ops[("data", chart.CANDLES, "close")] == ("Extend", [605.5])
    assert {index for _, index, _ in ops} == set(chart.BAR_TRACES)
    assert cursor["bars"] == 6


def test_pnl_curve_and_drawdown_by_hand() -> None:
    trades = pd.DataFrame([_trade(T0, T0 + 2 * MIN, -48.98), _trade(T0 + 5 * MIN, T0 + 9 * MIN, 50.0),
                           _trade(T0 + 20 * MIN, T0 + 30 * MIN, 32.04)])
    c = pnl.curve(trades, start_ts=T0 - 47 * MIN)
    assert c.pnl == [0.0, -48.98, 1.02, 33.06]
    assert c.drawdown == [0.0, -48.98, 0.0, 0.0]
    assert c.max_drawdown == pytest.approx(48.98) and c.net == pytest.approx(33.06)
    assert ny_text(c.ts)[0] == "2025-07-09 09:30:00"
    assert pnl.trade_days(trades) == ["2025-07-09"]
    peak_then_fall = pnl.curve(pd.DataFrame([_trade(T0, T0 + MIN, 10.0), _trade(T0, T0 + 2 * MIN, -4.0),
                                             _trade(T0, T0 + 3 * MIN, -3.0)]))
    assert peak_then_fall.drawdown == [0.0, 0.0, -4.0, -7.0]


def test_order_lifecycle_lists_every_status_with_its_time() -> None:
    rows = [
        {"ts": T0, "order_id": "c1", "client_order_id": "c1", "contract": "SPY250710C00625000", "leg": "entry",
         "side": "buy", "status": "pending", "quantity": 5, "filled_quantity": 0, "limit_price": 0.62,
         "stop_price": None, "fill_price": None, "fees": 0.0, "reason": ""},
        {"ts": T0, "order_id": "c1", "client_order_id": "c1", "contract": "SPY250710C00625000", "leg": "entry",
         "side": "buy", "status": "working", "quantity": 5, "filled_quantity": 0, "limit_price": 0.62,
         "stop_price": None, "fill_price": None, "fees": 0.0, "reason": ""},
        {"ts": T0 + 30 * 10**9, "order_id": "c1", "client_order_id": "c1", "contract": "SPY250710C00625000",
         "leg": "entry", "side": "buy", "status": "filled", "quantity": 5, "filled_quantity": 5, "limit_price": 0.62,
         "stop_price": None, "fill_price": 0.58, "fees": 3.25, "reason": ""},
        {"ts": T0 + 31 * 10**9, "order_id": "c1.sl", "client_order_id": "c1", "contract": "SPY250710C00625000",
         "leg": "stop_loss", "side": "sell", "status": "working", "quantity": 5, "filled_quantity": 0,
         "limit_price": None, "stop_price": 0.45, "fill_price": None, "fees": 0.0, "reason": ""},
    ]
    out = orders.lifecycles(pd.DataFrame(rows))
    assert [r["order_id"] for r in out] == ["c1.sl", "c1"]  # newest first
    entry = out[1]
    assert entry["lifecycle"] == "pending 10:17:00 → working 10:17:00 → filled 10:17:30"
    assert (entry["status"], entry["fill_price"], entry["filled_quantity"], entry["fees"]) == ("filled", 0.58, 5, 3.25)
    assert out[0]["stop_price"] == 0.45 and out[0]["status"] == "working"


def test_chain_highlights_the_contracts_held_at_the_snapshot() -> None:
    assert chain.occ_key("SPY250710C00625000") == ("2025-07-10", 625.0, "C")
    assert chain.occ_key("O:SPXW250710P05900500") == ("2025-07-10", 5900.5, "P")
    assert chain.occ_key("not-a-contract") is None
    trades = pd.DataFrame([_trade(T0, T0 + 2 * MIN, 1.0, id="t1"),
                           _trade(T0 + 5 * MIN, T0 + 8 * MIN, 1.0, contract="SPY250710P00620000", id="t2")])
    assert chain.held_at(T0 + MIN, trades, pd.DataFrame()) == {"SPY250710C00625000"}
    assert chain.held_at(T0 + 2 * MIN, trades, pd.DataFrame()) == set()  # closed at exit
    filled = pd.DataFrame([{"ts": T0 + 9 * MIN, "leg": "entry", "status": "filled", "client_order_id": "t3",
                            "contract": "SPY250710C00626000"}])
    assert chain.held_at(T0 + 10 * MIN, trades, filled) == {"SPY250710C00626000"}  # open, no trade yet
    snap_rows = [{"ts": T0, "underlying": "SPY", "expiry": "2025-07-10", "strike": k, "right": r, "bid": 1.0,
                  "ask": 1.1, "iv": 0.1 + k / 10_000, "delta": 0.5, "underlying_price": 624.24}
                 for k in (624.0, 625.0) for r in ("C", "P")]
    later = [{**r, "ts": T0 + MIN, "iv": 0.2} for r in snap_rows]
    frame = pd.DataFrame(snap_rows + later)
    snap = chain.snapshot(frame, "SPY", T0 + 30 * 10**9)
    assert set(snap["ts"]) == {T0} and len(snap) == 4
    fig = chain.smile_figure(snap, {"SPY250710C00625000"}, "t")
    held = next(t for t in fig.data if t.name == "held")
    assert list(held.x) == [625.0] and list(held.y) == [pytest.approx(0.1625)]
    table = chain.chain_table(snap, {"SPY250710C00625000"})
    rows = {r.id: r.className for r in table.children[1].children}
    assert rows == {"chain-row-624": "", "chain-row-625": "held-C"}


def _part(path: Path, rows: list[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows), path)


def test_the_tail_reads_each_part_once_and_ignores_unfinished_files(tmp_path: Path) -> None:
    base = tmp_path / "features" / "session=s1" / "date=2025-07-09"
    _part(base / "part-0001.parquet", [{"ts": T0 + MIN, "symbol": "SPY"}, {"ts": T0, "symbol": "SPY"}])
    tail = TableTail(tmp_path, "features", "s1")
    assert tail.poll()["ts"].tolist() == [T0, T0 + MIN]
    (base / ".part-0002.parquet.tmp").write_bytes(b"half a file")
    _part(base / "part-0002.parquet", [{"ts": T0 + 2 * MIN, "symbol": "SPY"}])
    assert tail.poll()["ts"].tolist() == [T0, T0 + MIN, T0 + 2 * MIN]
    # A part already read is not read again (rewriting it in place changes nothing for the tail).
    _part(base / "part-0001.parquet", [{"ts": 0, "symbol": "X"}])
    assert len(tail.poll()) == 3
    assert TableTail(tmp_path, "features", "other").poll().empty


def test_journal_and_session_resolution(tmp_path: Path) -> None:
    assert journal_root(None, tmp_path) == tmp_path / "parquet"
    assert journal_root(tmp_path / "j", tmp_path) == tmp_path / "j"
    assert journal_root(None, None) is None
    _part(tmp_path / "trades" / "session=backtest" / "date=2025-07-09" / "p.parquet", [{"ts": 1}])
    assert resolve_session(tmp_path, "paper") == "backtest"  # the journal's only session
    _part(tmp_path / "trades" / "session=paper" / "date=2025-07-09" / "p.parquet", [{"ts": 1}])
    assert resolve_session(tmp_path, "paper") == "paper"


def _ids(component: Any) -> list[str]:
    found = [str(component.id)] if getattr(component, "id", None) else []
    kids = getattr(component, "children", None)
    for k in kids if isinstance(kids, list | tuple) else [kids]:
        if k is not None and not isinstance(k, str):
            found += _ids(k)
    return found


def test_every_trading_page_meets_the_page_contract() -> None:
    ctx = PageContext("s", None, None, None, None, 1000)
    for page in (chart.PAGE, chain.PAGE, pnl.PAGE, orders.PAGE):
        assert isinstance(page, Page)
        ids = _ids(page.layout(ctx))
        prefix = page.path.strip("/")
        assert ids and all(i.startswith(prefix + "-") for i in ids), (page.path, ids)
