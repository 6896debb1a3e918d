"""LearnerStage: routing, persistence in the StateStore, and the signals gate callable."""

from __future__ import annotations

import json

import numpy as np
import pytest

from services.core import keys, topics
from services.core.events import LearnerUpdate, RegimeChange, SignalIntent
from services.core.stage import Output, Stage
from services.core.state import MemoryState
from services.learner.config import CombineConfig, LearnerConfig
from services.learner.engine import LearnerEngine
from services.learner.stage import LearnerStage, decode_state, encode_state, learner_gate
from services.signals.gates import LearnerProbability

from .support import closes_from_returns, outcome, vector


def test_stage_shape() -> None:
    stage: Stage = LearnerStage(LearnerEngine())
    assert stage.name == "learner"
    assert stage.inputs == (topics.OUTCOMES, topics.FEATURES)


def test_outcomes_become_learner_updates_on_the_learner_topic() -> None:
    stage = LearnerStage(LearnerEngine())
    out = stage.handle(topics.OUTCOMES, outcome(0, 25.0, {"adx_14": 30.0}, underlying="QQQ"))
    assert len(out) == 1
    assert isinstance(out[0], Output)
    assert (out[0].topic, out[0].key) == (topics.LEARNER, "QQQ")
    assert isinstance(out[0].event, LearnerUpdate)
    assert stage.handle(topics.OUTCOMES, outcome(0, 25.0, underlying="QQQ")) == []  # redelivery


def test_features_become_regime_changes_on_the_learner_topic() -> None:
    stage = LearnerStage(LearnerEngine())
    rng = np.random.default_rng(101)
    closes = closes_from_returns(np.concatenate([rng.normal(0, 1e-3, 300), rng.normal(3e-3, 1e-3, 20)]))
    outs = [o for i, c in enumerate(closes) for o in stage.handle(topics.FEATURES, vector(i, c, "SPX"))]
    assert outs
    assert all(o.topic == topics.LEARNER and o.key == "SPX" for o in outs)
    assert all(isinstance(o.event, RegimeChange) for o in outs)


def test_other_events_are_refused() -> None:
    stage = LearnerStage(LearnerEngine())
    intent = SignalIntent(
        ts=1,
        id="i",
        underlying="SPY",
        playbook="p",
        contract="C",
        right="C",
        side="buy",
        quantity=1,
        limit_price=1.0,
        take_profit=2.0,
        stop_loss=0.5,
        reason="r",
    )
    with pytest.raises(ValueError, match="cannot handle SignalIntent"):
        stage.handle(topics.SIGNALS, intent)


def test_state_is_saved_and_restored_through_the_state_store() -> None:
    store = MemoryState(prefix="s1")
    stage = LearnerStage(LearnerEngine(), store)
    assert store.get(keys.LEARNER_STATE) is None
    for i in range(5):
        stage.handle(topics.OUTCOMES, outcome(i, 10.0 * (-1) ** i, {"adx_14": 20.0 + i}))
    saved = store.get(keys.LEARNER_STATE)
    assert saved is not None and json.loads(saved)["version"] == 5
    stage.handle(topics.FEATURES, vector(0, 600.0))
    assert stage.finish(0) == []
    assert "SPY" in json.loads(store.get(keys.LEARNER_STATE) or b"{}")["latest"]
    restarted = LearnerStage(LearnerEngine(), store)
    assert restarted.engine.state() == stage.engine.state()
    assert restarted.handle(topics.OUTCOMES, outcome(4, 1.0)) == []  # seen before the restart


def test_encode_decode_state() -> None:
    engine = LearnerEngine()
    engine.on_outcome(outcome(0, 1.0, {"adx_14": 30.0}))
    copy = LearnerEngine()
    decode_state(copy, encode_state(engine))
    assert copy.state() == engine.state()
    with pytest.raises(ValueError, match="not JSON"):
        decode_state(copy, b"\xff")


def test_learner_gate_is_what_signals_takes() -> None:
    engine = LearnerEngine(LearnerConfig(combine=CombineConfig(mode="mean")))
    gate: LearnerProbability = learner_gate(engine)
    assert gate("orb_calls", {"adx_14": 30.0}) == 0.5
    engine.on_outcome(outcome(0, -1.0, {"adx_14": 30.0}))
    assert gate("orb_calls", {"adx_14": 30.0}) == engine.probability("orb_calls", {"adx_14": 30.0}) < 0.5
