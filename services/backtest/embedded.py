"""The embedded session: every stage in one process on the in-process bus (paper broker).

This is the main job, the backtest and the calibration's replay: the same stage objects the
services-mode processes run, wired to an InProcessBus, a MemoryState and a ReplayClock. Nothing
here reads the wall clock, so the same input gives byte-identical outputs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from services.app.stages import build_stages, require_paper
from services.core import topics
from services.core.bus import InProcessBus
from services.core.calendar import MarketCalendar, default_calendar
from services.core.clock import ReplayClock
from services.core.dlq import InputRefusedError
from services.core.events import (
    Event,
    FeatureVector,
    OrderEvent,
    OrderRequest,
    RiskCommand,
    RiskRejection,
    SignalIntent,
    TradeOutcome,
)
from services.core.session_config import SessionConfig
from services.core.stage import Output, Stage
from services.core.state import MemoryState
from services.oms.audit import AuditSink
from services.oms.engine import OrderManager
from services.oms.stage import OmsStage
from services.risk.engine import RiskEngine
from services.risk.stage import RiskStage

__all__ = ["EmbeddedSession", "SessionRecord"]


@dataclass
class SessionRecord:
    """Everything a session produced that reports and tests look at, in publication order."""

    intents: list[SignalIntent] = field(default_factory=list)
    orders: list[OrderRequest] = field(default_factory=list)
    rejections: list[RiskRejection] = field(default_factory=list)
    commands: list[RiskCommand] = field(default_factory=list)
    order_events: list[OrderEvent] = field(default_factory=list)
    outcomes: list[TradeOutcome] = field(default_factory=list)
    bars: int = 0
    last_ts: int = 0

    @property
    def fills(self) -> list[OrderEvent]:
        return [e for e in self.order_events if e.status in ("filled", "partial") and e.fill_price is not None]

    @property
    def realized_pnl(self) -> float:
        return sum(o.pnl for o in self.outcomes)

    def on_event(self, event: Event) -> None:
        if isinstance(event, SignalIntent):
            self.intents.append(event)
        elif isinstance(event, OrderRequest):
            self.orders.append(event)
        elif isinstance(event, RiskRejection):
            self.rejections.append(event)
        elif isinstance(event, RiskCommand):
            self.commands.append(event)
        elif isinstance(event, OrderEvent):
            self.order_events.append(event)
        elif isinstance(event, TradeOutcome):
            self.outcomes.append(event)
        elif isinstance(event, FeatureVector):
            self.bars += 1
        self.last_ts = max(self.last_ts, event.ts)


class EmbeddedSession:
    """All stages on one in-process bus; feed it md.* outputs and read ``record``."""

    def __init__(
        self,
        config: SessionConfig,
        *,
        calendar: MarketCalendar | None = None,
        audit: AuditSink | None = None,
        state: MemoryState | None = None,
    ) -> None:
        require_paper(config, "an embedded session")
        self.config = config
        self.calendar = calendar or default_calendar()
        self.clock = ReplayClock()
        self.state = state or MemoryState(prefix=config.name, now_s=lambda: self.clock.now_ns() / 1e9)
        self.bus = InProcessBus()
        self.record = SessionRecord()
        #: Inputs a stage refused (e.g. an order without risk's approval): (stage, topic, event, why).
        self.refused: list[tuple[str, str, Event, str]] = []
        self.stages = self._build(audit)
        for stage in self.stages:
            for topic in stage.inputs:
                self.bus.subscribe(topic, self._deliver(stage, topic), group=stage.name)
        for topic in (topics.FEATURES, topics.SIGNALS, topics.ORDERS, topics.RISK_COMMANDS,
                      topics.EXECUTIONS, topics.OUTCOMES):
            self.bus.subscribe(topic, self.record.on_event, group="recorder")

    def _build(self, audit: AuditSink | None) -> list[Stage]:
        return build_stages(self.config, self.clock, self.state, self.calendar, audit)

    def _deliver(self, stage: Stage, topic: str) -> Callable[[Event], None]:
        publish = self.bus.publish

        def handler(event: Event) -> None:
            try:
                outputs = stage.handle(topic, event)
            except InputRefusedError as exc:  # what services mode dead-letters
                self.refused.append((stage.name, topic, event, exc.detail))
                return
            for out in outputs:
                publish(out.topic, out.key, out.event)

        return handler

    @property
    def oms(self) -> OrderManager:
        return next(s.manager for s in self.stages if isinstance(s, OmsStage))

    @property
    def risk(self) -> RiskEngine:
        return next(s.engine for s in self.stages if isinstance(s, RiskStage))

    def publish(self, out: Output) -> None:
        """Inject one event (market data or a manual command)."""
        self.clock.advance_to(out.event.ts)
        self.bus.publish(out.topic, out.key, out.event)

    def run(self, feed: Iterable[Output], on_step: Callable[[SessionRecord], None] | None = None) -> SessionRecord:
        """Publish every feed output, then let each stage finish; returns the record."""
        for out in feed:
            self.publish(out)
            if on_step is not None and out.topic == topics.MD_BARS:
                on_step(self.record)
        end = self.clock.now_ns()
        for stage in self.stages:
            for out in stage.finish(end):
                self.bus.publish(out.topic, out.key, out.event)
        return self.record
