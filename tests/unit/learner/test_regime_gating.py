"""The learner decides in signals: regimes from the change-point detector enable and disable playbooks
that declare ``regimes:``, and the policy's bandit and meta-label gate pick what fires."""

from __future__ import annotations

import numpy as np

from services.core.events import FeatureVector, LearnerUpdate, RegimeChange
from services.core.learner_policy import ArmStats, LearnerPolicy, MetaMember, MetaModel, PolicyBucket
from services.learner.config import LearnerConfig
from services.learner.engine import LearnerEngine
from services.learner.stage import LearnerStage
from services.signals.engine import SignalEngine
from tests.unit.signals.builders import NS, T0, engine_with, fv

CHANGE_AT = 200
REVERSION = {"close": 618.99, "adx_14": 19.99}  # fires vwap_reversion_calls (and pot_fade_calls)


def regime_changes() -> list[tuple[int, RegimeChange]]:
    """A hand-built SPY close series: 200 quiet minutes, then a steady climb (the change point at
    minute 200), ending an hour before T0; what the frozen learner stage reports on it."""
    rng = np.random.default_rng(3)
    r = np.concatenate([rng.normal(0, 0.0003, CHANGE_AT), rng.normal(0.0012, 0.0003, 60)])
    closes = 600 * np.exp(np.cumsum(r))
    start = T0 - (len(closes) + 60) * 60 * NS
    stage = LearnerStage(LearnerEngine(LearnerConfig()), mode="frozen")
    out = []
    for i, c in enumerate(closes):
        for o in stage.handle("features", FeatureVector(ts=start + i * 60 * NS, symbol="SPY", values={"close": c})):
            assert isinstance(o.event, RegimeChange)
            out.append((i, o.event))
    return out


def fired(engine: SignalEngine) -> dict[str, str]:
    return {d.playbook: d.reason for d in engine.evaluate(fv(**REVERSION)) if d.intent is not None}


def test_a_playbook_with_regimes_is_disabled_in_a_regime_the_detector_reports() -> None:
    changes = regime_changes()
    assert changes, "the detector reported no change point"
    first, _ = changes[0]
    assert CHANGE_AT <= first <= CHANGE_AT + 5  # found where it was built
    assert changes[-1][1].regime == "trend"

    before, _ = engine_with(learner_mode="walk-forward")
    # No change point yet: the regime is unknown, which vwap_reversion_calls lists ([range, unknown]).
    reasons = fired(before)
    assert "learner regime 'unknown' in ['range', 'unknown']" in reasons["vwap_reversion_calls"]

    after, _ = engine_with(learner_mode="walk-forward")
    for _, change in changes:
        after.on_regime(change)
    decisions = {d.playbook: d for d in after.evaluate(fv(**REVERSION))}
    blocked = decisions["vwap_reversion_calls"]
    assert blocked.intent is None
    assert blocked.reason == "learner regime 'trend' not in the playbook's regimes ['range', 'unknown']"
    # pot_fade_calls declares no regimes: it still fires, and its reason names the regime.
    assert decisions["pot_fade_calls"].intent is not None
    assert "regime 'trend'" in decisions["pot_fade_calls"].reason

    off, _ = engine_with()  # --learner off: no regime is known, none is checked
    for _, change in changes:
        off.on_regime(change)
    assert fired(off)["vwap_reversion_calls"].endswith("; learner off")


def _member(intercept: float) -> MetaMember:
    return MetaMember(fill=(0.0,), center=(20.0,), scale=(5.0,), coef=(0.0,), intercept=intercept, a=-1.0, b=0.0)


def policy(meta_intercept: float) -> LearnerPolicy:
    bucket = "adx_14=0"
    return LearnerPolicy(
        version=4, trained_through=T0 - 86_400 * NS, trades=50, seed=7, epsilon=0.0, abstain_value=0.4,
        buckets=(PolicyBucket("adx_14", (20.0, 30.0)),),
        arms=(ArmStats("vwap_reversion_calls", bucket, 6, 4), ArmStats("pot_fade_calls", bucket, 1, 9)),
        meta=(MetaModel("vwap_reversion_calls", ("adx_14",), (_member(meta_intercept),), 10, 0.6),))


def test_the_bandit_picks_one_candidate_and_the_meta_label_gates_it() -> None:
    engine, _ = engine_with(learner_mode="frozen", policy=policy(meta_intercept=1.0))  # p = sigmoid(1) = 0.73
    decisions = {d.playbook: d for d in engine.evaluate(fv(**REVERSION))}
    chosen = decisions["vwap_reversion_calls"]
    assert chosen.intent is not None
    reason = chosen.intent.reason
    assert "bandit chose vwap_reversion_calls in bucket adx_14=0 (greedy, propensity 1.0000" in reason
    assert "meta p=0.7311 >= 0.4 (own calibrated logistic, 10 trades" in reason
    assert "regime 'unknown'" in reason
    assert chosen.intent.features["learner_propensity"] == 1.0
    assert abs(chosen.intent.features["learner_probability"] - 0.7310585786) < 1e-9
    # pot_fade_calls would have fired too; its bucket lost 9 of 10, so the bandit did not take it.
    other = decisions["pot_fade_calls"]
    assert other.intent is None and "bandit chose vwap_reversion_calls" in other.reason

    gated, _ = engine_with(learner_mode="frozen", policy=policy(meta_intercept=-1.0))  # p = 0.27 < 0.40
    d = {x.playbook: x for x in gated.evaluate(fv(**REVERSION))}["vwap_reversion_calls"]
    assert d.intent is None and "meta p=0.2689 < 0.4" in d.reason


def test_a_walk_forward_retrain_reaches_signals_through_a_learner_update() -> None:
    engine, _ = engine_with(learner_mode="walk-forward")
    assert set(fired(engine)) == {"vwap_reversion_calls", "pot_fade_calls"}  # no policy yet: all fire
    engine, _ = engine_with(learner_mode="walk-forward")
    engine.on_learner(LearnerUpdate(ts=T0 - NS, underlying="SPY", model="policy", version=4, gates={},
                                    policy=policy(meta_intercept=1.0)))
    assert set(fired(engine)) == {"vwap_reversion_calls"}
