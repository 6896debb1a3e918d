"""The features service: market data in, one FeatureVector per bar out (``python -m services.features.main``).

Built by the composition root (:func:`services.app.services.run_stage`) from the session's
SessionConfig; ``--help`` lists the flags, ``--check`` validates the configuration and exits.
"""

from __future__ import annotations

from services.app.services import run_stage


def main() -> int:
    return run_stage("features")


if __name__ == "__main__":
    raise SystemExit(main())
