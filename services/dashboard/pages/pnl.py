"""The day's PnL curve and drawdown: cumulative net PnL of the closed trades by exit time, and how far it
stands below its running peak (the day starts at 0, which counts as a peak).

A day picker lists the New York trading days of the journal's trades (the newest first); a live session
also shows the OMS book's realised and unrealised PnL from Redis. Redrawn only when trades arrive.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

import pandas as pd
import plotly.graph_objects as go
from dash import Dash, Input, Output, State, dcc, html, no_update
from plotly.subplots import make_subplots

from services.dashboard.pages.base import Component, PageContext
from services.dashboard.pages.book import live_book
from services.dashboard.pages.tail import journal_root, shared_tails
from services.dashboard.pages.timefmt import NEW_YORK, ny_text
from services.dashboard.sources import BookView, Unavailable

PREFIX: Final = "pnl"
GRAPH: Final = f"{PREFIX}-graph"
DAY: Final = f"{PREFIX}-day"
CURSOR: Final = f"{PREFIX}-cursor"
SUMMARY: Final = f"{PREFIX}-summary"
BOOK: Final = f"{PREFIX}-book"
REFRESH: Final = f"{PREFIX}-refresh"


@dataclass(frozen=True, slots=True)
class Curve:
    """The day's equity curve: times (ns), cumulative PnL and drawdown after each trade (first point: 0)."""

    ts: list[int]
    pnl: list[float]
    drawdown: list[float]

    @property
    def net(self) -> float:
        return self.pnl[-1] if self.pnl else 0.0

    @property
    def max_drawdown(self) -> float:
        """The deepest drawdown, as a positive amount."""
        return -min(self.drawdown, default=0.0)


def trade_days(trades: pd.DataFrame) -> list[str]:
    """The New York dates (``YYYY-MM-DD``) of the trades' exits, newest first."""
    if not len(trades) or "exit_ts" not in trades.columns:
        return []
    days = pd.to_datetime(trades["exit_ts"].astype("int64"), unit="ns", utc=True).dt.tz_convert(NEW_YORK)
    return sorted(set(days.dt.strftime("%Y-%m-%d").tolist()), reverse=True)


def day_trades(trades: pd.DataFrame, day: str) -> pd.DataFrame:
    """The trades that closed on New York date ``day``, in exit order."""
    if not len(trades):
        return trades
    days = pd.to_datetime(trades["exit_ts"].astype("int64"), unit="ns", utc=True).dt.tz_convert(NEW_YORK)
    return trades[days.dt.strftime("%Y-%m-%d") == day].sort_values("exit_ts", kind="stable")


def curve(trades: pd.DataFrame, start_ts: int | None = None) -> Curve:
    """Cumulative PnL and drawdown of ``trades`` (one day's, in exit order), starting from 0 at
    ``start_ts`` (default: the first entry)."""
    if not len(trades):
        return Curve([], [], [])
    exits = [int(t) for t in trades["exit_ts"].tolist()]
    first = start_ts if start_ts is not None else int(min(trades["entry_ts"].tolist()))
    ts, pnl, dd = [first], [0.0], [0.0]
    total, peak = 0.0, 0.0
    for t, p in zip(exits, trades["pnl"].tolist(), strict=True):
        total += float(p)
        peak = max(peak, total)
        ts.append(t)
        pnl.append(round(total, 10))
        dd.append(round(total - peak, 10))
    return Curve(ts, pnl, dd)


def pnl_figure(day: str, c: Curve) -> go.Figure:
    """PnL (step line) over drawdown (filled below 0), New York time."""
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, row_heights=[0.65, 0.35], vertical_spacing=0.06,
                        subplot_titles=(f"net PnL of {day} (closed trades, USD)", "drawdown from the day's peak"))
    x = ny_text(c.ts)
    fig.add_trace(go.Scatter(name="PnL", x=x, y=c.pnl, mode="lines+markers", line={"shape": "hv", "width": 2,
                                                                                     "color": "#1f77b4"}),
                  row=1, col=1)
    fig.add_trace(go.Scatter(name="drawdown", x=x, y=c.drawdown, mode="lines", fill="tozeroy",
                             line={"shape": "hv", "color": "#b00020"}), row=2, col=1)
    fig.update_layout(height=560, margin={"l": 60, "r": 10, "t": 40, "b": 30}, template="plotly_white",
                      uirevision=day, showlegend=False)
    return fig


