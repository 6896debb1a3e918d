"""The stage health page (``/health``): heartbeats, Kafka lag, error counts, feed and money guards.

From Redis (the session's StateStore): the age of the newest event time each writer stored, the
ingest heartbeat (``keys.INGEST_HEARTBEAT``), the OMS snapshot (``keys.POSITIONS``) and the learner's
view (``keys.LEARNER_VIEW``); in a replay these are the data's times, so their age is how far the
replayed day lies behind the wall clock. From Prometheus (instant queries, this session's series):
per stage its readiness, the age of its last scrape, Kafka lag, dead letters (total and last 5
minutes), StateStore failures and broker errors; per underlying the market-data age; and the
guards: feed stale, reconciliation, daily PnL against the loss limit. A series Prometheus does not
have shows "no data"; a source that cannot answer shows why, and the rest of the page still renders.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from dash import Dash, Input, Output, dcc, html

from services.core import keys, shared_state
from services.core.state import StateError, StateStore
from services.dashboard.pages.base import Component, PageContext
from services.dashboard.pages.ops_widgets import Column, no_data, table, when
from services.dashboard.sources import PrometheusSource, Sample, SourceError, Unavailable, label_selector, safe_reason

NAME: Final = "health"
NS_PER_S: Final = 1_000_000_000
NO_DATA: Final = "no data"


@dataclass(frozen=True, slots=True)
class Query:
    """One instant query; ``$SESSION`` becomes the session's label matchers, ``by`` is its grouping label."""

    key: str
    title: str
    promql: str
    by: str | None

    def expr(self, session: str) -> str:
        return self.promql.replace("$SESSION", label_selector(session))


# Metric names from services.core.metrics.StageMetrics (counters gain "_total" when exposed).
STAGE_QUERIES: Final[tuple[Query, ...]] = (
    Query("ready", "Ready", "max by (stage) (dreambot_ready{$SESSION})", "stage"),
    Query("scrape_age", "Last scrape (s ago)",
          "time() - max by (stage) (timestamp(dreambot_ready{$SESSION}))", "stage"),
    Query("lag", "Kafka lag (msgs)", "sum by (stage) (dreambot_kafka_lag_messages{$SESSION})", "stage"),
    Query("dead_letters", "Dead letters", "sum by (stage) (dreambot_dead_letters_total{$SESSION})", "stage"),
    Query("dead_letters_5m", "Dead letters (5 min)",
          "sum by (stage) (increase(dreambot_dead_letters_total{$SESSION}[5m]))", "stage"),
    Query("state_failures", "State failures", "sum by (stage) (dreambot_state_failures_total{$SESSION})", "stage"),
    Query("broker_errors", "Broker errors", "sum by (stage) (dreambot_broker_errors_total{$SESSION})", "stage"),
)
SYMBOL_QUERIES: Final[tuple[Query, ...]] = (
    Query("market_data_age", "Market-data age (s)", "max by (symbol) (dreambot_market_data_age_seconds{$SESSION})",
          "symbol"),
)
GUARD_QUERIES: Final[tuple[Query, ...]] = (
    Query("feed_stale", "Feed stale", "max(dreambot_feed_stale{$SESSION})", None),
    Query("reconciled", "Reconciled", "min(dreambot_reconciled{$SESSION})", None),
    Query("daily_pnl", "Daily PnL (USD)", "sum(dreambot_daily_pnl_usd{$SESSION})", None),
    Query("daily_loss_limit", "Daily loss limit (USD)", "max(dreambot_daily_loss_limit_usd{$SESSION})", None),
)
LAG_QUERY: Final = Query("lag_by_topic", "Kafka lag by topic",
                         "sum by (stage, topic) (dreambot_kafka_lag_messages{$SESSION})", "stage")
ALL_QUERIES: Final[tuple[Query, ...]] = (*STAGE_QUERIES, *SYMBOL_QUERIES, *GUARD_QUERIES, LAG_QUERY)

Results = Mapping[str, Sequence[Sample] | Unavailable]


