"""Walk-forward retraining: the policy refitted on a schedule from the trades closed so far.

Modelled on FreqAI's backtesting (periodic retraining emulated inside one replay): the learner
keeps every trade outcome it receives, and at the first FeatureVector of every
``policy.retrain_every_sessions``-th new New York session it refits the policy
(:func:`~services.learner.policy_fit.fit_policy`) on the trades that exited strictly before that
vector's time, once there are ``policy.min_retrain_trades`` of them. A retrain can therefore never
see an outcome from after its cut-off: not one that has not arrived yet (event time), and not one
handed in early (the cut-off filter). Live, the same schedule retrains on the trades closed so far.
"""

from __future__ import annotations

import datetime as dt

from services.core.calendar import ny_date
from services.core.learner_policy import LearnerPolicy
from services.learner.config import LearnerConfig
from services.learner.engine import LabeledTrade
from services.learner.policy_fit import fit_policy


class WalkForward:
    """Collects trades; :meth:`on_time` returns a new policy when a retrain is due."""

    def __init__(self, config: LearnerConfig) -> None:
        self.config = config
        self.trades: list[LabeledTrade] = []
        self._ids: set[str] = set()
        self._session: dt.date | None = None
        self._sessions_since = 0
        self.retrains: list[tuple[int, int]] = []  # (cut-off ns, trades used)
        self.version = 0

    def add(self, trade: LabeledTrade) -> bool:
        """Keep one closed trade (False for an id already kept: a redelivery)."""
        if trade.id in self._ids:
            return False
        self._ids.add(trade.id)
        self.trades.append(trade)
        return True

    def on_time(self, ts: int) -> LearnerPolicy | None:
        """A retrained policy if ``ts`` opens a session that is due for one, else None."""
        day = ny_date(ts)
        if self._session is None or day > self._session:
            first = self._session is None
            self._session = day
            if first:
                return None
            self._sessions_since += 1
            if self._sessions_since < self.config.policy.retrain_every_sessions:
                return None
            usable = sum(1 for t in self.trades if t.exit_ts < ts)
            if usable < self.config.policy.min_retrain_trades:
                return None
            self._sessions_since = 0
            self.version += 1
            policy = fit_policy(self.trades, self.config, ts, self.version)
            self.retrains.append((ts, policy.trades))
            return policy
        return None
