"""The console's page contract: what a page is given (:class:`PageContext`) and what it provides (:class:`Page`).

A page is a module exposing ``PAGE: Page``. The app (:mod:`services.dashboard.app`) routes ``page.path``
to ``page.layout(ctx)`` and calls ``page.register(app, ctx)`` once at start so the page wires its own
callbacks. Every request, the page's callbacks included, has passed the console's access guard.
Component ids are prefixed with the page's name (``chart-...``) so pages never collide.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from dash import Dash

from services.core.state import StateStore
from services.dashboard.sources import PrometheusSource

Component = Any  # a dash component tree (dash's own typing is not exported as a stable type)


@dataclass(frozen=True, slots=True)
class PageContext:
    """What every page reads from.

    session: the TradingSession shown. store: the session's Redis (None: not configured).
    prometheus: the Prometheus source (None: not configured). journal_root: the parquet journal
    (``services.core.journal``), None when not given. backtest_dir: a ``dreambot run``/``backtest``
    output folder (summary.json, trades.json, parquet/), None when not given. refresh_ms: how often
    pages re-read their data.
    """

    session: str
    store: StateStore | None
    prometheus: PrometheusSource | None
    journal_root: Path | None
    backtest_dir: Path | None
    refresh_ms: int


@runtime_checkable
class Page(Protocol):
    """One page of the console: a URL path, a title for the nav bar, its layout and its callbacks."""

    path: str
    title: str

    def layout(self, ctx: PageContext) -> Component:
        """The page's component tree (called per request)."""
        ...

    def register(self, app: Dash, ctx: PageContext) -> None:
        """Wire the page's callbacks on ``app`` (called once, at start)."""
        ...