def summary(trades: pd.DataFrame, c: Curve) -> html.Table:
    """Trades, wins, net PnL and max drawdown of the day."""
    wins = int((trades["pnl"] > 0).sum()) if len(trades) else 0
    rows = [("Trades", str(len(trades)), "trades"), ("Winners", str(wins), "wins"),
            ("Net PnL", _usd(c.net), "net"), ("Max drawdown", _usd(c.max_drawdown), "max-drawdown")]
    return html.Table(html.Tbody([html.Tr([html.Th(k), html.Td(v, id=f"{PREFIX}-{key}")]) for k, v, key in rows]))


def _usd(value: float) -> str:
    return f"-${abs(value):,.2f}" if value < 0 else f"${value:,.2f}"


def book_line(book: BookView | Unavailable | None) -> Any:
    """The OMS book's PnL now (a live session), or why it is not shown."""
    if isinstance(book, Unavailable):
        return html.Div(str(book), className="unavailable")
    if book is None:
        return html.Div("no live book (no Redis, or the OMS has not written one)", className="muted")
    return html.Div(f"book now: realized {_usd(book.realized_pnl)}, unrealized {_usd(book.unrealized_pnl)}, "
                    f"{len(book.positions)} open position(s)", className="muted")


@dataclass
class PnlPage:
    """``/pnl``: the day's PnL curve and drawdown."""

    path: str = "/pnl"
    title: str = "PnL"

    def layout(self, c: PageContext) -> Component:
        """Day picker, summary, the curve, the live book line and the refresh timer."""
        note = "" if journal_root(c.journal_root, c.backtest_dir) is not None else (
            "no journal: start the console with --journal DIR or --backtest-dir DIR")
        return html.Div([
            html.Div([html.Span("Day "), dcc.Dropdown(id=DAY, options=[], value=None, clearable=False,
                                                      style={"width": "180px", "display": "inline-block"}),
                      html.Div(note, id=SUMMARY), html.Div(id=BOOK)], className="card"),
            html.Div(dcc.Graph(id=GRAPH, figure=go.Figure(), config={"displaylogo": False}), className="card"),
            dcc.Store(id=CURSOR, data=None),
            dcc.Interval(id=REFRESH, interval=c.refresh_ms, n_intervals=0),
        ])

    def update(self, c: PageContext, day: str | None, cursor: Mapping[str, Any] | None) -> tuple[Any, ...]:
        """(figure, cursor, summary, book line, day options, day)."""
        book = book_line(live_book(c))
        tails = shared_tails(c)
        trades = tails.rows("trades") if tails.configured else pd.DataFrame()
        days = trade_days(trades)
        if not days:
            return no_update, None, html.Div("no closed trades yet", className="muted"), book, [], None
        chosen = day if day in days else days[0]
        now = {"day": chosen, "trades": len(trades)}
        if cursor == now:
            return no_update, no_update, no_update, book, no_update, no_update
        todays = day_trades(trades, chosen)
        c_ = curve(todays, _day_start(tails.rows("features"), chosen))
        return (pnl_figure(chosen, c_), now, summary(todays, c_), book, [{"label": d, "value": d} for d in days],
                chosen)

    def register(self, app: Dash, c: PageContext) -> None:
        """The refresh callback (redraws only when trades arrive or the day changes)."""

        @app.callback(Output(GRAPH, "figure"), Output(CURSOR, "data"), Output(SUMMARY, "children"),
                      Output(BOOK, "children"), Output(DAY, "options"), Output(DAY, "value"),
                      Input(REFRESH, "n_intervals"), Input(DAY, "value"), State(CURSOR, "data"))
        def _refresh(_n: int | None, day: str | None, cursor: Mapping[str, Any] | None) -> tuple[Any, ...]:
            return self.update(c, day, cursor)


def _day_start(features: pd.DataFrame, day: str) -> int | None:
    """The first bar of ``day`` (the curve starts at 0 there), None without bars that day."""
    if not len(features) or "ts" not in features.columns:
        return None
    ts = features["ts"].astype("int64")
    days = pd.to_datetime(ts, unit="ns", utc=True).dt.tz_convert(NEW_YORK).dt.strftime("%Y-%m-%d")
    mine = ts[days == day]
    return int(mine.min()) if len(mine) else None


PAGE: Final = PnlPage()
