"""Risk configuration: the typed, frozen schema of ``config/risk.yaml`` and the calibration intake.

Every limit carries a description, a default and a bound (negative limits are refused), and every
model forbids unknown keys, so a typo in ``risk.yaml`` fails loudly as one :class:`ConfigError` line
instead of silently dropping a guardrail.

Calibration: ``calibration_path`` may name the JSON written by the calibration CLI
(``backtests/calibration.json``: ``{"global": {...}, "playbooks": {...}, "risk_multiplier": x,
"pot_threshold": y}``). Only ``risk_multiplier`` is read here. It is clamped to
``[0, risk_multiplier_max]`` (by default 1.0, so calibration can shrink risk but never grow it past
what ``risk.yaml`` allows) and scales the *sizing caps*:

* ``max_contracts_per_order`` becomes ``max(1, floor(max_contracts_per_order * m))``;
* ``max_premium_per_symbol_usd`` and ``max_premium_total_usd`` become ``cap * m``.

Loss limits, position counts, throttles and time windows are never scaled: they are circuit
breakers, not sizing. A missing ``risk_multiplier`` key means 1.0.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal

from pydantic import ConfigDict, Field

from services.core.settings import CONFIG_DIR, PROJECT_ROOT, ConfigError, PlausibleModel, load_model

Impact = Literal["low", "medium", "high"]
IMPACT_RANK: dict[str, int] = {"low": 0, "medium": 1, "high": 2}


#: Plausible ceilings: a limit above them is a typo (or 1e300), not a risk budget.
MAX_USD: Final = 10_000_000.0
MAX_CONTRACTS: Final = 10_000


class _Strict(PlausibleModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CooldownConfig(_Strict):
    """No entries for a while after a streak of losing round trips."""

    losses: int = Field(
        default=3, ge=1, description="Consecutive losing TradeOutcomes (pnl < 0) that start a cooldown."
    )
    minutes: float = Field(
        default=15.0, ge=0, description="Length of the cooldown, from the losing exit, in minutes."
    )
    scope: Literal["symbol", "global"] = Field(
        default="symbol",
        description="symbol: streaks and cooldowns per underlying; global: one streak for all.",
    )


class EntryWindowConfig(_Strict):
    """No-entry windows at the edges of the session (the market calendar decides open/close)."""

    minutes_after_open: float = Field(
        default=5.0, ge=0, description="No entries this many minutes after the open."
    )
    minutes_before_close: float = Field(
        default=15.0,
        ge=0,
        description="No entries this many minutes before the close (early closes honoured).",
    )


class StaleDataConfig(_Strict):
    """Halt entries when market data stops flowing."""

    max_heartbeat_age_s: float | None = Field(
        default=10.0,
        gt=0,
        description="Max age of the ingest heartbeat (StateStore key dreambot:ingest_heartbeat or "
        "Heartbeat events); null disables the check.",
    )
    heartbeat_source: str | None = Field(
        default=None, description="Only Heartbeat events from this source count; null accepts any source."
    )
    max_market_data_age_s: float | None = Field(
        default=30.0,
        gt=0,
        description="Max age of the newest FeatureVector of the intent's underlying; null disables.",
    )
    max_future_s: float = Field(
        default=5.0,
        ge=0,
        le=3600,
        description="A FeatureVector, Heartbeat or stored heartbeat stamped more than this ahead of the risk "
        "clock is from the future: it never counts as fresh data and never moves the clock (or the day).",
    )


class ThrottleConfig(_Strict):
    """Order-rate throttle."""

    max_orders_per_minute: int = Field(
        default=10, ge=1, description="Approved orders allowed in any rolling 60 s window."
    )


class DuplicateConfig(_Strict):
    """Duplicate-intent guard."""

    window_s: float = Field(
        default=30.0,
        ge=0,
        description="Refuse an intent for the same underlying+playbook+contract within this many "
        "seconds of an approved one (a repeated intent id is always refused).",
    )


class EventHaltConfig(_Strict):
    """Economic-event halts (calendar in config/events.yaml)."""

    path: Path | None = Field(
        default=Path("config/events.yaml"),
        description="Economic calendar YAML, relative to the project root; null disables event halts.",
    )
    min_impact: Impact = Field(
        default="medium", description="Only events of at least this impact halt entries."
    )


class RiskConfig(_Strict):
    """Guardrails of the risk stage (``config/risk.yaml``). Money is USD, times are New York."""

    max_daily_loss_usd: float = Field(
        default=1000.0,
        gt=0,
        le=MAX_USD,
        description="Realized + unrealized loss of the session that engages the kill switch "
        "(reason DailyLossLimit) and flattens everything.",
    )
    daily_loss_resets_next_session: bool = Field(
        default=True,
        description="A kill switch engaged by the daily loss limit releases itself at the next session "
        "(the limit is per day); one engaged manually always waits for a release.",
    )
    max_open_positions: int = Field(default=3, ge=1, le=1000, description="Distinct contracts held or being entered.")
    max_premium_per_symbol_usd: float = Field(
        default=2000.0, gt=0, le=MAX_USD, description="Premium at risk per underlying (positions + working entries)."
    )
    max_premium_total_usd: float = Field(
        default=5000.0, gt=0, le=MAX_USD, description="Premium at risk across all underlyings."
    )
    max_contracts_per_order: int = Field(default=10, ge=1, le=MAX_CONTRACTS, description="Contracts in one order.")
    max_contracts_per_contract: int | None = Field(
        default=10,
        ge=1,
        le=MAX_CONTRACTS * 10,
        description="Contracts held or being entered in one contract, every playbook together (null: no cap).",
    )
    max_contracts_per_underlying: int | None = Field(
        default=30,
        ge=1,
        le=MAX_CONTRACTS * 10,
        description="Contracts held or being entered on one underlying, every contract and playbook together "
        "(null: no cap).",
    )
    sizing_mode: Literal["cap", "reject"] = Field(
        default="cap",
        description="cap: shrink an oversized order to fit the contract and premium caps (refuse only "
        "when not even one contract fits); reject: refuse it.",
    )
    contract_multiplier: int = Field(default=100, ge=1, description="Shares per option contract.")
    mark_feature: str = Field(
        default="mark",
        description="FeatureVector value holding a contract's mark (FeatureVector.symbol = the "
        "contract); used to recompute unrealized PnL.",
    )
    cooldown: CooldownConfig = Field(
        default=CooldownConfig(), description="Pause entries after a loss streak."
    )
    entry_window: EntryWindowConfig = Field(
        default=EntryWindowConfig(), description="No-entry windows near the open and the close."
    )
    stale_data: StaleDataConfig = Field(
        default=StaleDataConfig(), description="Halt entries on a stale heartbeat or market data."
    )
    stale_feed_seconds: float | None = Field(
        default=15.0,
        gt=0,
        le=3600,
        description="In regular hours, an underlying whose next bar is this many seconds overdue (no "
        "FeatureVector for one bar interval plus this) has a stale feed: its entries are refused "
        "(rule stale_feed) until data resumes; exits are unaffected. null disables.",
    )
    throttle: ThrottleConfig = Field(default=ThrottleConfig(), description="Order-rate throttle.")
    duplicate: DuplicateConfig = Field(default=DuplicateConfig(), description="Duplicate-intent guard.")
    event_halts: EventHaltConfig = Field(
        default=EventHaltConfig(), description="Economic-event halt windows."
    )
    calibration_path: Path | None = Field(
        default=None,
        description="Calibration JSON (backtests/calibration.json) whose risk_multiplier scales the "
        "sizing caps; relative to the project root; null means multiplier 1.0.",
    )
    risk_multiplier_max: float = Field(
        default=1.0, gt=0, description="Upper clamp of the calibration's risk_multiplier."
    )


@dataclass(frozen=True, slots=True)
class SizingLimits:
    """Sizing caps after the calibration multiplier (see the module docstring)."""

    max_contracts_per_order: int
    max_premium_per_symbol_usd: float
    max_premium_total_usd: float
    risk_multiplier: float

    @classmethod
    def from_config(cls, config: RiskConfig, risk_multiplier: float = 1.0) -> SizingLimits:
        m = min(max(risk_multiplier, 0.0), config.risk_multiplier_max)
        return cls(
            max_contracts_per_order=max(1, math.floor(config.max_contracts_per_order * m + 1e-9)),
            max_premium_per_symbol_usd=config.max_premium_per_symbol_usd * m,
            max_premium_total_usd=config.max_premium_total_usd * m,
            risk_multiplier=m,
        )


def resolve(path: Path, base_dir: Path = PROJECT_ROOT) -> Path:
    """``path`` itself when absolute, else relative to ``base_dir`` (the project root)."""
    return path if path.is_absolute() else base_dir / path


def load_risk_config(path: Path | None = None) -> RiskConfig:
    """Read ``config/risk.yaml`` (or ``path``); any problem is one ConfigError line."""
    return load_model(path or CONFIG_DIR / "risk.yaml", RiskConfig)


def read_risk_multiplier(path: Path) -> float:
    """``risk_multiplier`` of a calibration JSON file (1.0 when the key is absent)."""
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(
            f"{path}: calibration file not found (run the calibration CLI or unset calibration_path)"
        ) from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{path}: not a readable calibration JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise ConfigError(f"{path}: calibration must be a JSON object")
    return risk_multiplier_of(doc, str(path))


def risk_multiplier_of(doc: Mapping[str, object], shown: str) -> float:
    """``risk_multiplier`` of one calibration JSON object (1.0 when absent or null; ConfigError if invalid)."""
    value = doc.get("risk_multiplier", 1.0)
    if value is None:
        return 1.0
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ConfigError(f"{shown}: risk_multiplier must be a finite number, got {value!r}")
    if value < 0:
        raise ConfigError(f"{shown}: risk_multiplier must be >= 0, got {value}")
    return float(value)


def load_risk_multiplier(config: RiskConfig, base_dir: Path = PROJECT_ROOT) -> float:
    """The calibration multiplier named by ``config`` (1.0 without a calibration file)."""
    if config.calibration_path is None:
        return 1.0
    return read_risk_multiplier(resolve(config.calibration_path, base_dir))
