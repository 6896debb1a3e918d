"""Fitting the policy signals applies: bandit arms and scikit-learn meta-labeling classifiers.

:func:`fit_policy` turns closed trades into a :class:`~services.core.learner_policy.LearnerPolicy`:

* arms: wins and losses of every (playbook, context bucket), bucketed by ``bandit.buckets``;
* a pooled classifier of every trade (``playbook=<name>`` indicators added to the features), and
  per playbook with at least ``policy.min_meta_trades`` trades of both outcomes, a meta-labeling
  classifier: ``CalibratedClassifierCV(Pipeline(SimpleImputer(mean), StandardScaler(),
  LogisticRegression(C)), method="sigmoid")`` on time-ordered folds (``TimeSeriesSplit``; a fold
  whose training part holds one class only is dropped), exported member by member as numbers
  (:func:`export_meta_model`), so signals computes exactly scikit-learn's ``predict_proba``.

Only trades that exited strictly before ``cutoff_ns`` are used, whatever the caller passes: this is
the walk-forward's no-leakage rule in one place. Deterministic: the same trades give the same policy.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import numpy as np
from sklearn.calibration import CalibratedClassifierCV
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import TimeSeriesSplit
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from services.core.learner_policy import (
    PLAYBOOK_FEATURE,
    POOLED,
    ArmStats,
    LearnerPolicy,
    MetaMember,
    MetaModel,
    PolicyBucket,
    bucket_of,
)
from services.learner.config import LearnerConfig
from services.learner.engine import LabeledTrade


def policy_buckets(config: LearnerConfig) -> tuple[PolicyBucket, ...]:
    """The bandit's bucket specs as the policy carries them."""
    return tuple(PolicyBucket(b.feature, tuple(float(e) for e in b.edges)) for b in config.bandit.buckets)


def meta_pipeline(config: LearnerConfig) -> Pipeline:
    """The classifier one calibration fold fits: mean imputation, standardisation, L2 logistic regression."""
    return Pipeline([
        ("impute", SimpleImputer(strategy="mean", keep_empty_features=True)),
        ("scale", StandardScaler()),
        ("logistic", LogisticRegression(C=config.policy.meta_c, max_iter=1000)),
    ])


def feature_matrix(rows: Sequence[LabeledTrade], features: Sequence[str]) -> np.ndarray:
    """Trades' context values in ``features`` order (NaN where missing or not finite; a
    ``playbook=<name>`` indicator is 1 or 0)."""
    out = np.full((len(rows), len(features)), np.nan)
    for i, t in enumerate(rows):
        for j, name in enumerate(features):
            if name.startswith(PLAYBOOK_FEATURE):
                out[i, j] = 1.0 if name == PLAYBOOK_FEATURE + t.playbook else 0.0
                continue
            v = t.features.get(name)
            if v is not None and math.isfinite(v):
                out[i, j] = float(v)
    return out


def fit_meta_classifier(trades: Sequence[LabeledTrade], config: LearnerConfig,
                        features: Sequence[str]) -> CalibratedClassifierCV | None:
    """The calibrated classifier of trades in time order, or None if they cannot make one."""
    y = np.asarray([t.label for t in trades])
    if len(trades) < config.policy.min_meta_trades or y.min() == y.max():
        return None
    x = feature_matrix(trades, features)
    splits = [(tr, te) for tr, te in TimeSeriesSplit(n_splits=config.policy.calibration_folds).split(x)
              if y[tr].min() != y[tr].max()]
    if not splits:
        return None
    model = CalibratedClassifierCV(meta_pipeline(config), method="sigmoid", cv=splits, ensemble=True)
    return model.fit(x, y)


def export_meta_model(playbook: str, model: CalibratedClassifierCV, features: Sequence[str],
                      trades: Sequence[LabeledTrade]) -> MetaModel:
    """The fitted classifier as numbers (:class:`MetaModel`): one member per calibrated fold."""
    members = []
    for fold in model.calibrated_classifiers_:
        steps = dict(fold.estimator.named_steps)
        impute, scale, logistic = steps["impute"], steps["scale"], steps["logistic"]
        calibrator = fold.calibrators[0]
        members.append(MetaMember(
            fill=tuple(float(v) for v in impute.statistics_),
            center=tuple(float(v) for v in scale.mean_),
            scale=tuple(float(v) for v in scale.scale_),
            coef=tuple(float(v) for v in logistic.coef_[0]),
            intercept=float(logistic.intercept_[0]),
            a=float(calibrator.a_),
            b=float(calibrator.b_),
        ))
    wins = sum(t.label for t in trades)
    return MetaModel(playbook, tuple(features), tuple(members), len(trades), wins / len(trades))


def fit_policy(trades: Iterable[LabeledTrade], config: LearnerConfig, cutoff_ns: int, version: int) -> LearnerPolicy:
    """The policy of the trades that exited before ``cutoff_ns`` (module docstring)."""
    used = sorted((t for t in trades if t.exit_ts < cutoff_ns), key=lambda t: (t.exit_ts, t.id))
    buckets = policy_buckets(config)
    counts: dict[tuple[str, str], list[float]] = {}
    by_playbook: dict[str, list[LabeledTrade]] = {}
    for t in used:
        wl = counts.setdefault((t.playbook, bucket_of(buckets, t.features)), [0.0, 0.0])
        wl[0 if t.label else 1] += 1.0
        by_playbook.setdefault(t.playbook, []).append(t)
    arms = tuple(ArmStats(pb, b, w, lo) for (pb, b), (w, lo) in sorted(counts.items()))
    meta = []
    features = tuple(config.meta_label.features)
    for pb, rows in sorted(by_playbook.items()):
        model = fit_meta_classifier(rows, config, features)
        if model is not None:
            meta.append(export_meta_model(pb, model, features, rows))
    pooled = (*features, *(PLAYBOOK_FEATURE + pb for pb in sorted(by_playbook)))
    model = fit_meta_classifier(used, config, pooled)
    if model is not None:
        meta.append(export_meta_model(POOLED, model, pooled, used))
    p = config.policy
    return LearnerPolicy(version=version, trained_through=cutoff_ns, trades=len(used), seed=config.seed,
                         epsilon=p.epsilon, abstain_value=p.abstain_value, buckets=buckets, arms=arms,
                         meta=tuple(meta))
