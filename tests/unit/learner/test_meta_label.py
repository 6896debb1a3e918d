"""Meta-labeler: learns a separable problem, stays at the base rate on noise, calibrates, round-trips."""

from __future__ import annotations

import json

import numpy as np
import pytest

from services.learner.config import MetaLabelConfig
from services.learner.meta_label import MetaLabeler, brier, fit_platt, log_loss, roc_auc

from .support import separable

CONFIG = MetaLabelConfig(features=("adx_14", "rv_15", "minutes_since_open"))


def test_metrics_by_hand() -> None:
    assert roc_auc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) == pytest.approx(0.75)
    assert roc_auc([0, 1], [0.5, 0.5]) == pytest.approx(0.5)  # ties count half
    assert roc_auc([1, 1], [0.2, 0.3]) is None
    assert log_loss([1, 0], [0.8, 0.2]) == pytest.approx(-np.log(0.8))
    assert brier([1, 0], [0.8, 0.4]) == pytest.approx((0.04 + 0.16) / 2)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_batch_learns_a_separable_problem_on_later_samples(seed: int) -> None:
    rows, y = separable(1000, seed)
    model = MetaLabeler(CONFIG).train(rows[:700], y[:700])  # earlier samples train ...
    p = [model.predict_proba(r) for r in rows[700:]]  # ... later ones test
    auc = roc_auc(y[700:], p)
    assert auc is not None and auc > 0.9
    assert log_loss(y[700:], p) < log_loss(y[700:], [np.mean(y[:700])] * 300) - 0.2
    assert model.w[0] > 0 > model.w[1]  # adx helps, rv hurts
    assert abs(model.w[2]) < 0.2 * abs(model.w[0])  # the noise feature is (nearly) ignored


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_online_learns_a_separable_problem_on_later_samples(seed: int) -> None:
    rows, y = separable(1000, seed)
    model = MetaLabeler(CONFIG)
    for r, label in zip(rows[:700], y[:700], strict=True):
        model.update(r, label)
    p = [model.predict_proba(r) for r in rows[700:]]
    assert model.n == 700
    auc = roc_auc(y[700:], p)
    assert auc is not None and auc > 0.9


@pytest.mark.parametrize("seed", range(4, 12))
def test_non_informative_features_stay_near_the_base_rate(seed: int) -> None:
    rows, _ = separable(1000, seed)
    rng = np.random.default_rng(seed + 100)
    y = [int(v) for v in rng.random(1000) < 0.35]  # independent of every feature
    base = float(np.mean(y[:700]))
    batch = MetaLabeler(CONFIG).train(rows[:700], y[:700])
    online = MetaLabeler(CONFIG)
    for r, label in zip(rows[:700], y[:700], strict=True):
        online.update(r, label)
    for model in (batch, online):
        p = np.array([model.predict_proba(r) for r in rows[700:]])
        assert abs(p.mean() - base) < 0.05
        assert p.std() < 0.08


def test_calibrated_probabilities_match_frequencies() -> None:
    rows, y = separable(4000, 11)
    model = MetaLabeler(CONFIG).train(rows[:3000], y[:3000])
    p = np.array([model.predict_proba(r) for r in rows[3000:]])
    yy = np.array(y[3000:])
    for lo, hi in ((0.0, 0.2), (0.2, 0.4), (0.4, 0.6), (0.6, 0.8), (0.8, 1.0)):
        sel = (p >= lo) & (p < hi)
        assert sel.sum() > 50
        assert abs(yy[sel].mean() - p[sel].mean()) < 0.08, (lo, hi)


def test_platt_recovers_a_known_map_and_never_inverts() -> None:
    rng = np.random.default_rng(0)
    s = rng.normal(0, 2, 5000)
    y = (rng.random(5000) < 1 / (1 + np.exp(-(0.5 * s - 1.0)))).astype(float)
    a, c = fit_platt(s, y, 0.0)
    assert a == pytest.approx(0.5, abs=0.06)
    assert c == pytest.approx(-1.0, abs=0.1)
    backwards = (rng.random(5000) >= 1 / (1 + np.exp(-s))).astype(np.float64)  # anti-predictive scores
    a, c = fit_platt(s, backwards, 0.0)
    assert a == 0.0


def test_missing_features_count_as_the_mean_and_untrained_says_half() -> None:
    model = MetaLabeler(CONFIG)
    assert model.predict_proba({}) == 0.5
    rows, y = separable(500, 9)
    model.train(rows, y)
    assert np.isfinite(model.predict_proba({}))
    assert model.predict_proba({"adx_14": float("nan")}) == model.predict_proba({})
    assert model.predict_proba({"adx_14": 60.0}) > model.predict_proba({}) > model.predict_proba({"adx_14": 0.0})


def test_state_round_trip_through_json() -> None:
    rows, y = separable(300, 5)
    model = MetaLabeler(CONFIG)
    for r, label in zip(rows[:200], y[:200], strict=True):
        model.update(r, label)
    restored = MetaLabeler.from_state(json.loads(json.dumps(model.state())), CONFIG)
    assert [restored.predict_proba(r) for r in rows[200:]] == [model.predict_proba(r) for r in rows[200:]]
    for r, label in zip(rows[200:], y[200:], strict=True):
        assert restored.update(r, label) == model.update(r, label)
    assert restored.state() == model.state()
    bad = model.state() | {"w": [0.0]}
    with pytest.raises(ValueError, match="w must be 3 finite numbers"):
        MetaLabeler.from_state(bad, CONFIG)
