"""The learner page (``/learner``): bandit arms per context with their posteriors, the model in force
and its metrics, each underlying's regime and the recent change points.

One renderer, two sources, both giving a :class:`~services.core.shared_state.LearnerView`:

- a live (or services-mode replayed) session: the view the learner stage writes to Redis under
  ``keys.LEARNER_VIEW`` after every update;
- a backtest/run output folder: ``policy.json`` (the ``--learner frozen`` model, ``python -m mlops.train
  --policy-output``) with ``evaluation.json``'s held-out metrics when it is there, and the regime each
  trade's entry saw (signals writes ``regime '<name>'`` into every learner-mode trade's reason in
  trades.json). An output folder holds no change-point history, so that table stays empty there.

Redis comes first when it holds a view; the folder is the fallback. Each arm's posterior is
Beta(alpha, beta); the page shows its mean and central 90% credible interval.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Final

import plotly.graph_objects as go
from dash import Dash, Input, Output, State, dcc, html, no_update
from scipy.stats import beta as beta_dist

from services.core import keys, shared_state
from services.core.learner_policy import decode_policy
from services.core.shared_state import ChangePointView, LearnerArmView, LearnerView
from services.core.state import StateError
from services.dashboard.pages.base import Component, PageContext
from services.dashboard.pages.ops_widgets import Column, fingerprint, no_data, table, when
from services.dashboard.sources import safe_reason

log = logging.getLogger("dreambot.dashboard")

NAME: Final = "learner"
CREDIBLE: Final = 0.90
POLICY_FILE: Final = "policy.json"
EVALUATION_FILE: Final = "evaluation.json"
_REGIME_IN_REASON: Final = re.compile(r"regime '([A-Za-z_]+)'")

ARM_COLUMNS: Final[tuple[Column, ...]] = (
    ("Context bucket", "bucket"), ("Playbook", "playbook"), ("alpha", "alpha"), ("beta", "beta"),
    ("Posterior mean", "mean"), ("5%", "low"), ("95%", "high"), ("Pulls", "pulls"),
)
METRIC_COLUMNS: Final[tuple[Column, ...]] = (("Metric", "name"), ("Value", "value"))
REGIME_COLUMNS: Final[tuple[Column, ...]] = (("Underlying", "underlying"), ("Regime", "regime"))
CHANGE_COLUMNS: Final[tuple[Column, ...]] = (
    ("Time", "time"), ("Underlying", "underlying"), ("From", "previous"), ("To", "regime"), ("Score", "score"),
)


@dataclass(frozen=True, slots=True)
class Sourced:
    """A view and where it came from (shown on the page)."""

    view: LearnerView
    source: str


@dataclass(frozen=True, slots=True)
class Missing:
    """No view: ``reason`` says why (displayable)."""

    reason: str


def arm_row(arm: LearnerArmView) -> dict[str, Any]:
    """One arm as a table row: its Beta posterior's mean and central 90% credible interval."""
    tail = (1.0 - CREDIBLE) / 2.0
    low, high = beta_dist.ppf([tail, 1.0 - tail], arm.alpha, arm.beta)
    return {"bucket": arm.bucket, "playbook": arm.playbook, "alpha": arm.alpha, "beta": arm.beta,
            "mean": round(arm.mean, 6), "low": round(float(low), 6), "high": round(float(high), 6), "pulls": arm.pulls}


def arms_figure(rows: list[dict[str, Any]]) -> go.Figure:
    """Posterior mean per arm with its 90% interval, one colour per playbook, contexts along x."""
    fig = go.Figure()
    for playbook in sorted({r["playbook"] for r in rows}):
        mine = [r for r in rows if r["playbook"] == playbook]
        fig.add_trace(go.Scatter(
            x=[r["bucket"] for r in mine], y=[r["mean"] for r in mine], mode="markers", name=playbook,
            error_y={"type": "data", "symmetric": False, "array": [r["high"] - r["mean"] for r in mine],
                     "arrayminus": [r["mean"] - r["low"] for r in mine]},
            customdata=[r["pulls"] for r in mine], hovertemplate="%{x}<br>mean %{y:.3f}<br>pulls %{customdata}"))
    fig.update_layout(height=360, margin={"l": 60, "r": 20, "t": 30, "b": 90}, yaxis={"range": [0, 1],
                      "title": "P(win)"}, title=f"Bandit arms: posterior mean and {CREDIBLE:.0%} interval")
    return fig


