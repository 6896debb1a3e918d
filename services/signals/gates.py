"""Contextual gates: whether the context allows a playbook to fire, each with a pass/fail reason.

Gates run after the entry conditions hold, cheapest first, and stop at the first failure:
time window, event halt, regime, volatility band, underlying spread, learner. The probability-of-touch
gate needs the analysed chain, so the engine runs it last, just before contract selection.

Collaborators are injected, never looked up: the risk stage owns the economic-event calendar and
hands in ``is_halted(ts) -> bool``; the learner hands in ``(playbook, features) -> probability``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from services.core.calendar import NS_PER_MIN, MarketCalendar
from services.core.settings import PROJECT_ROOT, ConfigError
from services.signals.contracts import ContractRecord
from services.signals.playbooks import (
    CalibrationConfig,
    Gates,
    LearnerGate,
    PotGate,
    RegimeGate,
    TimeWindowGate,
    VolBandGate,
    display_path,
    fmt,
)

IsHalted = Callable[[int], bool]
"""``is_halted(ts_ns)``: true while an economic event (or the risk stage) forbids new entries."""

LearnerProbability = Callable[[str, Mapping[str, float]], float]
"""``learner(playbook_name, features)``: the learner's probability that this entry pays."""


@dataclass(frozen=True, slots=True)
class GateResult:
    """One gate's verdict; ``reason`` shows the values it looked at."""

    gate: str
    passed: bool
    reason: str

    def __str__(self) -> str:
        return f"{self.gate}: {self.reason}"


# --- calibration --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Calibration:
    """Nightly calibration output used by signals: sizing multiplier and probability-of-touch threshold."""

    risk_multiplier: float = 1.0
    pot_threshold: float = 0.6
    source: str = "defaults"


def load_calibration(config: CalibrationConfig, root: Path = PROJECT_ROOT) -> Calibration:
    """Read the calibration JSON named by ``config.path``; the config's values apply while it is absent.

    Keys other than ``risk_multiplier`` and ``pot_threshold`` are ignored; a missing key keeps the
    config's value. A malformed file or an out-of-range value is a ConfigError.
    """
    fallback = Calibration(config.risk_multiplier, config.pot_threshold, "defaults")
    if config.path is None:
        return fallback
    path = calibration_path(config.path, root)
    assert path is not None
    shown = display_path(path)
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return Calibration(config.risk_multiplier, config.pot_threshold, f"defaults ({shown} absent)")
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{shown}: invalid calibration JSON: {exc}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{shown}: calibration must be a JSON object, got {type(raw).__name__}")
    return calibration_from_doc(raw, config, shown)


def calibration_path(path: Path | None, root: Path = PROJECT_ROOT) -> Path | None:
    """Where the calibration JSON is (a relative ``path`` is under ``root``); None: off."""
    if path is None:
        return None
    return path if path.is_absolute() else root / path


def calibration_from_doc(raw: Mapping[str, object], config: CalibrationConfig, shown: str) -> Calibration:
    """The signals' values of one calibration JSON object (a missing key keeps the config's; ConfigError
    when a value is not a finite number in range)."""
    mult = _calibration_value(raw, "risk_multiplier", config.risk_multiplier, 0.0, 5.0, shown)
    pot = _calibration_value(raw, "pot_threshold", config.pot_threshold, 0.0, 1.0, shown)
    return Calibration(mult, pot, shown)


def _calibration_value(raw: Mapping[str, object], key: str, default: float, lo: float, hi: float, shown: str) -> float:
    value = raw.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ConfigError(f"{shown}: {key}: expected a finite number, got {value!r}")
    if not lo <= value <= hi:
        raise ConfigError(f"{shown}: {key}: {fmt(float(value))} is outside [{fmt(lo)}, {fmt(hi)}]")
    return float(value)


# --- individual gates ---------------------------------------------------------------------------


def time_window_gate(
    cfg: TimeWindowGate, values: Mapping[str, float], ts: int, calendar: MarketCalendar | None = None
) -> GateResult:
    """Minutes since the open and to the close, from the features or else the market calendar."""
    since = values.get("minutes_since_open")
    to_close = values.get("minutes_to_close")
    source = "features"
    if since is None or to_close is None:
        if calendar is None:
            return GateResult("time", False, "minutes_since_open/minutes_to_close unavailable (no calendar)")
        session = calendar.session_for_ts(ts)
        if session is None:
            return GateResult("time", False, "no trading session today")
        since = (ts - session.open_ns) / NS_PER_MIN
        to_close = (session.close_ns - ts) / NS_PER_MIN
        source = "calendar"
    hi = "" if cfg.max_after_open is None else f", {fmt(cfg.max_after_open)}"
    text = (
        f"minutes_since_open={fmt(since)} in [{fmt(cfg.min_after_open)}{hi or ', close'}], "
        f"minutes_to_close={fmt(to_close)} >= {fmt(cfg.min_before_close)} ({source})"
    )
    if since < cfg.min_after_open:
        return GateResult("time", False, f"too early: {text}")
    if cfg.max_after_open is not None and since > cfg.max_after_open:
        return GateResult("time", False, f"too late: {text}")
    if to_close < cfg.min_before_close:
        return GateResult("time", False, f"too close to the close: {text}")
    return GateResult("time", True, text)


def halt_gate(is_halted: IsHalted | None, ts: int) -> GateResult:
    """Refuse entries while the injected event calendar says so."""
    if is_halted is None:
        return GateResult("halt", True, "no event calendar wired")
    if is_halted(ts):
        return GateResult("halt", False, "economic event halt in force")
    return GateResult("halt", True, "no event halt")


