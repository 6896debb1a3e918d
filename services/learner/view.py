"""The learner's view for people (``keys.LEARNER_VIEW``): arms, the model in force, regimes, change points.

:class:`ViewTracker` follows what the stage hands it (outcomes learned, regime changes, walk-forward
policies) and builds a :class:`~services.core.shared_state.LearnerView` from it and the engine:

- learner off (online learning): the engine's bandit arms, and as model the meta-labeler + bandit at
  the engine's version with the overall and per-playbook trade counts and win rates;
- walk-forward: the arms and meta models of the newest retrained policy (none before the first);
- frozen: the policy lives in signals, so the view carries regimes and change points only.

The trained-on range and the change points are carried over from a view read back after a restart
(:meth:`ViewTracker.restore`), so a restarted learner does not forget the history it showed. Pure.
"""

from __future__ import annotations

from collections import deque
from typing import Final

from services.core.events import RegimeChange, TradeOutcome
from services.core.learner_policy import LearnerMode, LearnerPolicy
from services.core.shared_state import (
    ChangePointView,
    LearnerArmView,
    LearnerModelView,
    LearnerView,
    policy_arms,
    policy_model,
)
from services.learner.engine import MODEL_NAME, LearnerEngine

CHANGE_POINTS_KEPT: Final = 20


class ViewTracker:
    """Collects what the view needs beyond the engine's own state; see the module docstring."""

    def __init__(self, mode: LearnerMode, keep: int = CHANGE_POINTS_KEPT) -> None:
        self.mode = mode
        self.change_points: deque[ChangePointView] = deque(maxlen=keep)
        self.trained_from = 0
        self.trained_through = 0
        self.policy: LearnerPolicy | None = None
        self.policy_from = 0

    def restore(self, view: LearnerView) -> None:
        """Carry the change points and trained-on range of a view written before a restart."""
        self.change_points.extend(view.change_points)
        if view.model is not None and self.mode == "off":
            self.trained_from, self.trained_through = view.model.trained_from, view.model.trained_through

    def on_outcome(self, outcome: TradeOutcome) -> None:
        """A trade the engine learned from widens the trained-on range."""
        if self.trained_from == 0 or outcome.exit_ts < self.trained_from:
            self.trained_from = outcome.exit_ts
        self.trained_through = max(self.trained_through, outcome.exit_ts)

    def on_change(self, change: RegimeChange) -> None:
        self.change_points.append(ChangePointView(change.ts, change.underlying, change.regime, change.previous,
                                                  change.score))

    def on_policy(self, policy: LearnerPolicy, first_exit_ts: int) -> None:
        """A walk-forward retrain is now the model in force (``first_exit_ts``: its oldest trade)."""
        self.policy, self.policy_from = policy, first_exit_ts

    def view(self, engine: LearnerEngine, ts: int) -> LearnerView:
        """The view at event time ``ts``."""
        model: LearnerModelView | None = None
        arms: tuple[LearnerArmView, ...] = ()
        if self.mode == "off":
            arms = tuple(LearnerArmView(pb, bucket, a.alpha, a.beta, a.evidence)
                         for (pb, bucket), a in engine.bandit.arms().items())
            model = LearnerModelView(MODEL_NAME, engine.version, engine.outcomes, online_metrics(engine),
                                     self.trained_from, self.trained_through)
        elif self.mode == "walk-forward" and self.policy is not None:
            arms = policy_arms(self.policy)
            model = policy_model(self.policy, "walk-forward policy", self.policy_from)
        regimes = {symbol: engine.regime(symbol) for symbol in sorted(engine.detectors)}
        return LearnerView(ts, self.mode, model, arms, regimes, tuple(self.change_points))


def online_metrics(engine: LearnerEngine) -> dict[str, float]:
    """Trades and win rate of the online meta-labelers, overall and per playbook (``<playbook>.win_rate``)."""
    total = sum(m.n for m in engine.meta.values())
    wins = sum(m.positives for m in engine.meta.values())
    metrics = {"trades": float(total), "win_rate": wins / total if total else 0.0}
    for pb, m in sorted(engine.meta.items()):
        metrics[f"{pb}.trades"] = float(m.n)
        metrics[f"{pb}.win_rate"] = m.positives / m.n if m.n else 0.0
    return metrics
