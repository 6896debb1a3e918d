"""Stage builders: config files in, the Stage objects every runner drives.

The embedded session (:mod:`services.backtest.embedded`) and the services-mode processes
(``python -m services.<stage>.main``) build their stages here, so both run the same objects from the
same configuration. :data:`STAGE_ORDER` is the embedded bus's subscription order; the replay
lockstep (:mod:`services.core.lockstep`) orders sibling events by it, which is what makes a replay
through Kafka hand every stage its inputs in the embedded order.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from services.core.calendar import MarketCalendar
from services.core.clock import Clock, ReplayClock
from services.core.events import Bar
from services.core.settings import CONFIG_DIR, PROJECT_ROOT
from services.core.stage import Stage
from services.core.state import StateStore
from services.features.stage import FeatureStage
from services.ingest.feed import ReplayFeed, merge_bars
from services.oms.audit import AuditSink
from services.oms.brokers.paper import PaperBroker
from services.oms.config import load_broker_config
from services.oms.engine import OrderManager
from services.oms.fees import FeeModel
from services.oms.stage import OmsStage
from services.risk.config import load_risk_config, read_risk_multiplier
from services.risk.engine import RiskEngine
from services.risk.event_halts import load_event_halts
from services.risk.stage import RiskStage
from services.signals.engine import SignalEngine
from services.signals.gates import load_calibration
from services.signals.playbooks import load_playbooks
from services.signals.stage import SignalStage

DEFAULT_CALIBRATION: Final = PROJECT_ROOT / "backtests" / "calibration.json"

#: Stages in the embedded bus's subscription order (also the order their finish() runs).
STAGE_ORDER: Final = ("features", "signals", "risk", "oms")

#: Input topics of every stage, by name (the lockstep topology).
STAGE_INPUTS: Final[Mapping[str, tuple[str, ...]]] = {
    "features": FeatureStage.inputs,
    "signals": SignalStage.inputs,
    "risk": RiskStage.inputs,
    "oms": OmsStage.inputs,
}


def stage_inputs(stages: Iterable[str]) -> dict[str, tuple[str, ...]]:
    """Input topics of each named stage (``learner`` included when its package is installed)."""
    out: dict[str, tuple[str, ...]] = {}
    for name in stages:
        if name in STAGE_INPUTS:
            out[name] = STAGE_INPUTS[name]
        elif name == "learner":
            from services.learner.stage import LearnerStage

            out[name] = tuple(LearnerStage.inputs)
        else:
            raise ValueError(f"unknown stage {name!r}; known: {', '.join((*STAGE_ORDER, 'learner'))}")
    return out


@dataclass(frozen=True)
class StageSpec:
    """What the stage builders read: traded symbols, the config folder and the calibration file.

    symbols: underlyings of the session (one FeatureEngine each).
    config_dir: folder with playbooks.yaml, risk.yaml, events.yaml and broker.yaml.
    calibration: calibration JSON read by signals (PoT threshold) and risk (risk multiplier) when it
        exists; None ignores it.
    chain_every_s: least event time between two option-chain analyses per underlying (features).
    """

    symbols: tuple[str, ...]
    config_dir: Path = CONFIG_DIR
    calibration: Path | None = DEFAULT_CALIBRATION
    chain_every_s: float = 300.0


def build_features(spec: StageSpec, calendar: MarketCalendar) -> FeatureStage:
    """The features stage: one FeatureEngine per symbol."""
    return FeatureStage(list(spec.symbols), calendar=calendar, chain_every_s=spec.chain_every_s)


def build_signals(spec: StageSpec, calendar: MarketCalendar) -> SignalStage:
    """The signals stage: playbooks (with the calibration's path when given) and event halts."""
    playbooks = load_playbooks(spec.config_dir / "playbooks.yaml")
    if spec.calibration is not None:
        playbooks = playbooks.model_copy(
            update={"calibration": playbooks.calibration.model_copy(update={"path": spec.calibration})}
        )
    halts = load_event_halts(load_risk_config(spec.config_dir / "risk.yaml"))
    engine = SignalEngine(
        playbooks,
        calibration=load_calibration(playbooks.calibration),
        is_halted=lambda ts: halts.halt_active(ts) is not None,
        calendar=calendar,
    )
    return SignalStage(engine)


def build_risk(spec: StageSpec, clock: ReplayClock, state: StateStore, calendar: MarketCalendar,
               *, engine_clock: Clock | None = None) -> RiskStage:
    """The risk stage. ``clock`` is advanced by the stage to each event's time; ``engine_clock`` (default
    ``clock``) is what the engine reads as now (a wall clock for a live feed)."""
    risk_cfg = load_risk_config(spec.config_dir / "risk.yaml")
    multiplier = 1.0
    if spec.calibration is not None and spec.calibration.exists():
        multiplier = read_risk_multiplier(spec.calibration)
    engine = RiskEngine(risk_cfg, engine_clock or clock, state, events=load_event_halts(risk_cfg),
                        calendar=calendar, risk_multiplier=multiplier)
    return RiskStage(engine, clock)


def build_oms(spec: StageSpec, clock: ReplayClock, calendar: MarketCalendar, audit: AuditSink | None = None,
              *, engine_clock: Clock | None = None) -> OmsStage:
    """The OMS stage with the paper broker of config/broker.yaml."""
    broker_cfg = load_broker_config(spec.config_dir / "broker.yaml")
    now = engine_clock or clock
    # Fees, multiplier and fill model all come from broker.yaml; this wiring always trades paper.
    broker = PaperBroker(now, broker_cfg.paper,
                         FeeModel(broker_cfg.fees, broker_cfg.multiplier, broker_cfg.paper.cash_settled_roots))
    manager = OrderManager(broker, now, broker_cfg, audit=audit)
    return OmsStage(manager, clock, calendar)


def build_stages(spec: StageSpec, clock: ReplayClock, state: StateStore, calendar: MarketCalendar,
                 audit: AuditSink | None = None) -> list[Stage]:
    """Every stage, in :data:`STAGE_ORDER`, sharing one clock and state store (the embedded wiring)."""
    return [
        build_features(spec, calendar),
        build_signals(spec, calendar),
        build_risk(spec, clock, state, calendar),
        build_oms(spec, clock, calendar, audit),
    ]


def build_replay_feed(bars: Mapping[str, Iterable[Bar]], state: StateStore | None, calendar: MarketCalendar,
                      seed: int = 7) -> ReplayFeed:
    """The replay feed a backtest and the ingest service use: bars merged across symbols, synthetic
    option chains (``seed``) and modeled top-of-book quotes; the ingest heartbeat goes to ``state``."""
    from services.backtest.inputs import synthetic_chain_source

    return ReplayFeed(merge_bars(list(bars.values())), synthetic_chain_source(seed, calendar), state, calendar,
                      modeled_quotes=True)
