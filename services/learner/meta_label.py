"""Meta-labeling (López de Prado, *Advances in Financial Machine Learning*, ch. 3.6).

The primary model (a playbook) decides the side; the meta-labeler, given that the primary signal
fired, predicts whether the trade will be profitable (label 1 iff pnl > 0) from the context
features at entry. Here it is an L2-regularised logistic regression written with numpy:

* features are standardized with running (Welford) means and variances; a missing or non-finite
  feature counts as its mean (z = 0) and z is clipped to ``+-clip_z``;
* the objective over n outcomes is mean log loss + ``l2_n``/2 * ||w||^2 + ``b2_n``/2 * b^2 with
  ``l2_n = l2 + prior_precision / n`` and ``b2_n = intercept_prior_precision / n``: Gaussian priors
  (centred on 0, i.e. on a coin flip) worth a fixed number of outcomes, so a playbook with three
  trades gets a cautious model instead of a perfectly separating one, and ``l2`` alone remains
  once the history is long;
* :meth:`MetaLabeler.update` takes one SGD step (online, from each TradeOutcome), of size
  ``learning_rate / sqrt(1 + n / learning_rate_halving)`` after n outcomes;
* :meth:`MetaLabeler.train` fits a batch exactly by Newton's method (IRLS) on the same objective.

Calibration: the logit is the intercept ``b`` plus the feature part ``f = z . w``; a Platt map
p = sigmoid(b + c + a * f) rescales the feature part (slope ``a``) and corrects the offset (``c``),
fitted on out-of-sample scores only, so the probability means what it says:

* in ``train()``, the history (in time order) is cut into ``folds + 1`` blocks; block k is scored
  by a model fitted on blocks 0..k-1 (forward chaining, never the future), and (a, c) is fitted on
  those scores (each with its fold's intercept as a fixed offset) by Newton's method with a pull
  ``calibration_l2`` towards the identity (1, 0);
* online, each outcome is first scored by the current model (a prequential, out-of-sample score)
  and the slope ``a`` takes one SGD step on it before the model learns from the outcome (online,
  the intercept already tracks the base rate, so ``c`` keeps its batch value).

Scaling only the feature part keeps the base rate in the intercept: features that do not rank out
of sample drive ``a`` towards 0, i.e. towards the base rate, never towards 0.5. ``a`` is kept >= 0,
so a model that ranks backwards out of sample is flattened rather than inverted.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.stats import rankdata

from services.learner.config import MetaLabelConfig

FloatArray = NDArray[np.float64]
_EPS = 1e-12


def sigmoid(z: ArrayLike) -> FloatArray:
    """Numerically stable logistic function."""
    z = np.asarray(z, dtype=np.float64)
    out = np.empty_like(z)
    pos = z >= 0
    out[pos] = 1.0 / (1.0 + np.exp(-z[pos]))
    ez = np.exp(z[~pos])
    out[~pos] = ez / (1.0 + ez)
    return out


def _sigmoid1(z: float) -> float:
    if z >= 0:
        return 1.0 / (1.0 + math.exp(-z))
    ez = math.exp(z)
    return ez / (1.0 + ez)


# --- metrics (used by the training job and the tests) --------------------------------------------


def roc_auc(y: ArrayLike, p: ArrayLike) -> float | None:
    """Area under the ROC curve (Mann-Whitney, ties averaged); None unless both classes occur."""
    yy = np.asarray(y, dtype=np.float64)
    pp = np.asarray(p, dtype=np.float64)
    n_pos = int((yy == 1).sum())
    n_neg = int((yy == 0).sum())
    if n_pos == 0 or n_neg == 0:
        return None
    ranks = rankdata(pp)
    return float((ranks[yy == 1].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def log_loss(y: ArrayLike, p: ArrayLike) -> float:
    """Mean negative log-likelihood of labels ``y`` under probabilities ``p`` (clipped to 1e-12)."""
    yy = np.asarray(y, dtype=np.float64)
    pp = np.clip(np.asarray(p, dtype=np.float64), _EPS, 1 - _EPS)
    return float(-np.mean(yy * np.log(pp) + (1 - yy) * np.log(1 - pp)))


def brier(y: ArrayLike, p: ArrayLike) -> float:
    """Mean squared error of probabilities ``p`` against labels ``y``."""
    return float(np.mean((np.asarray(p, dtype=np.float64) - np.asarray(y, dtype=np.float64)) ** 2))


# --- the model ---------------------------------------------------------------------------------


class MetaLabeler:
    """Online + batch L2 logistic regression with standardized features and Platt calibration."""

    def __init__(self, config: MetaLabelConfig | None = None, features: Sequence[str] | None = None) -> None:
        self.config = config or MetaLabelConfig()
        self.features = tuple(features if features is not None else self.config.features)
        d = len(self.features)
        self.count = np.zeros(d)
        self.mean = np.zeros(d)
        self.m2 = np.zeros(d)
        self.w = np.zeros(d)
        self.b = 0.0
        self.a_cal = 1.0
        self.c_cal = 0.0
        self.n = 0
        self.positives = 0

    # --- features -------------------------------------------------------------------------------

    def vector(self, features: Mapping[str, float]) -> FloatArray:
        """Raw feature values in model order; missing or non-finite -> NaN."""
        out = np.full(len(self.features), np.nan)
        for i, name in enumerate(self.features):
            v = features.get(name)
            if v is not None and math.isfinite(v):
                out[i] = float(v)
        return out

    def matrix(self, rows: Sequence[Mapping[str, float]]) -> FloatArray:
        """Raw feature matrix (n x d, NaN for missing) of ``rows``."""
        if not rows:
            return np.empty((0, len(self.features)))
        return np.vstack([self.vector(r) for r in rows])

    def _std(self) -> FloatArray:
        var = np.where(self.count >= 2, self.m2 / np.maximum(self.count - 1, 1), 1.0)
        sd = np.sqrt(np.maximum(var, 0.0))
        return np.where(sd > 1e-12, sd, 1.0)

    def standardize(self, x: FloatArray) -> FloatArray:
        """z-scores of raw values (rows or one vector) with the current statistics, NaN -> 0, clipped."""
        z = (x - self.mean) / self._std()
        z = np.where(np.isfinite(z), z, 0.0)
        return np.clip(z, -self.config.clip_z, self.config.clip_z)

    def _observe(self, x: FloatArray) -> None:
        seen = np.isfinite(x)
        self.count = self.count + seen
        delta = np.where(seen, x - self.mean, 0.0)
        self.mean = self.mean + np.where(seen, delta / np.maximum(self.count, 1), 0.0)
        self.m2 = self.m2 + np.where(seen, delta * (np.where(seen, x, 0.0) - self.mean), 0.0)

    # --- prediction -----------------------------------------------------------------------------

    def feature_score(self, x: FloatArray) -> FloatArray | float:
        """The feature part ``f = z . w`` of the logit for raw values (rows or one vector)."""
        return self.standardize(x) @ self.w

    def raw_score(self, x: FloatArray) -> FloatArray | float:
        """Uncalibrated logit(s) ``b + f`` of raw feature values."""
        return self.feature_score(x) + self.b

    def predict_raw(self, x: FloatArray) -> FloatArray:
        """Calibrated probabilities of a raw feature matrix (n x d)."""
        f = np.asarray(self.feature_score(np.atleast_2d(x)), dtype=np.float64)
        return sigmoid(self.b + self.c_cal + self.a_cal * f)

    def predict_proba(self, features: Mapping[str, float]) -> float:
        """Calibrated P(profitable) for one context."""
        f = float(self.feature_score(self.vector(features)))
        return _sigmoid1(self.b + self.c_cal + self.a_cal * f)

    # --- online learning ------------------------------------------------------------------------

    def update(self, features: Mapping[str, float], label: int) -> float:
        """Learn from one outcome (label 1 = profitable); returns the prequential probability.

        Order: score with the current model (out of sample), step the calibrator on that score,
        fold the values into the running statistics, then one SGD step on the model.
        """
        y = 1.0 if label else 0.0
        cfg = self.config
        x = self.vector(features)
        f = float(self.feature_score(x))
        p_before = _sigmoid1(self.b + self.c_cal + self.a_cal * f)
        if cfg.calibration_learning_rate > 0 and self.n > 0:
            g = p_before - y
            lr = cfg.calibration_learning_rate
            self.a_cal = max(0.0, self.a_cal - lr * (g * f + cfg.calibration_l2 * (self.a_cal - 1.0)))
        self._observe(x)
        z = self.standardize(x)
        p = _sigmoid1(float(z @ self.w + self.b))
        lr = cfg.learning_rate / math.sqrt(1.0 + self.n / cfg.learning_rate_halving)
        self.n += 1
        l2_w, l2_b = self.penalties(self.n)
        # Decay first (never past zero, whatever the step size), then the log-loss gradient.
        self.w = self.w * max(0.0, 1.0 - lr * l2_w) - lr * (p - y) * z
        self.b = self.b * max(0.0, 1.0 - lr * l2_b) - lr * (p - y)
        self.positives += int(y)
        return p_before

    def penalties(self, n: int) -> tuple[float, float]:
        """(weight, intercept) L2 coefficients of the mean objective over ``n`` outcomes."""
        cfg = self.config
        k = max(n, 1)
        return cfg.l2 + cfg.prior_precision / k, cfg.intercept_prior_precision / k

    # --- batch learning -------------------------------------------------------------------------

    def train(self, rows: Sequence[Mapping[str, float]], labels: Sequence[int]) -> MetaLabeler:
        """Refit from scratch on a history in time order (IRLS + forward-chained Platt scaling)."""
        x = self.matrix(rows)
        y = np.asarray([1.0 if v else 0.0 for v in labels])
        if len(y) != len(x):
            raise ValueError(f"{len(x)} rows but {len(y)} labels")
        self._fit_batch(x, y)
        self.a_cal, self.c_cal = 1.0, 0.0
        scores, offsets, outcomes = self._forward_scores(x, y)
        if len(outcomes) >= self.config.min_calibration_samples and 0 < outcomes.sum() < len(outcomes):
            self.a_cal, self.c_cal = fit_platt(scores, outcomes, self.config.calibration_l2, offsets)
        return self

    def _fit_batch(self, x: FloatArray, y: FloatArray) -> None:
        d = len(self.features)
        self.count = np.isfinite(x).sum(axis=0).astype(np.float64)
        with np.errstate(invalid="ignore"):
            filled = np.where(np.isfinite(x), x, 0.0)
            self.mean = np.where(self.count > 0, filled.sum(axis=0) / np.maximum(self.count, 1), 0.0)
            dev = np.where(np.isfinite(x), x - self.mean, 0.0)
        self.m2 = (dev**2).sum(axis=0)
        self.n = len(y)
        self.positives = int(y.sum())
        self.w = np.zeros(d)
        self.b = 0.0
        if self.n == 0:
            return
        z = self.standardize(x)
        self.w, self.b = fit_logistic(z, y, *self.penalties(self.n))

    def _forward_scores(self, x: FloatArray, y: FloatArray) -> tuple[FloatArray, FloatArray, FloatArray]:
        """Out-of-sample feature scores, their fold's intercept and their labels (forward chaining)."""
        n = len(y)
        blocks = self.config.calibration_folds + 1
        if n < blocks * 2:
            return np.empty(0), np.empty(0), np.empty(0)
        cuts = [round(n * k / blocks) for k in range(blocks + 1)]
        scores, offsets, outcomes = [], [], []
        for k in range(1, blocks):
            fold = MetaLabeler(self.config, self.features)
            fold._fit_batch(x[: cuts[k]], y[: cuts[k]])
            test = slice(cuts[k], cuts[k + 1])
            scores.append(np.asarray(fold.feature_score(x[test]), dtype=np.float64))
            offsets.append(np.full(cuts[k + 1] - cuts[k], fold.b))
            outcomes.append(y[test])
        return np.concatenate(scores), np.concatenate(offsets), np.concatenate(outcomes)

    # --- state ----------------------------------------------------------------------------------

    def state(self) -> dict[str, Any]:
        """JSON-serialisable state (plain lists and floats)."""
        return {
            "features": list(self.features),
            "count": self.count.tolist(),
            "mean": self.mean.tolist(),
            "m2": self.m2.tolist(),
            "w": self.w.tolist(),
            "b": self.b,
            "a_cal": self.a_cal,
            "c_cal": self.c_cal,
            "n": self.n,
            "positives": self.positives,
        }

    @classmethod
    def from_state(cls, doc: Mapping[str, Any], config: MetaLabelConfig | None = None) -> MetaLabeler:
        """A model restored from :meth:`state` (its own feature list wins over the config's)."""
        model = cls(config, [str(f) for f in doc["features"]])
        d = len(model.features)
        for name in ("count", "mean", "m2", "w"):
            arr = np.asarray(doc[name], dtype=np.float64)
            if arr.shape != (d,) or not np.all(np.isfinite(arr)):
                raise ValueError(f"meta-label state: {name} must be {d} finite numbers")
            setattr(model, name, arr)
        model.b = float(doc["b"])
        model.a_cal = float(doc["a_cal"])
        model.c_cal = float(doc["c_cal"])
        model.n = int(doc["n"])
        model.positives = int(doc["positives"])
        return model


