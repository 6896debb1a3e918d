"""The risk service's metrics, read from its Prometheus registry: the day's PnL against the loss limit,
market-data age per underlying, the stale-feed gauge (free-running live: event time carried forward by
wall time) and refusals by rule. The stage is driven through a free-running lockstep Participant, as
the service runs it."""

from __future__ import annotations

from services.core import topics
from services.core.clock import ReplayClock
from services.core.events import Event, FeatureVector, OrderRequest, Position, TradeOutcome
from services.core.metrics import StageMetrics
from services.core.state import MemoryState
from services.risk.config import RiskConfig
from services.risk.engine import RiskEngine
from services.risk.hooks import RiskHooks
from services.risk.stage import RiskStage
from services.runtime.lockstep import Participant
from services.runtime.service import ReplayableState

from .support import MIN, NS, T0, make_intent

STAGE = {"stage": "risk"}


class Published:
    """Where the participant publishes: kept in a list."""

    def __init__(self) -> None:
        self.events: list[tuple[str, Event]] = []

    def publish(self, topic: str, key: str, event: Event) -> None:
        self.events.append((topic, event))

    def flush(self, timeout_s: float | None = None) -> None:
        return None


class Wall:
    def __init__(self) -> None:
        self.s = 1000.0

    def __call__(self) -> float:
        return self.s


class Service:
    """RiskStage + RiskHooks + Participant on a ReplayClock, as services mode builds them."""

    def __init__(self, config: RiskConfig, *, live: bool) -> None:
        self.clock = ReplayClock()
        self.state = ReplayableState(MemoryState(), self.clock)
        engine = RiskEngine(config, self.clock, self.state)
        self.stage = RiskStage(engine, self.clock)
        self.metrics = StageMetrics("risk")
        self.wall = Wall()
        self.hooks = RiskHooks(self.metrics, self.stage, self.state, live=live, wall_s=self.wall)
        self.out = Published()
        self.participant = Participant("risk", publisher=self.out, stage=self.stage, clock=self.clock,
                                       hooks=self.hooks)
        self.hooks.participant = self.participant
        self.participant.start()

    def send(self, topic: str, event: Event) -> None:
        self.participant.receive(topic, event)
        self.participant.batch_committed()

    def features(self, symbol: str, ts: int) -> None:
        self.send(topics.FEATURES, FeatureVector(ts=ts, symbol=symbol, values={"close": 600.0}))

    def value(self, name: str, **labels: str) -> float | None:
        return self.metrics.registry.get_sample_value(name, {**STAGE, **labels})


def outcome(oid: str, ts: int, pnl: float) -> TradeOutcome:
    return TradeOutcome(ts=ts, id=oid, underlying="SPY", playbook="orb", contract="SPY250708C00620000",
                        entry_ts=ts - MIN, exit_ts=ts, entry_price=2.0, exit_price=2.0 + pnl / 100, quantity=1,
                        pnl=pnl, mae=min(pnl, 0.0), mfe=max(pnl, 0.0), exit_reason="stop_loss", reason="test")


def test_daily_pnl_is_realized_plus_unrealized_against_the_configured_limit() -> None:
    svc = Service(RiskConfig(max_daily_loss_usd=1000), live=False)
    svc.features("SPY", T0)
    assert svc.value("dreambot_daily_loss_limit_usd") == 1000.0
    assert svc.value("dreambot_daily_pnl_usd") == 0.0
    svc.send(topics.OUTCOMES, outcome("o1", T0 + MIN, -300.0))
    svc.send(topics.OUTCOMES, outcome("o2", T0 + 2 * MIN, -450.0))
    svc.send(topics.EXECUTIONS, Position(ts=T0 + 3 * MIN, underlying="SPY", contract="SPY250708C00625000",
                                         quantity=2, avg_price=3.0, realized_pnl=0.0, unrealized_pnl=-125.0))
    # -300 - 450 realized, -125 unrealized: -875 of the 1000 limit.
    assert svc.value("dreambot_daily_pnl_usd") == -875.0
    assert svc.value("dreambot_pnl_usd", kind="realized") == -750.0
    assert svc.value("dreambot_pnl_usd", kind="unrealized") == -125.0
    assert svc.value("dreambot_kill_switch_engaged") == 0.0
    svc.send(topics.OUTCOMES, outcome("o3", T0 + 4 * MIN, -200.0))  # -1075: past the limit
    assert svc.value("dreambot_daily_pnl_usd") == -1075.0
    assert svc.value("dreambot_kill_switch_engaged") == 1.0


def test_refusals_are_counted_by_rule_and_market_data_age_per_symbol() -> None:
    svc = Service(RiskConfig(stale_data={"max_heartbeat_age_s": None, "max_market_data_age_s": None}),  # type: ignore[arg-type]
                  live=False)
    svc.features("SPY", T0)
    svc.features("QQQ", T0 + 30 * NS)
    assert svc.value("dreambot_market_data_age_seconds", symbol="SPY") == 30.0
    assert svc.value("dreambot_market_data_age_seconds", symbol="QQQ") == 0.0
    svc.send(topics.SIGNALS, make_intent("a", T0 + 30 * NS))  # SPY data 30 s old: approved
    svc.send(topics.SIGNALS, make_intent("a", T0 + 31 * NS))  # the same id again: duplicate_intent
    svc.features("QQQ", T0 + 90 * NS)
    svc.send(topics.SIGNALS, make_intent("b", T0 + 90 * NS, contract="SPY250708C00630000"))  # 90 s: stale_feed
    svc.send(topics.SIGNALS, make_intent("c", T0 + 90 * NS, contract="SPY250708C00640000"))
    assert svc.value("dreambot_entries_refused_total", reason="duplicate_intent") == 1.0
    assert svc.value("dreambot_entries_refused_total", reason="stale_feed") == 2.0
    assert svc.value("dreambot_entries_refused_total", reason="kill_switch") is None
    approved = [e.intent_id for t, e in svc.out.events if t == topics.ORDERS and isinstance(e, OrderRequest)]
    assert approved == ["a"]
    assert svc.value("dreambot_feed_stale") == 1.0
    assert svc.value("dreambot_market_data_age_seconds", symbol="SPY") == 90.0


def test_live_a_silent_feed_turns_stale_on_wall_time_and_clears_when_data_resumes() -> None:
    svc = Service(RiskConfig(), live=True)
    svc.features("SPY", T0)
    svc.hooks.periodic()
    assert svc.value("dreambot_feed_stale") == 0.0
    svc.wall.s += 75.0  # 75 s of silence: the next bar (due after 60 s) is 15 s late, not yet stale
    svc.hooks.periodic()
    assert svc.value("dreambot_feed_stale") == 0.0
    assert svc.value("dreambot_market_data_age_seconds", symbol="SPY") == 75.0
    svc.wall.s += 1.0
    svc.hooks.periodic()
    assert svc.value("dreambot_feed_stale") == 1.0
    assert svc.value("dreambot_market_data_age_seconds", symbol="SPY") == 76.0
    assert svc.clock.now_ns() == T0  # event time itself did not move
    svc.features("SPY", T0 + 77 * NS)
    assert svc.value("dreambot_feed_stale") == 0.0
    assert svc.value("dreambot_market_data_age_seconds", symbol="SPY") == 0.0


def test_a_replay_never_carries_wall_time_forward() -> None:
    svc = Service(RiskConfig(), live=False)
    svc.features("SPY", T0)
    svc.wall.s += 3600.0
    svc.hooks.periodic()
    assert svc.value("dreambot_feed_stale") == 0.0
    assert svc.value("dreambot_market_data_age_seconds", symbol="SPY") == 0.0
