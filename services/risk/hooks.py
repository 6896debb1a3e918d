"""The risk service: intents in, OrderRequests/RiskRejections and kill-switch commands out
(``python -m services.risk.main``).

The kill switch and the ingest heartbeat are read from Redis (:class:`~services.core.redis_state.RedisState`);
while Redis does not answer the engine refuses every entry with ``state_unavailable`` and the stage
keeps running; it recovers by itself when Redis is back. Settings come from the environment
(``.env.example``).

Metrics (after every round or batch, and on the runner's periodic tick): kill switch, the day's PnL
(``dreambot_pnl_usd`` realized/unrealized and ``dreambot_daily_pnl_usd``), the loss limit, state
availability, market-data age per underlying, ``dreambot_feed_stale``, and refusals by rule.

On a live feed (``live``: market data from Polygon, free-running) the engine's clock is event time,
which stands still while the feed is silent; the periodic tick hands the engine that time carried
forward by the wall time since it last moved (:meth:`~services.risk.engine.RiskEngine.observe_time`),
so a silent feed becomes stale. A replay (lockstep or not, a capture too) never does this: wall time
means nothing to recorded data, and its decisions stay a function of its inputs.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from services.core.events import Event, RiskRejection
from services.core.metrics import StageMetrics
from services.core.stage import Output
from services.risk.stage import RiskStage
from services.runtime.service import ReplayableState, ServiceHooks


class RiskHooks(ServiceHooks):
    def __init__(self, metrics: StageMetrics, stage: RiskStage, state: ReplayableState,
                 *, live: bool = False, wall_s: Callable[[], float] = time.monotonic) -> None:
        super().__init__(metrics)
        self.stage = stage
        self.live = live
        self.state = state
        self._wall_s = wall_s
        self._clock_seen: tuple[int, float] | None = None  # (engine clock ns, wall_s() when it last moved)

    def replaying(self, active: bool) -> None:
        self.state.replaying = active

    def handled(self, topic: str, event: Event, outputs: list[Output], seconds: float) -> None:
        super().handled(topic, event, outputs, seconds)
        self._note_clock()
        m = self.metrics
        for out in outputs:
            if isinstance(out.event, RiskRejection):
                m.entries_refused.labels(m.stage, out.event.rule).inc()

    def round_completed(self, number: int, root_wall_ns: int) -> None:
        super().round_completed(number, root_wall_ns)
        self.export()

    def periodic(self) -> None:
        p = self.participant
        if self.live and p is not None and not p.lockstep and not self.state.replaying:
            carried = self.carried_forward_ns()
            if carried is not None:
                self.stage.engine.observe_time(carried)
        self.export()

    def carried_forward_ns(self) -> int | None:
        """The engine's clock plus the wall time since it last moved (None before any event)."""
        self._note_clock()
        if self._clock_seen is None:
            return None
        clock_ns, wall = self._clock_seen
        return clock_ns + round((self._wall_s() - wall) * 1e9)

    def _note_clock(self) -> None:
        now = self.stage.engine.clock_ns()
        if now > 0 and (self._clock_seen is None or now != self._clock_seen[0]):
            self._clock_seen = (now, self._wall_s())

    def export(self) -> None:
        """Set the gauges from the engine's snapshot."""
        snap = self.stage.engine.snapshot()
        m, stage = self.metrics, self.metrics.stage
        m.kill_switch.labels(stage).set(1 if snap.kill_switch.engaged else 0)
        m.pnl.labels(stage, "realized").set(snap.realized_pnl_usd)
        m.pnl.labels(stage, "unrealized").set(snap.unrealized_pnl_usd)
        m.daily_pnl.labels(stage).set(snap.realized_pnl_usd + snap.unrealized_pnl_usd)
        m.daily_loss_limit.labels(stage).set(snap.daily_loss_limit_usd)
        m.state_available.labels(stage).set(1 if snap.state_available else 0)
        for symbol, age in snap.feed.ages_s.items():
            m.market_data_age.labels(stage, symbol).set(age)
        m.feed_stale.labels(stage).set(1 if snap.feed.stale else 0)
