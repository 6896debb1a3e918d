"""The option chain around the money with its IV smile, the position's contracts highlighted.

From the journal's ``chain`` table (snapshots of ATM ± N strikes of the nearest expiry, once per bar):
the snapshot at a chosen time (the newest by default, or any trade's entry) as a calls | strike | puts
table of bid, ask, IV and delta, and the smile (IV by strike, calls and puts). The contracts held at
that time are highlighted in both: a trade open then (entry <= t < exit), an entry filled with no trade
closed yet, and, for the newest snapshot, the OMS book's open positions in Redis. ``/chain?at=<ns>``
links to the snapshot at a time.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import parse_qs

import pandas as pd
import plotly.graph_objects as go
from dash import Dash, Input, Output, State, dcc, html
from dash.exceptions import PreventUpdate

from services.dashboard.pages.base import Component, PageContext
from services.dashboard.pages.book import live_book
from services.dashboard.pages.tail import journal_root, shared_tails
from services.dashboard.pages.timefmt import ny_text
from services.dashboard.sources import BookView

PREFIX: Final = "chain"
GRAPH: Final = f"{PREFIX}-smile"
TABLE: Final = f"{PREFIX}-table"
SYMBOL: Final = f"{PREFIX}-symbol"
AT: Final = f"{PREFIX}-at"
STATUS: Final = f"{PREFIX}-status"
REFRESH: Final = f"{PREFIX}-refresh"
LATEST: Final = "latest"
LOCATION: Final = "location"  # the app's dcc.Location (services.dashboard.app.LOCATION)
_OCC: Final = re.compile(r"^([A-Z.]{1,6})(\d{2})(\d{2})(\d{2})([CP])(\d{8})$")

Key = tuple[str, float, str]  # (expiry YYYY-MM-DD, strike, right C/P)


def occ_key(contract: str) -> Key | None:
    """(expiry, strike, right) of an OCC symbol like ``SPY250710C00625000``; None if it is not one."""
    m = _OCC.match(contract.strip().upper().removeprefix("O:"))
    if m is None:
        return None
    _, yy, mm, dd, right, strike = m.groups()
    return f"20{yy}-{mm}-{dd}", int(strike) / 1000.0, right


def held_at(ts: int, trades: pd.DataFrame, orders: pd.DataFrame) -> set[str]:
    """Contracts held at ``ts``: trades open then, and entries filled by then whose trade has not closed."""
    held: set[str] = set()
    closed: set[str] = set()
    if len(trades):
        for row in trades.itertuples(index=False):
            if int(row.entry_ts) <= ts < int(row.exit_ts):
                held.add(str(row.contract))
            if int(row.exit_ts) <= ts:
                closed.add(str(row.id))
    if len(orders) and {"leg", "status", "client_order_id"} <= set(orders.columns):
        entries = orders[(orders["leg"] == "entry") & (orders["status"] == "filled") & (orders["ts"] <= ts)]
        traded = set(trades["id"].astype(str)) if len(trades) and "id" in trades.columns else set()
        for row in entries.itertuples(index=False):
            if str(row.client_order_id) not in traded | closed:
                held.add(str(row.contract))
    return held


def book_contracts(book: object) -> set[str]:
    """Contracts of the OMS book's open positions (none without a book)."""
    if not isinstance(book, BookView):
        return set()
    return {str(p.get("contract")) for p in book.positions if p.get("quantity")}


def snapshot(chain: pd.DataFrame, symbol: str, at: int | None) -> pd.DataFrame:
    """The newest snapshot of ``symbol`` at or before ``at`` (None: the newest), sorted by strike."""
    rows = chain[chain["underlying"] == symbol] if len(chain) else chain
    if not len(rows):
        return rows
    times = rows["ts"].astype("int64")
    if at is not None:
        times = times[times <= at]
        if not len(times):
            return rows.iloc[0:0]
    return rows[rows["ts"] == times.max()].sort_values(["strike", "right"], kind="stable")


def _num(v: Any) -> float | None:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def _keys(contracts: Iterable[str]) -> set[Key]:
    return {k for k in (occ_key(c) for c in contracts) if k is not None}


