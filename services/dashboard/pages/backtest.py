"""The backtest report page (``/backtest``): equity curve with drawdown, per-playbook table, trade list.

Reads an output folder of ``dreambot run`` (storage/run/), ``dreambot backtest`` /
``python -m services.backtest.main`` (storage/backtests/) or ``dreambot run --live``: ``trades.json``
(closed trades, then positions still open), ``summary.json`` and ``summary.csv``
(:mod:`services.backtest.reports` defines their fields). The equity curve is the cumulative net PnL
of the closed trades in exit order (ties by id, as the summary orders them), starting from 0 at the
first entry; drawdown is its fall from the running peak. The per-playbook table is summary.json's
``playbooks`` (summary.csv's rows when there is no summary.json; counted from the trades when
neither exists, e.g. a live run). Files are re-read when they change, so a run still writing shows
up within one refresh.
"""

from __future__ import annotations

import csv
import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Final

import plotly.graph_objects as go
from dash import Dash, Input, Output, State, dcc, html, no_update
from plotly.subplots import make_subplots

from services.dashboard.pages.base import Component, PageContext
from services.dashboard.pages.ops_widgets import Column, fingerprint, no_data, table

log = logging.getLogger("dreambot.dashboard")

NAME: Final = "backtest"
TRADE_ROWS_SHOWN: Final = 2000  # the newest exits; a multi-year run would otherwise send megabytes per refresh

PLAYBOOK_COLUMNS: Final[tuple[Column, ...]] = (
    ("Playbook", "playbook"), ("Trades", "trade_count"), ("Net PnL", "net_pnl"), ("Win rate", "win_rate"),
    ("Expectancy", "expectancy"), ("Avg win", "average_win"), ("Avg loss", "average_loss"),
    ("Profit factor", "profit_factor"), ("Max drawdown", "max_drawdown"),
)
TRADE_COLUMNS: Final[tuple[Column, ...]] = (
    ("Entry", "entry_time"), ("Exit", "exit_time"), ("Underlying", "underlying"), ("Playbook", "playbook"),
    ("Contract", "contract"), ("Qty", "quantity"), ("Entry price", "entry_price"), ("Exit price", "exit_price"),
    ("PnL", "pnl"), ("Exit reason", "exit_reason"), ("Status", "status"),
)
SUMMARY_FIELDS: Final[tuple[tuple[str, str], ...]] = (
    ("Trades", "trade_count"), ("Net PnL", "net_pnl"), ("Win rate", "win_rate"), ("Profit factor", "profit_factor"),
    ("Max drawdown", "max_drawdown"), ("Sharpe", "sharpe"), ("Unrealized", "unrealized_pnl"),
)


class ReportError(ValueError):
    """An output file could not be read; the message is one displayable line."""


@dataclass(frozen=True, slots=True)
class Report:
    """One output folder's contents: its trades (closed first, then open), summary and playbook rows."""

    folder: Path
    trades: tuple[Mapping[str, Any], ...]
    summary: Mapping[str, Any] | None
    playbooks: tuple[Mapping[str, Any], ...]

    @property
    def closed(self) -> list[Mapping[str, Any]]:
        return [t for t in self.trades if t.get("status", "closed") == "closed"]


@dataclass(frozen=True, slots=True)
class Equity:
    """The equity curve: exit times (ISO), cumulative net PnL and drawdown (<= 0) after each exit."""

    times: tuple[str, ...]
    equity: tuple[float, ...]
    drawdown: tuple[float, ...]

    @property
    def final(self) -> float:
        return self.equity[-1] if self.equity else 0.0

    @property
    def max_drawdown(self) -> float:
        return -min(self.drawdown, default=0.0)


def _exit_key(trade: Mapping[str, Any]) -> tuple[datetime, str]:
    return datetime.fromisoformat(str(trade["exit_time"])), str(trade.get("id", ""))


def equity_curve(trades: Sequence[Mapping[str, Any]]) -> Equity:
    """Cumulative net PnL of closed trades by exit time, starting at 0 on the first entry (module docstring)."""
    closed = sorted((t for t in trades if t.get("status", "closed") == "closed"), key=_exit_key)
    if not closed:
        return Equity((), (), ())
    first_entry = min(str(t["entry_time"]) for t in closed)
    times, equity, drawdown = [first_entry], [0.0], [0.0]
    total = peak = 0.0
    for t in closed:
        total += float(t["pnl"])
        peak = max(peak, total)
        times.append(str(t["exit_time"]))
        equity.append(round(total, 6))
        drawdown.append(round(total - peak, 6))
    return Equity(tuple(times), tuple(equity), tuple(drawdown))


