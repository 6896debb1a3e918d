"""The signals service: features and chains in, SignalIntents out (``python -m services.signals.main``).

Exports ``dreambot_tick_to_intent_seconds``: in a lockstep replay, from the ingest injecting the
market-data event to the intent being published; free-running, from the intent's event time when it is
recent (a live feed). Settings come from the environment (``.env.example``).

Built by the composition root (:func:`services.app.services.run_stage`) from the session's
SessionConfig; ``--help`` lists the flags, ``--check`` validates the configuration and exits.
"""

from __future__ import annotations

from services.app.services import run_stage


def main() -> int:
    return run_stage("signals")


if __name__ == "__main__":
    raise SystemExit(main())
