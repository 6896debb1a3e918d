"""Stage, broker and feed builders: a :class:`SessionConfig` in, the objects every runner drives.

This is the only place that constructs a broker or a market-data feed. The embedded session
(:mod:`services.backtest.embedded`) and the services-mode processes (:mod:`services.app.services`)
build their stages here, so both run the same objects from the same configuration.
:data:`STAGE_ORDER` is the embedded bus's subscription order; the replay lockstep
(:mod:`services.runtime.lockstep`) orders sibling events by it, which is what makes a replay
through Kafka hand every stage its inputs in the embedded order.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, Final

from pydantic import ValidationError

from services.app.market_data import MarketData, load_market_data, synthetic_chain_source
from services.core.approval import ApprovalKey, ApprovalKeyError, session_approval_key
from services.core.calendar import MarketCalendar
from services.core.calibration_watch import CalibrationFile, CalibrationWatch, Loaded
from services.core.clock import Clock, ReplayClock
from services.core.events import Bar
from services.core.learner_policy import LearnerPolicy, decode_policy
from services.core.metrics import StageMetrics
from services.core.session_config import PIPELINE_STAGES, PlaybookSelection, RiskOverrides, SessionConfig
from services.core.settings import ConfigError, describe_validation_error, load_yaml
from services.core.stage import Output, Stage
from services.core.state import StateStore
from services.features.stage import FeatureStage
from services.ingest.feed import ReplayFeed, merge_bars
from services.ingest.polygon_live import CaptureReplayFeed, LiveFeedConfig, PolygonFeedError, PolygonLiveFeed
from services.ingest.sources import DataSourceError
from services.oms.approval import ExecutionGate, HardLimits
from services.oms.audit import AuditSink
from services.oms.brokers.base import Broker
from services.oms.brokers.paper import PaperBroker
from services.oms.brokers.tradier import TradierBroker
from services.oms.config import BrokerConfig, load_broker_config
from services.oms.engine import OrderManager
from services.oms.fees import FeeModel
from services.oms.stage import OmsStage
from services.risk.config import RiskConfig, SizingLimits, risk_multiplier_of
from services.risk.engine import RiskEngine
from services.risk.event_halts import load_event_halts
from services.risk.stage import RiskStage
from services.signals.engine import SignalEngine
from services.signals.gates import Calibration, calibration_from_doc, calibration_path
from services.signals.playbooks import PlaybooksConfig, display_path, parse_playbooks
from services.signals.stage import SignalStage

#: Stages in the embedded bus's subscription order (also the order their finish() runs).
STAGE_ORDER: Final = PIPELINE_STAGES

#: Input topics of every stage, by name (the lockstep topology).
STAGE_INPUTS: Final[Mapping[str, tuple[str, ...]]] = {
    "features": FeatureStage.inputs,
    "signals": SignalStage.inputs,
    "risk": RiskStage.inputs,
    "oms": OmsStage.inputs,
}


def stage_inputs(stages: Iterable[str]) -> dict[str, tuple[str, ...]]:
    """Input topics of each named stage (``learner`` included)."""
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


# --- configuration files, with the session's overrides --------------------------------------------

def _deep_merge(base: dict[str, Any], top: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in top.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def apply_playbook_selection(raw: Any, selection: PlaybookSelection, source: str) -> PlaybooksConfig:
    """Parsed ``playbooks.yaml`` with a session's selection and overrides applied, validated (pure)."""
    if (selection.enabled is not None or selection.overrides) and isinstance(raw, dict):
        entries = raw.get("playbooks")
        entries = entries if isinstance(entries, list) else []
        names = [e.get("name") for e in entries if isinstance(e, dict)]
        asked = [*(selection.enabled or ()), *selection.overrides]
        unknown = sorted({n for n in asked if n not in names})
        if unknown:
            raise ConfigError(f"session playbooks: unknown playbook(s) {', '.join(unknown)}; "
                              f"{source} has {', '.join(str(n) for n in names)}")
        merged = []
        for entry in entries:
            if isinstance(entry, dict):
                name = entry.get("name")
                if name in selection.overrides:
                    if "name" in selection.overrides[name]:
                        raise ConfigError(f"session playbooks.overrides.{name}: a playbook's name cannot be overridden")
                    entry = _deep_merge(entry, selection.overrides[name])
                if selection.enabled is not None and name not in selection.enabled:
                    entry = {**entry, "enabled": False}
            merged.append(entry)
        raw = {**raw, "playbooks": merged}
        source = f"{source} with the session's playbooks settings"
    return parse_playbooks(raw, source)