def metric_rows(metrics: Mapping[str, float]) -> list[dict[str, Any]]:
    return [{"name": k, "value": v} for k, v in metrics.items()]


def change_row(cp: ChangePointView) -> dict[str, Any]:
    return {"time": when(cp.ts), "underlying": cp.underlying, "previous": cp.previous, "regime": cp.regime,
            "score": cp.score}


def render_view(found: Sourced | Missing) -> Component:
    """The page body for a view (or for the reason there is none)."""
    if isinstance(found, Missing):
        return no_data(found.reason, f"{NAME}-missing")
    view = found.view
    model = view.model
    arms = sorted(view.arms, key=lambda a: (a.bucket, a.playbook))
    rows = [arm_row(a) for a in arms]
    if model is None:
        model_part: Component = no_data(f"no model in force (learner mode {view.mode})", f"{NAME}-model-none")
    else:
        model_part = html.Div([
            html.Div([html.B("Model: "), html.Span(model.id, id=f"{NAME}-model-id"), html.B("  version: "),
                      html.Span(str(model.version), id=f"{NAME}-model-version"), html.B("  trades: "),
                      html.Span(str(model.trades), id=f"{NAME}-model-trades")]),
            html.Div([html.B("Trained on exits from "), html.Span(when(model.trained_from), id=f"{NAME}-trained-from"),
                      html.B(" through "), html.Span(when(model.trained_through), id=f"{NAME}-trained-through")]),
            table(METRIC_COLUMNS, metric_rows(model.metrics), f"{NAME}-metrics") if model.metrics else "",
        ])
    return html.Div([
        html.Div([html.B("Source: "), html.Span(found.source, id=f"{NAME}-source"), html.B("  mode: "),
                  html.Span(view.mode, id=f"{NAME}-mode"), html.B("  as of: "),
                  html.Span(when(view.ts), id=f"{NAME}-ts")]),
        html.H3("Model in force"), model_part,
        html.H3("Bandit arms per context"),
        html.Div([dcc.Graph(id=f"{NAME}-arms-figure", figure=arms_figure(rows)), table(ARM_COLUMNS, rows,
                                                                                      f"{NAME}-arms")])
        if rows else no_data("no arm has been pulled", f"{NAME}-arms-empty"),
        html.H3("Regimes"),
        table(REGIME_COLUMNS, [{"underlying": s, "regime": r} for s, r in sorted(view.regimes.items())],
              f"{NAME}-regimes") if view.regimes else no_data("no regime seen yet", f"{NAME}-regimes-empty"),
        html.H3("Recent change points"),
        table(CHANGE_COLUMNS, [change_row(c) for c in reversed(view.change_points)], f"{NAME}-changes")
        if view.change_points else no_data("no change point recorded", f"{NAME}-changes-empty"),
    ])


# --- sources ---------------------------------------------------------------------------------------


def view_from_redis(raw: bytes) -> LearnerView:
    """The stored view (SharedStateError, one line, if malformed)."""
    return shared_state.decode_learner_view(raw)


def _numbers(doc: Any) -> dict[str, float]:
    if not isinstance(doc, dict):
        return {}
    return {f"eval.{k}": float(v) for k, v in doc.items() if isinstance(v, int | float) and not isinstance(v, bool)}


