"""Bayesian online change-point detection (Adams & MacKay, 2007) and regime naming.

:class:`Bocpd` keeps the posterior over the *run length* (observations since the last change) with
a constant hazard ``h = 1 / expected_run`` and a Normal-Gamma conjugate model per run (unknown mean
and variance, so the predictive is a Student-t). Each update is O(max_run): run lengths past
``max_run`` share one bucket (the longest run's statistics are kept), so memory and time per
observation are bounded however long the stream runs.

Conventions: after observation t the entry for run length r holds the statistics of the last r
observations; the new run (r = 0) holds the prior. The prior's variance scale follows a slow
exponentially weighted baseline of the observations' second moment (set from the first ``warmup``
observations, then half-life ``baseline_halflife``), so one detector works for any instrument and
any vol level (an empirical-Bayes prior).

A change is *reported* when the MAP run length collapses: it falls by at least ``min_drop`` from
the previous observation and the segment it implies starts at least ``min_drop`` observations after
the last reported one (a single change whose MAP flickers is reported once). The score is the
posterior probability that a change happened within the MAP run, i.e. P(r_t <= r*_t).

:class:`ReturnRegimeDetector` feeds 1-minute log returns of ``close`` of one underlying into a
Bocpd and names the post-change segment from its posterior statistics:

* ``trend``: |segment mean| / its standard error >= ``trend_t``;
* ``high_vol``: else, segment variance >= ``high_vol_ratio`` x the baseline variance;
* ``range``: otherwise.

A name read from the 1-3 returns a collapse needs is a guess, so the segment is named again once
it holds ``confirm_after`` returns (if the MAP run is still that segment); a different name is
reported as a further RegimeChange (same segment, better name).

Gaps longer than ``max_gap_s`` (overnight, halts) and out-of-order or repeated vectors produce no
return. Pure: no clock, no I/O.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray
from scipy.special import gammaln

from services.core.calendar import NS_PER_S
from services.core.events import RegimeChange
from services.learner.config import ChangePointConfig

FloatArray = NDArray[np.float64]


def logsumexp(a: FloatArray) -> float:
    """log(sum(exp(a))) of a non-empty finite array (scipy's, without its per-call overhead)."""
    m = float(np.max(a))
    return m + math.log(float(np.sum(np.exp(a - m))))
UNKNOWN_REGIME = "unknown"
_MIN_VAR = 1e-18


@dataclass(frozen=True, slots=True)
class RunStats:
    """Posterior statistics of one run: mean, variance (E[sigma^2]) and the mean's evidence kappa."""

    run_length: int
    mean: float
    variance: float
    kappa: float


@dataclass(frozen=True, slots=True)
class ChangePoint:
    """A reported change: the observation count ``t``, the new run and the collapse it came from."""

    t: int
    run_length: int
    previous_run_length: int
    score: float
    stats: RunStats


class Bocpd:
    """Run-length posterior with Normal-Gamma runs; see the module docstring."""

    _ARRAYS = ("log_r", "mu", "kappa", "alpha", "beta")

    def __init__(self, config: ChangePointConfig | None = None) -> None:
        self.config = config or ChangePointConfig()
        cfg = self.config
        self.log_h = math.log(1.0 / cfg.expected_run)
        self.log_1mh = math.log1p(-1.0 / cfg.expected_run)
        self.t = 0
        self.baseline_var = 0.0
        self.warm: list[float] = []
        self.prev_map = 0
        self.last_change_start = -(10**9)
        self.log_r: FloatArray = np.zeros(1)
        self.mu: FloatArray = np.zeros(1)
        self.kappa: FloatArray = np.full(1, cfg.kappa0)
        self.alpha: FloatArray = np.full(1, cfg.alpha0)
        self.beta: FloatArray = np.zeros(1)

    @property
    def ready(self) -> bool:
        """True once the warm-up has set the prior's scale."""
        return not self.warm and self.t > 0

    @property
    def map_run_length(self) -> int:
        return int(np.argmax(self.log_r))

    def run_length_posterior(self) -> FloatArray:
        """P(r_t = r) for r = 0..len-1 (the last entry is 'at least that long' once truncated)."""
        return np.exp(self.log_r)

    def _prior_beta(self) -> float:
        return self.config.alpha0 * max(self.baseline_var, _MIN_VAR)

    def update(self, x: float) -> ChangePoint | None:
        """Add one observation; the ChangePoint if the MAP run length collapsed."""
        if not math.isfinite(x):
            raise ValueError(f"observation must be finite, got {x}")
        cfg = self.config
        if self.t == 0 and len(self.warm) < cfg.warmup:
            self.warm.append(x)
            if len(self.warm) < cfg.warmup:
                return None
            # Warm-up complete: the baseline starts as the mean square of the warm-up, then replay it.
            self.baseline_var = max(float(np.mean(np.square(self.warm))), _MIN_VAR)
            self.beta = np.full(1, self._prior_beta())
            held, self.warm = self.warm, []
            change = None
            for v in held:
                change = self._step(v) or change
            return change
        return self._step(x)

    def _step(self, x: float) -> ChangePoint | None:
        cfg = self.config
        mu, kappa, alpha, beta = self.mu, self.kappa, self.alpha, self.beta
        # Student-t predictive of x under every run length.
        nu = 2.0 * alpha
        scale2 = beta * (kappa + 1.0) / (alpha * kappa)
        log_pred = (
            gammaln((nu + 1.0) / 2.0)
            - gammaln(nu / 2.0)
            - 0.5 * np.log(nu * math.pi * scale2)
            - (nu + 1.0) / 2.0 * np.log1p((x - mu) ** 2 / (nu * scale2))
        )
        joint = self.log_r + log_pred
        log_r = np.concatenate(([logsumexp(joint) + self.log_h], joint + self.log_1mh))
        log_r -= logsumexp(log_r)
        prior_beta = self._prior_beta()
        self.mu = np.concatenate(([0.0], (kappa * mu + x) / (kappa + 1.0)))
        self.kappa = np.concatenate(([cfg.kappa0], kappa + 1.0))
        self.alpha = np.concatenate(([cfg.alpha0], alpha + 0.5))
        self.beta = np.concatenate(([prior_beta], beta + kappa * (x - mu) ** 2 / (2.0 * (kappa + 1.0))))
        if len(log_r) > cfg.max_run + 1:
            # Runs of max_run and longer share the last bucket, with the longest run's statistics.
            log_r[-2] = np.logaddexp(log_r[-2], log_r[-1])
            log_r = log_r[:-1]
            for name in ("mu", "kappa", "alpha", "beta"):
                arr = getattr(self, name)
                arr[-2] = arr[-1]
                setattr(self, name, arr[:-1])
        self.log_r = np.maximum(log_r, -1e4)  # keep every entry finite (JSON-safe state)
        self.t += 1
        decay = 0.5 ** (1.0 / cfg.baseline_halflife)
        self.baseline_var = max(decay * self.baseline_var + (1.0 - decay) * x * x, _MIN_VAR)

        r_map = self.map_run_length
        prev, self.prev_map = self.prev_map, r_map
        start = self.t - r_map
        if prev - r_map < cfg.min_drop or start < self.last_change_start + cfg.min_drop:
            return None
        self.last_change_start = start
        return ChangePoint(self.t, r_map, prev, self.score(r_map), self.run_stats(r_map))

    def score(self, run_length: int) -> float:
        """P(r_t <= run_length): the probability that a change happened within that many observations."""
        return min(1.0, float(np.exp(logsumexp(self.log_r[: run_length + 1]))))

    def run_stats(self, run_length: int) -> RunStats:
        """Posterior statistics of the run of ``run_length`` observations (capped at the longest kept)."""
        r = min(run_length, len(self.log_r) - 1)
        a, b = float(self.alpha[r]), float(self.beta[r])
        variance = b / (a - 1.0) if a > 1.0 else b / a
        return RunStats(r, float(self.mu[r]), variance, float(self.kappa[r]))

    # --- state ----------------------------------------------------------------------------------

    def state(self) -> dict[str, Any]:
        return {
            "t": self.t,
            "baseline_var": self.baseline_var,
            "warm": list(self.warm),
            "prev_map": self.prev_map,
            "last_change_start": self.last_change_start,
            **{name: getattr(self, name).tolist() for name in self._ARRAYS},
        }

    def load_state(self, doc: Mapping[str, Any]) -> None:
        arrays = {name: np.asarray(doc[name], dtype=np.float64) for name in self._ARRAYS}
        sizes = {a.shape for a in arrays.values()}
        if len(sizes) != 1 or len(next(iter(sizes))) != 1 or not all(np.all(np.isfinite(a)) for a in arrays.values()):
            raise ValueError("change-point state: run-length arrays must be finite and of one length")
        if len(arrays["log_r"]) > self.config.max_run + 1:
            raise ValueError(f"change-point state holds more than max_run={self.config.max_run} run lengths")
        for name, arr in arrays.items():
            setattr(self, name, arr)
        self.t = int(doc["t"])
        self.baseline_var = float(doc["baseline_var"])
        self.warm = [float(v) for v in doc["warm"]]
        self.prev_map = int(doc["prev_map"])
        self.last_change_start = int(doc["last_change_start"])


def name_regime(stats: RunStats, baseline_var: float, config: ChangePointConfig) -> str:
    """trend, high_vol or range from a segment's posterior statistics (module docstring)."""
    stderr = math.sqrt(max(stats.variance, _MIN_VAR) / max(stats.kappa, 1.0))
    if abs(stats.mean) / stderr >= config.trend_t:
        return "trend"
    if stats.variance >= config.high_vol_ratio * baseline_var:
        return "high_vol"
    return "range"


class ReturnRegimeDetector:
    """Change points in 1-minute log returns of one underlying's close, as RegimeChange events."""

    def __init__(self, underlying: str, config: ChangePointConfig | None = None) -> None:
        self.underlying = underlying
        self.config = config or ChangePointConfig()
        self.bocpd = Bocpd(self.config)
        self.last_ts: int | None = None
        self.last_close: float | None = None
        self.regime = UNKNOWN_REGIME
        self.pending_start: int | None = None  # start of a reported segment not yet named again

    def on_close(self, ts: int, close: float) -> RegimeChange | None:
        """Feed the close of the bar at ``ts``; a RegimeChange when a change point is reported."""
        if not (math.isfinite(close) and close > 0):
            return None
        if self.last_ts is not None and ts <= self.last_ts:
            return None  # repeated or out of order: already seen
        previous_ts, previous_close = self.last_ts, self.last_close
        self.last_ts, self.last_close = ts, close
        if previous_ts is None or previous_close is None or ts - previous_ts > self.config.max_gap_s * NS_PER_S:
            return None
        bocpd = self.bocpd
        change = bocpd.update(math.log(close / previous_close))
        if change is not None:
            self.pending_start = change.t - change.run_length
            return self._report(ts, name_regime(change.stats, bocpd.baseline_var, self.config), change.score)
        r_map = bocpd.map_run_length
        if self.pending_start is None or r_map < self.config.confirm_after:
            return None
        start, self.pending_start = self.pending_start, None
        if abs((bocpd.t - r_map) - start) > 2:
            return None  # the MAP run is no longer the reported segment
        regime = name_regime(bocpd.run_stats(r_map), bocpd.baseline_var, self.config)
        return self._report(ts, regime, bocpd.score(r_map)) if regime != self.regime else None

    def _report(self, ts: int, regime: str, score: float) -> RegimeChange:
        previous, self.regime = self.regime, regime
        return RegimeChange(ts=ts, underlying=self.underlying, regime=regime, previous=previous, score=round(score, 6))

    def state(self) -> dict[str, Any]:
        return {
            "underlying": self.underlying,
            "last_ts": self.last_ts,
            "last_close": self.last_close,
            "regime": self.regime,
            "pending_start": self.pending_start,
            "bocpd": self.bocpd.state(),
        }

    @classmethod
    def from_state(cls, doc: Mapping[str, Any], config: ChangePointConfig | None = None) -> ReturnRegimeDetector:
        det = cls(str(doc["underlying"]), config)
        det.last_ts = None if doc["last_ts"] is None else int(doc["last_ts"])
        det.last_close = None if doc["last_close"] is None else float(doc["last_close"])
        det.regime = str(doc["regime"])
        det.pending_start = None if doc["pending_start"] is None else int(doc["pending_start"])
        det.bocpd.load_state(doc["bocpd"])
        return det