def _penalised_newton(
    x1: FloatArray,
    y: FloatArray,
    penalty: FloatArray,
    prior: FloatArray,
    offset: FloatArray | None = None,
    max_iter: int = 100,
) -> FloatArray:
    """theta minimising mean log loss of sigmoid(offset + x1 theta) + sum(penalty/2 (theta - prior)^2).

    Newton's method with step halving (the objective is convex, so this converges from ``prior``).
    """
    n = len(y)
    # A tiny ridge keeps the Hessian invertible (separable data, an unpenalised constant column).
    ridge = penalty + 1e-8

    base = np.zeros(n) if offset is None else offset

    def objective(theta: FloatArray) -> float:
        s = base + x1 @ theta
        # log(1 + e^s) - y s, stably
        return float(np.mean(np.logaddexp(0.0, s) - y * s) + 0.5 * np.sum(penalty * (theta - prior) ** 2))

    theta = prior.astype(np.float64).copy()
    current = objective(theta)
    for _ in range(max_iter):
        p = sigmoid(base + x1 @ theta)
        grad = x1.T @ (p - y) / n + penalty * (theta - prior)
        hess = (x1.T * (p * (1 - p))) @ x1 / n + np.diag(ridge)
        step = np.linalg.solve(hess, grad)
        scale = 1.0
        while True:
            candidate = theta - scale * step
            value = objective(candidate)
            if value <= current + 1e-15 or scale < 1e-6:
                break
            scale *= 0.5
        theta, current = candidate, value
        if float(np.max(np.abs(scale * step))) < 1e-9:
            break
    return theta