def run_queries(prometheus: PrometheusSource | None, session: str,
                queries: Sequence[Query] = ALL_QUERIES) -> dict[str, list[Sample] | Unavailable]:
    """Every query's samples; once Prometheus is unreachable (or unset) the rest share that reason."""
    if prometheus is None:
        down = Unavailable("no Prometheus configured")
        return {q.key: down for q in queries}
    out: dict[str, list[Sample] | Unavailable] = {}
    for q in queries:
        try:
            out[q.key] = prometheus.query(q.expr(session))
        except SourceError as exc:
            out[q.key] = Unavailable(str(exc))
    return out


def _by(samples: Sequence[Sample] | Unavailable, label: str | None) -> dict[str, float]:
    if isinstance(samples, Unavailable):
        return {}
    return {(s.labels.get(label, "") if label else ""): s.value for s in samples}


def grouped_rows(results: Results, queries: Sequence[Query], label: str) -> list[dict[str, Any]]:
    """One row per ``label`` value any query returned, a column per query ("no data" where absent)."""
    columns = {q.key: _by(results.get(q.key, Unavailable("not queried")), q.by) for q in queries}
    names = sorted({name for values in columns.values() for name in values if name})
    return [{label: name, **{k: values.get(name, NO_DATA) for k, values in columns.items()}} for name in names]


def guard_rows(results: Results) -> list[dict[str, Any]]:
    """The guards as (guard, value) rows; the loss-limit row says how much of the limit the day used."""
    value = {q.key: _by(results.get(q.key, Unavailable("not queried")), None).get("") for q in GUARD_QUERIES}
    rows: list[dict[str, Any]] = []
    for q in GUARD_QUERIES:
        v = value[q.key]
        shown: Any = NO_DATA if v is None else v
        if q.key in ("feed_stale", "reconciled") and v is not None:
            shown = {"feed_stale": ("stale" if v >= 1 else "fresh"), "reconciled": ("yes" if v >= 1 else "no")}[q.key]
        rows.append({"guard": q.title, "value": shown})
    pnl, limit = value["daily_pnl"], value["daily_loss_limit"]
    used = NO_DATA if pnl is None or limit is None or limit <= 0 else f"{max(0.0, -pnl) / limit:.1%}"
    rows.append({"guard": "Loss limit used", "value": used})
    return rows


def lag_rows(results: Results) -> list[dict[str, Any]]:
    samples = results.get(LAG_QUERY.key)
    if samples is None or isinstance(samples, Unavailable):
        return []
    return sorted(({"stage": s.labels.get("stage", ""), "topic": s.labels.get("topic", ""), "lag": s.value}
                   for s in samples), key=lambda r: (r["stage"], r["topic"]))


@dataclass(frozen=True, slots=True)
class Beat:
    """The newest event time one writer stored in Redis, and its age at the page's now."""

    source: str
    key: str
    ts: int
    age_s: float
    detail: str = ""


def _heartbeat(raw: bytes) -> tuple[int, str]:
    beat = shared_state.decode_heartbeat(raw)
    return beat.ts, f"seq {beat.seq}"


def _oms(raw: bytes) -> tuple[int, str]:
    snap = shared_state.decode_oms_snapshot(raw)
    return snap.ts, f"{len(snap.working_orders)} working orders, {len(snap.open_positions)} open positions"


def _learner(raw: bytes) -> tuple[int, str]:
    view = shared_state.decode_learner_view(raw)
    return view.ts, f"mode {view.mode}, {len(view.arms)} arms"


BEAT_KEYS: Final[tuple[tuple[str, str, Callable[[bytes], tuple[int, str]]], ...]] = (
    ("ingest", keys.INGEST_HEARTBEAT, _heartbeat),
    ("oms", keys.POSITIONS, _oms),
    ("learner", keys.LEARNER_VIEW, _learner),
)


