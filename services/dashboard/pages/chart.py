"""The live chart per underlying: candles, session VWAP with its ±1/2/3σ bands, entries and exits, brackets.

Top panel: the underlying's minute candles with the session VWAP and its bands (the features table),
and each trade's entry (triangle) and exit (cross) at the underlying's close of that minute. Bottom
panel: the traded contracts' premium — each trade's entry and exit at their fill prices (the trades
table) and the bracket's take-profit and stop-loss levels (the orders table's ``take_profit`` limit and
``stop_loss`` stop prices) from when the leg was placed until it ended. Times are New York.

Live: the browser keeps how many rows it has drawn (``chart-cursor``); each refresh the server sends
only the new bars, appended to the candle and band traces with a ``dash.Patch``, and redraws the
few trade and bracket traces only when trades or orders changed. Nothing new: no update at all.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

import pandas as pd
import plotly.graph_objects as go
from dash import Dash, Input, Output, Patch, State, ctx, dcc, html, no_update
from dash.exceptions import PreventUpdate
from plotly.subplots import make_subplots

from services.dashboard.pages.base import Component, PageContext
from services.dashboard.pages.tail import JournalTails, journal_root, shared_tails
from services.dashboard.pages.timefmt import ny_text

PREFIX: Final = "chart"
GRAPH: Final = f"{PREFIX}-graph"
SYMBOL: Final = f"{PREFIX}-symbol"
CURSOR: Final = f"{PREFIX}-cursor"
STATUS: Final = f"{PREFIX}-status"
REFRESH: Final = f"{PREFIX}-refresh"

BANDS: Final[tuple[tuple[str, str], ...]] = tuple(
    (f"VWAP {sign}{k}σ", f"vwap_{side}_{k}") for k in (1, 2, 3) for sign, side in (("+", "upper"), ("−", "lower")))
# Trace order is fixed: the live patch addresses traces by index.
CANDLES: Final = 0
VWAP: Final = 1
FIRST_BAND: Final = 2
ENTRY_U: Final = FIRST_BAND + len(BANDS)
EXIT_U: Final = ENTRY_U + 1
ENTRY_P: Final = EXIT_U + 1
EXIT_P: Final = ENTRY_P + 1
TAKE_PROFIT: Final = EXIT_P + 1
STOP_LOSS: Final = TAKE_PROFIT + 1
BAR_TRACES: Final = tuple(range(CANDLES, ENTRY_U))
# A features row's ts is when its minute bar closed (the FeatureVector's time); candles are drawn at the
# bar's start, as the recording and every charting convention have them.
BAR_NS: Final = 60 * 10**9
TERMINAL: Final = frozenset({"filled", "canceled", "rejected", "expired"})
_BAND_COLORS: Final = {1: "rgba(31,119,180,.55)", 2: "rgba(31,119,180,.35)", 3: "rgba(31,119,180,.2)"}


def _num(value: Any) -> float | None:
    """A finite float, else None (plotly leaves a gap)."""
    try:
        f = float(value)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def _column(frame: pd.DataFrame, name: str) -> list[float | None]:
    if name not in frame.columns:
        return [None] * len(frame)
    return [_num(v) for v in frame[name].tolist()]


def bar_columns(bars: pd.DataFrame) -> dict[int, dict[str, list[Any]]]:
    """Per bar trace (by index) the columns to draw or append for ``bars`` (rows of one symbol)."""
    x = ny_text(int(t) - BAR_NS for t in bars["ts"].tolist()) if len(bars) else []
    out: dict[int, dict[str, list[Any]]] = {
        CANDLES: {"x": x, "open": _column(bars, "open"), "high": _column(bars, "high"),
                  "low": _column(bars, "low"), "close": _column(bars, "close")},
        VWAP: {"x": x, "y": _column(bars, "vwap")},
    }
    for i, (_, col) in enumerate(BANDS):
        out[FIRST_BAND + i] = {"x": x, "y": _column(bars, col)}
    return out


@dataclass(frozen=True, slots=True)
class Marks:
    """The trade and bracket traces' data for one symbol."""

    entry_u: dict[str, list[Any]]
    exit_u: dict[str, list[Any]]
    entry_p: dict[str, list[Any]]
    exit_p: dict[str, list[Any]]
    take_profit: dict[str, list[Any]]
    stop_loss: dict[str, list[Any]]

    def by_trace(self) -> dict[int, dict[str, list[Any]]]:
        """The traces keyed by their index in the figure."""
        return {ENTRY_U: self.entry_u, EXIT_U: self.exit_u, ENTRY_P: self.entry_p, EXIT_P: self.exit_p,
                TAKE_PROFIT: self.take_profit, STOP_LOSS: self.stop_loss}


