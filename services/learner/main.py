"""The learner service: outcomes and features in, LearnerUpdates and RegimeChanges out on ``learner``
(``python -m services.learner.main``).

The engine's state lives in Redis (``dreambot:learner_state``): restored at start, saved after every
outcome it learns from. A save that fails while Redis is away is kept and written again after the
next batch, so learning never stops and never raises. The embedded runner has no learner, so the
learner is not part of a lockstep replay unless ``DREAMBOT_LOCKSTEP_STAGES`` names it (and every
process of the session agrees); by default it consumes free-running. Settings: ``.env.example``.

Built by the composition root (:func:`services.app.services.run_stage`) from the session's
SessionConfig; ``--help`` lists the flags, ``--check`` validates the configuration and exits.
"""

from __future__ import annotations

from services.app.services import run_stage


def main() -> int:
    return run_stage("learner")


if __name__ == "__main__":
    raise SystemExit(main())
