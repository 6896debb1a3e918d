"""OMS configuration: broker choice, fee schedule, paper fill model and stop sync (config/broker.yaml).

Every section is a frozen pydantic model whose field descriptions are the documentation; unknown keys
are refused so a typo fails loudly. :func:`load_broker_config` turns any problem into one
:class:`~services.core.settings.ConfigError` line naming the file and field. The audit log's location
comes from the environment (:class:`AuditSettings`: ``OMS_AUDIT_PATH``, ``OMS_AUDIT_ROTATE_MB``,
``OMS_AUDIT_BACKUPS``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from services.core.session_config import TradierTuning
from services.core.settings import CONFIG_DIR, PROJECT_ROOT, ConfigError, load_model

BROKER_YAML = CONFIG_DIR / "broker.yaml"

#: Cash-settled, European-style index option roots (settle at intrinsic from the settlement value).
DEFAULT_CASH_SETTLED_ROOTS = ("SPX", "SPXW", "NDX", "NDXP", "XSP", "RUT", "RUTW")


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class FeeSchedule(_Frozen):
    """Per-contract commission and pass-through regulatory fees (Tradier-like; USD).

    Every fill pays ``commission + orf + occ (+ index fee on index roots)`` per contract; sells also
    pay FINRA TAF per contract and the SEC fee on the principal. The total of one fill is rounded
    to the cent (half up). Expiry settlements pay only ``exercise_fee_per_contract``.
    """

    commission_per_contract: float = Field(default=0.35, ge=0, description="Broker commission per option contract.")
    orf_per_contract: float = Field(
        default=0.02685, ge=0, description="Options Regulatory Fee per contract, buys and sells."
    )
    occ_per_contract: float = Field(default=0.02, ge=0, description="OCC clearing fee per contract, buys and sells.")
    occ_cap_per_order: float = Field(default=55.0, ge=0, description="OCC clearing fee cap per fill.")
    taf_per_contract: float = Field(default=0.00279, ge=0, description="FINRA Trading Activity Fee per contract sold.")
    sec_fee_rate: float = Field(
        default=0.000008, ge=0, description="SEC Section 31 fee as a fraction of the principal sold."
    )
    index_fee_per_contract: float = Field(
        default=0.0,
        ge=0,
        description="Proprietary index option fee per contract on cash-settled roots (SPX, NDX...).",
    )
    exercise_fee_per_contract: float = Field(
        default=0.0,
        ge=0,
        description="Charged per contract when a position is exercised or cash-settled at expiry.",
    )


class TickRule(_Frozen):
    """Minimum price increment of an option root: one below $3.00 and one at or above."""

    below_3: float = Field(gt=0, description="Tick when the premium is below $3.00.")
    at_or_above_3: float = Field(gt=0, description="Tick when the premium is $3.00 or more.")


def _default_ticks() -> dict[str, TickRule]:
    penny = TickRule(below_3=0.01, at_or_above_3=0.01)
    return {"default": TickRule(below_3=0.05, at_or_above_3=0.10), "SPY": penny, "QQQ": penny, "IWM": penny}


class PaperConfig(_Frozen):
    """The paper broker's fill model (see services/oms/brokers/paper.py for the exact rules)."""

    slippage_ticks: int = Field(
        default=0,
        ge=0,
        description="Marketable fills pay this many ticks beyond the touch (buys above the ask).",
    )
    partial_fills: bool = Field(
        default=True,
        description="Limit each fill to the displayed size (ask_size/bid_size); the rest keeps working.",
    )
    stop_on_underlying: bool = Field(
        default=False, description="Also trigger stop legs from the OrderRequest's underlying_stop level."
    )
    latency_ms: float | None = Field(
        default=None,
        ge=0,
        description="Order latency: an order trades only on a quote stamped after it was sent and at least "
        "this many ms later (never the quote in hand). None: fills on arrival against the last quote.",
    )
    intrabar: Literal["pessimistic", "off"] = Field(
        default="pessimistic",
        description="Stops and targets of held contracts also meet a modelled path inside each bar of a "
        "bar replay with synthetic chains (open, adverse extreme, favourable extreme, close; "
        "services/oms/intrabar.py). off: only the quotes of bar ends.",
    )
    duration: Literal["day", "gtc"] = Field(
        default="gtc",
        description="day: every working order expires at the session close; gtc: only expiring ones.",
    )
    cash_settled_roots: tuple[str, ...] = Field(
        default=DEFAULT_CASH_SETTLED_ROOTS,
        description="Option roots that cash-settle at intrinsic at expiry.",
    )
    tick_sizes: dict[str, TickRule] = Field(
        default_factory=_default_ticks, description="Tick rule per option root; 'default' for the rest."
    )

    @field_validator("intrabar", mode="before")
    @classmethod
    def _yaml_off(cls, value: object) -> object:
        return "off" if value is False else value  # YAML reads a bare `off` as false

    @model_validator(mode="after")
    def _has_default_tick(self) -> PaperConfig:
        if "default" not in self.tick_sizes:
            raise ValueError("tick_sizes needs a 'default' entry")
        return self

    def tick_size(self, root: str, price: float) -> float:
        """Minimum increment of ``root`` at premium ``price``."""
        rule = self.tick_sizes.get(root) or self.tick_sizes["default"]
        return rule.below_3 if price < 3.0 else rule.at_or_above_3


