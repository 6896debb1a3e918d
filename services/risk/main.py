"""The risk service: intents in, OrderRequests/RiskRejections and kill-switch commands out
(``python -m services.risk.main``).

The kill switch and the ingest heartbeat are read from Redis (:class:`~services.core.redis_state.RedisState`);
while Redis does not answer the engine refuses every entry with ``state_unavailable`` and the stage
keeps running; it recovers by itself when Redis is back. Gauges: kill switch, the day's PnL, state
availability. Settings come from the environment (``.env.example``).

Built by the composition root (:func:`services.app.services.run_stage`) from the session's
SessionConfig; ``--help`` lists the flags, ``--check`` validates the configuration and exits.
"""

from __future__ import annotations

from services.app.services import run_stage


def main() -> int:
    return run_stage("risk")


if __name__ == "__main__":
    raise SystemExit(main())
