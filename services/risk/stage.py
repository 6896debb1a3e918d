"""The risk stage: intents in, approved OrderRequests or RiskRejections out; kill-switch commands.

Every approved OrderRequest leaves carrying risk's approval (:mod:`services.core.approval`), without
which the OMS will not execute it.

Risk consumes ``risk_commands`` for manual commands (an operator's engage/release) and ignores the
commands it published itself (ids start with ``risk:``), which it also receives on that topic.

With a :class:`~services.core.calibration_watch.CalibrationWatch` the stage tells it the market time of
every intent and feature vector; at a session open a newly published ``risk_multiplier`` rescales the
engine's sizing limits before that event is handled.
"""

from __future__ import annotations

from services.core import topics
from services.core.approval import ApprovalKey
from services.core.calibration_watch import CalibrationWatch
from services.core.clock import ReplayClock
from services.core.events import (
    Event,
    FeatureVector,
    Heartbeat,
    OrderEvent,
    OrderRequest,
    Position,
    RiskCommand,
    SignalIntent,
    TradeOutcome,
)
from services.core.stage import Output
from services.risk.config import SizingLimits
from services.risk.engine import RiskEngine

OWN_COMMAND_PREFIX = "risk:"


class RiskStage:
    """Feeds the RiskEngine and runs its loss check after every event."""

    name: str = "risk"
    inputs: tuple[str, ...] = (
        topics.SIGNALS, topics.EXECUTIONS, topics.OUTCOMES, topics.FEATURES, topics.RISK_COMMANDS,
    )

    def __init__(self, engine: RiskEngine, clock: ReplayClock | None = None,
                 approval_key: ApprovalKey | None = None,
                 calibration: CalibrationWatch[float] | None = None) -> None:
        self.engine = engine
        self._clock = clock
        self.approval_key = approval_key  # signs every approved OrderRequest (the OMS checks it)
        self.calibration = calibration

    def handle(self, topic: str, event: Event) -> list[Output]:
        if self._clock is not None:
            self._clock.advance_to(event.ts)
        if self.calibration is not None and isinstance(event, SignalIntent | FeatureVector):
            multiplier = self.calibration.observe(event.ts)
            if multiplier is not None:
                # The same clamp as at start-up (risk_multiplier_max): calibration never grows risk past it.
                self.engine.limits = SizingLimits.from_config(self.engine.config, multiplier)
        out: list[Output] = []
        if isinstance(event, SignalIntent):
            decision = self.engine.on_intent(event)
            if isinstance(decision, OrderRequest) and self.approval_key is not None:
                decision = self.approval_key.sign(decision)
            out.append(Output(topics.ORDERS, event.underlying, decision))
        elif isinstance(event, FeatureVector):
            self.engine.on_features(event)
        elif isinstance(event, OrderEvent):
            self.engine.on_order_event(event)
        elif isinstance(event, Position):
            self.engine.on_position(event)
        elif isinstance(event, TradeOutcome):
            self.engine.on_outcome(event)
        elif isinstance(event, Heartbeat):
            self.engine.on_heartbeat(event)
        elif isinstance(event, RiskCommand):
            if not event.id.startswith(OWN_COMMAND_PREFIX):
                out.extend(Output(topics.RISK_COMMANDS, c.underlying, c) for c in self.engine.on_command(event))
        else:
            raise ValueError(f"risk stage cannot handle {type(event).__name__} on {topic}")
        out.extend(Output(topics.RISK_COMMANDS, c.underlying, c) for c in self.engine.check(event.ts))
        return out

    def finish(self, now_ns: int) -> list[Output]:
        return [Output(topics.RISK_COMMANDS, c.underlying, c) for c in self.engine.check(now_ns)]