class StopSyncConfig(_Frozen):
    """Tightening the stop leg as the underlying moves in the trade's favour (never loosening)."""

    enabled: bool = Field(default=True, description="Turn stop sync on or off.")
    k_atr: float = Field(
        default=1.0, gt=0, description="One step is k x atr_14 of underlying move in favour since entry."
    )
    trail_fraction: float = Field(
        default=0.5,
        ge=0,
        le=1,
        description="From two steps on, lock this fraction of the best open option profit.",
    )


class TradierConfig(TradierTuning):
    """Non-secret Tradier settings: the ``tradier:`` section of config/broker.yaml.

    The timings and retries (:class:`~services.core.session_config.TradierTuning`: request, poll,
    status and reconcile intervals, ``retry``) are SessionConfig's ``broker.tradier`` too, which is how
    an environment variable or a session file overrides them; the composition root
    (:func:`services.app.stages.session_broker_config`) puts the session's values here.
    """

    environment: Literal["sandbox", "live"] = Field(
        default="sandbox", description="sandbox (paper account, default) or live (real money)."
    )
    live_confirm: bool = Field(
        default=False, description="Must be true (or env TRADIER_LIVE_CONFIRM=true) to trade live."
    )
    base_url: str | None = Field(
        default=None, description="Override of the sandbox URL (a local sim); refused for live."
    )
    entry_duration: Literal["day", "gtc"] = Field(default="day", description="Duration of the entry leg.")
    exit_duration: Literal["day", "gtc"] = Field(default="gtc", description="Duration of the exit legs.")


class BrokerConfig(_Frozen):
    """config/broker.yaml: which broker works the orders and how money is counted."""

    broker: Literal["paper", "tradier"] = Field(
        default="paper", description="Broker adapter: paper (the default) or tradier (sandbox unless confirmed live)."
    )
    multiplier: int = Field(default=100, gt=0, description="Contract multiplier of the traded options.")
    fees: FeeSchedule = Field(default_factory=FeeSchedule, description="Commissions and regulatory fees.")
    paper: PaperConfig = Field(default_factory=PaperConfig, description="Paper broker fill model.")
    stop_sync: StopSyncConfig = Field(default_factory=StopSyncConfig, description="Stop tightening rules.")
    tradier: TradierConfig = Field(default_factory=TradierConfig, description="Tradier adapter (non-secret parts).")


def load_broker_config(path: Path | None = None) -> BrokerConfig:
    """Load config/broker.yaml (or ``path``); problems raise one ConfigError line."""
    return load_model(path or BROKER_YAML, BrokerConfig)


class AuditSettings(BaseSettings):
    """Where the JSONL order audit goes (env: OMS_AUDIT_PATH, OMS_AUDIT_ROTATE_MB, OMS_AUDIT_BACKUPS)."""

    model_config = SettingsConfigDict(env_prefix="OMS_AUDIT_", extra="ignore", frozen=True)

    path: Path = Field(
        default=PROJECT_ROOT / "storage" / "oms" / "audit.jsonl",
        description="File the audit log appends to; rotated files get .1, .2 ... suffixes.",
    )
    rotate_mb: float = Field(
        default=50.0,
        gt=0,
        description="Rotate once the file would grow past this many MiB.",
    )
    backups: int = Field(
        default=5,
        ge=1,
        description="How many rotated files to keep (the oldest is deleted).",
    )


def audit_settings() -> AuditSettings:
    """AuditSettings from the environment, or one ConfigError line naming the variable."""
    try:
        return AuditSettings()
    except ValidationError as exc:
        err = exc.errors()[0]
        field = str(err.get("loc", ("?",))[0])
        raise ConfigError(f"environment variable OMS_AUDIT_{field.upper()}: {err.get('msg')}") from None
