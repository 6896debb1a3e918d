"""Declarative playbooks: the schema of ``config/playbooks.yaml`` and entry-condition evaluation.

A playbook says *when* to buy a call or a put (``entry`` conditions over named features), *whether
the context allows it* (``gates``), *which contract* (``contract``), *where the exits sit*
(``bracket``) and *how many* (``sizing``). The file is validated once at start-up; every problem
becomes one :class:`~services.core.settings.ConfigError` line naming the playbook and the field::

    config/playbooks.yaml: playbook 'vwap_reversion_calls' entry[1]: unknown feature 'adx_41'
    (did you mean 'adx_14'?)

Schema (every mapping rejects unknown keys)::

    version: 1
    max_chain_age_s: 120            # a chain older than this (vs the features' ts) is not traded
    calibration:                    # nightly calibration output; these values apply until it exists
      path: storage/calibration/latest.json   # relative paths are resolved against the project root
      risk_multiplier: 1.0
      pot_threshold: 0.6
    symbols:                        # the only underlyings a playbook may name
      SPX: {root: SPXW, kind: index, dte: 0, max_dte: 3, tick: {below: 0.01, above: 0.05, threshold: 3},
            risk_per_trade_usd: 1000, max_spread: 2.0}   # optional: replace the playbooks' budget / max_spread
    playbooks:
      - name: vwap_reversion_calls  # [a-z][a-z0-9_]*, at most 32 characters, unique
        description: "..."          # optional
        enabled: true               # optional, default true
        symbols: [SPY, QQQ]
        direction: call             # call | put (long premium only)
        entry:                      # all must hold
          - {feature: close, op: "<", ref: vwap_lower_2}          # feature vs feature
          - {feature: adx_14, op: "<", value: 20}                 # feature vs number
          - {feature: vwap_dist_atr, op: between, value: [-0.25, 0.25]}   # inclusive
        gates:                      # all optional
          time_window: {min_after_open: 15, max_after_open: 360, min_before_close: 30}
          regime: {allowed: [range]}                  # and/or {feature: adx_14, lo: 0, hi: 20}
          vol_band: {feature: atm_iv, lo: 0.05, hi: 0.60}
          max_spread_bps: 5                           # underlying quote spread (n/a for cash indexes)
          event_halts: true                           # consult the injected is_halted(ts)
          pot: {right: call, threshold: null}         # nearest OTM strike prob_touch >= threshold
          learner: {min_probability: 0.5}             # injected learner's probability >= this
        contract:
          dte: null                                   # override the symbol's preferred DTE
          target: {metric: delta, value: 0.30, band: 0.10}   # or metric: prob_touch
          max_spread: 0.50                            # ask - bid, dollars
          max_spread_pct: 0.25                        # (ask - bid) / mid
          min_bid: 0.05
          min_bid_size: 1
          min_ask_size: 1
          min_open_interest: 0
        limit: {at: ask}                              # or {at: mid, offset: 0.02} (capped at the ask)
        bracket: {mode: premium, take_profit_pct: 0.5, stop_loss_pct: 0.3}
        #   or   {mode: atr, take_profit_atr: 1.0, stop_loss_atr: 0.5, atr_feature: atr_14}
        sizing: {risk_per_trade_usd: 200, max_contracts: 5}
        cooldown_minutes: 15
        regimes: [range, unknown]   # optional: only in these learner regimes (--learner frozen|walk-forward)
        entry_ttl_s: 120                              # the entry may fill this long after the signal
        flatten_before_close_minutes: 5               # flat this long before the close (early closes too)
        hold_overnight: false                         # true: no flatten, the bracket stays live

An entry never works past the session's close, whatever its TTL; a signal at or after the flatten time
fires nothing (it would be flattened at once).

:data:`KNOWN_FEATURES` is the one list of feature names a playbook may reference.
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from services.core.feature_names import CHAIN_FEATURES as CHAIN_FEATURES
from services.core.feature_names import KNOWN_FEATURES as KNOWN_FEATURES
from services.core.feature_names import UNDERLYING_FEATURES as UNDERLYING_FEATURES
from services.core.learner_policy import REGIMES
from services.core.settings import CONFIG_DIR, PROJECT_ROOT, ConfigError, load_yaml

OPS: Final[tuple[str, ...]] = ("<", "<=", ">", ">=", "==", "!=", "between")

_COMPARE: Final[dict[str, Callable[[float, float], bool]]] = {
    "<": lambda a, b: a < b,
    "<=": lambda a, b: a <= b,
    ">": lambda a, b: a > b,
    ">=": lambda a, b: a >= b,
    "==": lambda a, b: a == b,
    "!=": lambda a, b: a != b,
}

DEFAULT_PLAYBOOKS_PATH: Final = CONFIG_DIR / "playbooks.yaml"

_NAME = re.compile(r"^[a-z][a-z0-9_]{0,31}$")


def check_feature(name: str) -> str:
    """``name`` if it is a known feature, else ValueError with a did-you-mean hint."""
    if name in KNOWN_FEATURES:
        return name
    close = difflib.get_close_matches(name, sorted(KNOWN_FEATURES), n=1, cutoff=0.6)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    raise ValueError(f"unknown feature {name!r}{hint}")


def fmt(x: float) -> str:
    """A number as short, stable text for reasons (``18.2``, ``5012.35``, ``0.0123``)."""
    if not math.isfinite(x):
        return str(x)
    return format(round(x, 4), ".10g")


# --- entry conditions ---------------------------------------------------------------------------


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


@dataclass(frozen=True, slots=True)
class ConditionResult:
    """Outcome of one entry condition: ``detail`` shows the actual values, e.g. ``adx_14=18.2 < 20``."""

    passed: bool
    detail: str


class Condition(_Model):
    """``feature op value`` or ``feature op ref`` (another feature); ``between`` takes ``[lo, hi]``."""

    feature: str = Field(description="Feature on the left-hand side.")
    op: str = Field(description="One of < <= > >= == != between.")
    value: Any = Field(default=None, description="A number, or [lo, hi] for between (inclusive).")
    ref: str | None = Field(default=None, description="A feature on the right-hand side instead of a number.")

    @model_validator(mode="after")
    def _check(self) -> Condition:
        check_feature(self.feature)
        if self.op not in OPS:
            raise ValueError(f"unknown op {self.op!r} (expected one of {', '.join(OPS)})")
        if self.ref is not None:
            check_feature(self.ref)
            if self.op == "between":
                raise ValueError("op 'between' takes value: [lo, hi], not ref")
            if self.value is not None:
                raise ValueError("give either value or ref, not both")
            return self
        if self.value is None:
            raise ValueError(f"missing field 'value' (or 'ref') for op {self.op!r}")
        if self.op == "between":
            if not (isinstance(self.value, list | tuple) and len(self.value) == 2):
                raise ValueError(f"op 'between' needs value: [lo, hi], got {self.value!r}")
            lo, hi = (_number(v) for v in self.value)
            if lo > hi:
                raise ValueError(f"bad range: lo {fmt(lo)} > hi {fmt(hi)}")
            object.__setattr__(self, "value", (lo, hi))
        else:
            object.__setattr__(self, "value", _number(self.value))
        return self

    def features(self) -> tuple[str, ...]:
        """Feature names this condition reads."""
        return (self.feature,) if self.ref is None else (self.feature, self.ref)

    def evaluate(self, values: Mapping[str, float]) -> ConditionResult:
        """Check against ``values``; a missing feature fails (it is still warming up)."""
        left = values.get(self.feature)
        if left is None:
            return ConditionResult(False, f"{self.feature} missing (warming up)")
        if self.op == "between":
            lo, hi = self.value
            ok = lo <= left <= hi
            return ConditionResult(ok, f"{self.feature}={fmt(left)} between [{fmt(lo)}, {fmt(hi)}]")
        if self.ref is not None:
            right = values.get(self.ref)
            if right is None:
                return ConditionResult(False, f"{self.ref} missing (warming up)")
            ok = _COMPARE[self.op](left, right)
            return ConditionResult(ok, f"{self.feature}={fmt(left)} {self.op} {self.ref}={fmt(right)}")
        ok = _COMPARE[self.op](left, float(self.value))
        return ConditionResult(ok, f"{self.feature}={fmt(left)} {self.op} {fmt(float(self.value))}")


def _number(v: Any) -> float:
    if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
        raise ValueError(f"expected a finite number, got {v!r}")
    return float(v)


# --- gates --------------------------------------------------------------------------------------


class TimeWindowGate(_Model):
    """New York session window: minutes since the open and before the close (inclusive bounds)."""

    min_after_open: float = Field(default=0.0, ge=0, description="Earliest entry, minutes after the open.")
    max_after_open: float | None = Field(default=None, ge=0, description="Latest entry, minutes after the open.")
    min_before_close: float = Field(default=0.0, ge=0, description="No entry later than this before the close.")

    @model_validator(mode="after")
    def _check(self) -> TimeWindowGate:
        if self.max_after_open is not None and self.min_after_open > self.max_after_open:
            raise ValueError(
                f"bad range: min_after_open {fmt(self.min_after_open)} > max_after_open {fmt(self.max_after_open)}"
            )
        return self


class RegimeGate(_Model):
    """A named regime (from RegimeChange events) and/or a feature band (e.g. adx_14 in [0, 20])."""

    allowed: tuple[str, ...] = Field(default=(), description="Regime names that allow entries (empty: any).")
    feature: str | None = Field(default=None, description="Feature whose value must lie in [lo, hi].")
    lo: float | None = Field(default=None, description="Lower bound of the feature band (none: unbounded).")
    hi: float | None = Field(default=None, description="Upper bound of the feature band (none: unbounded).")

    @model_validator(mode="after")
    def _check(self) -> RegimeGate:
        if self.feature is not None:
            check_feature(self.feature)
            if self.lo is None and self.hi is None:
                raise ValueError("regime feature band needs lo and/or hi")
        elif self.lo is not None or self.hi is not None:
            raise ValueError("regime lo/hi need a feature")
        if not self.allowed and self.feature is None:
            raise ValueError("regime gate needs allowed regimes and/or a feature band")
        if self.lo is not None and self.hi is not None and self.lo > self.hi:
            raise ValueError(f"bad range: lo {fmt(self.lo)} > hi {fmt(self.hi)}")
        return self


class VolBandGate(_Model):
    """A volatility feature (rv_* or atm_iv) must lie in [lo, hi]."""

    feature: str = Field(default="atm_iv", description="Volatility feature, e.g. atm_iv or rv_15.")
    lo: float = Field(ge=0, description="Lowest volatility allowed.")
    hi: float = Field(gt=0, description="Highest volatility allowed.")

    @model_validator(mode="after")
    def _check(self) -> VolBandGate:
        check_feature(self.feature)
        if self.lo > self.hi:
            raise ValueError(f"bad range: lo {fmt(self.lo)} > hi {fmt(self.hi)}")
        return self


class PotGate(_Model):
    """The nearest OTM strike of ``right`` must have prob_touch >= threshold (calibration's by default)."""

    right: Literal["call", "put"] = Field(description="Side whose nearest OTM strike is examined.")
    threshold: float | None = Field(
        default=None, ge=0, le=1, description="Fixed threshold; none uses the calibration's pot_threshold."
    )


class LearnerGate(_Model):
    """The injected learner's probability for this playbook must be at least ``min_probability``."""

    min_probability: float = Field(default=0.5, ge=0, le=1, description="0 disables the gate.")


class Gates(_Model):
    """Contextual gates; each is optional and all configured ones must pass."""

    time_window: TimeWindowGate | None = None
    regime: RegimeGate | None = None
    vol_band: VolBandGate | None = None
    max_spread_bps: float | None = Field(default=None, gt=0, description="Max underlying quote spread in bps.")
    event_halts: bool = Field(default=True, description="Refuse entries while the injected is_halted(ts) is true.")
    pot: PotGate | None = None
    learner: LearnerGate = Field(default_factory=LearnerGate)


# --- contract selection, limit, bracket, sizing -------------------------------------------------


class Target(_Model):
    """Contract target: |delta| (or prob_touch) closest to ``value`` within ``value ± band``."""

    metric: Literal["delta", "prob_touch"] = "delta"
    value: float = Field(default=0.30, gt=0, lt=1)
    band: float = Field(default=0.10, gt=0, lt=1)

    @property
    def lo(self) -> float:
        return self.value - self.band

    @property
    def hi(self) -> float:
        return self.value + self.band


class ContractRules(_Model):
    """Which contract: expiry preference, target and liquidity filters."""

    dte: int | None = Field(default=None, ge=0, le=30, description="Override of the symbol's preferred DTE.")
    target: Target = Field(default_factory=Target)
    max_spread: float = Field(default=0.50, gt=0, description="Max ask - bid in dollars.")
    max_spread_pct: float = Field(default=0.25, gt=0, description="Max (ask - bid) / mid.")
    min_bid: float = Field(default=0.05, ge=0, description="Lowest acceptable bid (no zero-bid contracts).")
    min_bid_size: float = Field(default=1.0, ge=0)
    min_ask_size: float = Field(default=1.0, ge=0)
    min_open_interest: float = Field(default=0.0, ge=0)


class LimitRule(_Model):
    """Entry limit price: the ask, or mid + offset (never above the ask)."""

    at: Literal["ask", "mid"] = "ask"
    offset: float = Field(default=0.0, ge=0, description="Dollars added to the mid when at: mid.")


class BracketRules(_Model):
    """Take-profit and stop in premium percent, or in underlying ATRs converted through delta."""

    mode: Literal["premium", "atr"]
    take_profit_pct: float | None = Field(default=None, gt=0, description="premium: TP = entry * (1 + pct).")
    stop_loss_pct: float | None = Field(default=None, gt=0, lt=1, description="premium: SL = entry * (1 - pct).")
    take_profit_atr: float | None = Field(default=None, gt=0, description="atr: TP = entry + |delta| * k * atr.")
    stop_loss_atr: float | None = Field(default=None, gt=0, description="atr: SL = entry - |delta| * k * atr.")
    atr_feature: str = Field(default="atr_14", description="Feature holding the underlying ATR (points).")

    @model_validator(mode="after")
    def _check(self) -> BracketRules:
        check_feature(self.atr_feature)
        if self.mode == "premium":
            need = ("take_profit_pct", "stop_loss_pct")
            extra = ("take_profit_atr", "stop_loss_atr")
        else:
            need = ("take_profit_atr", "stop_loss_atr")
            extra = ("take_profit_pct", "stop_loss_pct")
        for name in need:
            if getattr(self, name) is None:
                raise ValueError(f"missing field {name!r} for mode {self.mode!r}")
        for name in extra:
            if getattr(self, name) is not None:
                raise ValueError(f"field {name!r} does not apply to mode {self.mode!r}")
        return self


class SizingRules(_Model):
    """Contracts = floor(risk_per_trade_usd * risk_multiplier / per-contract risk), capped."""

    risk_per_trade_usd: float = Field(gt=0)
    max_contracts: int = Field(ge=1)


class Playbook(_Model):
    """One declarative entry rule for long calls or puts."""

    name: str
    description: str = ""
    enabled: bool = True
    symbols: tuple[str, ...] = Field(min_length=1)
    direction: Literal["call", "put"]
    entry: tuple[Condition, ...] = Field(min_length=1)
    gates: Gates = Field(default_factory=Gates)
    contract: ContractRules = Field(default_factory=ContractRules)
    limit: LimitRule = Field(default_factory=LimitRule)
    bracket: BracketRules
    sizing: SizingRules
    cooldown_minutes: float = Field(default=15.0, gt=0)
    entry_ttl_s: float = Field(
        default=120.0, gt=0, description="The entry may fill at most this long after its signal (and never "
        "after the session's close); then the OMS cancels it.")
    flatten_before_close_minutes: float = Field(
        default=5.0, ge=0, le=390, description="The bracket is closed at market and its orders canceled this "
        "many minutes before the session's close (13:00 on early closes).")
    hold_overnight: bool = Field(
        default=False, description="Keep positions and their exit orders past the close (no flatten).")
    regimes: tuple[str, ...] = Field(
        default=(), description="With a learner (--learner frozen|walk-forward): trade only while the change-point "
        "detector's regime of the underlying is one of these (trend, range, high_vol; unknown: before its first "
        "change point). Empty: every regime. With --learner off no regime is known and this is not checked.")

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not _NAME.match(v):
            raise ValueError(f"name {v!r} must match [a-z][a-z0-9_]* and be at most 32 characters")
        return v

    @field_validator("regimes")
    @classmethod
    def _regimes(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        unknown = [r for r in v if r not in REGIMES]
        if unknown:
            raise ValueError(f"unknown regime(s) {', '.join(unknown)} (the detector reports {', '.join(REGIMES)})")
        return v

    @property
    def right(self) -> Literal["C", "P"]:
        return "C" if self.direction == "call" else "P"


# --- symbols, calibration, file -----------------------------------------------------------------


class TickRule(_Model):
    """Minimum price increment: ``below`` under ``threshold`` dollars, ``above`` at or over it."""

    below: float = Field(default=0.01, gt=0)
    above: float = Field(default=0.05, gt=0)
    threshold: float = Field(default=3.0, gt=0)

    def tick_for(self, price: float) -> float:
        return self.below if price < self.threshold else self.above


class SymbolConfig(_Model):
    """Per-underlying trading terms."""

    root: str = Field(min_length=1, max_length=6, description="OCC root traded (SPXW for SPX dailies).")
    kind: Literal["index", "etf"] = Field(description="Cash indexes have no underlying quote spread.")
    dte: int = Field(default=0, ge=0, le=30, description="Preferred days (sessions) to expiry: 0DTE, 1DTE, ...")
    max_dte: int = Field(default=3, ge=0, le=30, description="Furthest fallback expiry when the preferred has none.")
    tick: TickRule = Field(default_factory=TickRule)
    risk_per_trade_usd: float | None = Field(
        default=None, gt=0, description="Risk budget per trade on this underlying, replacing every playbook's "
        "sizing.risk_per_trade_usd here (an index contract risks 10-40x an ETF's); none: the playbook's.")
    max_spread: float | None = Field(
        default=None, gt=0, description="Widest ask - bid in dollars on this underlying, replacing every "
        "playbook's contract.max_spread here (index premiums are dollars wide); none: the playbook's.")

    def sizing_for(self, pb: Playbook) -> SizingRules:
        """The playbook's sizing on this underlying (its budget replaced by the symbol's, when set)."""
        if self.risk_per_trade_usd is None:
            return pb.sizing
        return pb.sizing.model_copy(update={"risk_per_trade_usd": self.risk_per_trade_usd})

    def contract_for(self, pb: Playbook) -> ContractRules:
        """The playbook's contract rules on this underlying (the symbol's max_spread, when set)."""
        if self.max_spread is None:
            return pb.contract
        return pb.contract.model_copy(update={"max_spread": self.max_spread})

    @model_validator(mode="after")
    def _check(self) -> SymbolConfig:
        if self.dte > self.max_dte:
            raise ValueError(f"bad range: dte {self.dte} > max_dte {self.max_dte}")
        return self


class CalibrationConfig(_Model):
    """Where the nightly calibration lands and what applies until it does."""

    path: Path | None = Field(default=None, description="Calibration JSON; relative to the project root.")
    risk_multiplier: float = Field(default=1.0, ge=0, le=5)
    pot_threshold: float = Field(default=0.6, ge=0, le=1)


class PlaybooksConfig(_Model):
    """The whole ``config/playbooks.yaml``."""

    version: Literal[1] = 1
    max_chain_age_s: float = Field(default=120.0, gt=0)
    calibration: CalibrationConfig = Field(default_factory=CalibrationConfig)
    symbols: dict[str, SymbolConfig] = Field(min_length=1)
    playbooks: tuple[Playbook, ...] = Field(min_length=1)

    def for_symbol(self, symbol: str) -> tuple[Playbook, ...]:
        """Enabled playbooks trading ``symbol``, in file order."""
        return tuple(p for p in self.playbooks if p.enabled and symbol in p.symbols)


# --- loading ------------------------------------------------------------------------------------


def display_path(path: Path) -> str:
    """``path`` relative to the project root when inside it (``config/playbooks.yaml``)."""
    try:
        return str(path.resolve().relative_to(PROJECT_ROOT))
    except ValueError:
        return str(path)


def load_playbooks(path: Path = DEFAULT_PLAYBOOKS_PATH) -> PlaybooksConfig:
    """Load and validate a playbooks file, or raise one ConfigError line."""
    return parse_playbooks(load_yaml(path), display_path(path))


def parse_playbooks(raw: Any, source: str) -> PlaybooksConfig:
    """Validate already-parsed YAML; ``source`` names it in the error line."""
    try:
        config = PlaybooksConfig.model_validate(raw if raw is not None else {})
    except ValidationError as exc:
        errors = _real_errors(exc)
        first = errors[0]
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        where, msg = _describe(tuple(first.get("loc", ())), first, raw)
        raise ConfigError(f"{source}: {where}: {msg}{more}") from None
    problems = _cross_check(config)
    if problems:
        where, msg = problems[0]
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise ConfigError(f"{source}: {where}: {msg}{more}")
    return config


def _cross_check(config: PlaybooksConfig) -> list[tuple[str, str]]:
    problems: list[tuple[str, str]] = []
    known = sorted(config.symbols)
    seen: set[str] = set()
    for pb in config.playbooks:
        if pb.name in seen:
            problems.append((f"playbook {pb.name!r} name", f"duplicate playbook name {pb.name!r}"))
        seen.add(pb.name)
        for i, sym in enumerate(pb.symbols):
            if sym not in config.symbols:
                close = difflib.get_close_matches(sym, known, n=1, cutoff=0.5)
                hint = f" (did you mean {close[0]!r}?)" if close else f" (known: {', '.join(known)})"
                problems.append((f"playbook {pb.name!r} symbols[{i}]", f"unknown symbol {sym!r}{hint}"))
    return problems


def _real_errors(exc: ValidationError) -> list[Any]:
    # A tuple whose only item failed also reports itself as too short; that echo is noise.
    errors = exc.errors()
    locs = [tuple(e.get("loc", ())) for e in errors]

    def echo(e: Any) -> bool:
        loc = tuple(e.get("loc", ()))
        return e.get("type") == "too_short" and any(len(o) > len(loc) and o[: len(loc)] == loc for o in locs)

    return [e for e in errors if not echo(e)] or errors


def _describe(loc: tuple[Any, ...], err: Any, raw: Any) -> tuple[str, str]:
    msg = str(err.get("msg", "invalid"))
    kind = err.get("type", "")
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, ") :]
    if kind == "missing" and loc:
        loc, msg = loc[:-1], f"missing field {loc[-1]!r}"
    elif kind == "extra_forbidden" and loc:
        loc, msg = loc[:-1], f"unknown field {loc[-1]!r}"
    elif kind == "too_short":
        ctx = err.get("ctx", {})
        msg = f"needs at least {ctx.get('min_length', 1)} item(s), got {ctx.get('actual_length', 0)}"
    elif kind not in ("value_error", "assertion_error"):
        got = err.get("input")
        if isinstance(got, str | int | float | bool) or got is None:
            msg = f"{msg} (got {got!r})"
    return _where(loc, raw), msg


def _where(loc: tuple[Any, ...], raw: Any) -> str:
    head = ""
    rest = loc
    if len(loc) >= 2 and loc[0] == "playbooks" and isinstance(loc[1], int):
        name = None
        try:
            name = raw["playbooks"][loc[1]].get("name")
        except (KeyError, IndexError, TypeError, AttributeError):
            name = None
        head = f"playbook {name!r}" if isinstance(name, str) else f"playbooks[{loc[1]}]"
        rest = loc[2:]
    elif len(loc) >= 2 and loc[0] == "symbols":
        head, rest = f"symbol {loc[1]!r}", loc[2:]
    path = ""
    for part in rest:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    return " ".join(p for p in (head, path) if p) or "(root)"