def _close_at(bars: pd.DataFrame, ts: Iterable[int]) -> list[float | None]:
    """The underlying's close of the minute bar containing each ``ts`` (None before the first bar)."""
    if not len(bars):
        return [None for _ in ts]
    starts = bars["ts"].astype("int64").to_numpy() - BAR_NS
    closes = bars["close"].tolist() if "close" in bars.columns else [None] * len(bars)
    out: list[float | None] = []
    for t in ts:
        i = int(starts.searchsorted(int(t), side="right")) - 1
        out.append(_num(closes[i]) if i >= 0 else None)
    return out


def _rows(frame: pd.DataFrame, symbol: str) -> pd.DataFrame:
    if not len(frame):
        return frame
    col = "underlying" if "underlying" in frame.columns else "symbol"
    return frame[frame[col] == symbol] if col in frame.columns else frame.iloc[0:0]


def bracket_segments(orders: pd.DataFrame, leg: str, until_ts: int) -> dict[str, list[Any]]:
    """Horizontal segments of one bracket leg's price over time: a level starts at the event that set
    it and ends at the next price change or the leg's end (still working: ``until_ts``)."""
    price_col = "limit_price" if leg == "take_profit" else "stop_price"
    x: list[Any] = []
    y: list[Any] = []
    text: list[Any] = []
    if not len(orders) or "leg" not in orders.columns:
        return {"x": x, "y": y, "text": text}
    legs = orders[orders["leg"] == leg].sort_values("ts", kind="stable")
    for order_id, events in legs.groupby("order_id", sort=False):
        level: float | None = None
        start = 0
        for row in events.itertuples(index=False):
            price = _num(getattr(row, price_col, None))
            if price is None and leg == "stop_loss":
                price = _num(getattr(row, "limit_price", None))
            ts = int(row.ts)
            if price is not None and price != level:
                if level is not None:
                    x += [*ny_text([start, ts]), None]
                    y += [level, level, None]
                    text += [str(order_id)] * 2 + [None]
                level, start = price, ts
            if row.status in TERMINAL:
                break
        else:
            ts = max(until_ts, start)
        if level is not None:
            x += [*ny_text([start, ts]), None]
            y += [level, level, None]
            text += [str(order_id)] * 2 + [None]
    return {"x": x, "y": y, "text": text}


def trade_marks(bars: pd.DataFrame, trades: pd.DataFrame, orders: pd.DataFrame) -> Marks:
    """Entries/exits (on the underlying and at the contract's fill prices) and brackets for one symbol."""
    if len(trades):
        entry_ts = [int(t) for t in trades["entry_ts"].tolist()]
        exit_ts = [int(t) for t in trades["exit_ts"].tolist()]
        label = [f"{c} {p} ×{q}" for c, p, q in zip(trades["contract"], trades["playbook"], trades["quantity"],
                                                     strict=True)]
        entry_px = _column(trades, "entry_price")
        exit_px = _column(trades, "exit_price")
        reasons = [str(r) for r in trades["exit_reason"].tolist()] if "exit_reason" in trades.columns else [""] * len(
            trades)
    else:
        entry_ts, exit_ts, label, entry_px, exit_px, reasons = [], [], [], [], [], []
    until = int(bars["ts"].max()) if len(bars) else 0
    return Marks(
        entry_u={"x": ny_text(entry_ts), "y": _close_at(bars, entry_ts), "text": label},
        exit_u={"x": ny_text(exit_ts), "y": _close_at(bars, exit_ts), "text": reasons},
        entry_p={"x": ny_text(entry_ts), "y": entry_px, "text": label},
        exit_p={"x": ny_text(exit_ts), "y": exit_px, "text": reasons},
        take_profit=bracket_segments(orders, "take_profit", until),
        stop_loss=bracket_segments(orders, "stop_loss", until),
    )


