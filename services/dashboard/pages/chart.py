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

import hashlib
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

import numpy as np
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
    return BarIndex.of(bars).close_at(ts)


@dataclass(frozen=True, slots=True)
class BarIndex:
    """Bar start times and closes as plain arrays: the close lookup every refresh does, without pandas."""

    starts: np.ndarray
    closes: list[float | None]
    last_ts: int

    @classmethod
    def of(cls, bars: pd.DataFrame) -> BarIndex:
        if not len(bars):
            return cls(np.zeros(0, dtype="int64"), [], 0)
        ts = bars["ts"].astype("int64").to_numpy()
        closes = _column(bars, "close")
        return cls(ts - BAR_NS, closes, int(ts.max()))

    def close_at(self, ts: Iterable[int]) -> list[float | None]:
        out: list[float | None] = []
        for t in ts:
            i = int(self.starts.searchsorted(int(t), side="right")) - 1
            out.append(self.closes[i] if i >= 0 else None)
        return out


def _rows(frame: pd.DataFrame, symbol: str) -> pd.DataFrame:
    if not len(frame):
        return frame
    col = "underlying" if "underlying" in frame.columns else "symbol"
    return frame[frame[col] == symbol] if col in frame.columns else frame.iloc[0:0]


# One price level of a bracket leg: (start ns, end ns or None while the leg still works, price, order id).
Segment = tuple[int, int | None, float, str]


def leg_segments(orders: pd.DataFrame, leg: str) -> list[Segment]:
    """One bracket leg's price levels over time: a level starts at the event that set it and ends at the
    next price change or the leg's end (None: still working, it runs to the newest bar)."""
    price_col = "limit_price" if leg == "take_profit" else "stop_price"
    if not len(orders) or "leg" not in orders.columns:
        return []
    legs = orders[orders["leg"] == leg].sort_values("ts", kind="stable")
    # A day has a few dozen order events: plain records cost far less than pandas' groupby/itertuples.
    by_order: dict[Any, list[dict[str, Any]]] = {}
    for event in legs.to_dict("records"):
        by_order.setdefault(event["order_id"], []).append(event)
    segments: list[Segment] = []
    for order_id, events in by_order.items():
        level: float | None = None
        start = 0
        end: int | None = None
        for event in events:
            price = _num(event.get(price_col))
            if price is None and leg == "stop_loss":
                price = _num(event.get("limit_price"))
            ts = int(event["ts"])
            if price is not None and price != level:
                if level is not None:
                    segments.append((start, ts, level, str(order_id)))
                level, start = price, ts
            if event.get("status") in TERMINAL:
                end = ts
                break
        if level is not None:
            segments.append((start, end, level, str(order_id)))
    return segments


def segment_lines(segments: Iterable[Segment], until_ts: int) -> dict[str, list[Any]]:
    """The segments as one line trace (gaps between them); a working leg's level ends at ``until_ts``."""
    drawn = [(start, max(until_ts, start) if end is None else end, level, order_id)
             for start, end, level, order_id in segments]
    times = ny_text(t for start, end, _, _ in drawn for t in (start, end))  # one conversion for all
    x: list[Any] = []
    y: list[Any] = []
    text: list[Any] = []
    for i, (_, _, level, order_id) in enumerate(drawn):
        x += [times[2 * i], times[2 * i + 1], None]
        y += [level, level, None]
        text += [order_id, order_id, None]
    return {"x": x, "y": y, "text": text}


def bracket_segments(orders: pd.DataFrame, leg: str, until_ts: int) -> dict[str, list[Any]]:
    """Horizontal segments of one bracket leg's price over time: a level starts at the event that set
    it and ends at the next price change or the leg's end (still working: ``until_ts``)."""
    return segment_lines(leg_segments(orders, leg), until_ts)


@dataclass(frozen=True, slots=True)
class TradeInputs:
    """What the trade and bracket traces take from the trades and orders tables, as plain lists, so a
    refresh that only brings new bars redraws them without touching those tables again."""

    entry_ts: list[int]
    exit_ts: list[int]
    entry_x: list[str]
    exit_x: list[str]
    label: list[str]
    reasons: list[str]
    entry_px: list[float | None]
    exit_px: list[float | None]
    take_profit: list[Segment]
    stop_loss: list[Segment]

    @classmethod
    def of(cls, trades: pd.DataFrame, orders: pd.DataFrame) -> TradeInputs:
        if len(trades):
            entry_ts = [int(t) for t in trades["entry_ts"].tolist()]
            exit_ts = [int(t) for t in trades["exit_ts"].tolist()]
            label = [f"{c} {p} ×{q}" for c, p, q in zip(trades["contract"], trades["playbook"], trades["quantity"],
                                                         strict=True)]
            reasons = ([str(r) for r in trades["exit_reason"].tolist()] if "exit_reason" in trades.columns
                       else [""] * len(trades))
            entry_px, exit_px = _column(trades, "entry_price"), _column(trades, "exit_price")
        else:
            entry_ts, exit_ts, label, reasons, entry_px, exit_px = [], [], [], [], [], []
        return cls(entry_ts, exit_ts, ny_text(entry_ts), ny_text(exit_ts), label, reasons, entry_px, exit_px,
                   leg_segments(orders, "take_profit"), leg_segments(orders, "stop_loss"))

    def marks(self, bars: BarIndex) -> Marks:
        """The traces over ``bars``: markers on the underlying at their minute's close, working brackets
        drawn to the newest bar."""
        return Marks(
            entry_u={"x": self.entry_x, "y": bars.close_at(self.entry_ts), "text": self.label},
            exit_u={"x": self.exit_x, "y": bars.close_at(self.exit_ts), "text": self.reasons},
            entry_p={"x": self.entry_x, "y": self.entry_px, "text": self.label},
            exit_p={"x": self.exit_x, "y": self.exit_px, "text": self.reasons},
            take_profit=segment_lines(self.take_profit, bars.last_ts),
            stop_loss=segment_lines(self.stop_loss, bars.last_ts),
        )


