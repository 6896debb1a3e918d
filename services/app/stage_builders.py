"""The services-mode builders: one stage process's parts from the session's SessionConfig (the broker
and the feed come from :mod:`services.app.stages`, like every other runner's)."""

from __future__ import annotations

import sys
from collections.abc import Mapping
from typing import Final

from services.app.journal_recorder import JournalRecorder
from services.app.stages import (
    STAGE_ORDER,
    build_features,
    build_feed,
    build_live_feed,
    build_oms,
    build_risk,
    build_signals,
    calibration_gauges,
    stage_inputs,
)
from services.core import topics
from services.core.calendar import default_calendar
from services.core.clock import ReplayClock
from services.core.journal import JournalWriter
from services.core.metrics import StageMetrics
from services.core.session_config import SessionConfig
from services.core.settings import ConfigError
from services.core.state import MemoryState
from services.ingest.hooks import IngestHooks, paced
from services.ingest.polygon_live import LiveSource
from services.learner.config import load_learner_config
from services.learner.engine import LearnerEngine
from services.learner.hooks import LearnerHooks
from services.learner.stage import LearnerStage
from services.oms.audit import AuditLog
from services.oms.config import audit_settings
from services.oms.hooks import OmsHooks, ResumableAudit
from services.oms.stage import OmsStage
from services.risk.hooks import RiskHooks
from services.runtime.service import (
    BestEffortState,
    Builder,
    GuardedWrites,
    Pipeline,
    ReplayableState,
    ServiceContext,
    StageJournal,
    StageParts,
    run_service,
)

__all__ = ["BUILDERS", "PIPELINE", "check_stage", "run_service"]
from services.signals.hooks import SignalHooks

PIPELINE: Final = Pipeline(order=STAGE_ORDER, inputs=stage_inputs)


def build_ingest_service(ctx: ServiceContext) -> StageParts:
    """The ingest: the session's feed onto the md.* topics, the heartbeat to Redis."""
    c = ctx.config
    # The heartbeat is tried on every bar (a failing write is quick): once Redis is back risk sees a
    # fresh heartbeat at once.
    heartbeat = BestEffortState(GuardedWrites(ctx.state, ctx.metrics, min_retry_s=0.0, max_retry_s=0.0))
    hooks = IngestHooks(ctx.metrics, heartbeat, live=c.market_data.source == "polygon")
    if c.market_data.source == "polygon":
        # The live feed (the same one `dreambot run --live` runs) writes the heartbeat on its timer.
        live = build_live_feed(c, heartbeat, ctx.calendar)
        return StageParts(None, ReplayClock(), hooks, source=LiveSource(live), uses_state=True, on_close=[live.close])
    feed = build_feed(c, heartbeat, ctx.calendar)
    return StageParts(None, ReplayClock(), hooks, source=paced(feed, c.market_data.replay.rate), uses_state=True)


def session_journal(ctx: ServiceContext, inputs: tuple[str, ...] = ()) -> StageJournal | None:
    """The session's parquet journal (``<storage_dir>/parquet``, session ``name``) for one stage; None
    with ``journal`` off. Appended to, never cleared: a restarted stage continues its rows, and each
    stage writes only its own tables."""
    c = ctx.config
    if not c.journal:
        return None
    recorder = JournalRecorder(JournalWriter(c.storage_dir / "parquet", c.name), ctx.calendar)
    return StageJournal(recorder, inputs)


def build_features_service(ctx: ServiceContext) -> StageParts:
    # features rows pair each FeatureVector with its input bar; chain rows come from the md.chain inputs.
    journal = session_journal(ctx, (topics.MD_BARS, topics.MD_CHAIN))
    return StageParts(build_features(ctx.config, ctx.calendar), journal=journal)


def build_signals_service(ctx: ServiceContext) -> StageParts:
    # A running session re-reads a republished calibration at each session open (the gauges say which).
    stage = build_signals(ctx.config, ctx.calendar, reload=True, loaded=calibration_gauges(ctx.metrics))
    return StageParts(stage, hooks=SignalHooks(ctx.metrics))


def build_risk_service(ctx: ServiceContext) -> StageParts:
    clock = ReplayClock()
    state = ReplayableState(ctx.state, clock)
    stage = build_risk(ctx.config, clock, state, ctx.calendar, services=True, reload=True,
                       loaded=calibration_gauges(ctx.metrics))
    live = ctx.config.market_data.source == "polygon"  # wall time carries a silent live feed's clock forward
    return StageParts(stage, clock, RiskHooks(ctx.metrics, stage, state, live=live), uses_state=True)


def build_oms_service(ctx: ServiceContext) -> StageParts:
    audit = ResumableAudit(AuditLog.from_settings(audit_settings()))
    clock = ReplayClock()
    stage = build_oms(ctx.config, clock, ctx.calendar, audit, services=True)
    writes = GuardedWrites(ctx.state, ctx.metrics)
    hooks = OmsHooks(ctx.metrics, stage.manager, audit, writes, clock)
    # orders, fills and trades: the OrderEvents and TradeOutcomes it publishes (its inputs are others' rows).
    return StageParts(stage, clock, hooks, uses_state=True, on_close=[hooks.write_state, audit.close],
                      journal=session_journal(ctx))


def build_learner_service(ctx: ServiceContext) -> StageParts:
    config = load_learner_config(ctx.config.config_dir / "learner.yaml")
    state = BestEffortState(GuardedWrites(ctx.state, ctx.metrics))
    stage = LearnerStage(LearnerEngine(config), state, ctx.config.learner.mode)
    return StageParts(stage, hooks=LearnerHooks(ctx.metrics, state), uses_state=True)


BUILDERS: Final[Mapping[str, Builder]] = {
    "ingest": build_ingest_service,
    "features": build_features_service,
    "signals": build_signals_service,
    "risk": build_risk_service,
    "oms": build_oms_service,
    "learner": build_learner_service,
}


def check_stage(name: str, config: SessionConfig, prog: str) -> int:
    """Build the stage (its config files, broker and feed) without starting anything."""
    ctx = ServiceContext(name, config, StageMetrics(name), default_calendar())
    # A check builds the stage only: its state reads go to memory, never to the session's Redis.
    ctx._state = MemoryState(prefix=config.name)  # type: ignore[assignment]
    try:
        parts = BUILDERS[name](ctx)
    except ConfigError as exc:
        sys.stderr.write(f"{prog}: error: {exc}\n")
        return 2
    kind = type(parts.stage).__name__ if parts.stage is not None else "source"
    extra = ""
    if isinstance(parts.stage, OmsStage):
        extra = f", broker {type(parts.stage.manager.broker).__name__}"
    print(f"{name}: ok ({kind}{extra}; mode {config.mode}, symbols {','.join(config.symbols)})")
    for close in parts.on_close:
        close()
    if parts.journal is not None:
        parts.journal.close()
    return 0