def chart_figure(symbol: str, bars: pd.DataFrame, marks: Marks) -> go.Figure:
    """The whole chart for ``symbol`` (the first draw; later refreshes patch it)."""
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, row_heights=[0.72, 0.28], vertical_spacing=0.04,
                        subplot_titles=(f"{symbol} 1-minute, session VWAP ±1/2/3σ (New York time)",
                                        "traded contracts: entries, exits, take-profit and stop-loss"))
    cols = bar_columns(bars)
    fig.add_trace(go.Candlestick(name="candles", **cols[CANDLES], increasing_line_color="#1b7f3b",
                                 decreasing_line_color="#b00020"), row=1, col=1)
    fig.add_trace(go.Scatter(name="VWAP", mode="lines", line={"color": "#1f77b4", "width": 2}, **cols[VWAP]),
                  row=1, col=1)
    for i, (name, col) in enumerate(BANDS):
        k = int(col[-1])
        fig.add_trace(go.Scatter(name=name, mode="lines", legendgroup=f"band{k}", showlegend=col.startswith(
            "vwap_upper"), line={"color": _BAND_COLORS[k], "width": 1, "dash": "dot"}, **cols[FIRST_BAND + i]),
            row=1, col=1)
    marker = {"size": 12, "line": {"width": 1, "color": "#222"}}
    m = marks
    fig.add_trace(go.Scatter(name="entry (underlying)", mode="markers", **m.entry_u,
                             marker={**marker, "symbol": "triangle-up", "color": "#1b7f3b"}), row=1, col=1)
    fig.add_trace(go.Scatter(name="exit (underlying)", mode="markers", **m.exit_u,
                             marker={**marker, "symbol": "x", "color": "#b00020"}), row=1, col=1)
    fig.add_trace(go.Scatter(name="entry", mode="markers", **m.entry_p,
                             marker={**marker, "symbol": "triangle-up", "color": "#1b7f3b"}), row=2, col=1)
    fig.add_trace(go.Scatter(name="exit", mode="markers", **m.exit_p,
                             marker={**marker, "symbol": "x", "color": "#b00020"}), row=2, col=1)
    fig.add_trace(go.Scatter(name="take profit", mode="lines", line={"color": "#1b7f3b", "dash": "dash"},
                             **m.take_profit), row=2, col=1)
    fig.add_trace(go.Scatter(name="stop loss", mode="lines", line={"color": "#b00020", "dash": "dash"},
                             **m.stop_loss), row=2, col=1)
    fig.update_layout(height=760, margin={"l": 50, "r": 10, "t": 40, "b": 30}, template="plotly_white",
                      uirevision=symbol, legend={"orientation": "h", "y": -0.06}, hovermode="x")
    fig.update_xaxes(rangeslider_visible=False)
    fig.update_yaxes(title_text="price", row=1, col=1)
    fig.update_yaxes(title_text="premium", row=2, col=1)
    return fig


def chart_patch(new_bars: pd.DataFrame, marks: Marks | None) -> Patch:
    """Append ``new_bars`` to the bar traces; replace the trade/bracket traces when ``marks`` is given."""
    patch = Patch()
    if len(new_bars):
        for index, columns in bar_columns(new_bars).items():
            for name, values in columns.items():
                patch["data"][index][name].extend(values)
    if marks is not None:
        for index, columns in marks.by_trace().items():
            for name, values in columns.items():
                patch["data"][index][name] = values
    return patch


def symbols_of(features: pd.DataFrame) -> list[str]:
    """The underlyings in the features table, in first-seen order."""
    if not len(features) or "symbol" not in features.columns:
        return []
    return list(dict.fromkeys(features["symbol"].tolist()))