def regime_gate(cfg: RegimeGate, values: Mapping[str, float], regime: str | None) -> GateResult:
    """Named regime (latest RegimeChange) in ``allowed`` and/or a feature inside its band."""
    parts = []
    if cfg.allowed:
        if regime is None:
            return GateResult("regime", False, f"no regime reported yet (allowed: {', '.join(cfg.allowed)})")
        if regime not in cfg.allowed:
            return GateResult("regime", False, f"regime {regime!r} not in {list(cfg.allowed)}")
        parts.append(f"regime {regime!r} allowed")
    if cfg.feature is not None:
        value = values.get(cfg.feature)
        lo = "-inf" if cfg.lo is None else fmt(cfg.lo)
        hi = "inf" if cfg.hi is None else fmt(cfg.hi)
        if value is None:
            return GateResult("regime", False, f"{cfg.feature} missing (warming up)")
        text = f"{cfg.feature}={fmt(value)} in [{lo}, {hi}]"
        if (cfg.lo is not None and value < cfg.lo) or (cfg.hi is not None and value > cfg.hi):
            return GateResult("regime", False, f"outside band: {text}")
        parts.append(text)
    return GateResult("regime", True, ", ".join(parts))


def vol_band_gate(cfg: VolBandGate, values: Mapping[str, float]) -> GateResult:
    """Volatility feature inside [lo, hi] (inclusive)."""
    value = values.get(cfg.feature)
    if value is None:
        return GateResult("vol_band", False, f"{cfg.feature} missing (warming up)")
    text = f"{cfg.feature}={fmt(value)} in [{fmt(cfg.lo)}, {fmt(cfg.hi)}]"
    if not cfg.lo <= value <= cfg.hi:
        return GateResult("vol_band", False, f"outside band: {text}")
    return GateResult("vol_band", True, text)


def spread_gate(max_bps: float, values: Mapping[str, float], *, index: bool = False) -> GateResult:
    """Underlying quote spread (spread_bps) at most ``max_bps``; not applicable to cash indexes."""
    value = values.get("spread_bps")
    if value is None:
        if index:
            return GateResult("spread", True, "not applicable: cash index has no quote spread")
        return GateResult("spread", False, "spread_bps missing (no quotes yet)")
    text = f"spread_bps={fmt(value)} <= {fmt(max_bps)}"
    if value > max_bps:
        return GateResult("spread", False, f"too wide: {text}")
    return GateResult("spread", True, text)


def learner_gate(
    cfg: LearnerGate, learner: LearnerProbability | None, playbook: str, values: Mapping[str, float]
) -> tuple[GateResult, float | None]:
    """The learner's probability at least ``min_probability``; passes when no learner is wired."""
    if learner is None:
        return GateResult("learner", True, "no learner wired"), None
    p = float(learner(playbook, values))
    if not math.isfinite(p):
        return GateResult("learner", False, f"learner returned {p}"), None
    text = f"p={fmt(p)} >= {fmt(cfg.min_probability)}"
    if p < cfg.min_probability:
        return GateResult("learner", False, f"too unlikely: {text}"), p
    return GateResult("learner", True, text), p


def pot_gate(cfg: PotGate, calibration: Calibration, nearest: ContractRecord | None) -> GateResult:
    """Nearest OTM strike's probability of touch at least the threshold (calibration's unless fixed)."""
    threshold = calibration.pot_threshold if cfg.threshold is None else cfg.threshold
    origin = "calibration" if cfg.threshold is None else "config"
    if nearest is None:
        return GateResult("pot", False, f"no OTM {cfg.right} strike listed")
    if not math.isfinite(nearest.prob_touch):
        return GateResult("pot", False, f"{nearest.symbol} has no prob_touch")
    text = (
        f"{nearest.symbol} (strike {fmt(nearest.strike)}) prob_touch={fmt(nearest.prob_touch)} "
        f">= {fmt(threshold)} ({origin})"
    )
    if nearest.prob_touch < threshold:
        return GateResult("pot", False, f"below threshold: {text}")
    return GateResult("pot", True, text)


# --- the pre-chain sequence ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class GateContext:
    """What the gates may look at for one evaluation."""

    ts: int
    values: Mapping[str, float]
    regime: str | None = None
    index: bool = False
    calendar: MarketCalendar | None = None
    is_halted: IsHalted | None = None
    learner: LearnerProbability | None = None
    learner_gate: bool = True
    """False: the session's learner policy decides after the gates (the engine's learner step)."""


def context_gates(gates: Gates, playbook: str, ctx: GateContext) -> tuple[list[GateResult], float | None]:
    """Run every configured gate that needs no chain, in order, stopping at the first failure.

    Returns the results so far (the last one failed if any did) and the learner probability when asked.
    """
    results: list[GateResult] = []

    def run(result: GateResult) -> bool:
        results.append(result)
        return result.passed

    window = gates.time_window
    if window is not None and not run(time_window_gate(window, ctx.values, ctx.ts, ctx.calendar)):
        return results, None
    if gates.event_halts and not run(halt_gate(ctx.is_halted, ctx.ts)):
        return results, None
    if gates.regime is not None and not run(regime_gate(gates.regime, ctx.values, ctx.regime)):
        return results, None
    if gates.vol_band is not None and not run(vol_band_gate(gates.vol_band, ctx.values)):
        return results, None
    max_bps = gates.max_spread_bps
    if max_bps is not None and not run(spread_gate(max_bps, ctx.values, index=ctx.index)):
        return results, None
    if not ctx.learner_gate:
        return results, None
    result, p = learner_gate(gates.learner, ctx.learner, playbook, ctx.values)
    run(result)
    return results, p