def fit_logistic(z: FloatArray, y: FloatArray, l2: float, l2_intercept: float = 0.0) -> tuple[FloatArray, float]:
    """Weights and intercept minimising mean log loss + l2/2 ||w||^2 + l2_intercept/2 b^2 (IRLS)."""
    n, d = z.shape
    x1 = np.hstack([z, np.ones((n, 1))])
    penalty = np.full(d + 1, l2)
    penalty[-1] = l2_intercept
    theta = _penalised_newton(x1, y, penalty, np.zeros(d + 1))
    return theta[:d].copy(), float(theta[d])


def fit_platt(scores: FloatArray, y: FloatArray, l2: float, offset: FloatArray | None = None) -> tuple[float, float]:
    """(a, c) of p = sigmoid(offset + c + a * score), pulled towards (1, 0) by ``l2``, with a >= 0."""
    n = len(y)
    x1 = np.column_stack([scores, np.ones(n)])
    a, c = (float(v) for v in _penalised_newton(x1, y, np.array([l2, l2]), np.array([1.0, 0.0]), offset))
    if a < 0:
        # The constrained optimum sits on the boundary a = 0: only the offset remains.
        theta = _penalised_newton(np.ones((n, 1)), y, np.array([l2]), np.array([0.0]), offset)
        a, c = 0.0, float(theta[0])
    return a, c
