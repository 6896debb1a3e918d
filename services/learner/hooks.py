"""The learner service: outcomes and features in, LearnerUpdates and RegimeChanges out on ``learner``
(``python -m services.learner.main``).

The engine's state lives in Redis (``dreambot:learner_state``): restored at start, saved after every
outcome it learns from. A save that fails while Redis is away is kept and written again after the
next batch, so learning never stops and never raises. The embedded runner has no learner, so the
learner is not part of a lockstep replay unless ``DREAMBOT_LOCKSTEP_STAGES`` names it (and every
process of the session agrees); by default it consumes free-running. Settings: ``.env.example``.
"""

from __future__ import annotations

from services.core.metrics import StageMetrics
from services.runtime.service import (
    BestEffortState,
    ServiceHooks,
)


class LearnerHooks(ServiceHooks):
    def __init__(self, metrics: StageMetrics, state: BestEffortState) -> None:
        super().__init__(metrics)
        self.state = state

    def replaying(self, active: bool) -> None:
        if active:
            self.state.muted = True
        else:
            self.state.release()

    def round_completed(self, number: int, root_wall_ns: int) -> None:
        super().round_completed(number, root_wall_ns)
        self.state.retry()
