"""The learner stage writes its view (arms, model, regimes, change points) to the StateStore."""

from __future__ import annotations

import numpy as np
import pytest

from services.core import keys, shared_state
from services.core.events import FeatureVector, RegimeChange
from services.core.state import MemoryState
from services.learner.config import LearnerConfig
from services.learner.engine import LearnerEngine
from services.learner.stage import LearnerStage
from tests.unit.learner.support import MIN, T0, closes_from_returns, outcome, vector

# adx_14 25 is bin 1 of edges (20, 30); minutes_since_open 30 is bin 0 of (60, 240).
CTX = {"adx_14": 25.0, "minutes_since_open": 30.0}
BUCKET = "adx_14=1|minutes_since_open=0"


def stored_view(store: MemoryState) -> shared_state.LearnerView:
    raw = store.get(keys.LEARNER_VIEW)
    assert raw is not None
    return shared_state.decode_learner_view(raw)


def test_online_view_has_the_arms_posterior_and_model_in_force() -> None:
    store = MemoryState("s")
    stage = LearnerStage(LearnerEngine(LearnerConfig()), store)
    pnls = [10.0, -5.0, 7.0, 3.0]  # three wins, one loss in one bucket
    for i, pnl in enumerate(pnls):
        stage.handle("outcomes", outcome(i, pnl, CTX))
    stage.handle("outcomes", outcome(9, -1.0, {"adx_14": 35.0}, playbook="vwap_puts"))
    view = stored_view(store)
    assert view.mode == "off"
    arms = {(a.playbook, a.bucket): a for a in view.arms}
    # Beta(1 + wins, 1 + losses), by hand.
    orb = arms[("orb_calls", BUCKET)]
    assert (orb.alpha, orb.beta, orb.pulls) == (4.0, 2.0, 4.0)
    assert orb.mean == pytest.approx(4 / 6)
    puts = arms[("vwap_puts", "adx_14=2|minutes_since_open=na")]
    assert (puts.alpha, puts.beta, puts.pulls) == (1.0, 2.0, 1.0)
    assert view.model is not None
    assert view.model.id == "meta_label+beta_bandit"
    assert view.model.version == 5 and view.model.trades == 5
    assert view.model.metrics["win_rate"] == pytest.approx(3 / 5)
    assert view.model.metrics["orb_calls.win_rate"] == pytest.approx(3 / 4)
    assert view.model.metrics["vwap_puts.trades"] == 1.0
    # Exit times: trade i exits at T0 + (i + 5) minutes.
    assert view.model.trained_from == T0 + 5 * MIN
    assert view.model.trained_through == T0 + 14 * MIN
    assert view.ts == T0 + 14 * MIN


def test_regime_changes_are_kept_in_the_view_and_survive_a_restart() -> None:
    store = MemoryState("s")
    stage = LearnerStage(LearnerEngine(LearnerConfig()), store)
    rng = np.random.default_rng(101)
    closes = closes_from_returns(np.concatenate([rng.normal(0, 1e-3, 300), rng.normal(3e-3, 1e-3, 20)]))
    changes = []
    for i, c in enumerate(closes):
        changes += [o.event for o in stage.handle("features", vector(i, c)) if isinstance(o.event, RegimeChange)]
    assert changes, "the series has a change point"
    view = stored_view(store)
    assert [(c.ts, c.regime, c.previous) for c in view.change_points] == [(c.ts, c.regime, c.previous)
                                                                         for c in changes]
    assert view.regimes == {"SPY": changes[-1].regime}
    assert view.model is not None and view.model.trades == 0 and view.arms == ()
    restarted = LearnerStage(LearnerEngine(LearnerConfig()), store)
    restarted.handle("outcomes", outcome(400, 5.0, CTX))
    again = stored_view(store)
    assert [c.ts for c in again.change_points] == [c.ts for c in changes]
    assert [(a.alpha, a.beta) for a in again.arms] == [(2.0, 1.0)]


def test_walk_forward_view_shows_the_retrained_policy() -> None:
    store = MemoryState("s")
    stage = LearnerStage(LearnerEngine(LearnerConfig()), store, mode="walk-forward")
    day = 24 * 60 * MIN
    for i in range(12):  # trades 0, 3, 6 and 9 lose: 8 wins, 4 losses
        stage.handle("outcomes", outcome(i, 4.0 if i % 3 else -2.0, CTX))
    stage.handle("features", vector(0, 600.0))  # opens the first session: no retrain
    outs = stage.handle("features", FeatureVector(ts=T0 + day, symbol="SPY", values={"close": 601.0}))
    assert outs, "the next session retrains on 12 trades"
    view = stored_view(store)
    assert view.mode == "walk-forward"
    assert view.model is not None and view.model.trades == 12 and view.model.version == 1
    assert view.model.trained_through == T0 + day
    assert view.model.trained_from == T0 + 5 * MIN
    assert [(a.playbook, a.bucket, a.alpha, a.beta, a.pulls) for a in view.arms] == [
        ("orb_calls", BUCKET, 9.0, 5.0, 12.0)]


def test_an_unreadable_stored_view_is_replaced() -> None:
    store = MemoryState("s")
    store.set(keys.LEARNER_VIEW, b"{not json")
    stage = LearnerStage(LearnerEngine(LearnerConfig()), store)
    stage.finish(0)
    assert stored_view(store).change_points == ()


def test_decode_names_the_key_and_field() -> None:
    with pytest.raises(shared_state.SharedStateError, match=r"dreambot:learner_view: .*\$\.arms\[0\]\.alpha"):
        shared_state.decode_learner_view(
            b'{"ts":0,"mode":"off","model":null,"arms":[{"playbook":"p","bucket":"b","alpha":0.5,"beta":1,'
            b'"pulls":0}],"regimes":{},"change_points":[]}')
