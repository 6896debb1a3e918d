"""The ingest's ``dreambot_market_data_age_seconds{symbol}``: wall-clock seconds since a symbol's last
published event on a live feed, replay-clock seconds (newest event of any symbol minus the symbol's
newest) in a replay. Read from the stage's Prometheus registry."""

from __future__ import annotations

from services.core import topics
from services.core.events import Bar, Quote
from services.core.metrics import StageMetrics
from services.core.stage import Output
from services.core.state import MemoryState
from services.ingest.hooks import IngestHooks
from services.runtime.service import BestEffortState, GuardedWrites

NS = 1_000_000_000
T0 = 1_752_069_600 * NS  # 2025-07-09 14:00 UTC


class Wall:
    def __init__(self) -> None:
        self.s = 500.0

    def __call__(self) -> float:
        return self.s


def hooks(live: bool, wall: Wall) -> tuple[IngestHooks, StageMetrics]:
    metrics = StageMetrics("ingest")
    heartbeat = BestEffortState(GuardedWrites(MemoryState(), metrics))
    return IngestHooks(metrics, heartbeat, live=live, wall_s=wall), metrics


def bar(symbol: str, ts: int) -> Output:
    return Output(topics.MD_BARS, symbol, Bar(ts=ts, symbol=symbol, open=1.0, high=1.0, low=1.0, close=1.0,
                                              volume=1.0))


def quote(symbol: str, ts: int) -> Output:
    return Output(topics.MD_QUOTES, symbol, Quote(ts=ts, symbol=symbol, bid=1.0, ask=1.1, bid_size=1.0,
                                                  ask_size=1.0))


def age(metrics: StageMetrics, symbol: str) -> float | None:
    return metrics.registry.get_sample_value("dreambot_market_data_age_seconds",
                                             {"stage": "ingest", "symbol": symbol})


def test_live_ages_are_wall_clock_seconds_since_the_last_event() -> None:
    wall = Wall()
    h, m = hooks(True, wall)
    h.injected(bar("SPY", T0))
    wall.s += 2.5
    h.injected(quote("QQQ", T0 - 3600 * NS))  # an old event time: what counts live is when it came
    wall.s += 4.0
    h.periodic()
    assert age(m, "SPY") == 6.5 and age(m, "QQQ") == 4.0
    h.injected(quote("SPY", T0 + NS))
    h.periodic()
    assert age(m, "SPY") == 0.0
    assert m.registry.get_sample_value("dreambot_events_out_total", {"stage": "ingest", "topic": "md.quotes"}) == 2.0


def test_replay_ages_are_on_the_replay_clock_whatever_the_wall_time() -> None:
    wall = Wall()
    h, m = hooks(False, wall)
    h.injected(bar("SPY", T0))
    h.injected(bar("QQQ", T0))
    h.injected(bar("SPY", T0 + 60 * NS))
    h.injected(quote("SPY", T0 + 90 * NS))
    wall.s += 3600.0  # an hour of wall time changes nothing in a replay
    h.periodic()
    assert age(m, "SPY") == 0.0 and age(m, "QQQ") == 90.0
