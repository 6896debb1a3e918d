"""The ops console: one session's kill switch, market-data heartbeat, book, PnL and pipeline health.

:class:`Console` does the work of every callback as plain methods (inputs in, components and figures
out), so tests call them without a browser; :func:`build_app` lays the page out and wires those
methods to Dash callbacks. Data comes from injected sources (:mod:`services.dashboard.sources`).

Refresh: a ``dcc.Interval`` re-reads Redis and Prometheus every ``refresh_s`` (and once on load).

Kill switch: every request has passed :class:`~services.dashboard.access.AccessGuard` (signed in,
same origin, CSRF token), and the callback acts for :func:`~services.dashboard.access.current_actor`.
Engage and Release only arm an action, kept on the server for the signed-in session
(:class:`~services.dashboard.kill_switch.Confirmations`) together with the person's reason; Confirm
writes the flag only if that session armed it, within the confirmation window, the flag has not
changed since, and the actor is an operator. A ``DailyLossLimit`` engagement is not released before
the next session. Every confirmed or refused engage/release is appended to the audit stream
(:data:`services.core.keys.KILL_SWITCH_AUDIT`: who, when, why, outcome) and logged, and the newest
entries are shown under the kill switch.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final

import plotly.graph_objects as go
from dash import Dash, Input, Output, State, ctx, dcc, html
from dash.exceptions import PreventUpdate

from services.core import keys, shared_state
from services.core.calendar import MarketCalendar, default_calendar
from services.core.kill_switch_rules import WHY_MAX, WHY_MIN
from services.core.shared_state import AuditAction, KillSwitchAudit
from services.dashboard.access import CSRF_COOKIE, CSRF_FIELD, CSRF_HEADER, LOGOUT_PATH, AccessGuard, current_actor
from services.dashboard.auth import Actor
from services.dashboard.kill_switch import Armed, Confirmations, release_refusal
from services.dashboard.pages.base import Page, PageContext
from services.dashboard.sources import (
    MANUAL,
    NS_PER_S,
    PANELS,
    BookView,
    HeartbeatView,
    KillSwitchView,
    PanelData,
    PrometheusSource,
    PromPanel,
    RedisSnapshot,
    Series,
    SessionSource,
    SourceError,
    Unavailable,
    fetch_panels,
    finite,
    safe_reason,
    series_name,
)

log = logging.getLogger("dreambot.dashboard")

# Component ids (the integration test finds elements by these).
REFRESH: Final = "refresh"
UPDATED: Final = "updated"
KS_STATUS: Final = "ks-status"
KS_ENGAGE: Final = "ks-engage"
KS_RELEASE: Final = "ks-release"
KS_CONFIRM: Final = "ks-confirm"
KS_CANCEL: Final = "ks-cancel"
KS_CONFIRM_BAR: Final = "ks-confirm-bar"
KS_PROMPT: Final = "ks-prompt"
KS_RESULT: Final = "ks-result"
KS_WHY: Final = "ks-why"
KS_WRITTEN: Final = "ks-written"
KS_AUDIT: Final = "ks-audit"
WHO: Final = "who"
HEARTBEAT: Final = "heartbeat"
PNL: Final = "pnl"
POSITIONS: Final = "positions"
ORDERS: Final = "orders"
OMS_METRICS: Final = "oms-metrics"

ENGAGE: Final = "engage"
RELEASE: Final = "release"

HIDDEN: Final[dict[str, str]] = {"display": "none"}
SHOWN: Final[dict[str, str]] = {"display": "block"}

_CSS: Final = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 0; background: #f4f5f7; color: #1d2430; }
header { background: #1d2430; color: #fff; padding: 12px 20px; }
header h1 { margin: 0; font-size: 20px; }
header .where { font-size: 13px; opacity: .8; margin-top: 4px; }
main { padding: 12px 20px; }
.row { display: grid; grid-template-columns: repeat(auto-fit, minmax(320px, 1fr)); gap: 12px; margin-bottom: 12px; }
.card { background: #fff; border-radius: 6px; padding: 12px 14px; box-shadow: 0 1px 2px rgba(0,0,0,.08); }
.card h2 { font-size: 14px; text-transform: uppercase; letter-spacing: .04em; margin: 0 0 8px; color: #555; }
.big { font-size: 22px; font-weight: 600; }
.engaged { color: #b00020; }
.released { color: #1b7f3b; }
.stale { color: #b00020; font-weight: 600; }
.stale-card { border-left: 5px solid #b00020; }
.fresh { color: #1b7f3b; }
.unavailable { color: #8a5300; background: #fff4e0; padding: 6px 8px; border-radius: 4px; font-family: monospace; }
.muted { color: #777; font-size: 12px; }
.pos { color: #1b7f3b; } .neg { color: #b00020; }
table { border-collapse: collapse; width: 100%; font-size: 13px; }
th, td { text-align: left; padding: 4px 6px; border-bottom: 1px solid #e4e6ea; }
th { color: #555; font-weight: 600; }
button { font-size: 14px; padding: 6px 12px; margin-right: 8px; border-radius: 4px; border: 1px solid #888;
         cursor: pointer; }
button.danger { background: #b00020; color: #fff; border-color: #b00020; }
button.ok { background: #1b7f3b; color: #fff; border-color: #1b7f3b; }
input.why { font-size: 14px; padding: 5px 6px; width: 100%; box-sizing: border-box; margin-bottom: 8px; }
button:disabled { opacity: .45; cursor: not-allowed; }
header form { display: inline; } header button { font-size: 12px; padding: 2px 8px; margin-left: 8px; }
td.held { background: #ffe9a8; font-weight: 600; }
.nav { background: #2b3444; padding: 6px 20px; }
.nav a { color: #cfd6e4; margin-right: 16px; text-decoration: none; font-size: 14px; }
.nav a.active, .nav a:hover { color: #fff; font-weight: 600; }
.confirm { background: #fff4e0; border: 1px solid #e0a040; padding: 10px; border-radius: 6px; margin-top: 8px; }
"""

