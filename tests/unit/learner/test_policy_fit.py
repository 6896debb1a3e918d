"""fit_policy: scikit-learn meta-labeling exported exactly, arms per bucket, the cut-off, walk-forward."""

from __future__ import annotations

import numpy as np
import pytest

from services.core.calendar import NS_PER_S
from services.core.learner_policy import POOLED, LearnerPolicy, PolicyIndex
from services.learner.config import LearnerConfig
from services.learner.engine import LabeledTrade
from services.learner.policy_fit import feature_matrix, fit_meta_classifier, fit_policy
from services.learner.walk_forward import WalkForward

DAY = 86_400 * NS_PER_S
T0 = 1_751_981_400 * NS_PER_S  # 2025-07-08 13:30 UTC (09:30 New York)


def trades(n: int, seed: int = 0, start: int = T0) -> list[LabeledTrade]:  # ids unique per (seed, start)
    """Trades whose outcome depends on adx_14 (high ADX pays more often), two playbooks."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        adx = float(rng.uniform(10, 40))
        pnl = 50.0 if rng.random() < (0.15 + 0.02 * (adx - 10)) else -40.0
        entry = start + i * 30 * 60 * NS_PER_S
        playbook = "orb_calls" if i % 2 else "orb_puts"
        context = {"adx_14": adx, "minutes_since_open": float(i % 300), "rv_15": 0.1}
        out.append(LabeledTrade(f"t{seed}-{start}-{i}", playbook, "SPY", entry, entry + 600 * NS_PER_S, pnl, context))
    return out


def test_exported_meta_model_equals_scikit_learn_predict_proba() -> None:
    config = LearnerConfig()
    rows = trades(120)
    model = fit_meta_classifier(rows, config, config.meta_label.features)
    assert model is not None
    policy = fit_policy(rows, config, rows[-1].exit_ts + 1, 1)
    pooled = next(m for m in policy.meta if m.playbook == POOLED)
    own = next(m for m in policy.meta if m.playbook == "orb_calls")
    probe = trades(20, seed=5)
    want = model.predict_proba(feature_matrix(probe, config.meta_label.features))[:, 1]
    solo_model = fit_meta_classifier([t for t in rows if t.playbook == "orb_calls"], config,
                                     config.meta_label.features)
    assert solo_model is not None
    got_own = [own.probability(t.features, "orb_calls") for t in probe]
    want_own = solo_model.predict_proba(feature_matrix(probe, config.meta_label.features))[:, 1]
    assert got_own == pytest.approx(list(want_own), abs=1e-12)
    # The pooled model learned the ADX dependence: higher ADX, higher probability.
    lo = pooled.probability({"adx_14": 12.0, "rv_15": 0.1}, "orb_calls")
    hi = pooled.probability({"adx_14": 38.0, "rv_15": 0.1}, "orb_calls")
    assert hi > lo + 0.1
    assert len(want) == 20


def test_arms_count_wins_and_losses_per_bucket_and_respect_the_cutoff() -> None:
    config = LearnerConfig()
    rows = trades(40)
    cutoff = rows[20].exit_ts
    policy = fit_policy(rows, config, cutoff, 3)
    used = [t for t in rows if t.exit_ts < cutoff]
    assert policy.trades == len(used) == 20
    assert sum(a.wins + a.losses for a in policy.arms) == 20
    assert sum(a.wins for a in policy.arms) == sum(t.label for t in used)
    assert policy.trained_through == cutoff and policy.version == 3


def test_walk_forward_retrain_never_sees_outcomes_after_its_cutoff() -> None:
    """Perturbing every outcome that exits after a retrain's cut-off changes neither that retrain's
    policy nor any decision made with it."""
    config = LearnerConfig()
    day1 = trades(30, seed=1)
    day2 = trades(30, seed=2, start=T0 + DAY)
    cutoff = T0 + 2 * DAY  # the first bar of the third session
    late = trades(30, seed=3, start=cutoff - 3 * 60 * NS_PER_S)  # entered before, exit after the cut-off
    flipped = [LabeledTrade(t.id, t.playbook, t.underlying, t.entry_ts, t.exit_ts, -t.pnl, t.features) for t in late]

    def walk(extra: list[LabeledTrade]) -> tuple[WalkForward, LearnerPolicy]:
        wf = WalkForward(config)
        wf.on_time(T0)
        for t in [*day1, *day2, *extra]:  # handed in early on purpose: the cut-off must hold
            wf.add(t)
        policy = wf.on_time(cutoff)
        assert policy is not None
        return wf, policy

    (wf_a, a), (wf_b, b) = walk(late), walk(flipped)
    assert a == b
    assert a.trades == 60
    index_a, index_b = PolicyIndex(a), PolicyIndex(b)
    for t in trades(50, seed=9, start=cutoff):
        ca = index_a.choose(["orb_calls", "orb_puts"], t.features, "SPY", t.entry_ts)
        assert ca == index_b.choose(["orb_calls", "orb_puts"], t.features, "SPY", t.entry_ts)
    # The flipped outcomes do matter once they are before a cut-off: the next retrain differs.
    assert wf_a.on_time(cutoff + DAY) != wf_b.on_time(cutoff + DAY)


def test_walk_forward_waits_for_enough_trades_and_a_new_session() -> None:
    config = LearnerConfig()
    wf = WalkForward(config)
    assert wf.on_time(T0) is None
    for t in trades(5):
        wf.add(t)
    assert wf.on_time(T0 + DAY) is None  # 5 < min_retrain_trades
    for t in trades(10, seed=4, start=T0 + DAY):
        wf.add(t)
    assert wf.on_time(T0 + DAY + 3600 * NS_PER_S) is None  # same session: not due
    assert wf.on_time(T0 + 2 * DAY) is not None
    assert not wf.add(trades(1)[0])  # a redelivered outcome is kept once
