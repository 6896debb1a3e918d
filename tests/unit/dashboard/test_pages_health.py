"""The health page's pure parts: grouping Prometheus answers per stage, guards, Redis heartbeats."""

from __future__ import annotations

from typing import Any

from services.core import keys, shared_state
from services.core.shared_state import IngestHeartbeat, LearnerView
from services.core.state import MemoryState
from services.dashboard.pages import health
from services.dashboard.pages.base import Page, PageContext
from services.dashboard.sources import Sample, Unavailable

NS = 1_000_000_000


def find(component: Any, component_id: str) -> Any:
    if getattr(component, "id", None) == component_id:
        return component
    children = getattr(component, "children", None)
    for child in children if isinstance(children, list | tuple) else [children] if children is not None else []:
        hit = find(child, component_id)
        if hit is not None:
            return hit
    return None


def rows(table: Any) -> list[list[str]]:
    return [[td.children for td in tr.children] for tr in table.children[1].children]


def s(value: float, **labels: str) -> Sample:
    return Sample(labels, 0.0, value)


def test_stage_rows_join_queries_and_say_no_data_where_a_series_is_absent() -> None:
    results = {"ready": [s(1, stage="risk"), s(0, stage="oms")], "lag": [s(7, stage="risk")],
               "dead_letters": Unavailable("Prometheus down")}
    got = health.grouped_rows(results, health.STAGE_QUERIES[:4], "stage")
    assert got == [
        {"stage": "oms", "ready": 0, "scrape_age": "no data", "lag": "no data", "dead_letters": "no data"},
        {"stage": "risk", "ready": 1, "scrape_age": "no data", "lag": 7, "dead_letters": "no data"},
    ]


def test_guards_show_states_and_the_share_of_the_loss_limit_used() -> None:
    results = {"feed_stale": [s(1)], "reconciled": [s(0)], "daily_pnl": [s(-250.0)], "daily_loss_limit": [s(1000.0)]}
    assert health.guard_rows(results) == [
        {"guard": "Feed stale", "value": "stale"}, {"guard": "Reconciled", "value": "no"},
        {"guard": "Daily PnL (USD)", "value": -250.0}, {"guard": "Daily loss limit (USD)", "value": 1000.0},
        {"guard": "Loss limit used", "value": "25.0%"}]
    blank = health.guard_rows({})
    assert [r["value"] for r in blank] == ["no data"] * 5


def test_beats_from_redis_with_their_age() -> None:
    store = MemoryState("s")
    store.set(keys.INGEST_HEARTBEAT, shared_state.encode(IngestHeartbeat(100 * NS, 42)))
    store.set(keys.LEARNER_VIEW, shared_state.encode(LearnerView(90 * NS, "off", None, (), {}, ())))
    beats = health.read_beats(store, 130 * NS)
    assert not isinstance(beats, Unavailable)
    assert [(b.source, b.ts, b.age_s, b.detail) for b in beats if isinstance(b, health.Beat)] == [
        ("ingest", 100 * NS, 30.0, "seq 42"), ("learner", 90 * NS, 40.0, "mode off, 0 arms")]
    store.set(keys.POSITIONS, b"{}")
    broken = health.read_beats(store, 130 * NS)
    assert not isinstance(broken, Unavailable)
    assert any(isinstance(b, Unavailable) and "dreambot:positions" in b.reason for b in broken)
    assert isinstance(health.read_beats(None, 0), Unavailable)


def test_page_renders_with_nothing_configured() -> None:
    assert isinstance(health.PAGE, Page)
    page = health.body(PageContext("s", None, None, None, None, 500), now_ns=0)
    assert "no Redis configured" in find(page, "health-beats-unavailable").children
    assert find(page, "health-prometheus-errors").children[0].children == "no Prometheus configured"
    assert find(page, "health-stages-empty") is not None
    assert [r[1] for r in rows(find(page, "health-guards"))] == ["no data"] * 5


def test_render_lists_lag_by_topic_and_symbols() -> None:
    results = {"lag_by_topic": [s(3, stage="oms", topic="s.orders"), s(0, stage="features", topic="s.md")],
               "market_data_age": [s(2.5, symbol="SPY")]}
    page = health.render([], results)
    assert rows(find(page, "health-lag")) == [["features", "s.md", "0"], ["oms", "s.orders", "3"]]
    assert rows(find(page, "health-symbols")) == [["SPY", "2.5"]]