def session_playbooks(config: SessionConfig) -> PlaybooksConfig:
    """``playbooks.yaml`` with the session's selection and overrides applied (and its calibration)."""
    path = config.config_dir / "playbooks.yaml"
    playbooks = apply_playbook_selection(load_yaml(path), config.playbooks, display_path(path))
    # DREAMBOT_CALIBRATION=none means no calibration for signals too, not playbooks.yaml's default path.
    return playbooks.model_copy(
        update={"calibration": playbooks.calibration.model_copy(update={"path": config.calibration.path})})


def apply_risk_overrides(raw: Any, overrides: RiskOverrides, source: str) -> RiskConfig:
    """Parsed ``risk.yaml`` with a session's limits merged over it, validated (pure)."""
    if raw is None:
        raise ConfigError(f"{source}: empty file (write the limits out; an empty risk.yaml is not 'defaults')")
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: expected a mapping of settings, got {type(raw).__name__}")
    extra = overrides.as_risk_yaml()
    try:
        return RiskConfig.model_validate(_deep_merge(raw, extra))
    except ValidationError as exc:
        raise ConfigError(describe_validation_error(
            exc, f"{source} with the session's risk overrides" if extra else source)) from None


def session_risk(config: SessionConfig) -> RiskConfig:
    """``risk.yaml`` with the session's limits merged over it."""
    path = config.config_dir / "risk.yaml"
    return apply_risk_overrides(load_yaml(path), config.risk, str(path))


def session_broker_config(config: SessionConfig) -> BrokerConfig:
    """``broker.yaml`` with the session's broker choice (the choice itself lives in SessionConfig)."""
    broker_cfg = load_broker_config(config.config_dir / "broker.yaml")
    b = config.broker
    # The timings come from SessionConfig (broker.yaml's tradier: section, overridable per session).
    tradier = broker_cfg.tradier.model_copy(update={
        **{name: getattr(b.tradier, name) for name in type(b.tradier).model_fields},
        "environment": b.environment, "base_url": b.base_url,
        "live_confirm": config.mode == "live" and config.live_confirm})
    return broker_cfg.model_copy(update={"broker": b.provider, "tradier": tradier})


# --- broker and feed --------------------------------------------------------------------------------

def build_broker(config: SessionConfig, clock: Clock, broker_cfg: BrokerConfig | None = None) -> Broker:
    """The broker the session names: paper, or Tradier (sandbox, or live when confirmed)."""
    cfg = broker_cfg or session_broker_config(config)
    fees = FeeModel(cfg.fees, cfg.multiplier, cfg.paper.cash_settled_roots)
    b = config.broker
    if b.provider == "paper":
        return PaperBroker(clock, cfg.paper, fees)
    # The connection is resolved from these values only: credentials come from SessionConfig (env/.env).
    env = {
        "TRADIER_ACCESS_TOKEN": b.access_token.get_secret_value() if b.access_token else "",
        "TRADIER_ACCOUNT_ID": b.account_id or "",
        "TRADIER_LIVE_CONFIRM": "true" if config.mode == "live" and config.live_confirm else "false",
    }
    if b.base_url:
        env["TRADIER_BASE_URL"] = b.base_url
    return TradierBroker(cfg.tradier, clock, fees, env=env)


def require_paper(config: SessionConfig, runner: str) -> None:
    """Embedded replays trade the paper broker only; anything else is refused with one line."""
    if config.mode != "paper" or config.broker.provider != "paper":
        raise ConfigError(f"{runner} replays recorded data through the paper broker; "
                          f"mode {config.mode} with broker {config.broker.provider} runs as services "
                          "(dreambot services up, or python -m services.<stage>.main)")


