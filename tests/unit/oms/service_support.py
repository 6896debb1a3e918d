"""The OMS as services mode runs it, minus Kafka: OmsStage + OmsHooks driven by a lockstep Participant
whose publisher keeps what the stage publishes and can hand the OMS's own inputs back to it."""

from __future__ import annotations

from pathlib import Path

from prometheus_client import CollectorRegistry

from services.core import keys, topics
from services.core.clock import ReplayClock
from services.core.events import ChainSnapshot, Event, OptionQuote
from services.core.metrics import StageMetrics
from services.core.state import StateStore
from services.oms.audit import AuditLog
from services.oms.brokers.paper import PaperBroker
from services.oms.engine import OrderManager
from services.oms.fees import FeeModel
from services.oms.hooks import OmsHooks, ResumableAudit
from services.oms.stage import OmsStage
from services.runtime.kafka_bus import BusError
from services.runtime.lockstep import Participant
from services.runtime.service import GuardedWrites
from tests.unit.oms.support import T0, make_config


class Loopback:
    """A Publisher that keeps every (topic, key, event) published; ``fail`` makes flush raise it."""

    def __init__(self) -> None:
        self.published: list[tuple[str, str, Event]] = []
        self.flushes = 0
        self.fail: BusError | None = None
        self._delivered = 0

    def publish(self, topic: str, key: str, event: Event) -> None:
        self.published.append((topic, key, event))

    def flush(self, timeout_s: float | None = None) -> None:
        if self.fail is not None:
            raise self.fail
        self.flushes += 1

    def on(self, topic: str) -> list[Event]:
        return [e for t, _, e in self.published if t == topic]

    def undelivered(self, inputs: tuple[str, ...]) -> list[tuple[str, Event]]:
        """What was published on ``inputs`` since the last call (what Kafka would deliver next)."""
        new = self.published[self._delivered:]
        self._delivered = len(self.published)
        return [(t, e) for t, _, e in new if t in inputs]


class Wall:
    """A settable monotonic clock (seconds) for the hooks' flatten-request throttle."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class OmsService:
    """One OMS process: its participant free-running over ``state``; ``handle`` is one Kafka batch."""

    def __init__(self, state: StateStore, audit_dir: Path, wall: Wall | None = None) -> None:
        self.state = state
        self.clock = ReplayClock(T0)
        config = make_config()
        fees = FeeModel(config.fees, config.multiplier, config.paper.cash_settled_roots)
        self.audit = ResumableAudit(AuditLog(audit_dir / "audit.jsonl"))
        self.manager = OrderManager(PaperBroker(self.clock, config.paper, fees), self.clock, config, self.audit)
        self.stage = OmsStage(self.manager, self.clock)
        self.metrics = StageMetrics("oms", CollectorRegistry())
        self.wall = wall or Wall()
        writes = GuardedWrites(state, self.metrics, min_retry_s=0.0, max_retry_s=0.0)  # no back-off to wait for
        self.hooks = OmsHooks(self.metrics, self.manager, self.audit, writes, self.clock, wall_s=self.wall)
        self.publisher = Loopback()
        self.participant = Participant("oms", publisher=self.publisher, stage=self.stage, clock=self.clock,
                                       hooks=self.hooks)
        self.hooks.participant = self.participant  # as the runner does
        self.participant.start()

    def handle(self, *inputs: tuple[str, Event]) -> None:
        """One batch: each input handled (outputs published), then the batch committed."""
        for topic, event in inputs:
            self.participant.receive(topic, event)
        self.participant.batch_committed()

    def chain(self, ts: int, *quotes: OptionQuote, price: float = 620.0) -> None:
        self.handle((topics.MD_CHAIN, ChainSnapshot(ts=ts, underlying="SPY", underlying_price=price, quotes=quotes)))

    def deliver(self) -> list[Event]:
        """Hand back what the OMS published on its own input topics (its flatten command), as Kafka would."""
        pending = self.publisher.undelivered(self.stage.inputs)
        if pending:
            self.handle(*pending)
        return [e for _, e in pending]

    def snapshot_bytes(self) -> bytes | None:
        return self.state.get(keys.POSITIONS)
