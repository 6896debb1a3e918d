"""The policy signals applies: epsilon-greedy choice with exact propensities, buckets, encoding."""

from __future__ import annotations

import pytest

from services.core.learner_policy import (
    ABSTAIN,
    ArmStats,
    LearnerPolicy,
    PolicyBucket,
    PolicyIndex,
    bucket_of,
    decode_policy,
    encode_policy,
)

BUCKETS = (PolicyBucket("adx_14", (20.0, 30.0)),)


def policy(epsilon: float = 0.0, abstain: float = 0.4, arms: tuple[ArmStats, ...] = ()) -> LearnerPolicy:
    return LearnerPolicy(version=1, trained_through=0, trades=0, seed=7, epsilon=epsilon, abstain_value=abstain,
                         buckets=BUCKETS, arms=arms)


def test_bucket_bins_and_missing() -> None:
    assert bucket_of(BUCKETS, {"adx_14": 19.9}) == "adx_14=0"
    assert bucket_of(BUCKETS, {"adx_14": 20.0}) == "adx_14=1"
    assert bucket_of(BUCKETS, {"adx_14": 35.0}) == "adx_14=2"
    assert bucket_of(BUCKETS, {}) == "adx_14=na"


def test_greedy_picks_the_best_arm_in_the_bucket_or_abstains() -> None:
    arms = (ArmStats("a", "adx_14=0", wins=8, losses=2), ArmStats("b", "adx_14=0", wins=2, losses=8),
            ArmStats("a", "adx_14=2", wins=1, losses=9))
    index = PolicyIndex(policy(arms=arms))
    low = index.choose(["b", "a"], {"adx_14": 10.0}, "SPY", 1)
    assert (low.arm, low.explored, low.propensity) == ("a", False, 1.0)
    # In the high-ADX bucket "a" lost 9 of 10: its posterior mean 2/12 is under the abstain value.
    high = index.choose(["a"], {"adx_14": 40.0}, "SPY", 1)
    assert high.arm == ABSTAIN
    # An unseen bucket is worth 0.5, above abstain: the first candidate trades (exploration by default).
    assert index.choose(["b", "a"], {"adx_14": 25.0}, "SPY", 1).arm == "b"


def test_exploration_frequencies_match_the_logged_propensities() -> None:
    arms = (ArmStats("a", "adx_14=0", wins=8, losses=2),)
    index = PolicyIndex(policy(epsilon=0.3, arms=arms))
    picks: dict[str, int] = {}
    props: dict[str, float] = {}
    n = 6000
    for ts in range(n):
        c = index.choose(["a", "b"], {"adx_14": 5.0}, "SPY", ts)
        picks[c.arm] = picks.get(c.arm, 0) + 1
        props[c.arm] = c.propensity
    # K = 3 arms (a, b, abstain): greedy a has 0.7 + 0.1, the others 0.1 each.
    assert props == pytest.approx({"a": 0.8, "b": 0.1, ABSTAIN: 0.1})
    for arm, p in props.items():
        assert abs(picks[arm] / n - p) < 0.02, (arm, picks[arm] / n)
    # Deterministic: the same symbol and time give the same draw.
    assert index.choose(["a", "b"], {"adx_14": 5.0}, "SPY", 17) == index.choose(["a", "b"], {"adx_14": 5.0}, "SPY", 17)


def test_policy_round_trips_and_a_wrong_file_is_one_line() -> None:
    p = policy(arms=(ArmStats("a", "adx_14=0", 1, 2),))
    assert decode_policy(encode_policy(p)) == p
    with pytest.raises(ValueError, match=r"model\.json: not a learner policy"):
        decode_policy(b'{"version": 1}', "model.json")