def _status(symbol: str, bars: pd.DataFrame, trades: pd.DataFrame) -> str:
    if not len(bars):
        return f"no bars for {symbol} yet"
    last = ny_text([int(bars["ts"].iloc[-1]) - BAR_NS])[0]
    return (f"{symbol}: {len(bars)} bars, {len(trades)} trades, last bar {last} "
            "New York")


@dataclass
class ChartPage:
    """``/chart``: the live chart per underlying."""

    path: str = "/chart"
    title: str = "Chart"

    def _tails(self, c: PageContext) -> JournalTails:
        return shared_tails(c)

    def layout(self, c: PageContext) -> Component:
        """Symbol picker, the chart, a status line and the page's refresh timer."""
        note = "" if journal_root(c.journal_root, c.backtest_dir) is not None else (
            "no journal: start the console with --journal DIR or --backtest-dir DIR")
        return html.Div([
            html.Div([html.Span("Underlying "), dcc.Dropdown(id=SYMBOL, options=[], value=None, clearable=False,
                                                              style={"width": "160px", "display": "inline-block"}),
                      html.Span(note, id=STATUS, className="muted", style={"marginLeft": "12px"})],
                     className="card"),
            html.Div(dcc.Graph(id=GRAPH, figure=go.Figure(), config={"displaylogo": False}), className="card"),
            dcc.Store(id=CURSOR, data=None),
            dcc.Interval(id=REFRESH, interval=c.refresh_ms, n_intervals=0),
        ])

    def update(self, c: PageContext, symbol: str | None, cursor: Mapping[str, Any] | None,
               symbol_changed: bool) -> tuple[Any, ...]:
        """One refresh: (figure or patch, cursor, status, symbol options, symbol value)."""
        tails = self._tails(c)
        if not tails.configured:
            raise PreventUpdate
        features = tails.rows("features")
        symbols = symbols_of(features)
        if not symbols:
            return no_update, None, "the journal has no bars yet", [], None
        chosen = symbol if symbol in symbols else symbols[0]
        bars = _rows(features, chosen)
        trades = _rows(tails.rows("trades"), chosen)
        orders = _rows(tails.rows("orders"), chosen)
        options = [{"label": s, "value": s} for s in symbols]
        now = {"symbol": chosen, "bars": len(bars), "trades": len(trades), "orders": len(orders), "symbols": symbols}
        if symbol_changed or not cursor or cursor.get("symbol") != chosen or cursor.get("bars", 0) > len(bars):
            fig = chart_figure(chosen, bars, trade_marks(bars, trades, orders))
            return fig, now, _status(chosen, bars, trades), options, chosen
        if now == dict(cursor):  # nothing new: the browser's figure is current
            raise PreventUpdate
        new_bars = bars.iloc[int(cursor.get("bars", 0)):]
        changed = (cursor.get("trades"), cursor.get("orders")) != (len(trades), len(orders)) or len(new_bars)
        # A still-working bracket leg's segment ends at the newest bar, so it is redrawn with new bars too.
        marks = trade_marks(bars, trades, orders) if changed else None
        return (chart_patch(new_bars, marks), now, _status(chosen, bars, trades),
                no_update if cursor.get("symbols") == symbols else options, no_update)

    def register(self, app: Dash, c: PageContext) -> None:
        """The refresh callback: new bars appended, trades and brackets redrawn when they change."""

        @app.callback(Output(GRAPH, "figure"), Output(CURSOR, "data"), Output(STATUS, "children"),
                      Output(SYMBOL, "options"), Output(SYMBOL, "value"),
                      Input(REFRESH, "n_intervals"), Input(SYMBOL, "value"), State(CURSOR, "data"))
        def _refresh(_n: int | None, symbol: str | None, cursor: Mapping[str, Any] | None) -> tuple[Any, ...]:
            return self.update(c, symbol, cursor, ctx.triggered_id == SYMBOL)


PAGE: Final = ChartPage()
