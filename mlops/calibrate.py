"""Nightly calibration job (CronJob): the calibration CLI's replay and rule, logged to MLflow.

    MLFLOW_TRACKING_URI=http://mlflow:5000 DREAMBOT_MLFLOW_EXPERIMENT=dreambot \\
        python -m mlops.calibrate --symbols SPY QQQ --data data/backtests/spy_1m.csv \\
        --output backtests/calibration.json

The arguments are services.backtest.calibrate's, and so is the work: this job runs that CLI's
``main`` (replay from the uncalibrated strategy, ``derive``'s rule, the calibration JSON at
``--output``), then logs to MLflow: the inputs as parameters, risk_multiplier, pot_threshold,
kelly and the global, per-symbol and per-playbook trade statistics as metrics, and the calibration
JSON as the artifact ``calibration.json``. The run id is the last line printed.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from mlops.tracking import TrackingError, check_server, start_run, tracking_config
from services.backtest import calibrate
from services.cliutil import fail

PROG = "python -m mlops.calibrate"
ARTIFACT = "calibration.json"
STAT_KEYS = (
    "trade_count",
    "net_pnl",
    "expectancy",
    "win_rate",
    "average_win",
    "average_loss",
    "profit_factor",
    "max_drawdown",
    "sharpe",
)


def calibration_metrics(doc: Mapping[str, Any]) -> dict[str, float]:
    """Numeric metrics of a calibration JSON (``global.*``, ``symbol.<s>.*``, ``playbook.<p>.*``)."""
    metrics: dict[str, float] = {}

    def put(name: str, value: Any) -> None:
        if isinstance(value, int | float) and not isinstance(value, bool):
            metrics[name] = float(value)

    put("risk_multiplier", doc.get("risk_multiplier"))
    put("pot_threshold", doc.get("pot_threshold"))
    derivation = doc.get("derivation", {})
    put("kelly", derivation.get("kelly"))
    put("pot_trades_used", derivation.get("pot_trades_used"))
    put("bars", doc.get("bars"))
    for key in STAT_KEYS:
        put(f"global.{key}", doc.get("global", {}).get(key))
    for symbol, stats in sorted(doc.get("symbols", {}).items()):
        for key in STAT_KEYS:
            put(f"symbol.{symbol}.{key}", stats.get(key))
    for playbook, stats in sorted(doc.get("playbooks", {}).items()):
        for key in STAT_KEYS:
            put(f"playbook.{playbook}.{key}", stats.get(key))
    return metrics


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    p = calibrate.parser()
    p.prog = PROG
    p.description = __doc__.splitlines()[0]
    args = p.parse_args(argv)  # the same arguments as the calibration CLI (errors: one line, exit 2)
    try:
        tracking = tracking_config()
        check_server(tracking)
    except TrackingError as exc:
        fail(PROG, str(exc))
    calibrate.main(argv, prog=PROG)  # replay + rule + calibration JSON at args.output
    output: Path = args.output
    doc = json.loads(output.read_text(encoding="utf-8"))
    params = {
        "symbols": " ".join(args.symbols),
        "data": doc.get("data"),
        "table": args.table,
        "tz": args.tz,
        "sessions": (args.sessions or 5) if args.data is None else None,
        "seed": args.seed,
        "config_dir": str(args.config_dir) if args.config_dir is not None else None,
        "output": str(output),
        "rule": doc.get("rule"),
        "calendar_sessions": len(doc.get("sessions", [])),
    }
    tags = {"dreambot.job": "calibration"}
    try:
        with start_run(tracking, "calibration", tags) as run:
            run.log_params({k: v for k, v in params.items() if v is not None})
            run.log_metrics(calibration_metrics(doc))
            run.log_json(doc, ARTIFACT)
    except TrackingError as exc:
        fail(PROG, str(exc))
    print(run.run_id)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