def smile_figure(snap: pd.DataFrame, held: set[str], title: str) -> go.Figure:
    """IV by strike for calls and puts, the held contracts marked."""
    fig = go.Figure()
    marked = _keys(held)
    for right, name, color in (("C", "calls", "#1f77b4"), ("P", "puts", "#ff7f0e")):
        side = snap[snap["right"] == right] if len(snap) else snap
        fig.add_trace(go.Scatter(name=f"IV {name}", x=[_num(v) for v in side.get("strike", [])],
                                 y=[_num(v) for v in side.get("iv", [])], mode="lines+markers",
                                 line={"color": color}))
    hx: list[float | None] = []
    hy: list[float | None] = []
    ht: list[str] = []
    for row in snap.itertuples(index=False):
        key = (str(row.expiry), float(row.strike), str(row.right))
        if key in marked:
            hx.append(_num(row.strike))
            hy.append(_num(row.iv))
            ht.append(f"{row.right} {row.strike:g} {row.expiry}")
    fig.add_trace(go.Scatter(name="held", x=hx, y=hy, text=ht, mode="markers",
                             marker={"size": 16, "symbol": "star", "color": "#b00020",
                                     "line": {"width": 1, "color": "#222"}}))
    fig.update_layout(height=380, margin={"l": 50, "r": 10, "t": 40, "b": 40}, template="plotly_white",
                      title={"text": title}, xaxis={"title": {"text": "strike"}},
                      yaxis={"title": {"text": "implied volatility"}, "tickformat": ".1%"})
    return fig


def _fmt(v: Any, pct: bool = False) -> str:
    f = _num(v)
    if f is None:
        return "—"
    return f"{f:.1%}" if pct else f"{f:,.2f}"


def chain_table(snap: pd.DataFrame, held: set[str]) -> html.Table:
    """Calls | strike | puts (bid, ask, IV, delta); a held contract's cells have class ``held``."""
    marked = _keys(held)
    by: dict[tuple[float, str], Any] = {}
    for row in snap.itertuples(index=False):
        by[(float(row.strike), str(row.right))] = row
    strikes = sorted({k[0] for k in by})
    head = html.Thead(html.Tr([html.Th(h) for h in (
        "call bid", "call ask", "call IV", "call Δ", "strike", "put bid", "put ask", "put IV", "put Δ")]))
    body = []
    for strike in strikes:
        cells: list[Any] = []
        for right in ("C", "P"):
            row = by.get((strike, right))
            is_held = row is not None and (str(row.expiry), strike, right) in marked
            cls = "held" if is_held else ""
            vals = ("—",) * 4 if row is None else (_fmt(row.bid), _fmt(row.ask), _fmt(row.iv, pct=True),
                                                   _fmt(getattr(row, "delta", None)))
            part = [html.Td(v, className=cls) for v in vals]
            if right == "C":
                cells.extend(part)
                cells.append(html.Td(f"{strike:g}", className="strike"))
            else:
                cells.extend(part)
        held_rights = [r for r in ("C", "P") if (by.get((strike, r)) is not None and
                                                 (str(by[(strike, r)].expiry), strike, r) in marked)]
        body.append(html.Tr(cells, id=f"{PREFIX}-row-{strike:g}",
                            className=" ".join(f"held-{r}" for r in held_rights)))
    return html.Table([head, html.Tbody(body)], id=f"{TABLE}-rows")


