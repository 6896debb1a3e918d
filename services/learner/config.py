"""Learner configuration: the typed, frozen schema of ``config/learner.yaml``.

Three models close the loop from trade outcomes (see :mod:`services.learner.engine`):

* ``meta_label``: one online logistic regression per playbook over the context ``features``;
* ``bandit``: Beta posteriors per (playbook, context bucket), buckets cut by fixed ``edges``;
* ``changepoint``: Bayesian online change-point detection over 1-minute log returns of ``close``.

``combine`` says how the meta-label probability and the bucket's evidence make the gate
probability. Every mapping forbids unknown keys and every feature name is checked against the
features a FeatureVector or a trade's context can carry, so a typo is one :class:`ConfigError` line
(``config/learner.yaml: meta_label.features.2: unknown feature 'adx_41' (did you mean 'adx_14'?)``).
"""

from __future__ import annotations

import difflib
from itertools import pairwise
from pathlib import Path
from typing import Final, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from services.core.feature_names import KNOWN_FEATURES
from services.core.settings import CONFIG_DIR, load_model

CONTEXT_FEATURES: Final[frozenset[str]] = frozenset(
    {
        "underlying_price",
        "contract_bid",
        "contract_ask",
        "contract_strike",
        "contract_delta",
        "contract_iv",
        "contract_prob_touch",
        "pot_nearest_otm",
    }
)
"""Extra values a SignalIntent's ``features`` (and so a TradeOutcome's ``context``) carries."""

LEARNABLE_FEATURES: Final[frozenset[str]] = KNOWN_FEATURES | CONTEXT_FEATURES
"""Names a learner feature may use. ``learner_probability`` is deliberately absent: the learner
never learns from its own earlier output."""

DEFAULT_LEARNER_PATH: Final = CONFIG_DIR / "learner.yaml"


def check_feature(name: str) -> str:
    """``name`` if the learner can see it, else a ValueError with a did-you-mean hint."""
    if name in LEARNABLE_FEATURES:
        return name
    close = difflib.get_close_matches(name, sorted(LEARNABLE_FEATURES), n=1, cutoff=0.6)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    raise ValueError(f"unknown feature {name!r}{hint}")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class BucketSpec(_Strict):
    """One context dimension of the bandit: a feature cut at ascending ``edges``.

    A value ``v`` falls in bin ``i`` = number of edges <= ``v`` (so ``len(edges) + 1`` bins); a
    missing feature has its own bin ``na``.
    """

    feature: str = Field(description="Feature name (FeatureVector value or trade context key).")
    edges: tuple[float, ...] = Field(min_length=1, description="Strictly ascending cut points.")

    @field_validator("feature")
    @classmethod
    def _known(cls, v: str) -> str:
        return check_feature(v)

    @field_validator("edges")
    @classmethod
    def _ascending(cls, v: tuple[float, ...]) -> tuple[float, ...]:
        if any(b <= a for a, b in pairwise(v)):
            raise ValueError(f"edges must be strictly ascending, got {list(v)}")
        return v


class BanditConfig(_Strict):
    """Beta-Bernoulli bandit over (playbook, context bucket)."""

    buckets: tuple[BucketSpec, ...] = Field(
        default=(
            BucketSpec(feature="adx_14", edges=(20.0, 30.0)),
            BucketSpec(feature="minutes_since_open", edges=(60.0, 240.0)),
        ),
        description="Context dimensions; the bucket is the tuple of their bins. Empty: one bucket.",
    )
    reward: Literal["win_loss", "pnl"] = Field(
        default="win_loss",
        description="win_loss: reward 1 for pnl > 0 else 0 (the posterior is Beta(1 + wins, 1 + others)); "
        "pnl: reward clip(0.5 + pnl / (2 * pnl_scale_usd), 0, 1), a fractional Bernoulli update.",
    )
    pnl_scale_usd: float = Field(default=200.0, gt=0, description="PnL that maps to reward 1 (pnl mode).")
    discount: float = Field(
        default=1.0,
        gt=0,
        le=1,
        description="Evidence kept per update of an arm (1 keeps everything; 0.99 forgets old trades "
        "with a half-life of about 69 updates).",
    )

    @field_validator("buckets")
    @classmethod
    def _distinct(cls, v: tuple[BucketSpec, ...]) -> tuple[BucketSpec, ...]:
        names = [b.feature for b in v]
        if len(set(names)) != len(names):
            raise ValueError(f"bucket features must be distinct, got {names}")
        return v


