"""The signals stage: features and chains in, SignalIntents out.

With a :class:`~services.core.calibration_watch.CalibrationWatch` the stage tells it the market time of
every chain and feature vector; at a session open a newly published calibration is swapped into the
engine before that event is evaluated.
"""

from __future__ import annotations

from services.core import topics
from services.core.calibration_watch import CalibrationWatch
from services.core.events import ChainSnapshot, Event, FeatureVector, LearnerUpdate, RegimeChange
from services.core.stage import Output
from services.signals.engine import SignalEngine
from services.signals.gates import Calibration


class SignalStage:
    """Feeds the SignalEngine; intents are keyed by underlying."""

    name: str = "signals"
    inputs: tuple[str, ...] = (topics.MD_CHAIN, topics.FEATURES, topics.LEARNER)

    def __init__(self, engine: SignalEngine, calibration: CalibrationWatch[Calibration] | None = None) -> None:
        self.engine = engine
        self.calibration = calibration

    def handle(self, topic: str, event: Event) -> list[Output]:
        if self.calibration is not None and isinstance(event, FeatureVector | ChainSnapshot):
            fresh = self.calibration.observe(event.ts)
            if fresh is not None:
                self.engine.set_calibration(fresh)
        if isinstance(event, FeatureVector):
            return [Output(topics.SIGNALS, i.underlying, i) for i in self.engine.on_features(event)]
        if isinstance(event, ChainSnapshot):
            self.engine.on_chain(event)
        elif isinstance(event, RegimeChange):
            self.engine.on_regime(event)
        elif isinstance(event, LearnerUpdate):
            self.engine.on_learner(event)
        else:
            raise ValueError(f"signals stage cannot handle {type(event).__name__} on {topic}")
        return []

    def finish(self, now_ns: int) -> list[Output]:
        return []