def read_beats(store: StateStore | None, now_ns: int) -> list[Beat | Unavailable] | Unavailable:
    """Each writer's newest event time from Redis (a writer that never wrote is left out)."""
    if store is None:
        return Unavailable("no Redis configured")
    out: list[Beat | Unavailable] = []
    for source, key, decode in BEAT_KEYS:
        try:
            raw = store.get(key)
        except StateError as exc:
            return Unavailable(f"Redis: {safe_reason(str(exc))}")
        if raw is None:
            continue
        try:
            ts, detail = decode(raw)
        except shared_state.SharedStateError as exc:
            out.append(Unavailable(safe_reason(str(exc))))
            continue
        out.append(Beat(source, key, ts, (now_ns - ts) / NS_PER_S, detail))
    return out


BEAT_COLUMNS: Final[tuple[Column, ...]] = (
    ("Writer", "source"), ("Key", "key"), ("Newest event time", "time"), ("Age (s)", "age_s"), ("Detail", "detail"),
)
GUARD_COLUMNS: Final[tuple[Column, ...]] = (("Guard", "guard"), ("Value", "value"))
LAG_COLUMNS: Final[tuple[Column, ...]] = (("Stage", "stage"), ("Topic", "topic"), ("Lag (msgs)", "lag"))


def render(beats: list[Beat | Unavailable] | Unavailable, results: Results) -> Component:
    """The page body from Redis's heartbeats and Prometheus's answers."""
    if isinstance(beats, Unavailable):
        beat_part: Component = no_data(beats.reason, f"{NAME}-beats-unavailable")
    else:
        good = [{"source": b.source, "key": b.key, "time": when(b.ts), "age_s": round(b.age_s, 1), "detail": b.detail}
                for b in beats if isinstance(b, Beat)]
        bad = [html.Div(b.reason, className="unavailable") for b in beats if isinstance(b, Unavailable)]
        beat_part = html.Div([table(BEAT_COLUMNS, good, f"{NAME}-beats") if good
                              else no_data("nothing written to Redis yet", f"{NAME}-beats-empty"), *bad])
    prom_down = sorted({r.reason for r in results.values() if isinstance(r, Unavailable)})
    stage_cols: tuple[Column, ...] = (("Stage", "stage"), *((q.title, q.key) for q in STAGE_QUERIES))
    symbol_cols: tuple[Column, ...] = (("Underlying", "symbol"), *((q.title, q.key) for q in SYMBOL_QUERIES))
    stages = grouped_rows(results, STAGE_QUERIES, "stage")
    symbols = grouped_rows(results, SYMBOL_QUERIES, "symbol")
    lags = lag_rows(results)
    return html.Div([
        html.H3("Heartbeats (Redis)"), beat_part,
        html.H3("Stages (Prometheus)"),
        html.Div([html.Div(r, className="unavailable") for r in prom_down], id=f"{NAME}-prometheus-errors"),
        table(stage_cols, stages, f"{NAME}-stages") if stages else no_data("no stage series", f"{NAME}-stages-empty"),
        html.H3("Kafka lag by topic"),
        table(LAG_COLUMNS, lags, f"{NAME}-lag") if lags else no_data("no lag series", f"{NAME}-lag-empty"),
        html.H3("Market data"),
        table(symbol_cols, symbols, f"{NAME}-symbols") if symbols
        else no_data("no market-data age series", f"{NAME}-symbols-empty"),
        html.H3("Guards"), table(GUARD_COLUMNS, guard_rows(results), f"{NAME}-guards"),
    ])


def body(ctx: PageContext, now_ns: int | None = None) -> Component:
    now = time.time_ns() if now_ns is None else now_ns
    return render(read_beats(ctx.store, now), run_queries(ctx.prometheus, ctx.session))


class HealthPage:
    """``/health``: re-read every refresh (ages move every second)."""

    path = "/health"
    title = "Stage health"

    def layout(self, ctx: PageContext) -> Component:
        return html.Div([
            html.H2(self.title),
            dcc.Interval(id=f"{NAME}-refresh", interval=ctx.refresh_ms, n_intervals=0),
            html.Div(body(ctx), id=f"{NAME}-body"),
        ], id=f"{NAME}-page")

    def register(self, app: Dash, ctx: PageContext) -> None:
        @app.callback(Output(f"{NAME}-body", "children"), Input(f"{NAME}-refresh", "n_intervals"))
        def refresh(_n: int) -> Any:
            return body(ctx)


PAGE: Final = HealthPage()