class MetaLabelConfig(_Strict):
    """Per-playbook logistic regression: P(trade profitable | primary signal fired, context)."""

    features: tuple[str, ...] = Field(
        default=(
            "adx_14",
            "plus_di_14",
            "minus_di_14",
            "rv_15",
            "vwap_dist_atr",
            "minutes_since_open",
            "atm_iv",
            "spread_bps",
        ),
        min_length=1,
        description="Context features (standardized; a missing one counts as its running mean).",
    )
    l2: float = Field(default=0.02, ge=0, description="L2 penalty on the weights that stays with a long history.")
    prior_precision: float = Field(
        default=10.0,
        ge=0,
        description="Gaussian prior on the weights worth this many outcomes (adds prior_precision / n "
        "to the L2 penalty): a short history gives a cautious model.",
    )
    intercept_prior_precision: float = Field(
        default=2.0,
        ge=0,
        description="Prior on the intercept (towards a 50% win rate) worth this many outcomes.",
    )
    learning_rate: float = Field(
        default=0.05, gt=0, le=1, description="Online SGD step size at the start (see learning_rate_halving)."
    )
    learning_rate_halving: float = Field(
        default=300.0,
        gt=0,
        description="The step is learning_rate / sqrt(1 + n / learning_rate_halving) after n outcomes "
        "(halved after 3x this many): early outcomes move the model, later ones refine it.",
    )
    calibration_learning_rate: float = Field(
        default=0.02, ge=0, le=1, description="Online step of the Platt calibrator (0 freezes it)."
    )
    calibration_l2: float = Field(
        default=0.01, ge=0, description="Pull of the Platt slope/offset towards the identity (1, 0)."
    )
    calibration_folds: int = Field(
        default=4, ge=2, le=20, description="Forward-chaining folds that give train() out-of-sample scores."
    )
    min_calibration_samples: int = Field(
        default=30, ge=2, description="Out-of-sample scores needed before train() fits the calibrator."
    )
    clip_z: float = Field(default=5.0, gt=0, description="Standardized features are clipped to +-clip_z.")

    @field_validator("features")
    @classmethod
    def _known(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        for name in v:
            check_feature(name)
        if len(set(v)) != len(v):
            raise ValueError(f"features must be distinct, got {list(v)}")
        return v


class ChangePointConfig(_Strict):
    """Bayesian online change-point detection (Adams & MacKay 2007) on 1-minute log returns."""

    expected_run: float = Field(
        default=250.0, gt=1, description="Mean segment length in returns; the hazard is 1 / expected_run."
    )
    max_run: int = Field(
        default=300, ge=10, description="Run lengths kept (longer runs share one bucket): O(max_run) per bar."
    )
    warmup: int = Field(default=20, ge=2, description="Returns used to set the prior's variance scale.")
    min_drop: int = Field(
        default=10,
        ge=2,
        description="A change is reported when the MAP run length falls by at least this much and "
        "the new segment starts at least this many returns after the last reported one.",
    )
    kappa0: float = Field(default=1.0, gt=0, description="Prior strength of a new segment's mean (returns).")
    alpha0: float = Field(default=1.0, gt=0, description="Prior shape of a new segment's precision.")
    baseline_halflife: float = Field(
        default=390.0, gt=1, description="Half-life (returns) of the baseline variance that scales the prior."
    )
    high_vol_ratio: float = Field(
        default=2.0, gt=1, description="Segment variance / baseline variance naming the regime high_vol."
    )
    trend_t: float = Field(
        default=2.0, gt=0, description="|segment mean| / its standard error naming the regime trend."
    )
    confirm_after: int = Field(
        default=10,
        ge=2,
        description="A new segment is named again once it holds this many returns (a name from 2-3 "
        "returns is a guess); a different name is reported as a further RegimeChange.",
    )
    max_gap_s: float = Field(
        default=300.0, gt=0, description="A longer gap between vectors (overnight, halts) computes no return."
    )


class CombineConfig(_Strict):
    """How the gate probability is formed (see services/learner/engine.py)."""

    prior_strength: float = Field(
        default=20.0,
        gt=0,
        description="Pseudo-trades the meta-label probability is worth against the bucket's evidence.",
    )
    mode: Literal["mean", "thompson"] = Field(
        default="thompson",
        description="thompson: the gate gets a seeded draw from the posterior, so it passes with "
        "probability P(win rate >= threshold) and keeps learning about playbooks just under it; "
        "mean: the posterior mean (steadier, but a gate that closes sees no further outcomes and "
        "stays closed).",
    )


class PolicyConfig(_Strict):
    """The policy signals applies (services/core/learner_policy.py) and how walk-forward retrains it."""

    epsilon: float = Field(
        default=0.05, ge=0, le=1,
        description="Exploration: the bandit picks uniformly among the candidates and abstain with this "
        "probability (the chosen arm's propensity is logged with the intent).",
    )
    abstain_value: float = Field(
        default=0.4, ge=0, le=1,
        description="Value of the abstain arm: a playbook whose bucket's posterior win rate is below it is not traded.",
    )
    min_meta_trades: int = Field(
        default=30, ge=4, description="Trades a playbook needs before it gets a meta-labeling classifier."
    )
    meta_c: float = Field(default=1.0, gt=0, description="Inverse L2 strength of the logistic regression.")
    calibration_folds: int = Field(
        default=3, ge=2, le=10, description="Time-ordered folds of the sigmoid (Platt) calibration."
    )
    retrain_every_sessions: int = Field(
        default=1, ge=1, description="Walk-forward: retrain at the first vector of every n-th new session."
    )
    min_retrain_trades: int = Field(
        default=10, ge=1, description="Walk-forward: no policy before this many closed trades."
    )


class LearnerConfig(_Strict):
    """The learner stage (``config/learner.yaml``)."""

    version: Literal[1] = 1
    seed: int = Field(default=7, ge=0, description="Seed of every random draw (Thompson sampling).")
    meta_label: MetaLabelConfig = Field(default=MetaLabelConfig(), description="Meta-labeling classifier.")
    bandit: BanditConfig = Field(default=BanditConfig(), description="Contextual Beta bandit.")
    changepoint: ChangePointConfig = Field(default=ChangePointConfig(), description="Change-point detector.")
    combine: CombineConfig = Field(default=CombineConfig(), description="Gate probability.")
    policy: PolicyConfig = Field(default=PolicyConfig(), description="The policy signals applies; walk-forward.")
    dedupe_window: int = Field(default=4096, ge=1, description="Recent outcome ids remembered to drop redeliveries.")

    @model_validator(mode="after")
    def _min_drop_fits(self) -> LearnerConfig:
        if self.changepoint.min_drop >= self.changepoint.max_run:
            raise ValueError("changepoint.min_drop must be smaller than changepoint.max_run")
        return self


def load_learner_config(path: Path | None = None) -> LearnerConfig:
    """Read ``config/learner.yaml`` (or ``path``); any problem is one ConfigError line."""
    return load_model(path or DEFAULT_LEARNER_PATH, LearnerConfig)
