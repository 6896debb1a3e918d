"""The learner's policy, as signals applies it: bandit arms per context bucket and meta-label models.

The learner *produces* a :class:`LearnerPolicy` (a frozen model file, or a walk-forward retrain
published in :class:`~services.core.events.LearnerUpdate`); signals *applies* it to every
FeatureVector. The two stages meet only here and on the bus, so this module is plain data and
arithmetic (no numpy, no scikit-learn): applying a policy is the same in every process and takes a
few microseconds.

Bandit (per context bucket, among playbooks or abstain)
    A bucket is the tuple of bins of a few context features cut at fixed edges
    (``adx_14=1|minutes_since_open=0``; a missing value has the bin ``na``). Each (playbook, bucket)
    arm holds the wins and losses the policy was trained on; its value is the posterior mean of
    Beta(1 + wins, 1 + losses). The *abstain* arm's value is ``abstain_value``. Among the playbooks
    that would fire on a vector (the candidates) plus abstain, the choice is epsilon-greedy: the arm
    of highest value (ties: the earlier playbook, abstain last) with probability
    ``1 - epsilon + epsilon / K``, each other arm with ``epsilon / K`` (K arms). The draw is a pure
    function of the policy's seed, the symbol and the vector's time, and the chosen arm's
    probability (its *propensity*) is reported with it, so logged decisions can be evaluated
    off-policy (IPS).

Meta-labeling (per playbook, or pooled)
    ``P(the trade pays | the playbook fired, context)``: a playbook with enough trades has its own
    classifier; the others use the pooled one (every playbook's trades, with ``playbook=<name>``
    indicators among its features, so a playbook's own base rate still counts). Each comes from a scikit-learn pipeline
    (mean imputation, standardisation, L2 logistic regression) calibrated with Platt scaling on
    time-ordered folds (:class:`~sklearn.calibration.CalibratedClassifierCV`, sigmoid, ensemble):
    each :class:`MetaMember` is one fold's fitted pipeline and calibrator, exported as numbers, and
    the probability is the members' mean — what scikit-learn's ``predict_proba`` returns.
"""

from __future__ import annotations

import hashlib
import math
from bisect import bisect_right
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final, Literal, Protocol

import msgspec

LearnerMode = Literal["off", "frozen", "walk-forward"]
LEARNER_MODES: Final[tuple[str, ...]] = ("off", "frozen", "walk-forward")
ABSTAIN: Final = "abstain"
#: Regime names the learner's change-point detector reports ("unknown": before its first change point).
REGIMES: Final[tuple[str, ...]] = ("trend", "range", "high_vol", "unknown")
UNKNOWN_REGIME: Final = "unknown"
MISSING_BIN: Final = "na"
POLICY_FORMAT: Final = 1
POOLED: Final = "*"
"""The meta model of every playbook's trades (playbook indicators among its features)."""
PLAYBOOK_FEATURE: Final = "playbook="