def session_market_data(config: SessionConfig) -> MarketData:
    """The session's bars: the replay file, or synthetic sessions. A live Polygon feed and a replayed
    capture have no bars up front (they stream): their MarketData is empty, ``source`` says what streams."""
    md = config.market_data
    if md.source == "polygon":
        return MarketData({s: [] for s in config.symbols}, {}, f"polygon live ({md.polygon.ws_url})")
    r = md.replay
    if md.source == "capture":
        return MarketData({s: [] for s in config.symbols}, {}, f"polygon capture {r.path}")
    try:
        return load_market_data(list(config.symbols), r.path if md.source == "replay" else None,
                                table=r.table, tz=r.tz, sessions=r.sessions, seed=r.seed,
                                interval_s=r.interval_s)
    except DataSourceError as exc:
        raise ConfigError(f"market_data.replay: {exc}") from None


def live_feed_config(config: SessionConfig, *, duration_s: float | None = None,
                     idle_exit_s: float | None = None) -> LiveFeedConfig:
    """The live Polygon feed's settings from the session (``market_data.polygon``, POLYGON_* env)."""
    p = config.market_data.polygon
    return LiveFeedConfig(
        symbols=tuple(config.symbols), ws_url=p.ws_url, rest_url=p.rest_url, heartbeat_secs=p.heartbeat_secs,
        chain_every_s=p.chain_every_s, chain_strike_pct=p.chain_strike_pct, max_reconnects=p.max_reconnects,
        backoff_s=p.backoff_s, backoff_max_s=p.backoff_max_s, snapshot_path=p.snapshot_path,
        snapshot_rotate_mb=p.snapshot_rotate_mb, duration_s=duration_s, idle_exit_s=idle_exit_s)


def build_live_feed(config: SessionConfig, state: StateStore | None, calendar: MarketCalendar, *,
                    duration_s: float | None = None, idle_exit_s: float | None = None) -> PolygonLiveFeed:
    """The live Polygon feed of the session (websocket clusters, REST chains and backfill, capture)."""
    key = config.market_data.polygon.api_key
    if key is None or not key.get_secret_value().strip():
        raise ConfigError("market_data.source polygon needs POLYGON_API_KEY (environment or .env)")
    try:
        return PolygonLiveFeed(live_feed_config(config, duration_s=duration_s, idle_exit_s=idle_exit_s),
                               key, state, calendar)
    except (PolygonFeedError, OSError) as exc:
        raise ConfigError(f"market_data.polygon: {exc}") from None


def build_replay_feed(bars: Mapping[str, Iterable[Bar]], state: StateStore | None, calendar: MarketCalendar,
                      seed: int = 7) -> ReplayFeed:
    """The replay feed a backtest and the ingest service use: bars merged across symbols, synthetic
    option chains (``seed``) and modeled top-of-book quotes; the ingest heartbeat goes to ``state``."""
    return ReplayFeed(merge_bars(list(bars.values())), synthetic_chain_source(seed, calendar), state, calendar,
                      modeled_quotes=True)


def build_feed(config: SessionConfig, state: StateStore | None, calendar: MarketCalendar,
               data: MarketData | None = None) -> Iterator[Output]:
    """The session's market-data feed (md.* outputs): a replay (file or synthetic bars), a replayed
    Polygon capture, or the live Polygon feed (which ends when closed, or with a PolygonFeedError)."""
    source = config.market_data.source
    if source == "polygon":
        return iter(build_live_feed(config, state, calendar))
    if source == "capture":
        path = config.market_data.replay.path
        assert path is not None  # MarketDataConfig refuses capture without replay.path
        if not path.exists() and not any(path.parent.glob(f"{path.name}.*")):
            raise ConfigError(f"market_data.replay.path {path}: no capture there")
        return iter(CaptureReplayFeed(path, state, calendar, config.symbols))
    data = data if data is not None else session_market_data(config)
    return iter(build_replay_feed(data.bars, state, calendar, config.market_data.replay.seed))


# --- stages -----------------------------------------------------------------------------------------

def build_features(config: SessionConfig, calendar: MarketCalendar) -> FeatureStage:
    """The features stage: one FeatureEngine per symbol."""
    return FeatureStage(list(config.symbols), calendar=calendar, chain_every_s=config.chain_every_s)


