"""The features service: market data in, one FeatureVector per bar out (``python -m services.features.main``).

Settings come from the environment (``.env.example``); see :mod:`services.core.service`.
"""

from __future__ import annotations

from services.core.service import ServiceContext, StageParts, run_service
from services.wiring import build_features


def build(ctx: ServiceContext) -> StageParts:
    return StageParts(build_features(ctx.settings.stage_spec(), ctx.calendar))


def main() -> int:
    return run_service("features", build)


if __name__ == "__main__":
    raise SystemExit(main())