# Dash loads @babel/polyfill (core-js 2) first, which swaps the browser's own String.prototype.trim,
# parseInt and parseFloat for slow script versions (core-js 2 judges the native ones non-compliant by a
# whitespace rule Unicode has since dropped). plotly parses a colour per candle on every redraw through
# exactly these, so the polyfills cost the live chart about a quarter of each redraw. The browser's own
# (spec-compliant) functions are kept before Dash's scripts and put back right after them.
_KEEP_NATIVES: Final = ("<script>window.__dreambotNatives = {trim: String.prototype.trim, parseInt: window.parseInt,"
                        " parseFloat: window.parseFloat};</script>")
_RESTORE_NATIVES: Final = """<script>(function (n) {
  if (!n) { return; }
  const put = (owner, name, fn) => Object.defineProperty(owner, name, {value: fn, writable: true, configurable: true,
                                                                        enumerable: false});
  put(String.prototype, 'trim', n.trim);
  put(window, 'parseInt', n.parseInt); put(Number, 'parseInt', n.parseInt);
  put(window, 'parseFloat', n.parseFloat); put(Number, 'parseFloat', n.parseFloat);
  delete window.__dreambotNatives;
})(window.__dreambotNatives);</script>"""

_INDEX: Final = """<!DOCTYPE html>
<html>
  <head>
    {%metas%}
    <title>{%title%}</title>
    {%favicon%}
    {%css%}
    <style>""" + _CSS + """</style>
  </head>
  <body>
    {%app_entry%}
    <footer>{%config%}""" + _KEEP_NATIVES + "{%scripts%}" + _RESTORE_NATIVES + """{%renderer%}</footer>
  </body>
</html>"""


# --- formatting ------------------------------------------------------------------------------------