def playbook_rows_from_trades(trades: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Trade count, net PnL and win rate per playbook, counted from closed trades (no summary file)."""
    rows: dict[str, dict[str, Any]] = {}
    for t in trades:
        if t.get("status", "closed") != "closed":
            continue
        row = rows.setdefault(str(t.get("playbook")), {"trade_count": 0, "net_pnl": 0.0, "wins": 0})
        row["trade_count"] += 1
        row["net_pnl"] += float(t["pnl"])
        row["wins"] += float(t["pnl"]) > 0
    return [{"playbook": name, "trade_count": r["trade_count"], "net_pnl": round(r["net_pnl"], 6),
             "win_rate": round(r["wins"] / r["trade_count"], 6)} for name, r in sorted(rows.items())]


def _json(path: Path) -> Any:
    try:
        return json.loads(path.read_bytes())
    except OSError as exc:
        raise ReportError(f"{path}: {exc.strerror or exc}") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ReportError(f"{path}: not JSON ({exc})") from None


def _csv_rows(path: Path) -> list[dict[str, Any]]:
    try:
        with path.open(newline="", encoding="utf-8") as fh:
            rows = list(csv.DictReader(fh))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise ReportError(f"{path}: {exc}") from None
    out: list[dict[str, Any]] = []
    for row in rows:
        if row.get("playbook") in (None, "", "ALL"):
            continue
        parsed: dict[str, Any] = {"playbook": row["playbook"]}
        for _, key in PLAYBOOK_COLUMNS[1:]:
            raw = row.get(key)
            try:
                parsed[key] = None if raw in (None, "") else float(str(raw))
            except ValueError:
                raise ReportError(f"{path}: {key} of {row['playbook']} is not a number: {raw!r}") from None
        out.append(parsed)
    return out


def load_report(folder: Path) -> Report:
    """The output folder's report; ReportError (one line) when trades.json is missing or malformed."""
    trades_path = folder / "trades.json"
    if not trades_path.is_file():
        raise ReportError(f"{folder}: no trades.json (a dreambot run / backtest output folder has one)")
    trades = _json(trades_path)
    if not isinstance(trades, list) or not all(isinstance(t, dict) for t in trades):
        raise ReportError(f"{trades_path}: not a list of trade objects")
    for i, t in enumerate(trades):
        if t.get("status", "closed") == "closed":
            missing = [k for k in ("entry_time", "exit_time", "pnl", "playbook") if k not in t]
            if missing:
                raise ReportError(f"{trades_path}: trade {i} has no {', '.join(missing)}")
            try:
                float(t["pnl"])
                datetime.fromisoformat(str(t["exit_time"]))
                datetime.fromisoformat(str(t["entry_time"]))
            except (TypeError, ValueError):
                raise ReportError(f"{trades_path}: trade {i} has a malformed time or pnl") from None
    summary: Mapping[str, Any] | None = None
    playbooks: list[dict[str, Any]]
    if (folder / "summary.json").is_file():
        doc = _json(folder / "summary.json")
        if not isinstance(doc, dict):
            raise ReportError(f"{folder / 'summary.json'}: not a JSON object")
        summary = doc
        per = doc.get("playbooks")
        per = per if isinstance(per, dict) else {}
        playbooks = [{"playbook": name, **stats} for name, stats in sorted(per.items()) if isinstance(stats, dict)]
    elif (folder / "summary.csv").is_file():
        playbooks = _csv_rows(folder / "summary.csv")
    else:
        playbooks = playbook_rows_from_trades(trades)
    return Report(folder, tuple(trades), summary, tuple(playbooks))


def equity_figure(curve: Equity) -> go.Figure:
    """Equity (top) and drawdown (bottom) against exit time."""
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, row_heights=[0.7, 0.3], vertical_spacing=0.05)
    fig.add_trace(go.Scatter(x=list(curve.times), y=list(curve.equity), mode="lines+markers", name="equity",
                             line={"shape": "hv"}), row=1, col=1)
    fig.add_trace(go.Scatter(x=list(curve.times), y=list(curve.drawdown), mode="lines", name="drawdown",
                             fill="tozeroy", line={"shape": "hv", "color": "#c0392b"}), row=2, col=1)
    fig.update_yaxes(title_text="net PnL (USD)", row=1, col=1)
    fig.update_yaxes(title_text="drawdown", row=2, col=1)
    fig.update_layout(height=460, margin={"l": 60, "r": 20, "t": 30, "b": 30}, showlegend=False,
                      title="Equity curve (cumulative net PnL by exit time)")
    return fig


