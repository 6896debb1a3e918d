"""Contextual Beta-Bernoulli bandit over playbooks (Thompson sampling).

Each arm is a (playbook, context bucket) pair with a Beta(alpha, beta) posterior of the probability
that the playbook's trade in that context wins. The bucket is the tuple of bins of a few context
features cut at fixed edges (``BucketSpec``), e.g. ``adx_14=2|minutes_since_open=0``; a missing
feature has the bin ``na``. Starting from the uniform Beta(1, 1), a reward ``r`` in [0, 1] adds
``r`` to alpha and ``1 - r`` to beta, so with win/loss rewards the posterior is
Beta(1 + wins, 1 + losses). A ``discount`` below 1 first shrinks the arm's evidence towards the
prior (alpha - 1 and beta - 1 multiplied by it) so old trades fade.

Random draws (Thompson sampling) are deterministic: each draw seeds its own generator from the
bandit's seed, the arm, the arm's evidence and a caller's ``salt``, so a draw depends only on the
state and the arguments, never on how many draws came before. The bandit reads no clock and does
no I/O.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from services.core.learner_policy import bucket_of
from services.learner.config import BucketSpec


def stable_hash(text: str) -> int:
    """A 32-bit hash of ``text`` that is the same in every process (``hash()`` is salted)."""
    return zlib.crc32(text.encode("utf-8"))


def bucket_key(specs: Sequence[BucketSpec], context: Mapping[str, float]) -> str:
    """The bucket of ``context``: ``feature=bin`` pairs joined by ``|`` ("all" without specs).

    The same function signals applies to a policy, so the learner and signals bin alike.
    """
    return bucket_of(specs, context)


@dataclass(slots=True)
class Arm:
    """Beta posterior of one (playbook, bucket) pair."""

    alpha: float = 1.0
    beta: float = 1.0

    @property
    def mean(self) -> float:
        return self.alpha / (self.alpha + self.beta)

    @property
    def evidence(self) -> float:
        """Pseudo-trades seen (alpha + beta - 2)."""
        return self.alpha + self.beta - 2.0


class BetaBandit:
    """Thompson-sampling bandit with one Beta posterior per (playbook, context bucket)."""

    def __init__(self, buckets: Sequence[BucketSpec] = (), *, discount: float = 1.0, seed: int = 0) -> None:
        if not 0.0 < discount <= 1.0:
            raise ValueError(f"discount must be in (0, 1], got {discount}")
        self.buckets = tuple(buckets)
        self.discount = discount
        self.seed = seed
        self._arms: dict[tuple[str, str], Arm] = {}

    # --- posterior ------------------------------------------------------------------------------

    def bucket(self, context: Mapping[str, float]) -> str:
        """The bucket key of ``context``."""
        return bucket_key(self.buckets, context)

    def arm(self, playbook: str, context: Mapping[str, float]) -> Arm:
        """The posterior of ``playbook`` in the bucket of ``context`` (a copy; Beta(1, 1) if unseen)."""
        found = self._arms.get((playbook, self.bucket(context)))
        return Arm(found.alpha, found.beta) if found is not None else Arm()

    def posterior(self, playbook: str, context: Mapping[str, float]) -> tuple[float, float]:
        """(alpha, beta) of ``playbook`` in the bucket of ``context``."""
        a = self.arm(playbook, context)
        return a.alpha, a.beta

    def mean(self, playbook: str, context: Mapping[str, float]) -> float:
        """Posterior mean probability that the playbook's trade in this context wins."""
        return self.arm(playbook, context).mean

    def update(self, playbook: str, context: Mapping[str, float], reward: float) -> Arm:
        """Add one trade with ``reward`` in [0, 1] (1 = win) to its arm; returns the new posterior."""
        if not (math.isfinite(reward) and 0.0 <= reward <= 1.0):
            raise ValueError(f"reward must be in [0, 1], got {reward}")
        key = (playbook, self.bucket(context))
        arm = self._arms.setdefault(key, Arm())
        g = self.discount
        arm.alpha = 1.0 + g * (arm.alpha - 1.0) + reward
        arm.beta = 1.0 + g * (arm.beta - 1.0) + (1.0 - reward)
        return Arm(arm.alpha, arm.beta)

    # --- Thompson sampling ----------------------------------------------------------------------

    def rng(self, playbook: str, bucket: str, evidence: float, salt: int = 0) -> np.random.Generator:
        """The generator of one draw: a function of the seed, the arm, its evidence and ``salt``."""
        words = [self.seed, stable_hash(playbook), stable_hash(bucket), round(evidence * 1000), salt & 0xFFFFFFFF]
        return np.random.default_rng(np.random.SeedSequence(words))

    def sample(self, playbook: str, context: Mapping[str, float], salt: int = 0) -> float:
        """One Thompson draw from the arm's posterior (same state + arguments -> same draw)."""
        a = self.arm(playbook, context)
        return float(self.rng(playbook, self.bucket(context), a.evidence, salt).beta(a.alpha, a.beta))

    def choose(self, playbooks: Sequence[str], context: Mapping[str, float], salt: int = 0) -> str:
        """Thompson sampling: the playbook whose posterior draw is highest (ties: first listed)."""
        if not playbooks:
            raise ValueError("choose needs at least one playbook")
        draws = [self.sample(p, context, salt) for p in playbooks]
        return playbooks[int(np.argmax(draws))]

    # --- state ----------------------------------------------------------------------------------

    def arms(self) -> dict[tuple[str, str], Arm]:
        """Every arm seen so far (copies), sorted by playbook and bucket."""
        return {k: Arm(v.alpha, v.beta) for k, v in sorted(self._arms.items())}

    def reset(self) -> None:
        """Forget every trade."""
        self._arms.clear()

    def state(self) -> dict[str, Any]:
        """JSON-serialisable state (bucket specs included, so a mismatch can be refused on load)."""
        return {
            "buckets": [{"feature": b.feature, "edges": list(b.edges)} for b in self.buckets],
            "discount": self.discount,
            "seed": self.seed,
            "arms": [[p, b, a.alpha, a.beta] for (p, b), a in sorted(self._arms.items())],
        }

    def load_state(self, doc: Mapping[str, Any]) -> None:
        """Restore arms saved by :meth:`state`; refuses a state cut with different buckets."""
        saved = [(b["feature"], tuple(float(e) for e in b["edges"])) for b in doc.get("buckets", [])]
        mine = [(b.feature, tuple(b.edges)) for b in self.buckets]
        if saved != mine:
            raise ValueError(
                f"bandit state was bucketed by {saved}, the config says {mine}: retrain (python -m mlops.train) "
                "or delete the saved learner state"
            )
        arms: dict[tuple[str, str], Arm] = {}
        for playbook, bucket, alpha, beta in doc.get("arms", []):
            if not (float(alpha) >= 1.0 and float(beta) >= 1.0):
                raise ValueError(f"bandit arm {playbook}/{bucket}: alpha and beta must be >= 1")
            arms[(str(playbook), str(bucket))] = Arm(float(alpha), float(beta))
        self._arms = arms