def utc(ts_ns: int) -> str:
    """``2025-01-02 14:30:05 UTC`` for a ns timestamp ('never' for 0)."""
    if ts_ns <= 0:
        return "never"
    return datetime.fromtimestamp(ts_ns / NS_PER_S, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def duration(seconds: float) -> str:
    """``850 ms``, ``12.3 s``, ``4 min 05 s``, ``3 h 02 min``, ``2 d 4 h``."""
    s = abs(seconds)
    sign = "-" if seconds < 0 else ""
    if s < 1:
        return f"{sign}{s * 1000:.0f} ms"
    if s < 60:
        return f"{sign}{s:.1f} s"
    if s < 3600:
        return f"{sign}{int(s // 60)} min {int(s % 60):02d} s"
    if s < 86400:
        return f"{sign}{int(s // 3600)} h {int(s % 3600 // 60):02d} min"
    return f"{sign}{int(s // 86400)} d {int(s % 86400 // 3600)} h"


def usd(value: float) -> str:
    return f"-${abs(value):,.2f}" if value < 0 else f"${value:,.2f}"


def number(value: float | None, unit: str = "") -> str:
    """A sample value for a table: latencies in ms/s, USD as money, counts without decimals."""
    if value is None:
        return "—"
    if math.isnan(value):  # e.g. a quantile over a window without observations
        return "no data"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if unit == "s":
        return duration(value) if abs(value) >= 1 else f"{value * 1000:.3g} ms"
    if unit == "USD":
        return usd(value)
    text = f"{value:.0f}" if value == int(value) else f"{value:.3g}" if abs(value) < 1 else f"{value:,.2f}"
    return f"{text} {unit}".strip()


def _cell(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:,.2f}" if value == value else "NaN"
    if isinstance(value, dict | list):
        text = json.dumps(value, separators=(",", ":"), default=str)
        return text if len(text) <= 80 else text[:77] + "..."
    return str(value)


def _signed(value: float) -> html.Span:
    return html.Span(usd(value), className="pos" if value > 0 else "neg" if value < 0 else "")


def unavailable(item: Unavailable) -> html.Div:
    return html.Div(str(item), className="unavailable")


Column = tuple[str, str]  # (header, record key)


def table(columns: Sequence[Column], rows: Sequence[Mapping[str, Any]], table_id: str | None = None) -> html.Table:
    """A plain HTML table of ``rows`` (missing fields show as a dash)."""
    head = html.Thead(html.Tr([html.Th(h) for h, _ in columns]))
    body = html.Tbody([html.Tr([html.Td(_cell(row.get(k))) for _, k in columns]) for row in rows])
    return html.Table([head, body], id=table_id) if table_id else html.Table([head, body])


POSITION_COLUMNS: Final[tuple[Column, ...]] = (
    ("Contract", "contract"), ("Underlying", "underlying"), ("Qty", "quantity"), ("Avg price", "avg_price"),
    ("Mark", "mark"), ("Unrealized", "unrealized_pnl"), ("Realized", "realized_pnl"), ("Fees", "fees"),
)
ORDER_COLUMNS: Final[tuple[Column, ...]] = (
    ("Order", "order_id"), ("Contract", "contract"), ("Leg", "leg"), ("Side", "side"), ("Status", "status"),
    ("Qty", "quantity"), ("Filled", "filled_quantity"), ("Limit", "limit_price"), ("Stop", "stop_price"),
)


# --- the console's work ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ConsoleConfig:
    """What the page shows and how often.

    session: the TradingSession whose keys and series are shown.
    refresh_s: seconds between refreshes. window_s: span of the time-series charts.
    redis_display / prometheus_display: where the data comes from, credentials already stripped.
    """

    session: str
    refresh_s: float = 5.0
    window_s: float = 1800.0
    redis_display: str = ""
    prometheus_display: str = ""
    confirm_ttl_s: float = 60.0
    audit_shown: int = 20

    @property
    def step_s(self) -> float:
        """Range-query resolution: about 240 points per chart, never finer than 1 s."""
        return max(1.0, self.window_s / 240)


@dataclass(frozen=True, slots=True)
class StateView:
    """The Redis-backed panels' contents for one refresh."""

    kill_switch: Any
    heartbeat: Any
    heartbeat_class: str
    pnl: Any
    positions: Any
    orders: Any
    oms_metrics: Any
    updated: str
    audit: Any = None


@dataclass(frozen=True, slots=True)
class PanelView:
    """One Prometheus panel for one refresh: the chart, whether to show it, and its value table."""

    figure: go.Figure
    graph_style: dict[str, str]
    values: Any


@dataclass(frozen=True, slots=True)
class KillSwitchStep:
    """What one kill-switch button press leads to (``written``: the flag's ts when one was written)."""

    confirm_style: dict[str, str]
    prompt: str
    result: Any
    written: int | None = None


@dataclass
class Console:
    """The work behind every callback, over injected sources and clock."""

    config: ConsoleConfig
    state: SessionSource
    prometheus: PrometheusSource
    panels: tuple[PromPanel, ...] = PANELS
    clock_ns: Callable[[], int] = field(default=time.time_ns)
    calendar: Callable[[], MarketCalendar] = field(default=default_calendar)
    confirmations: Confirmations = field(init=False)
    csrf_token: Callable[[str], str] | None = None  # the session's CSRF token (set by build_app)

    def __post_init__(self) -> None:
        self.confirmations = Confirmations(self.config.confirm_ttl_s, self.clock_ns)

    # -- Redis panels -------------------------------------------------------------------------------

    def refresh_state(self) -> StateView:
        snap: RedisSnapshot = self.state.snapshot(self.config.audit_shown)
        heartbeat, heartbeat_class = self.render_heartbeat(snap.heartbeat)
        book = snap.book
        return StateView(
            kill_switch=self.render_kill_switch(snap.kill_switch, book, snap.audit),
            heartbeat=heartbeat,
            heartbeat_class=heartbeat_class,
            pnl=self.render_pnl(book),
            positions=self.render_positions(book),
            orders=self.render_orders(book),
            oms_metrics=self.render_oms_metrics(snap.oms_metrics),
            updated=f"updated {utc(self.clock_ns())}",
            audit=self.render_audit(snap.audit),
        )

    @staticmethod
    def render_kill_switch(flag: KillSwitchView | Unavailable, book: BookView | Unavailable | None,
                           audit: Sequence[KillSwitchAudit | Unavailable] | Unavailable = ()) -> Any:
        if isinstance(flag, Unavailable):
            return unavailable(flag)
        if flag.engaged:
            headline = html.Div(f"ENGAGED — {flag.reason or MANUAL}", className="big engaged")
        else:
            headline = html.Div("released", className="big released")
        by = f" by {flag.source}" if flag.source else ""
        # The person behind a console write: the audit entry written with the flag's own timestamp.
        writer = next((e for e in audit if isinstance(e, KillSwitchAudit) and e.outcome == "written"
                       and e.ts == flag.ts), None) if not isinstance(audit, Unavailable) else None
        if writer is not None:
            by += f" ({writer.user}: “{writer.why}”)"
        parts: list[Any] = [headline, html.Div(f"last change {utc(flag.ts)}{by}", className="muted")]
        if isinstance(book, BookView) and book.oms_kill_switch is not None:
            oms = book.oms_kill_switch
            seen = f"engaged ({oms.reason})" if oms.engaged else "released"
            parts.append(html.Div(f"OMS sees: {seen}", className="muted"))
        return parts

    @staticmethod
    def render_audit(entries: list[KillSwitchAudit | Unavailable] | Unavailable) -> Any:
        if isinstance(entries, Unavailable):
            return unavailable(entries)
        if not entries:
            return html.Div("no engage or release asked for at the console yet", className="muted")
        rows: list[dict[str, Any]] = []
        for e in entries:
            if isinstance(e, Unavailable):
                rows.append({"when": "?", "detail": str(e)})
                continue
            rows.append({"when": utc(e.ts), "who": f"{e.user} ({e.role})", "action": e.action,
                         "outcome": e.outcome, "why": e.why, "reason": e.reason or "—", "detail": e.detail})
        columns = (("When", "when"), ("Who", "who"), ("Action", "action"), ("Outcome", "outcome"),
                   ("Why", "why"), ("Flag reason", "reason"), ("Detail", "detail"))
        return table(columns, rows, "ks-audit-table")

    @staticmethod
    def render_heartbeat(beat: HeartbeatView | Unavailable | None) -> tuple[Any, str]:
        if isinstance(beat, Unavailable):
            return unavailable(beat), "card"
        if beat is None:
            return [html.Div("no heartbeat yet", className="big stale"),
                    html.Div(f"ingest has not written {keys.INGEST_HEARTBEAT}", className="muted")], "card stale-card"
        label = html.Span("STALE", className="stale") if beat.stale else html.Span("fresh", className="fresh")
        return [
            html.Div([html.Span(f"{duration(beat.age_s)} old "), label], className="big"),
            html.Div(f"newest market data {utc(beat.ts)} · seq {beat.seq}", className="muted"),
        ], ("card stale-card" if beat.stale else "card")

    @staticmethod
    def render_pnl(book: BookView | Unavailable | None) -> Any:
        if isinstance(book, Unavailable):
            return unavailable(book)
        if book is None:
            return html.Div("no positions snapshot from the OMS yet", className="muted")
        total = book.realized_pnl + book.unrealized_pnl
        rows = [("Realized", book.realized_pnl), ("Unrealized", book.unrealized_pnl), ("Total", total)]
        return [
            html.Table(html.Tbody([html.Tr([html.Th(name), html.Td(_signed(v), id=f"pnl-{name.lower()}")])
                                   for name, v in rows])),
            html.Div(f"{book.broker or 'broker ?'} · {'flat' if book.flat else 'not flat'} · snapshot {utc(book.ts)}",
                     className="muted"),
        ]

    @staticmethod
    def render_positions(book: BookView | Unavailable | None) -> Any:
        if isinstance(book, Unavailable):
            return unavailable(book)
        if book is None or not book.positions:
            return html.Div("no open positions", className="muted")
        return table(POSITION_COLUMNS, book.positions, "positions-table")

    @staticmethod
    def render_orders(book: BookView | Unavailable | None) -> Any:
        if isinstance(book, Unavailable):
            return unavailable(book)
        if book is None or not book.orders:
            return html.Div("no working orders", className="muted")
        return table(ORDER_COLUMNS, book.orders, "orders-table")

    @staticmethod
    def render_oms_metrics(entries: list[Mapping[str, Any]] | Unavailable) -> Any:
        if isinstance(entries, Unavailable):
            return unavailable(entries)
        if not entries:
            return html.Div(f"the stream {keys.OMS_METRICS_STREAM} is empty", className="muted")
        names: list[str] = []
        for entry in entries:
            names.extend(k for k in entry if k not in names)
        return table([(n, n) for n in names[:10]], entries, "oms-metrics-table")

    # -- Prometheus panels --------------------------------------------------------------------------

    def refresh_prometheus(self) -> dict[str, PanelView]:
        now_s = self.clock_ns() / NS_PER_S
        data = fetch_panels(self.prometheus, self.panels, self.config.session, now_s,
                            self.config.window_s, self.config.step_s)
        span = (now_s - self.config.window_s, now_s)
        return {p.key: self.render_panel(p, data[p.key], span) for p in self.panels}

    @staticmethod
    def render_panel(panel: PromPanel, data: PanelData | Unavailable, span: tuple[float, float]) -> PanelView:
        """Range panels: one line per series over ``span`` (unix seconds, shown in UTC); instant panels:
        one bar per series. Both list each series' latest value in a table under the chart."""
        fig = go.Figure()
        fig.update_layout(
            height=240, margin={"l": 50, "r": 10, "t": 10, "b": 30}, template="plotly_white",
            uirevision=panel.key, showlegend=panel.kind == "range", legend={"orientation": "h", "y": -0.2},
            yaxis={"title": {"text": panel.unit}},
        )
        if panel.kind == "range":
            fig.update_xaxes(range=[datetime.fromtimestamp(t, UTC) for t in span])
        if isinstance(data, Unavailable):
            return PanelView(fig, HIDDEN, unavailable(data))
        rows: list[dict[str, str]] = []
        for item in data:
            name = series_name(item.labels, panel.legend)
            if isinstance(item, Series):
                fig.add_trace(go.Scatter(
                    x=[datetime.fromtimestamp(t, UTC) for t, _ in item.points],
                    y=[v if finite(v) else None for _, v in item.points], name=name,
                    mode="lines+markers" if len(item.points) < 3 else "lines"))
                latest = item.last
            else:
                fig.add_trace(go.Bar(x=[name], y=[item.value if finite(item.value) else None], name=name))
                latest = item.value
            rows.append({"series": name, "value": number(latest, panel.unit)})
        if not rows:
            return PanelView(fig, HIDDEN, html.Div("no data for this session yet", className="muted"))
        values = html.Table([
            html.Thead(html.Tr([html.Th("series"), html.Th("now")])),
            html.Tbody([html.Tr([html.Td(r["series"]), html.Td(r["value"])]) for r in rows]),
        ], id=f"prom-{panel.key}-table")
        return PanelView(fig, SHOWN, values)

    # -- kill switch ---------------------------------------------------------------------------------

    def kill_switch_action(self, trigger: str | None, actor: Actor | None, why: str | None = None) -> KillSwitchStep:
        """Engage/release arm an action for the actor's session (with their reason); Confirm writes
        what that session armed; Cancel disarms. Only operators act; every confirmed or refused
        engage/release is audited."""
        if actor is None:  # the guard lets no such request through; never act for nobody
            return KillSwitchStep(HIDDEN, "", "Sign in first: nothing was written.")
        if trigger in (KS_ENGAGE, KS_RELEASE):
            return self._arm(ENGAGE if trigger == KS_ENGAGE else RELEASE, actor, why)
        if trigger == KS_CANCEL:
            self.confirmations.cancel(actor.sid)
            return KillSwitchStep(HIDDEN, "", "Canceled: nothing was written.")
        if trigger == KS_CONFIRM:
            armed = self.confirmations.take(actor.sid)
            if armed is None:
                return KillSwitchStep(HIDDEN, "", "Nothing to confirm: press Engage or Release first "
                                                  f"(an armed action lapses after {self.config.confirm_ttl_s:g} s).")
            return self._confirm(armed, actor)
        return KillSwitchStep(HIDDEN, "", "")

    def _arm(self, action: AuditAction, actor: Actor, why: str | None) -> KillSwitchStep:
        session = self.config.session
        text = " ".join((why or "").split())
        if not actor.can_act:
            return self._refused(action, actor, text, "", f"{actor.name} is a viewer: viewers cannot "
                                 f"{action} the kill switch.")
        if not WHY_MIN <= len(text) <= WHY_MAX:
            return KillSwitchStep(HIDDEN, "", f"Say why first ({WHY_MIN}-{WHY_MAX} characters): the reason is "
                                              "recorded with your name. Nothing was written.")
        try:
            current = self.state.kill_switch()
        except SourceError as exc:
            return KillSwitchStep(HIDDEN, "", unavailable(Unavailable(f"{exc} — nothing was written")))
        if current.engaged == (action == ENGAGE):
            return KillSwitchStep(HIDDEN, "", f"Already {action}d: nothing was written.")
        if action == ENGAGE:
            prompt = (f"Engage the kill switch for session {session}? Risk refuses every new entry; the OMS "
                      "cancels working orders and flattens open positions.")
        else:
            refusal = release_refusal(current, self.clock_ns(), self.calendar())
            if refusal is not None:
                return self._refused(action, actor, text, current.reason, refusal)
            prompt = f"Release the kill switch for session {session}? Risk accepts new entries again."
            if current.reason and current.reason != MANUAL:
                prompt += f" It was engaged for {current.reason}."
        self.confirmations.arm(actor.sid, Armed(action, text, self.clock_ns(), current))
        prompt += f" Reason recorded: “{text}”. Confirm within {self.config.confirm_ttl_s:g} s."
        return KillSwitchStep(SHOWN, prompt, "")

    def _confirm(self, armed: Armed, actor: Actor) -> KillSwitchStep:
        action = armed.action
        if not actor.can_act:  # the role is looked up per request: it may have changed since arming
            return self._refused(action, actor, armed.why, "", f"{actor.name} is a viewer now: nothing was written.")
        try:
            current = self.state.kill_switch()
        except SourceError as exc:
            return KillSwitchStep(HIDDEN, "", unavailable(Unavailable(f"{exc} — nothing was written")))
        if current != armed.flag:
            return self._refused(action, actor, armed.why, current.reason,
                                 "The kill switch changed since you armed this: nothing was written; look "
                                 "again and press Engage or Release anew.")
        if action == RELEASE:
            refusal = release_refusal(current, self.clock_ns(), self.calendar())
            if refusal is not None:
                return self._refused(action, actor, armed.why, current.reason, refusal)
        engage = action == ENGAGE
        try:
            payload = self.state.set_kill_switch(engage)
        except SourceError as exc:
            return KillSwitchStep(HIDDEN, "", unavailable(Unavailable(f"{exc} — nothing was written")))
        written = shared_state.decode_kill_switch(payload)
        flag_reason = written.reason if engage else current.reason
        entry = KillSwitchAudit(written.ts, action, "written", actor.name, actor.role, armed.why, flag_reason,
                                "", written.source)
        note = self._audit(entry)
        result: Any = f"Kill switch {action}d at {utc(written.ts)}."
        if note:
            result = [html.Div(result), unavailable(Unavailable(note))]
        return KillSwitchStep(HIDDEN, "", result, written=written.ts)

    def _refused(self, action: AuditAction, actor: Actor, why: str, reason: str, detail: str) -> KillSwitchStep:
        entry = KillSwitchAudit(self.clock_ns(), action, "refused", actor.name, actor.role, why, reason, detail,
                                "console")
        note = self._audit(entry)
        return KillSwitchStep(HIDDEN, "", detail + (f" ({note})" if note else ""))

    def _audit(self, entry: KillSwitchAudit) -> str:
        """Log ``entry`` and append it to the audit stream; a non-empty answer says the append failed."""
        log.info("kill switch audit", extra={
            "action": entry.action, "outcome": entry.outcome, "user": entry.user, "role": entry.role,
            "why": entry.why, "reason": entry.reason, "detail": entry.detail, "session": self.config.session})
        try:
            self.state.append_audit(entry)
        except SourceError as exc:
            log.error("kill switch audit not stored", extra={"error": str(exc)})
            return safe_reason(f"the audit entry could not be stored: {exc}")
        return ""


# --- the Dash app ----------------------------------------------------------------------------------


def _card(title: str, body_id: str, class_name: str = "card", extra: Sequence[Any] = ()) -> html.Div:
    return html.Div([html.H2(title), html.Div(id=body_id), *extra], className=class_name,
                    id=f"{body_id}-card")


def _prom_card(panel: PromPanel) -> html.Div:
    return html.Div([
        html.H2(panel.title),
        dcc.Graph(id=f"prom-{panel.key}-graph", figure=go.Figure(), style=HIDDEN,
                  config={"displaylogo": False, "displayModeBar": False}),
        html.Div(id=f"prom-{panel.key}-values", children=html.Div("loading…", className="muted")),
    ], className="card", id=f"prom-{panel.key}")


def _who(console: Console, actor: Actor | None) -> list[Any]:
    """Who is signed in, with a Sign out button (a form POST carrying the session's CSRF token)."""
    if actor is None:
        return []
    token = console.csrf_token(actor.sid) if console.csrf_token is not None else ""
    return [html.Span(f"signed in as {actor.name} ({actor.role})"),
            html.Form([dcc.Input(type="hidden", name=CSRF_FIELD, value=token),
                       html.Button("Sign out", type="submit", id="sign-out")],
                      action=LOGOUT_PATH, method="post")]


def layout(console: Console, actor: Actor | None = None) -> html.Div:
    """The page: header, kill switch / heartbeat / PnL, book, Prometheus charts, OMS metrics stream,
    kill-switch audit. A viewer (or nobody) sees the kill-switch controls disabled."""
    cfg = console.config
    where = [f"session {cfg.session}"]
    if cfg.redis_display:
        where.append(f"Redis {cfg.redis_display}")
    if cfg.prometheus_display:
        where.append(f"Prometheus {cfg.prometheus_display}")
    where.append(f"refresh every {cfg.refresh_s:g} s")
    locked = actor is None or not actor.can_act
    buttons = [
        dcc.Input(id=KS_WHY, type="text", className="why", maxLength=WHY_MAX, debounce=False, disabled=locked,
                  placeholder="Why? (recorded with your name)" if not locked else "read-only: viewers cannot act"),
        html.Button("Engage kill switch", id=KS_ENGAGE, className="danger", n_clicks=0, disabled=locked),
        html.Button("Release kill switch", id=KS_RELEASE, n_clicks=0, disabled=locked),
        html.Div([
            html.Div(id=KS_PROMPT),
            html.Div([html.Button("Confirm", id=KS_CONFIRM, className="danger", n_clicks=0, disabled=locked),
                      html.Button("Cancel", id=KS_CANCEL, n_clicks=0)], style={"marginTop": "8px"}),
        ], id=KS_CONFIRM_BAR, className="confirm", style=HIDDEN),
        html.Div(id=KS_RESULT, className="muted", style={"marginTop": "6px"}),
    ]
    return html.Div([
        html.Header([html.H1(f"DreamBot · {cfg.session}"), html.Div(" · ".join(where), className="where"),
                     html.Div(id=UPDATED, className="where"),
                     html.Div(_who(console, actor), id=WHO, className="where")]),
        html.Main([
            html.Div([
                _card("Kill switch", KS_STATUS, extra=[html.Div(buttons, style={"marginTop": "10px"})]),
                _card("Ingest heartbeat", HEARTBEAT),
                _card("PnL", PNL),
            ], className="row"),
            html.Div([_card("Kill switch audit (newest first)", KS_AUDIT)], className="row"),
            html.Div([_card("Open positions", POSITIONS), _card("Working orders", ORDERS)], className="row"),
            html.Div([_prom_card(p) for p in console.panels], className="row"),
            html.Div([_card("OMS metrics stream (newest first)", OMS_METRICS)], className="row"),
        ]),
        dcc.Interval(id=REFRESH, interval=max(250, int(cfg.refresh_s * 1000)), n_intervals=0),
        dcc.Store(id=KS_WRITTEN, data=None),
    ])


LOCATION: Final = "location"
PAGE: Final = "page"
NAV: Final = "nav"
SHOWN_PATH: Final = "shown-path"


def nav(pages: Sequence[Page], current: str = "/") -> html.Nav:
    """Links to the overview and every page (client-side: switching pages does not reload)."""
    links = [("/", "Overview"), *((p.path, p.title) for p in pages)]
    return html.Nav([dcc.Link(title, href=path, id=f"nav-{path.strip('/') or 'overview'}",
                              className="active" if path == current else "") for path, title in links],
                    id=NAV, className="nav")


def page_header(console: Console, actor: Actor | None, title: str) -> html.Header:
    """A page's header: session, page title and who is signed in (with Sign out)."""
    return html.Header([html.H1(f"DreamBot · {console.config.session} · {title}"),
                        html.Div(_who(console, actor), id=WHO, className="where")])


def shell(console: Console, actor: Actor | None, pages: Sequence[Page]) -> html.Div:
    """The frame around every page: the URL, the nav bar and the routed page's place (holding the
    overview until the router has seen the URL)."""
    return html.Div([dcc.Location(id=LOCATION, refresh=False), dcc.Store(id=SHOWN_PATH, data="/"),
                     html.Div([nav(pages), layout(console, actor)], id=PAGE)])


def route(console: Console, actor: Actor | None, pages: Mapping[str, Page], ctx: PageContext,
          pathname: str | None) -> Any:
    """The nav bar and the layout for ``pathname``: the overview at "/", a page at its path, else a
    "no such page" note."""
    path = (pathname or "/").rstrip("/") or "/"
    bar = nav(tuple(pages.values()), path)
    if path == "/":
        return [bar, layout(console, actor)]
    page = pages.get(path)
    if page is None:
        return [bar, page_header(console, actor, "not found"),
                html.Main(html.Div(f"no page at {path[:80]}", className="card", id="not-found"))]
    try:
        body = page.layout(ctx)
    except Exception as exc:  # one page's failure must not take the console down
        log.exception("page layout failed", extra={"page": page.path})
        body = unavailable(Unavailable(safe_reason(f"{page.title} could not be drawn: {exc}")))
    return [bar, page_header(console, actor, page.title), html.Main(body)]


def build_app(console: Console, access: AccessGuard, pages: Sequence[Page] = (),
              page_context: PageContext | None = None) -> Dash:
    """The Dash app for ``console`` behind ``access`` (sign-in, Host/Origin and CSRF checks on every
    request, the pages' callbacks included): a nav bar and ``dcc.Location`` routing to the overview
    ("/", three callbacks: Redis panels, Prometheus panels, kill switch, each a thin wrapper over a
    :class:`Console` method) and to each of ``pages`` (their own callbacks, wired once here)."""
    app = Dash(__name__, title=f"DreamBot · {console.config.session}", update_title="",
               serve_locally=True, compress=False, csrf_token_name=CSRF_COOKIE, csrf_header_name=CSRF_HEADER,
               suppress_callback_exceptions=True)  # page components exist only while their page is shown
    app.index_string = _INDEX
    access.install(app.server)
    console.csrf_token = access.policy.signer.csrf_token
    ctx_pages = page_context if page_context is not None else PageContext(
        console.config.session, None, None, None, None, max(250, int(console.config.refresh_s * 1000)))
    routed = {p.path: p for p in pages}
    app.layout = lambda: shell(console, current_actor(), tuple(routed.values()))

    @app.callback(Output(PAGE, "children"), Output(SHOWN_PATH, "data"), Input(LOCATION, "pathname"),
                  State(SHOWN_PATH, "data"))
    def _route(pathname: str | None, shown: str | None) -> tuple[Any, str]:
        path = (pathname or "/").rstrip("/") or "/"
        if path == shown:  # already drawn (the overview on first load): redrawing would wipe what was typed
            raise PreventUpdate
        return route(console, current_actor(), routed, ctx_pages, path), path

    for page in pages:
        page.register(app, ctx_pages)

    @app.callback(
        Output(KS_STATUS, "children"), Output(HEARTBEAT, "children"), Output(f"{HEARTBEAT}-card", "className"),
        Output(PNL, "children"), Output(POSITIONS, "children"), Output(ORDERS, "children"),
        Output(OMS_METRICS, "children"), Output(UPDATED, "children"), Output(KS_AUDIT, "children"),
        Input(REFRESH, "n_intervals"), Input(KS_WRITTEN, "data"),
    )
    def _refresh_state(_n: int | None, _written: int | None) -> tuple[Any, ...]:
        v = console.refresh_state()
        return (v.kill_switch, v.heartbeat, v.heartbeat_class, v.pnl, v.positions, v.orders, v.oms_metrics,
                v.updated, v.audit)

    prom_outputs = [o for p in console.panels for o in (
        Output(f"prom-{p.key}-graph", "figure"), Output(f"prom-{p.key}-graph", "style"),
        Output(f"prom-{p.key}-values", "children"))]

    @app.callback(*prom_outputs, Input(REFRESH, "n_intervals"))
    def _refresh_prometheus(_n: int | None) -> tuple[Any, ...]:
        views = console.refresh_prometheus()
        return tuple(x for p in console.panels for x in (views[p.key].figure, views[p.key].graph_style,
                                                         views[p.key].values))

    # The armed action lives on the server (console.confirmations), never in the page: the only
    # client-supplied value the callback reads is the person's reason text.
    @app.callback(
        Output(KS_CONFIRM_BAR, "style"), Output(KS_PROMPT, "children"), Output(KS_RESULT, "children"),
        Output(KS_WRITTEN, "data"),
        Input(KS_ENGAGE, "n_clicks"), Input(KS_RELEASE, "n_clicks"), Input(KS_CONFIRM, "n_clicks"),
        Input(KS_CANCEL, "n_clicks"), State(KS_WHY, "value"), State(KS_WRITTEN, "data"),
        prevent_initial_call=True,
    )
    def _kill_switch(_e: int, _r: int, _c: int, _x: int, why: Any, written: Any) -> tuple[Any, ...]:
        trigger = ctx.triggered_id if isinstance(ctx.triggered_id, str) else None
        step = console.kill_switch_action(trigger, current_actor(), why if isinstance(why, str) else None)
        return (step.confirm_style, step.prompt, step.result,
                step.written if step.written is not None else written)

    return app