class PolicyBucket(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One context dimension: ``feature`` cut at ascending ``edges`` (bin = number of edges <= value)."""

    feature: str
    edges: tuple[float, ...]


class ArmStats(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Evidence of one (playbook, bucket) arm: trades that paid and trades that did not."""

    playbook: str
    bucket: str
    wins: float
    losses: float

    @property
    def mean(self) -> float:
        """Posterior mean of Beta(1 + wins, 1 + losses)."""
        return (1.0 + self.wins) / (2.0 + self.wins + self.losses)


class MetaMember(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One calibrated fold: impute ``fill``, standardise by ``center``/``scale``, logistic score,
    then Platt: ``p = 1 / (1 + exp(a * score + b))``."""

    fill: tuple[float, ...]
    center: tuple[float, ...]
    scale: tuple[float, ...]
    coef: tuple[float, ...]
    intercept: float
    a: float
    b: float

    def probability(self, x: Sequence[float | None]) -> float:
        score = self.intercept
        for i, v in enumerate(x):
            value = self.fill[i] if v is None else v
            score += self.coef[i] * (value - self.center[i]) / self.scale[i]
        t = self.a * score + self.b
        return 1.0 / (1.0 + math.exp(t)) if t > -700 else 1.0


class MetaModel(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A playbook's meta-labeling classifier (the members' mean probability)."""

    playbook: str
    features: tuple[str, ...]
    members: tuple[MetaMember, ...]
    trades: int
    win_rate: float

    def probability(self, values: Mapping[str, float], playbook: str | None = None) -> float:
        """P(profitable); a ``playbook=<name>`` feature (the pooled model's) is 1 for ``playbook``, else 0."""
        x: list[float | None] = []
        for name in self.features:
            if name.startswith(PLAYBOOK_FEATURE):
                x.append(1.0 if name == PLAYBOOK_FEATURE + str(playbook) else 0.0)
                continue
            v = values.get(name)
            x.append(float(v) if v is not None and math.isfinite(v) else None)
        return sum(m.probability(x) for m in self.members) / len(self.members)


class LearnerPolicy(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """What signals applies (module docstring). ``trained_through``: every trade used exited before it."""

    version: int
    trained_through: int
    trades: int
    seed: int
    epsilon: float
    abstain_value: float
    buckets: tuple[PolicyBucket, ...]
    arms: tuple[ArmStats, ...] = ()
    meta: tuple[MetaModel, ...] = ()
    format: int = POLICY_FORMAT


def encode_policy(policy: LearnerPolicy) -> bytes:
    """The policy as JSON (a frozen model file)."""
    return msgspec.json.encode(policy)


def decode_policy(payload: bytes | str, source: str = "learner policy") -> LearnerPolicy:
    """A policy from :func:`encode_policy` output; ValueError (one line naming ``source``) otherwise."""
    try:
        policy = msgspec.json.decode(payload, type=LearnerPolicy)
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        raise ValueError(f"{source}: not a learner policy: {exc}") from None
    if policy.format != POLICY_FORMAT:
        raise ValueError(f"{source}: policy format {policy.format}, this build reads {POLICY_FORMAT}")
    return policy


class Binned(Protocol):
    """A context dimension: a feature cut at ascending edges (PolicyBucket, the learner's BucketSpec)."""

    @property
    def feature(self) -> str: ...

    @property
    def edges(self) -> tuple[float, ...]: ...


def bucket_of(buckets: Sequence[Binned], values: Mapping[str, float]) -> str:
    """The bucket key of ``values``: ``feature=bin`` pairs joined by ``|`` ("all" without buckets)."""
    if not buckets:
        return "all"
    parts = []
    for spec in buckets:
        value = values.get(spec.feature)
        if value is None or not math.isfinite(value):
            parts.append(f"{spec.feature}={MISSING_BIN}")
        else:
            parts.append(f"{spec.feature}={bisect_right(spec.edges, value)}")
    return "|".join(parts)


def _uniforms(seed: int, symbol: str, ts: int) -> tuple[float, float]:
    digest = hashlib.blake2b(f"{seed}|{symbol}|{ts}".encode(), digest_size=16).digest()
    scale = float(1 << 64)
    return int.from_bytes(digest[:8], "big") / scale, int.from_bytes(digest[8:], "big") / scale


@dataclass(frozen=True, slots=True)
class BanditChoice:
    """The bandit's pick on one vector: ``arm`` (a playbook, or ``abstain``) and why."""

    arm: str
    bucket: str
    values: tuple[tuple[str, float], ...]
    greedy: str
    explored: bool
    propensity: float

    def text(self) -> str:
        shown = ", ".join(f"{a} {v:.3f}" for a, v in self.values)
        how = "explored" if self.explored else "greedy"
        return (f"bandit chose {self.arm} in bucket {self.bucket} ({how}, propensity {self.propensity:.4f}; "
                f"values {shown})")


class PolicyIndex:
    """A :class:`LearnerPolicy` with its arms and models indexed for lookups."""

    def __init__(self, policy: LearnerPolicy) -> None:
        self.policy = policy
        self._arms = {(a.playbook, a.bucket): a for a in policy.arms}
        self._meta = {m.playbook: m for m in policy.meta}

    def bucket(self, values: Mapping[str, float]) -> str:
        return bucket_of(self.policy.buckets, values)

    def arm_value(self, playbook: str, bucket: str) -> float:
        arm = self._arms.get((playbook, bucket))
        return 0.5 if arm is None else arm.mean

    def choose(self, candidates: Sequence[str], values: Mapping[str, float], symbol: str, ts: int) -> BanditChoice:
        """Epsilon-greedy over ``candidates`` and abstain (module docstring); deterministic."""
        p = self.policy
        bucket = self.bucket(values)
        arms = [*candidates, ABSTAIN]
        worth = [self.arm_value(c, bucket) for c in candidates] + [p.abstain_value]
        best = max(range(len(arms)), key=lambda i: (worth[i], -i))
        k = len(arms)
        u, v = _uniforms(p.seed, symbol, ts)
        chosen = min(int(v * k), k - 1) if u < p.epsilon else best
        propensity = p.epsilon / k + (1.0 - p.epsilon if chosen == best else 0.0)
        return BanditChoice(arms[chosen], bucket, tuple(zip(arms, worth, strict=True)), arms[best],
                            chosen != best, propensity)

    def meta(self, playbook: str) -> MetaModel | None:
        """The playbook's own classifier, else the pooled one, else None."""
        return self._meta.get(playbook) or self._meta.get(POOLED)