def render_report(report: Report) -> Component:
    """The page body of one report."""
    curve = equity_curve(report.trades)
    summary = report.summary or {}
    facts = [html.Span([html.B(f"{label}: "), html.Span(_fmt(summary.get(key)), id=f"{NAME}-summary-{key}")],
                       className="fact", style={"marginRight": "1.5em"})
             for label, key in SUMMARY_FIELDS if key in summary]
    closed = sorted(report.closed, key=_exit_key)
    still_open = [t for t in report.trades if t.get("status", "closed") != "closed"]
    shown = (closed + still_open)[-TRADE_ROWS_SHOWN:]
    cut = len(closed) + len(still_open) - len(shown)
    return html.Div([
        html.Div(f"output folder: {report.folder}", id=f"{NAME}-folder", className="source"),
        html.Div(facts, className="facts"),
        html.Div([html.B("Equity at the last exit: "), html.Span(f"{curve.final:.2f}", id=f"{NAME}-equity-final"),
                  html.B(" · max drawdown: "), html.Span(f"{curve.max_drawdown:.2f}", id=f"{NAME}-equity-maxdd")]),
        dcc.Graph(id=f"{NAME}-equity", figure=equity_figure(curve)) if curve.times
        else no_data("no closed trades", f"{NAME}-equity-empty"),
        html.H3("Per playbook"),
        table(PLAYBOOK_COLUMNS, report.playbooks, f"{NAME}-playbooks") if report.playbooks
        else no_data("no playbook traded", f"{NAME}-playbooks-empty"),
        html.H3(f"Trades ({len(closed)} closed, {len(still_open)} open)"),
        html.Div(f"{cut} older trades not shown" if cut else "", className="note"),
        table(TRADE_COLUMNS, shown, f"{NAME}-trades") if shown else no_data("no trades", f"{NAME}-trades-empty"),
    ])


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4f}".rstrip("0").rstrip(".")
    return "–" if value is None else str(value)


def _files_state(folder: Path) -> tuple[tuple[str, int, int], ...]:
    out = []
    for name in ("trades.json", "summary.json", "summary.csv"):
        try:
            st = (folder / name).stat()
        except OSError:
            continue
        out.append((name, st.st_mtime_ns, st.st_size))
    return tuple(out)


def body(ctx: PageContext) -> tuple[str, Component]:
    """(fingerprint of the files read, the page body) for the context's output folder."""
    folder = ctx.backtest_dir
    if folder is None:
        return "none", no_data("no output folder given (--backtest-dir)", f"{NAME}-none")
    state = _files_state(folder)
    try:
        return fingerprint(folder, state), render_report(load_report(folder))
    except ReportError as exc:
        log.warning("backtest page: %s", exc)
        return fingerprint(folder, state, "error"), html.Div(str(exc), id=f"{NAME}-error", className="unavailable")


class BacktestPage:
    """``/backtest``: the output folder's report, refreshed when its files change."""

    path = "/backtest"
    title = "Backtest report"

    def layout(self, ctx: PageContext) -> Component:
        digest, content = body(ctx)
        return html.Div([
            html.H2(self.title),
            dcc.Interval(id=f"{NAME}-refresh", interval=ctx.refresh_ms, n_intervals=0),
            dcc.Store(id=f"{NAME}-digest", data=digest),
            html.Div(content, id=f"{NAME}-body"),
        ], id=f"{NAME}-page")

    def register(self, app: Dash, ctx: PageContext) -> None:
        @app.callback(Output(f"{NAME}-body", "children"), Output(f"{NAME}-digest", "data"),
                      Input(f"{NAME}-refresh", "n_intervals"), State(f"{NAME}-digest", "data"))
        def refresh(_n: int, seen: str | None) -> tuple[Any, Any]:
            digest, content = body(ctx)
            if digest == seen:
                return no_update, no_update
            return content, digest


PAGE: Final = BacktestPage()
