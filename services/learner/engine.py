"""LearnerEngine: trade outcomes and feature vectors in; gate probabilities, LearnerUpdates and
RegimeChanges out.

Models (each in its own module):

* :class:`~services.learner.meta_label.MetaLabeler`, one per playbook (a playbook is one primary
  model): P(profitable | the playbook fired, context features at entry);
* :class:`~services.learner.bandit.BetaBandit`: Beta(1 + wins, 1 + losses) per (playbook, context
  bucket);
* :class:`~services.learner.changepoint.ReturnRegimeDetector`, one per underlying: change points in
  1-minute log returns of ``close``.

Gate probability (:meth:`LearnerEngine.probability`): the meta-labeler's calibrated probability
``m`` is a prior worth ``k = combine.prior_strength`` pseudo-trades, and the bucket's own evidence
(``w`` = alpha - 1 wins and ``l`` = beta - 1 losses of the bandit arm) updates it::

    Beta(k m + w, k (1 - m) + l)         # posterior of the playbook's win rate in this context
    mean p = (k m + w) / (k + w + l)

So an unseen playbook is centred on ``m`` (0.5 before any outcome), a bucket with plenty of trades
converges to its own win rate, and where the two agree the estimate stays put.

* ``combine.mode: thompson`` (default): the gate gets a *draw* from that Beta (Thompson sampling),
  so against a threshold it passes with probability P(win rate >= threshold). A playbook whose
  estimate sits just under the threshold keeps trading now and then and so keeps being learned
  about; a clearly losing one is closed almost always. The draw's generator is seeded from the
  config's seed, the arm, its evidence and the features, so the same state and features give the
  same draw: replays stay deterministic and a repeated evaluation is harmless.
* ``combine.mode: mean``: the gate gets the posterior mean. Steadier, but a gate that closes sees
  no further outcomes of that playbook and context, so it stays closed.

LearnerUpdate ``gates`` always carry posterior means (the learner's view, not a draw).

A TradeOutcome is labelled 1 iff pnl > 0 (the reports' definition of a win; scratches are not
wins). Its ``context`` (the intent's feature snapshot) is what the models learn from;
``learner_probability`` in it is never used (the learner does not learn from its own output).
Outcome ids are remembered (``dedupe_window``) so a redelivery changes nothing.

Pure: no I/O, no wall clock. :meth:`LearnerEngine.state` is a JSON-serialisable dict (StateStore
key ``dreambot:learner_state``, MLflow artifact) and :meth:`LearnerEngine.load_state` restores it.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from services.core.events import FeatureVector, LearnerUpdate, RegimeChange, TradeOutcome
from services.learner.bandit import BetaBandit, stable_hash
from services.learner.changepoint import ReturnRegimeDetector
from services.learner.config import LearnerConfig
from services.learner.meta_label import MetaLabeler

MODEL_NAME: Final = "meta_label+beta_bandit"
STATE_FORMAT: Final = 1


@dataclass(frozen=True, slots=True)
class LabeledTrade:
    """One finished trade as the learner sees it (from a TradeOutcome or a trades JSON record)."""

    id: str
    playbook: str
    underlying: str
    entry_ts: int
    exit_ts: int
    pnl: float
    features: Mapping[str, float]

    @property
    def label(self) -> int:
        return 1 if self.pnl > 0 else 0

    @classmethod
    def from_outcome(cls, outcome: TradeOutcome) -> LabeledTrade:
        return cls(
            outcome.id,
            outcome.playbook,
            outcome.underlying,
            outcome.entry_ts,
            outcome.exit_ts,
            outcome.pnl,
            dict(outcome.context),
        )


class LearnerEngine:
    """Online learner of gate probabilities and detector of regime changes; see the module docstring."""

    def __init__(self, config: LearnerConfig | None = None) -> None:
        self.config = config or LearnerConfig()
        cfg = self.config
        self.bandit = BetaBandit(cfg.bandit.buckets, discount=cfg.bandit.discount, seed=cfg.seed)
        self.meta: dict[str, MetaLabeler] = {}
        self.detectors: dict[str, ReturnRegimeDetector] = {}
        self.latest: dict[str, dict[str, float]] = {}
        self.version = 0
        self.outcomes = 0
        self._seen: deque[str] = deque(maxlen=cfg.dedupe_window)
        self._seen_set: set[str] = set()

    # --- the gate -------------------------------------------------------------------------------

    @property
    def playbooks(self) -> list[str]:
        """Playbooks with at least one outcome, sorted."""
        return sorted(self.meta)

    def meta_probability(self, playbook: str, features: Mapping[str, float]) -> float:
        """The meta-labeler's calibrated P(profitable) (0.5 for a playbook without outcomes)."""
        model = self.meta.get(playbook)
        return 0.5 if model is None else model.predict_proba(features)

    def posterior(self, playbook: str, features: Mapping[str, float]) -> tuple[float, float]:
        """Beta(k m + w, k (1 - m) + l): meta-label prior updated by the bucket's evidence."""
        k = self.config.combine.prior_strength
        m = self.meta_probability(playbook, features)
        alpha, beta = self.bandit.posterior(playbook, features)
        return k * m + (alpha - 1.0), k * (1.0 - m) + (beta - 1.0)

    def probability(self, playbook: str, features: Mapping[str, float]) -> float:
        """Gate probability that ``playbook``'s trade in this context pays (module docstring)."""
        if self.config.combine.mode == "mean":
            return self.mean_probability(playbook, features)
        a, b = self.posterior(playbook, features)
        bucket = self.bandit.bucket(features)
        salt = stable_hash(repr(sorted((k, round(v, 6)) for k, v in features.items() if math.isfinite(v))))
        rng = self.bandit.rng(playbook, bucket, a + b, salt)
        return float(rng.beta(a, b))

    def mean_probability(self, playbook: str, features: Mapping[str, float]) -> float:
        """Posterior mean win probability of ``playbook`` in this context (no draw)."""
        a, b = self.posterior(playbook, features)
        return a / (a + b)

    def gates(self, features: Mapping[str, float]) -> dict[str, float]:
        """Posterior mean of every known playbook in this context (what LearnerUpdate carries)."""
        return {pb: round(self.mean_probability(pb, features), 6) for pb in self.playbooks}

    # --- inputs ---------------------------------------------------------------------------------

    def reward(self, pnl: float) -> float:
        """Bandit reward of a trade: 1/0 for win/not (win_loss) or pnl scaled into [0, 1] (pnl)."""
        cfg = self.config.bandit
        if cfg.reward == "win_loss":
            return 1.0 if pnl > 0 else 0.0
        return min(1.0, max(0.0, 0.5 + pnl / (2.0 * cfg.pnl_scale_usd)))

    def learn(self, trade: LabeledTrade) -> bool:
        """Online update of the playbook's meta-labeler and bandit arm; False for a seen id."""
        if trade.id in self._seen_set:
            return False
        if len(self._seen) == self._seen.maxlen:
            self._seen_set.discard(self._seen[0])
        self._seen.append(trade.id)
        self._seen_set.add(trade.id)
        model = self.meta.get(trade.playbook)
        if model is None:
            model = self.meta[trade.playbook] = MetaLabeler(self.config.meta_label)
        model.update(trade.features, trade.label)
        self.bandit.update(trade.playbook, trade.features, self.reward(trade.pnl))
        self.outcomes += 1
        self.version += 1
        return True

    def on_outcome(self, outcome: TradeOutcome) -> LearnerUpdate | None:
        """Learn from a closed trade; the new per-playbook gates for its underlying (None if a redelivery).

        The gates are evaluated on the underlying's latest FeatureVector (the trade's own context
        until one has been seen).
        """
        if not self.learn(LabeledTrade.from_outcome(outcome)):
            return None
        context = self.latest.get(outcome.underlying, outcome.context)
        return LearnerUpdate(
            ts=outcome.ts,
            underlying=outcome.underlying,
            model=MODEL_NAME,
            version=self.version,
            gates=self.gates(context),
        )

    def on_features(self, fv: FeatureVector) -> RegimeChange | None:
        """Track the latest context and feed ``close`` to the underlying's change-point detector.

        Vectors without a positive ``close`` (e.g. per-contract marks) are ignored.
        """
        close = fv.values.get("close")
        if close is None or not (math.isfinite(close) and close > 0):
            return None
        detector = self.detectors.get(fv.symbol)
        if detector is None:
            detector = self.detectors[fv.symbol] = ReturnRegimeDetector(fv.symbol, self.config.changepoint)
        if detector.last_ts is None or fv.ts > detector.last_ts:
            self.latest[fv.symbol] = dict(fv.values)
        return detector.on_close(fv.ts, close)

    def regime(self, underlying: str) -> str:
        """The latest regime named for ``underlying`` ("unknown" before the first change point)."""
        detector = self.detectors.get(underlying)
        return "unknown" if detector is None else detector.regime

    # --- batch ----------------------------------------------------------------------------------

    def train(self, trades: Iterable[LabeledTrade]) -> LearnerEngine:
        """Refit the meta-labelers and bandit from a history (sorted by exit time, ties by id).

        Each playbook's meta-labeler is fitted in batch (IRLS, forward-chained calibration); the
        bandit replays the trades in exit order. Detectors and latest features are kept.
        """
        ordered = sorted(trades, key=lambda t: (t.exit_ts, t.id))
        by_playbook: dict[str, list[LabeledTrade]] = {}
        for t in ordered:
            by_playbook.setdefault(t.playbook, []).append(t)
        self.meta = {
            pb: MetaLabeler(self.config.meta_label).train([t.features for t in ts], [t.label for t in ts])
            for pb, ts in sorted(by_playbook.items())
        }
        self.bandit.reset()
        self._seen.clear()
        self._seen_set.clear()
        for t in ordered:
            self.bandit.update(t.playbook, t.features, self.reward(t.pnl))
            if len(self._seen) == self._seen.maxlen:
                self._seen_set.discard(self._seen[0])
            self._seen.append(t.id)
            self._seen_set.add(t.id)
        self.outcomes = len(ordered)
        self.version += 1
        return self

    def predict(self, trades: Sequence[LabeledTrade]) -> list[float]:
        """Posterior mean win probability of each trade (its playbook and entry context); for evaluation."""
        return [self.mean_probability(t.playbook, t.features) for t in trades]

    # --- state ----------------------------------------------------------------------------------

    def state(self) -> dict[str, Any]:
        """Everything the engine learned, as plain JSON types (config included for reference)."""
        return {
            "format": STATE_FORMAT,
            "model": MODEL_NAME,
            "version": self.version,
            "outcomes": self.outcomes,
            "config": self.config.model_dump(mode="json"),
            "meta": {pb: m.state() for pb, m in sorted(self.meta.items())},
            "bandit": self.bandit.state(),
            "detectors": {s: d.state() for s, d in sorted(self.detectors.items())},
            "latest": {s: dict(sorted(v.items())) for s, v in sorted(self.latest.items())},
            "seen": list(self._seen),
        }

    def load_state(self, doc: Mapping[str, Any]) -> None:
        """Restore :meth:`state` output; ValueError (one line) if it is not a learner state for this config."""
        if not isinstance(doc, Mapping) or doc.get("format") != STATE_FORMAT:
            raise ValueError(f"not a learner state of format {STATE_FORMAT}")
        try:
            bandit = BetaBandit(self.config.bandit.buckets, discount=self.config.bandit.discount, seed=self.config.seed)
            bandit.load_state(doc["bandit"])
            meta = {str(pb): MetaLabeler.from_state(m, self.config.meta_label) for pb, m in doc["meta"].items()}
            detectors = {
                str(s): ReturnRegimeDetector.from_state(d, self.config.changepoint) for s, d in doc["detectors"].items()
            }
            latest = {str(s): {str(k): float(v) for k, v in vals.items()} for s, vals in doc["latest"].items()}
            seen = [str(i) for i in doc["seen"]]
            version, outcomes = int(doc["version"]), int(doc["outcomes"])
        except (KeyError, TypeError, AttributeError) as exc:
            raise ValueError(f"learner state is incomplete or malformed: {type(exc).__name__}: {exc}") from None
        self.bandit, self.meta, self.detectors, self.latest = bandit, meta, detectors, latest
        self.version, self.outcomes = version, outcomes
        self._seen = deque(seen[-self.config.dedupe_window :], maxlen=self.config.dedupe_window)
        self._seen_set = set(self._seen)