@dataclass
class ChainPage:
    """``/chain``: the chain around the money and its IV smile."""

    path: str = "/chain"
    title: str = "Option chain"

    def layout(self, c: PageContext) -> Component:
        """Underlying and time pickers, the smile, the chain table and the refresh timer."""
        note = "" if journal_root(c.journal_root, c.backtest_dir) is not None else (
            "no journal: start the console with --journal DIR or --backtest-dir DIR")
        picker = {"display": "inline-block", "marginRight": "12px"}
        return html.Div([
            html.Div([html.Span("Underlying "),
                      dcc.Dropdown(id=SYMBOL, options=[], value=None, clearable=False,
                                   style={"width": "140px", **picker}),
                      html.Span("At "),
                      dcc.Dropdown(id=AT, options=[{"label": "newest snapshot", "value": LATEST}], value=LATEST,
                                   clearable=False, style={"width": "420px", **picker}),
                      html.Div(note, id=STATUS, className="muted")], className="card"),
            html.Div(dcc.Graph(id=GRAPH, figure=go.Figure(), config={"displaylogo": False}), className="card"),
            html.Div(html.Div(id=TABLE), className="card"),
            dcc.Interval(id=REFRESH, interval=c.refresh_ms, n_intervals=0),
        ])

    def update(self, c: PageContext, symbol: str | None, at: str | None) -> tuple[Any, ...]:
        """(smile, table, status, symbol options, symbol, time options)."""
        tails = shared_tails(c)
        if not tails.configured:
            raise PreventUpdate
        chain = tails.rows("chain")
        if not len(chain) or "underlying" not in chain.columns:
            return go.Figure(), html.Div("no chain snapshots yet", className="muted"), "", [], None, _at_options([])
        symbols = [str(s) for s in dict.fromkeys(chain["underlying"].tolist())]
        chosen = symbol if isinstance(symbol, str) and symbol in symbols else symbols[0]
        trades = tails.rows("trades")
        if len(trades) and "underlying" in trades.columns:
            trades = trades[trades["underlying"] == chosen]
        orders = tails.rows("orders")
        when = None if at in (None, LATEST) or not str(at).isdigit() else int(str(at))
        snap = snapshot(chain, chosen, when)
        if not len(snap):
            return (go.Figure(), html.Div("no snapshot at that time", className="muted"), "", _opts(symbols),
                    chosen, _at_options(trades))
        snap_ts = int(snap["ts"].iloc[0])
        held = held_at(snap_ts, trades, orders)
        if when is None:
            held |= book_contracts(live_book(c))
        stamp = ny_text([snap_ts])[0]
        spot = _num(snap["underlying_price"].iloc[0]) if "underlying_price" in snap.columns else None
        title = f"{chosen} IV smile at {stamp} New York" + (f", spot {spot:,.2f}" if spot is not None else "")
        status = (f"snapshot {stamp} New York: {len(snap)} contracts, expiry {snap['expiry'].iloc[0]}; held: "
                  f"{', '.join(sorted(held)) or 'none'}")
        return (smile_figure(snap, held, title), chain_table(snap, held), status, _opts(symbols), chosen,
                _at_options(trades))

    def register(self, app: Dash, c: PageContext) -> None:
        """The refresh callback (also on a new underlying or time)."""

        @app.callback(Output(GRAPH, "figure"), Output(TABLE, "children"), Output(STATUS, "children"),
                      Output(SYMBOL, "options"), Output(SYMBOL, "value"), Output(AT, "options"),
                      Input(REFRESH, "n_intervals"), Input(SYMBOL, "value"), Input(AT, "value"),
                      State(LOCATION, "search"))
        def _refresh(_n: int | None, symbol: str | None, at: str | None, search: str | None) -> tuple[Any, ...]:
            return self.update(c, symbol, at if at not in (None, LATEST) else at_from_search(search))


def at_from_search(search: str | None) -> str | None:
    """``?at=<ns>`` of a deep link to a snapshot time (anything else: the newest snapshot)."""
    values = parse_qs((search or "").lstrip("?")).get("at", [])
    return values[0] if values and values[0].isdigit() else None


def _opts(values: Iterable[str]) -> list[dict[str, str]]:
    return [{"label": v, "value": v} for v in values]


def _at_options(trades: Any) -> list[dict[str, str]]:
    """"newest snapshot" and each trade's entry time (value: the entry's ns time)."""
    out = [{"label": "newest snapshot", "value": LATEST}]
    if isinstance(trades, pd.DataFrame) and len(trades):
        for row in trades.sort_values("entry_ts").itertuples(index=False):
            out.append({"label": f"entry {ny_text([int(row.entry_ts)])[0]} {row.contract}",
                        "value": str(int(row.entry_ts))})
    return out


PAGE: Final = ChainPage()
