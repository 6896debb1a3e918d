"""Orders with their full lifecycle: one row per order leg (entry, take-profit, stop-loss, flatten) with
every status it went through and when, its prices, fills and fees, newest first, from the journal's
``orders`` table (the OMS's OrderEvents). Redrawn only when order events arrive.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import pandas as pd
from dash import Dash, Input, Output, State, dcc, html
from dash.exceptions import PreventUpdate

from services.dashboard.pages.base import Component, PageContext
from services.dashboard.pages.tail import journal_root, shared_tails
from services.dashboard.pages.timefmt import ny_text

PREFIX: Final = "orders"
TABLE: Final = f"{PREFIX}-lifecycle"
STATUS: Final = f"{PREFIX}-status"
CURSOR: Final = f"{PREFIX}-cursor"
REFRESH: Final = f"{PREFIX}-refresh"
COLUMNS: Final[tuple[tuple[str, str], ...]] = (
    ("First seen (NY)", "first"), ("Order", "order_id"), ("Bracket", "client_order_id"), ("Contract", "contract"),
    ("Leg", "leg"), ("Side", "side"), ("Qty", "quantity"), ("Filled", "filled_quantity"), ("Limit", "limit_price"),
    ("Stop", "stop_price"), ("Fill price", "fill_price"), ("Fees", "fees"), ("Status", "status"),
    ("Lifecycle", "lifecycle"), ("Reason", "reason"),
)


def _value(v: Any) -> Any:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return None
    return v


def _last(values: list[Any]) -> Any:
    """The newest non-empty value (a leg's price or fill may be set by a later event only)."""
    for v in reversed(values):
        v = _value(v)
        if v is not None and v != "":
            return v
    return None


def lifecycles(orders: pd.DataFrame) -> list[dict[str, Any]]:
    """One record per order leg: its newest state and every status change with its New York time
    (``pending 10:17:00 → working 10:17:00 → filled 10:19:00``), newest leg first."""
    if not len(orders) or "order_id" not in orders.columns:
        return []
    ordered = orders.sort_values("ts", kind="stable")
    out: list[dict[str, Any]] = []
    for order_id, ev in ordered.groupby("order_id", sort=False):
        times = ny_text(ev["ts"].tolist())
        steps: list[str] = []
        for status, when in zip(ev["status"].tolist(), times, strict=True):
            step = f"{status} {when[11:]}"
            if not steps or steps[-1] != step:
                steps.append(step)
        col = {name: ev[name].tolist() if name in ev.columns else [] for name in (
            "client_order_id", "contract", "leg", "side", "quantity", "filled_quantity", "limit_price", "stop_price",
            "fill_price", "fees", "status", "reason")}
        out.append({
            "first": times[0], "first_ts": int(ev["ts"].iloc[0]), "order_id": str(order_id),
            "client_order_id": _last(col["client_order_id"]), "contract": _last(col["contract"]),
            "leg": _last(col["leg"]), "side": _last(col["side"]), "quantity": _last(col["quantity"]),
            "filled_quantity": _last(col["filled_quantity"]), "limit_price": _last(col["limit_price"]),
            "stop_price": _last(col["stop_price"]), "fill_price": _last(col["fill_price"]),
            "fees": float(sum(_value(f) or 0.0 for f in col["fees"])), "status": _last(col["status"]),
            "lifecycle": " → ".join(steps), "reason": _last(col["reason"]) or "",
            "events": len(ev),
        })
    out.sort(key=lambda r: (r["first_ts"], r["order_id"]), reverse=True)
    return out


def _cell(v: Any) -> str:
    if v is None:
        return "—"
    if isinstance(v, float):
        return f"{v:,.2f}" if v != int(v) or abs(v) < 1e6 else f"{v:,.0f}"
    return str(v)


def lifecycle_table(rows: Sequence[Mapping[str, Any]]) -> html.Table:
    """The lifecycle rows as a table (each row's id is ``orders-row-<order id>``)."""
    head = html.Thead(html.Tr([html.Th(h) for h, _ in COLUMNS]))
    body = html.Tbody([html.Tr([html.Td(_cell(r.get(k)), className=f"col-{k}") for _, k in COLUMNS],
                               id=f"{PREFIX}-row-{r['order_id']}", className=f"status-{r.get('status')}")
                       for r in rows])
    return html.Table([head, body], id=f"{TABLE}-table")


@dataclass
class OrdersPage:
    """``/orders``: every order leg with its lifecycle."""

    path: str = "/orders"
    title: str = "Orders"

    def layout(self, c: PageContext) -> Component:
        """A status line, the lifecycle table and the refresh timer."""
        note = "" if journal_root(c.journal_root, c.backtest_dir) is not None else (
            "no journal: start the console with --journal DIR or --backtest-dir DIR")
        return html.Div([
            html.Div([html.Div(note, id=STATUS, className="muted"), html.Div(id=TABLE)], className="card"),
            dcc.Store(id=CURSOR, data=None),
            dcc.Interval(id=REFRESH, interval=c.refresh_ms, n_intervals=0),
        ])

    def update(self, c: PageContext, cursor: int | None) -> tuple[Any, ...]:
        """(status, table, cursor); nothing new: no update."""
        tails = shared_tails(c)
        if not tails.configured:
            raise PreventUpdate
        orders = tails.rows("orders")
        if cursor == len(orders):
            raise PreventUpdate
        rows = lifecycles(orders)
        filled = sum(1 for r in rows if r["status"] == "filled")
        status = f"{len(rows)} order legs ({filled} filled) from {len(orders)} order events"
        return status, lifecycle_table(rows) if rows else html.Div("no orders yet", className="muted"), len(orders)

    def register(self, app: Dash, c: PageContext) -> None:
        """The refresh callback."""

        @app.callback(Output(STATUS, "children"), Output(TABLE, "children"), Output(CURSOR, "data"),
                      Input(REFRESH, "n_intervals"), State(CURSOR, "data"))
        def _refresh(_n: int | None, cursor: int | None) -> tuple[Any, ...]:
            return self.update(c, cursor)


PAGE: Final = OrdersPage()
