"""Beta bandit: posteriors by hand, buckets, discounting, deterministic Thompson sampling."""

from __future__ import annotations

import json

import numpy as np
import pytest

from services.learner.bandit import BetaBandit, bucket_key
from services.learner.config import BucketSpec

ADX = BucketSpec(feature="adx_14", edges=(20.0, 30.0))
TIME = BucketSpec(feature="minutes_since_open", edges=(60.0, 240.0))


def test_posterior_is_beta_one_plus_wins_one_plus_losses() -> None:
    bandit = BetaBandit([ADX])
    ctx = {"adx_14": 25.0}
    assert bandit.posterior("orb_calls", ctx) == (1.0, 1.0)
    assert bandit.mean("orb_calls", ctx) == 0.5
    for reward in (1, 1, 0, 1, 0, 1, 1):  # 5 wins, 2 losses
        bandit.update("orb_calls", ctx, reward)
    assert bandit.posterior("orb_calls", ctx) == (6.0, 3.0)
    assert bandit.mean("orb_calls", ctx) == pytest.approx(6 / 9)
    # Another bucket and another playbook are untouched.
    assert bandit.posterior("orb_calls", {"adx_14": 35.0}) == (1.0, 1.0)
    assert bandit.posterior("orb_puts", ctx) == (1.0, 1.0)
    # Same bucket, different value inside it: the same arm.
    assert bandit.posterior("orb_calls", {"adx_14": 20.0}) == (6.0, 3.0)


def test_fractional_rewards_and_discount() -> None:
    bandit = BetaBandit([], discount=0.5)
    bandit.update("p", {}, 1.0)  # (2, 1)
    bandit.update("p", {}, 0.25)  # alpha = 1 + 0.5*1 + 0.25, beta = 1 + 0 + 0.75
    assert bandit.posterior("p", {}) == pytest.approx((1.75, 1.75))
    with pytest.raises(ValueError, match="reward"):
        bandit.update("p", {}, 1.5)


def test_bucket_keys() -> None:
    specs = [ADX, TIME]
    assert bucket_key(specs, {"adx_14": 19.9, "minutes_since_open": 60.0}) == "adx_14=0|minutes_since_open=1"
    assert bucket_key(specs, {"adx_14": 30.0, "minutes_since_open": 300.0}) == "adx_14=2|minutes_since_open=2"
    assert bucket_key(specs, {"minutes_since_open": 5.0}) == "adx_14=na|minutes_since_open=0"
    assert bucket_key(specs, {"adx_14": float("nan")}) == "adx_14=na|minutes_since_open=na"
    assert bucket_key([], {"adx_14": 1.0}) == "all"


def test_thompson_draws_are_deterministic_given_the_seed() -> None:
    def trained(seed: int) -> BetaBandit:
        b = BetaBandit([ADX], seed=seed)
        for i in range(20):
            b.update("a", {"adx_14": 25.0}, float(i % 3 == 0))
            b.update("b", {"adx_14": 25.0}, float(i % 3 != 0))
        return b

    one, two, other = trained(7), trained(7), trained(8)
    ctx = {"adx_14": 25.0}
    draws = [one.sample("a", ctx, salt) for salt in range(50)]
    assert draws == [two.sample("a", ctx, salt) for salt in range(50)]
    assert draws != [other.sample("a", ctx, salt) for salt in range(50)]
    # A draw depends on state and arguments only, not on how many draws came before.
    assert one.sample("a", ctx, 3) == draws[3]
    assert [one.choose(["a", "b"], ctx, s) for s in range(20)] == [two.choose(["a", "b"], ctx, s) for s in range(20)]


def test_thompson_sampling_follows_the_posterior() -> None:
    bandit = BetaBandit([], seed=1)
    for reward in [1] * 30 + [0] * 10:  # Beta(31, 11): mean 0.738
        bandit.update("good", {}, reward)
    for reward in [1] * 10 + [0] * 30:
        bandit.update("bad", {}, reward)
    draws = np.array([bandit.sample("good", {}, s) for s in range(4000)])
    assert draws.mean() == pytest.approx(31 / 42, abs=0.01)
    assert draws.std() == pytest.approx(np.sqrt(31 * 11 / (42**2 * 43)), rel=0.1)
    picks = [bandit.choose(["bad", "good"], {}, s) for s in range(500)]
    assert picks.count("good") > 490


def test_state_round_trip_through_json() -> None:
    bandit = BetaBandit([ADX, TIME], discount=0.9, seed=3)
    for i in range(30):
        bandit.update(f"p{i % 3}", {"adx_14": float(i), "minutes_since_open": float(10 * i)}, float(i % 2))
    doc = json.loads(json.dumps(bandit.state()))
    restored = BetaBandit([ADX, TIME], discount=0.9, seed=3)
    restored.load_state(doc)
    assert restored.arms() == bandit.arms()
    assert restored.sample("p1", {"adx_14": 5.0}, 9) == bandit.sample("p1", {"adx_14": 5.0}, 9)
    with pytest.raises(ValueError, match="bucketed by"):
        BetaBandit([ADX]).load_state(doc)
