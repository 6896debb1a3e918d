"""LearnerEngine: outcomes -> LearnerUpdate, features -> RegimeChange, the gate, batch train, state."""

from __future__ import annotations

import json

import numpy as np
import pytest

from services.core.events import FeatureVector, LearnerUpdate, RegimeChange
from services.learner.config import CombineConfig, LearnerConfig, MetaLabelConfig
from services.learner.engine import MODEL_NAME, LabeledTrade, LearnerEngine
from services.learner.meta_label import roc_auc

from .support import MIN, T0, closes_from_returns, outcome, vector

MEAN = LearnerConfig(combine=CombineConfig(mode="mean"))


def strong_adx_wins(n: int, seed: int = 0) -> list[tuple[dict[str, float], float]]:
    """Contexts where trades win when adx_14 > 25 (80%) and lose otherwise (80%)."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        adx = float(rng.uniform(10, 40))
        win = rng.random() < (0.8 if adx > 25 else 0.2)
        out.append(({"adx_14": adx, "minutes_since_open": float(rng.uniform(0, 390))}, 100.0 if win else -80.0))
    return out


def test_untrained_engine_is_neutral() -> None:
    engine = LearnerEngine(MEAN)
    assert engine.probability("orb_calls", {"adx_14": 30.0}) == 0.5
    assert engine.playbooks == []
    assert engine.regime("SPY") == "unknown"


def test_outcomes_update_versions_and_gates() -> None:
    engine = LearnerEngine(MEAN)
    first = engine.on_outcome(outcome(0, 50.0, {"adx_14": 30.0}))
    assert isinstance(first, LearnerUpdate)
    assert (first.version, first.model, first.underlying) == (1, MODEL_NAME, "SPY")
    assert first.ts == T0 + 5 * MIN
    assert set(first.gates) == {"orb_calls"}
    assert first.gates["orb_calls"] > 0.5  # one win moves the estimate up
    second = engine.on_outcome(outcome(1, -50.0, {"adx_14": 30.0}, playbook="orb_puts"))
    assert second is not None and second.version == 2
    assert set(second.gates) == {"orb_calls", "orb_puts"}
    assert second.gates["orb_puts"] < 0.5
    # A redelivered outcome (same id) changes nothing.
    assert engine.on_outcome(outcome(1, -50.0, {"adx_14": 30.0}, playbook="orb_puts")) is None
    assert engine.version == 2 and engine.outcomes == 2


def test_gates_use_the_latest_features_of_the_underlying() -> None:
    engine = LearnerEngine(MEAN)
    for ctx, pnl in strong_adx_wins(200):
        engine.learn(LabeledTrade(f"x{len(engine._seen)}", "orb_calls", "SPY", 0, 0, pnl, ctx))
    engine.on_features(vector(0, 600.0, adx_14=35.0, minutes_since_open=100.0))
    hot = engine.on_outcome(outcome(999, 10.0, {"adx_14": 12.0}))
    engine.on_features(vector(1, 600.0, adx_14=12.0, minutes_since_open=101.0))
    cold = engine.on_outcome(outcome(1000, 10.0, {"adx_14": 12.0}))
    assert hot is not None and cold is not None
    assert hot.gates["orb_calls"] > 0.6 > 0.4 > cold.gates["orb_calls"]


def test_probability_combines_meta_label_and_bucket_evidence() -> None:
    engine = LearnerEngine(MEAN)
    ctx = {"adx_14": 35.0, "minutes_since_open": 100.0}
    for i in range(6):
        engine.on_outcome(outcome(i, 10.0 if i < 4 else -10.0, ctx))  # 4 wins, 2 losses in one bucket
    m = engine.meta_probability("orb_calls", ctx)
    k = MEAN.combine.prior_strength
    assert engine.bandit.posterior("orb_calls", ctx) == (5.0, 3.0)
    assert engine.probability("orb_calls", ctx) == pytest.approx((k * m + 4) / (k + 6))
    other_bucket = {"adx_14": 5.0, "minutes_since_open": 100.0}
    assert engine.probability("orb_calls", other_bucket) == pytest.approx(
        engine.meta_probability("orb_calls", other_bucket)
    )


def test_online_learning_separates_good_and_bad_contexts() -> None:
    engine = LearnerEngine(MEAN)
    for i, (ctx, pnl) in enumerate(strong_adx_wins(400, seed=1)):
        engine.on_outcome(outcome(i, pnl, ctx))
    good = engine.probability("orb_calls", {"adx_14": 35.0, "minutes_since_open": 100.0})
    bad = engine.probability("orb_calls", {"adx_14": 15.0, "minutes_since_open": 100.0})
    assert good > 0.7 and bad < 0.3


def test_thompson_gate_is_deterministic_and_centred_on_the_mean() -> None:
    def trained(seed: int) -> LearnerEngine:
        engine = LearnerEngine(LearnerConfig(seed=seed))  # default mode: thompson
        for i, (ctx, pnl) in enumerate(strong_adx_wins(60, seed=2)):
            engine.on_outcome(outcome(i, pnl, ctx))
        return engine

    one, two, other = trained(7), trained(7), trained(8)
    contexts = [{"adx_14": 35.0, "minutes_since_open": float(m)} for m in range(100, 140)]
    draws = [one.probability("orb_calls", c) for c in contexts]
    assert draws == [two.probability("orb_calls", c) for c in contexts]
    assert draws != [other.probability("orb_calls", c) for c in contexts]
    assert one.probability("orb_calls", contexts[0]) == draws[0]  # evaluating again draws the same
    assert len(set(draws)) == len(draws)  # different contexts, different draws
    many = [one.probability("orb_calls", {"adx_14": 35.0, "minutes_since_open": 100.0 + i / 100}) for i in range(2000)]
    assert np.mean(many) == pytest.approx(one.mean_probability("orb_calls", contexts[0]), abs=0.02)
    update = one.on_outcome(outcome(5000, 1.0, contexts[0]))
    assert update is not None
    assert update.gates["orb_calls"] == round(one.mean_probability("orb_calls", one.latest.get("SPY", contexts[0])), 6)


def test_reward_modes() -> None:
    assert LearnerEngine().reward(0.0) == 0.0
    assert LearnerEngine().reward(0.01) == 1.0
    pnl = LearnerEngine(LearnerConfig.model_validate({"bandit": {"reward": "pnl", "pnl_scale_usd": 100}}))
    assert pnl.reward(50.0) == pytest.approx(0.75)
    assert pnl.reward(-500.0) == 0.0


def test_features_drive_change_points_per_underlying() -> None:
    engine = LearnerEngine(MEAN)
    rng = np.random.default_rng(104)
    spy = closes_from_returns(np.concatenate([rng.normal(0, 1e-3, 300), rng.normal(3e-3, 1e-3, 30)]))
    qqq = closes_from_returns(rng.normal(0, 1e-3, 330), start=520.0)
    events: list[RegimeChange] = []
    for i in range(len(spy)):
        for fv in (vector(i, spy[i], "SPY", adx_14=20.0), vector(i, qqq[i], "QQQ")):
            change = engine.on_features(fv)
            if change is not None:
                events.append(change)
    assert [e.underlying for e in events][:1] == ["SPY"]
    assert engine.regime("SPY") == "trend"
    assert engine.latest["SPY"]["adx_14"] == 20.0
    assert engine.on_features(FeatureVector(ts=T0, symbol="SPYC", values={"mark": 1.2})) is None
    assert "SPYC" not in engine.detectors


def test_batch_train_matches_the_history() -> None:
    rows = strong_adx_wins(300, seed=3)
    trades = [
        LabeledTrade(f"t{i}", "orb_calls", "SPY", T0 + i * MIN, T0 + (i + 3) * MIN, pnl, ctx)
        for i, (ctx, pnl) in enumerate(rows)
    ]
    engine = LearnerEngine(MEAN).train(reversed(trades))  # sorted by exit time inside
    assert engine.outcomes == 300 and engine.version == 1
    wins = sum(1 for _, pnl in rows if pnl > 0)
    total = sum(a.evidence for a in engine.bandit.arms().values())
    assert total == 300
    assert sum(a.alpha - 1 for a in engine.bandit.arms().values()) == wins
    p = engine.predict(trades)
    y = [t.label for t in trades]
    auc = roc_auc(y, p)
    assert auc is not None and auc > 0.75
    # Trained trades are remembered as seen: the stream does not learn them twice.
    assert engine.learn(trades[0]) is False


def test_state_round_trip_through_json() -> None:
    engine = LearnerEngine(LearnerConfig())
    rng = np.random.default_rng(9)
    closes = closes_from_returns(rng.normal(0, 1e-3, 120))
    for i, (ctx, pnl) in enumerate(strong_adx_wins(80, seed=4)):
        engine.on_outcome(outcome(i, pnl, ctx, playbook=["orb_calls", "vwap_reversion_puts"][i % 2]))
    for i, c in enumerate(closes[:60]):
        engine.on_features(vector(i, c, adx_14=22.0))
    doc = json.loads(json.dumps(engine.state(), allow_nan=False))
    restored = LearnerEngine(LearnerConfig())
    restored.load_state(doc)
    assert restored.state() == engine.state()
    ctx = {"adx_14": 28.0, "minutes_since_open": 45.0}
    assert restored.probability("orb_calls", ctx) == engine.probability("orb_calls", ctx)
    # Both continue identically.
    for i, c in enumerate(closes[60:], start=60):
        assert restored.on_features(vector(i, c)) == engine.on_features(vector(i, c))
    assert restored.on_outcome(outcome(500, 5.0, ctx)) == engine.on_outcome(outcome(500, 5.0, ctx))
    assert restored.on_outcome(outcome(3, 5.0, ctx)) is None  # remembered id
    assert restored.state() == engine.state()


def test_load_state_refuses_foreign_documents() -> None:
    engine = LearnerEngine()
    with pytest.raises(ValueError, match="format"):
        engine.load_state({"format": 99})
    with pytest.raises(ValueError, match="malformed"):
        engine.load_state({"format": 1, "bandit": {"buckets": engine.bandit.state()["buckets"]}})
    other = LearnerEngine(LearnerConfig(meta_label=MetaLabelConfig(features=("adx_14",))))
    other.on_outcome(outcome(0, 1.0, {"adx_14": 1.0}))
    engine.load_state(other.state())  # a meta-labeler carries its own feature list
    assert engine.meta["orb_calls"].features == ("adx_14",)
    rebucketed = LearnerEngine(LearnerConfig.model_validate({"bandit": {"buckets": []}}))
    with pytest.raises(ValueError, match="bucketed by"):
        rebucketed.load_state(engine.state())
