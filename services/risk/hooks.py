"""The risk service: intents in, OrderRequests/RiskRejections and kill-switch commands out
(``python -m services.risk.main``).

The kill switch and the ingest heartbeat are read from Redis (:class:`~services.core.redis_state.RedisState`);
while Redis does not answer the engine refuses every entry with ``state_unavailable`` and the stage
keeps running; it recovers by itself when Redis is back. Gauges: kill switch, the day's PnL, state
availability. Settings come from the environment (``.env.example``).
"""

from __future__ import annotations

from services.core.metrics import StageMetrics
from services.risk.stage import RiskStage
from services.runtime.service import ReplayableState, ServiceHooks


class RiskHooks(ServiceHooks):
    def __init__(self, metrics: StageMetrics, stage: RiskStage, state: ReplayableState) -> None:
        super().__init__(metrics)
        self.stage = stage
        self.state = state

    def replaying(self, active: bool) -> None:
        self.state.replaying = active

    def round_completed(self, number: int, root_wall_ns: int) -> None:
        super().round_completed(number, root_wall_ns)
        snap = self.stage.engine.snapshot()
        m, stage = self.metrics, self.metrics.stage
        m.kill_switch.labels(stage).set(1 if snap.kill_switch.engaged else 0)
        m.pnl.labels(stage, "realized").set(snap.realized_pnl_usd)
        m.pnl.labels(stage, "unrealized").set(snap.unrealized_pnl_usd)
        m.state_available.labels(stage).set(1 if snap.state_available else 0)