def session_policy(config: SessionConfig) -> LearnerPolicy | None:
    """The learner policy signals starts from: ``learner.model`` when set (off: none)."""
    path = config.learner.model
    if config.learner.mode == "off" or path is None:
        return None
    try:
        return decode_policy(path.read_bytes(), str(path))
    except OSError as exc:
        raise ConfigError(f"learner.model {path}: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


def calibration_reloads(config: SessionConfig) -> bool:
    """Whether an embedded run re-reads a republished calibration at each session open: on the live feed
    only. A replay or backtest pins the calibration it started with, so a file the nightly job publishes
    while a backtest runs cannot change its later sessions (services-mode stages always reload)."""
    return config.market_data.source == "polygon"


def signals_calibration(playbooks: PlaybooksConfig, *, reload: bool,
                        loaded: Loaded | None = None) -> tuple[Calibration, CalibrationWatch[Calibration]]:
    """The signals' calibration at start-up and the watch that re-reads it at each session open."""
    cfg = playbooks.calibration
    path = calibration_path(cfg.path)
    shown = display_path(path) if path is not None else "none"
    watch = CalibrationWatch(path, shown, lambda doc, where: calibration_from_doc(doc, cfg, where),
                             stage="signals", reload=reload, loaded=loaded)
    start = watch.start()
    if start is None:
        origin = "defaults" if path is None else f"defaults ({shown} absent)"
        start = Calibration(cfg.risk_multiplier, cfg.pot_threshold, origin)
    return start, watch


def build_signals(config: SessionConfig, calendar: MarketCalendar, *, reload: bool = True,
                  loaded: Loaded | None = None) -> SignalStage:
    """The signals stage: the session's playbooks, its calibration, the event halts and the learner's policy.

    ``reload``: re-read a republished calibration at each session open (a services-mode stage; the
    embedded wiring passes :func:`calibration_reloads`); ``loaded`` is told of every calibration put
    in force (metrics)."""
    playbooks = session_playbooks(config)
    halts = load_event_halts(session_risk(config))
    calibration, watch = signals_calibration(playbooks, reload=reload, loaded=loaded)
    engine = SignalEngine(
        playbooks,
        calibration=calibration,
        is_halted=lambda ts: halts.halt_active(ts) is not None,
        calendar=calendar,
        learner_mode=config.learner.mode,
        policy=session_policy(config),
    )
    return SignalStage(engine, watch)


def build_learner(config: SessionConfig, state: StateStore | None = None) -> Stage:
    """The learner stage in the session's learner mode (``config/learner.yaml``; scikit-learn is
    imported only here, so a session with the learner off never loads it)."""
    from services.learner.config import load_learner_config
    from services.learner.engine import LearnerEngine
    from services.learner.stage import LearnerStage

    engine = LearnerEngine(load_learner_config(config.config_dir / "learner.yaml"))
    return LearnerStage(engine, state, config.learner.mode)


def calibration_gauges(metrics: StageMetrics) -> Loaded:
    """A ``loaded`` callback setting the stage's calibration gauges (load time, and which one is in force)."""
    def loaded(current: CalibrationFile | None, wall_s: float) -> None:
        metrics.calibration_loaded.labels(metrics.stage).set(wall_s)
        metrics.calibration_info.clear()
        if current is not None:
            metrics.calibration_info.labels(metrics.stage, current.first_session, current.last_session,
                                            current.mlflow_run_id, current.sha256).set(1)

    return loaded


def risk_calibration(config: SessionConfig, *, reload: bool,
                     loaded: Loaded | None = None) -> tuple[float, CalibrationWatch[float]]:
    """Risk's calibration multiplier at start-up (1.0 without a file) and the watch that re-reads it."""
    path = calibration_path(config.calibration.path)
    shown = display_path(path) if path is not None else "none"
    watch = CalibrationWatch(path, shown, risk_multiplier_of, stage="risk", reload=reload, loaded=loaded)
    start = watch.start()
    return (1.0 if start is None else start), watch


def calibration_summary(stages: Iterable[Stage]) -> dict[str, Any]:
    """What a run's summary says of its calibration: the file signals started with (or none), its values,
    its inputs' sessions, and whether it was pinned (replays) or re-read at session opens."""
    signals = next((s for s in stages if isinstance(s, SignalStage)), None)
    if signals is None or signals.calibration is None:
        return {"source": "none"}
    watch, used = signals.calibration, signals.engine.calibration
    current = watch.current
    out: dict[str, Any] = {"source": used.source, "pinned": not watch.reload,
                           "risk_multiplier": used.risk_multiplier, "pot_threshold": used.pot_threshold}
    if current is not None:
        out.update(sha256=current.sha256, first_session=current.first_session or None,
                   last_session=current.last_session or None, mlflow_run_id=current.mlflow_run_id or None)
    if watch.reload:
        out["reloads"] = watch.reloads
    return out


def approval_key(config: SessionConfig, *, services: bool = False) -> ApprovalKey:
    """The key risk signs approved orders with and the OMS checks them by: ``approval_key``
    (DREAMBOT_APPROVAL_KEY); required for a services-mode stage, else a random in-process key."""
    try:
        return session_approval_key(config.name, config.approval_key, required=services)
    except ApprovalKeyError as exc:
        raise ConfigError(str(exc)) from None


def hard_limits(risk_cfg: RiskConfig) -> HardLimits:
    """The caps the OMS re-checks: risk's, at the most the calibration multiplier can make them."""
    most = SizingLimits.from_config(risk_cfg, risk_cfg.risk_multiplier_max)
    return HardLimits(max_contracts_per_order=most.max_contracts_per_order,
                      max_premium_per_symbol_usd=most.max_premium_per_symbol_usd,
                      max_premium_total_usd=most.max_premium_total_usd,
                      max_open_positions=risk_cfg.max_open_positions,
                      contract_multiplier=risk_cfg.contract_multiplier)


def build_risk(config: SessionConfig, clock: ReplayClock, state: StateStore, calendar: MarketCalendar,
               *, engine_clock: Clock | None = None, services: bool = False, reload: bool = True,
               loaded: Loaded | None = None) -> RiskStage:
    """The risk stage. ``clock`` is advanced by the stage to each event's time; ``engine_clock`` (default
    ``clock``) is what the engine reads as now (a wall clock for a live feed). ``services``: a stage
    process, which must be given the session's approval key. ``reload``/``loaded``: as for
    :func:`build_signals` (the calibration's ``risk_multiplier`` re-read at each session open)."""
    risk_cfg = session_risk(config)
    multiplier, watch = risk_calibration(config, reload=reload, loaded=loaded)
    engine = RiskEngine(risk_cfg, engine_clock or clock, state, events=load_event_halts(risk_cfg),
                        calendar=calendar, risk_multiplier=multiplier)
    return RiskStage(engine, clock, approval_key(config, services=services), watch)


def build_oms(config: SessionConfig, clock: ReplayClock, calendar: MarketCalendar, audit: AuditSink | None = None,
              *, engine_clock: Clock | None = None, services: bool = False) -> OmsStage:
    """The OMS stage with the session's broker, executing only orders that carry risk's approval and
    fit risk's hard limits (:class:`~services.oms.approval.ExecutionGate`)."""
    gate = ExecutionGate(approval_key(config, services=services), hard_limits(session_risk(config)))
    broker_cfg = session_broker_config(config)
    now = engine_clock or clock
    manager = OrderManager(build_broker(config, now, broker_cfg), now, broker_cfg, audit=audit)
    # A bar replay's chains are synthetic, priced at each bar's close: their bars get intrabar paths.
    synthetic = config.market_data.source in ("replay", "synthetic")
    return OmsStage(manager, clock, calendar, gate, synthetic_chains=synthetic)


def build_stages(config: SessionConfig, clock: ReplayClock, state: StateStore, calendar: MarketCalendar,
                 audit: AuditSink | None = None) -> list[Stage]:
    """Every stage, in :data:`STAGE_ORDER`, sharing one clock and state store (the embedded wiring).

    Signals and risk re-read a republished calibration at each session open only on the live feed
    (:func:`calibration_reloads`); a replay or backtest keeps the one it started with.

    With the learner on (``learner.mode`` frozen or walk-forward) the learner stage comes last, the
    place the services-mode lockstep gives a stage outside :data:`STAGE_ORDER`, so both runs agree."""
    reload = calibration_reloads(config)  # a replay pins its calibration; the live feed picks up the nightly's
    stages: list[Stage] = [
        build_features(config, calendar),
        build_signals(config, calendar, reload=reload),
        build_risk(config, clock, state, calendar, reload=reload),
        build_oms(config, clock, calendar, audit),
    ]
    if config.learner.mode != "off":
        stages.append(build_learner(config))
    return stages
