"""Services mode: each stage as a process (``python -m services.<stage>.main``), built from SessionConfig.

``run_stage`` parses the stage's flags first (``--help`` imports nothing heavy and needs no service),
loads the session's :class:`~services.core.session_config.SessionConfig`, builds the stage in
:mod:`services.app.stage_builders` and hands it to :func:`services.runtime.service.run_service`.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import Final

from services.cliutil import OneLineParser

_ROLES: Final = {
    "ingest": "market data onto the md.* topics (live Polygon, a capture, a replay or synthetic; heartbeat to Redis)",
    "features": "market data in, one FeatureVector per bar out",
    "signals": "features and chains in, SignalIntents out",
    "risk": "intents in, OrderRequests / RiskRejections and kill-switch commands out",
    "oms": "approved orders in, OTOCO brackets at the session's broker, executions and outcomes out",
    "learner": "outcomes and features in, LearnerUpdates and RegimeChanges out",
}


def stage_parser(name: str) -> argparse.ArgumentParser:
    """The flags every stage process takes (settings themselves come from SessionConfig's sources)."""
    p = OneLineParser(
        prog=f"python -m services.{name}.main",
        description=f"DreamBot {name} stage: {_ROLES[name]}. Settings: DREAMBOT_* environment, .env, "
                    "a session file, config/*.yaml (see .env.example); `dreambot config` prints them.")
    p.add_argument("--session-file", type=Path, help="session YAML (the operator's session.yaml)")
    p.add_argument("--env-file", type=Path, help=".env file to read (default .env when present)")
    p.add_argument("--check", action="store_true",
                   help="validate the configuration and build the stage, then exit (no Kafka needed)")
    return p


def run_stage(name: str, argv: Sequence[str] | None = None) -> int:
    """``python -m services.<name>.main``: parse flags, load the config, build and run the stage."""
    parser = stage_parser(name)
    args = parser.parse_args(argv)
    prog = parser.prog
    from services.core.session_config import load_session_config
    from services.core.settings import ConfigError

    try:
        config = load_session_config(session_file=args.session_file, env_file=args.env_file).config
    except ConfigError as exc:
        parser.exit(2, f"{prog}: error: {exc}\n")
    from services.app.stage_builders import BUILDERS, PIPELINE, check_stage, run_service

    if args.check:
        return check_stage(name, config, prog)
    return run_service(name, BUILDERS[name], config, PIPELINE, prog)