def regimes_from_trades(trades: Any) -> tuple[dict[str, str], int]:
    """The regime the last entry of each underlying saw (from learner-mode trade reasons) and its entry time."""
    latest: dict[str, tuple[datetime, str]] = {}
    if not isinstance(trades, list):
        return {}, 0
    for t in trades:
        if not isinstance(t, dict):
            continue
        found = _REGIME_IN_REASON.findall(str(t.get("reason", "")))
        underlying = str(t.get("underlying", ""))
        try:
            entry = datetime.fromisoformat(str(t.get("entry_time")))
        except ValueError:
            continue
        if found and underlying and (underlying not in latest or entry >= latest[underlying][0]):
            latest[underlying] = (entry, found[-1])
    last = max((e for e, _ in latest.values()), default=None)
    ts = round(last.timestamp()) * 1_000_000_000 if last is not None else 0
    return {s: r for s, (_, r) in sorted(latest.items())}, ts


def view_from_folder(folder: Path) -> LearnerView | None:
    """The view of a backtest/run output folder (module docstring); None when it holds no learner output.

    Raises ValueError (one line) for a malformed policy.json."""
    policy_path = folder / POLICY_FILE
    model = None
    arms: tuple[LearnerArmView, ...] = ()
    if policy_path.is_file():
        policy = decode_policy(policy_path.read_bytes(), str(policy_path))
        model = shared_state.policy_model(policy, POLICY_FILE)
        evaluation = folder / EVALUATION_FILE
        if evaluation.is_file():
            try:
                metrics = _numbers(json.loads(evaluation.read_bytes()).get("metrics"))
            except (OSError, ValueError, AttributeError) as exc:
                raise ValueError(f"{evaluation}: not an evaluation JSON ({exc})") from None
            model = shared_state.LearnerModelView(model.id, model.version, model.trades,
                                                  {**model.metrics, **metrics}, 0, model.trained_through)
        arms = shared_state.policy_arms(policy)
    trades: Any = None
    if (folder / "trades.json").is_file():
        try:
            trades = json.loads((folder / "trades.json").read_bytes())
        except (OSError, ValueError):
            trades = None  # the backtest page reports a broken trades.json; here it only lacks regimes
    regimes, ts = regimes_from_trades(trades)
    if model is None and not regimes:
        return None
    mode = "frozen" if model is not None else "walk-forward or off"
    return LearnerView(ts, mode, model, arms, regimes, ())


def find_view(ctx: PageContext) -> Sourced | Missing:
    """Redis's view when there is one, else the output folder's, else why neither."""
    reasons = []
    if ctx.store is not None:
        try:
            raw = ctx.store.get(keys.LEARNER_VIEW)
        except StateError as exc:
            raw = None
            reasons.append(f"Redis: {safe_reason(str(exc))}")
        if raw is not None:
            try:
                return Sourced(view_from_redis(raw), f"Redis (session {ctx.session})")
            except shared_state.SharedStateError as exc:
                reasons.append(safe_reason(str(exc)))
        elif not reasons:
            reasons.append(f"the learner has written no view to Redis for session {ctx.session}")
    if ctx.backtest_dir is not None:
        try:
            view = view_from_folder(ctx.backtest_dir)
        except (OSError, ValueError) as exc:
            reasons.append(safe_reason(str(exc)))
        else:
            if view is not None:
                return Sourced(view, f"output folder {ctx.backtest_dir}")
            reasons.append(f"{ctx.backtest_dir} holds no {POLICY_FILE} and no learner-mode trades")
    if not reasons:
        reasons.append("no Redis and no output folder configured")
    return Missing("; ".join(reasons))


def body(ctx: PageContext) -> tuple[str, Component]:
    """(digest of the view, the page body)."""
    found = find_view(ctx)
    return fingerprint(found), render_view(found)


class LearnerPage:
    """``/learner``: the learner's view, re-rendered whenever it changes."""

    path = "/learner"
    title = "Learner"

    def layout(self, ctx: PageContext) -> Component:
        digest, content = body(ctx)
        return html.Div([
            html.H2("Learner state"),
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


PAGE: Final = LearnerPage()
