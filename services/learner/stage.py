"""The learner stage: outcomes and features in, LearnerUpdates and RegimeChanges out on ``learner``.

Given a StateStore, the stage restores the engine from ``dreambot:learner_state`` when it starts
and saves it after every outcome it learns from and when input ends, so a restarted learner (or the
training job's artifact, written there) carries on where the last one stopped. Change-point state
that moved since the last save is rebuilt from the next bars (a gap restarts the return stream).

In every learner mode the stage also writes what it knows for people, a
:class:`~services.core.shared_state.LearnerView` under ``dreambot:learner_view`` (arms, the model
in force, regimes, recent change points; :mod:`services.learner.view`), after every outcome learned,
regime change and retrain, and when input ends; the console reads it. A view found there at start
hands its change points and trained-on range to the new one.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Mapping

from services.core import keys, shared_state, topics
from services.core.events import Event, FeatureVector, LearnerUpdate, RegimeChange, TradeOutcome
from services.core.learner_policy import LearnerMode
from services.core.stage import Output
from services.core.state import StateError, StateStore
from services.learner.engine import LabeledTrade, LearnerEngine
from services.learner.view import ViewTracker
from services.learner.walk_forward import WalkForward

POLICY_MODEL = "policy"

LearnerGate = Callable[[str, Mapping[str, float]], float]


def learner_gate(engine: LearnerEngine) -> LearnerGate:
    """The ``learner`` callable SignalEngine takes: ``(playbook, features) -> probability``."""

    def gate(playbook: str, features: Mapping[str, float]) -> float:
        return engine.probability(playbook, features)

    return gate


def encode_state(engine: LearnerEngine) -> bytes:
    """The engine's state as compact, key-sorted JSON (what the StateStore and MLflow hold)."""
    return json.dumps(engine.state(), sort_keys=True, separators=(",", ":"), allow_nan=False).encode()


def decode_state(engine: LearnerEngine, payload: bytes | str) -> None:
    """Load JSON written by :func:`encode_state` into ``engine`` (ValueError if it is not one)."""
    try:
        doc = json.loads(payload)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"learner state is not JSON: {exc}") from None
    engine.load_state(doc)


class LearnerStage:
    """Feeds the LearnerEngine; outputs are keyed by underlying."""

    name: str = "learner"
    inputs: tuple[str, ...] = (topics.OUTCOMES, topics.FEATURES)

    def __init__(self, engine: LearnerEngine, state: StateStore | None = None, mode: LearnerMode = "off") -> None:
        self.engine = engine
        self.mode = mode
        self.walk_forward = WalkForward(engine.config) if mode == "walk-forward" else None
        self._state = state if mode == "off" else None
        if self._state is not None:
            saved = self._state.get(keys.LEARNER_STATE)
            if saved is not None:
                decode_state(engine, saved)
        self._view_store = state
        self.tracker = ViewTracker(mode)
        self._last_ts = 0
        if state is not None:
            # The view is display history only: unreadable or unreachable, the next write replaces it.
            with contextlib.suppress(shared_state.SharedStateError, StateError):
                shown = state.get(keys.LEARNER_VIEW)
                if shown is not None:
                    self.tracker.restore(shared_state.decode_learner_view(shown))

    def handle(self, topic: str, event: Event) -> list[Output]:
        self._last_ts = max(self._last_ts, event.ts)
        out = self._policy_mode(topic, event) if self.mode != "off" else self._online(topic, event)
        if out:
            for o in out:
                if isinstance(o.event, RegimeChange):
                    self.tracker.on_change(o.event)
            self.publish_view()
        return out

    def _online(self, topic: str, event: Event) -> list[Output]:
        if isinstance(event, TradeOutcome):
            update = self.engine.on_outcome(event)
            if update is None:
                return []
            self.tracker.on_outcome(event)
            self.save()
            return [Output(topics.LEARNER, update.underlying, update)]
        if isinstance(event, FeatureVector):
            change = self.engine.on_features(event)
            return [] if change is None else [Output(topics.LEARNER, change.underlying, change)]
        raise ValueError(f"learner stage cannot handle {type(event).__name__} on {topic}")

    def _policy_mode(self, topic: str, event: Event) -> list[Output]:
        if isinstance(event, TradeOutcome):
            if self.walk_forward is not None:
                self.walk_forward.add(LabeledTrade.from_outcome(event))
            return []
        if isinstance(event, FeatureVector):
            out: list[Output] = []
            if self.walk_forward is not None and "close" in event.values:
                policy = self.walk_forward.on_time(event.ts)
                if policy is not None:
                    used = [t.exit_ts for t in self.walk_forward.trades if t.exit_ts < event.ts]
                    self.tracker.on_policy(policy, min(used, default=0))
                    update = LearnerUpdate(ts=event.ts, underlying=event.symbol, model=POLICY_MODEL,
                                           version=policy.version, gates={}, policy=policy)
                    out.append(Output(topics.LEARNER, event.symbol, update))
            change = self.engine.on_features(event)
            if change is not None:
                out.append(Output(topics.LEARNER, change.underlying, change))
            return out
        raise ValueError(f"learner stage cannot handle {type(event).__name__} on {topic}")

    def save(self) -> None:
        """Write the engine's state to the StateStore (no-op without one)."""
        if self._state is not None:
            self._state.set(keys.LEARNER_STATE, encode_state(self.engine))

    def publish_view(self) -> None:
        """Write the learner's view (:mod:`services.learner.view`) to the StateStore (no-op without one)."""
        if self._view_store is not None:
            self._view_store.set(keys.LEARNER_VIEW, shared_state.encode(self.tracker.view(self.engine, self._last_ts)))

    def finish(self, now_ns: int) -> list[Output]:
        self.save()
        self.publish_view()
        return []
