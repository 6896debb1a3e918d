"""The training and calibration CronJobs carry the arguments their CLIs require."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from dreambot_operator.render import JOB_OUTPUT_DIR, job_args

from mlops import train
from services.backtest import calibrate

SPEC: dict[str, Any] = {"symbols": ["SPY", "qqq"], "jobs": {"training": {"schedule": "@daily"},
                                                          "calibration": {"schedule": "@daily"}}}


def test_training_args_parse_with_the_training_cli() -> None:
    args = train.parser().parse_args(job_args(SPEC, "training"))
    assert args.symbols == ["SPY", "QQQ"] and args.trades is None
    assert args.output == Path(JOB_OUTPUT_DIR) / "learner_state.json"
    assert args.policy_output == Path(JOB_OUTPUT_DIR) / "policy.json"


def test_calibration_args_parse_with_the_calibration_cli() -> None:
    # mlops.calibrate takes exactly the calibration CLI's arguments.
    args = calibrate.parser().parse_args(job_args(SPEC, "calibration"))
    assert args.symbols == ["SPY", "QQQ"]
    assert args.output == Path(JOB_OUTPUT_DIR) / "calibration.json"