def trade_marks(bars: pd.DataFrame, trades: pd.DataFrame, orders: pd.DataFrame) -> Marks:
    """Entries/exits (on the underlying and at the contract's fill prices) and brackets for one symbol."""
    return TradeInputs.of(trades, orders).marks(BarIndex.of(bars))


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


@dataclass(frozen=True, slots=True)
class SymbolView:
    """One symbol's rows and trace inputs, derived from the journal tails' frames.

    A :class:`TableTail` hands back the same frame object until a new part arrives, so ``sources``
    (compared by identity) say whether anything must be derived again: a refresh with one new bar
    re-filters the bars and redraws the marks from plain lists, never re-reading trades or orders.
    """

    sources: tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]
    bars: pd.DataFrame
    trades: pd.DataFrame
    orders: pd.DataFrame
    inputs: TradeInputs
    marks: Marks
    digest: str  # of ``marks``: the browser's cursor keeps it, so unchanged marks are not sent again

    @classmethod
    def of(cls, symbol: str, features: pd.DataFrame, trades: pd.DataFrame, orders: pd.DataFrame,
           previous: SymbolView | None = None) -> SymbolView:
        bars = previous.bars if previous is not None and previous.sources[0] is features else _rows(features, symbol)
        if previous is not None and previous.sources[1] is trades and previous.sources[2] is orders:
            mine_trades, mine_orders, inputs = previous.trades, previous.orders, previous.inputs
        else:
            mine_trades, mine_orders = _rows(trades, symbol), _rows(orders, symbol)
            inputs = TradeInputs.of(mine_trades, mine_orders)
        marks = inputs.marks(BarIndex.of(bars))
        digest = hashlib.blake2b(repr(marks.by_trace()).encode(), digest_size=8).hexdigest()
        return cls((features, trades, orders), bars, mine_trades, mine_orders, inputs, marks, digest)

    def current(self, features: pd.DataFrame, trades: pd.DataFrame, orders: pd.DataFrame) -> bool:
        """Whether this view was derived from exactly these frames."""
        return self.sources[0] is features and self.sources[1] is trades and self.sources[2] is orders


@dataclass
class ChartPage:
    """``/chart``: the live chart per underlying."""

    path: str = "/chart"
    title: str = "Chart"
    # Per symbol, the last view (shared by every browser: they all read the same tails).
    _views: dict[str, SymbolView] = field(default_factory=dict, repr=False)
    _symbols: tuple[pd.DataFrame | None, list[str]] = field(default=(None, []), repr=False)

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

    def _symbols_of(self, features: pd.DataFrame) -> list[str]:
        seen, symbols = self._symbols
        if seen is not features:
            symbols = symbols_of(features)
            self._symbols = (features, symbols)
        return symbols

    def _view(self, symbol: str, features: pd.DataFrame, trades: pd.DataFrame, orders: pd.DataFrame) -> SymbolView:
        view = self._views.get(symbol)
        if view is None or not view.current(features, trades, orders):
            view = self._views[symbol] = SymbolView.of(symbol, features, trades, orders, view)
        return view

    def update(self, c: PageContext, symbol: str | None, cursor: Mapping[str, Any] | None,
               symbol_changed: bool) -> tuple[Any, ...]:
        """One refresh: (figure or patch, cursor, status, symbol options, symbol value)."""
        tails = self._tails(c)
        if not tails.configured:
            raise PreventUpdate
        features = tails.rows("features")
        symbols = self._symbols_of(features)
        if not symbols:
            return no_update, None, "the journal has no bars yet", [], None
        chosen = symbol if symbol in symbols else symbols[0]
        view = self._view(chosen, features, tails.rows("trades"), tails.rows("orders"))
        bars, trades = view.bars, view.trades
        options = [{"label": s, "value": s} for s in symbols]
        now = {"symbol": chosen, "bars": len(bars), "trades": len(trades), "orders": len(view.orders),
               "symbols": symbols, "marks": view.digest}
        if symbol_changed or not cursor or cursor.get("symbol") != chosen or cursor.get("bars", 0) > len(bars):
            fig = chart_figure(chosen, bars, view.marks)
            return fig, now, _status(chosen, bars, trades), options, chosen
        if now == dict(cursor):  # nothing new: the browser's figure is current
            raise PreventUpdate
        new_bars = bars.iloc[int(cursor.get("bars", 0)):]
        # Only new bars travel; the trade and bracket traces only when they changed (a working bracket
        # leg's segment ends at the newest bar, so new bars can change them too).
        marks = view.marks if cursor.get("marks") != view.digest else None
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
