"""Nightly calibration: sync the history, calibrate on exactly those sessions, publish the JSON.

    python -m ops.nightly_calibration --symbols SPY QQQ SPX NDX --days 60 --sync-method rest \\
        --flatfile-dest data/flatfiles --calibration-output backtests/calibration.json

1. **Sync** (:mod:`services.backtest.polygon_sync`, same flags and environment): the planned sessions'
   missing day files are fetched into ``--flatfile-dest``. If any symbol-day is still missing, the job
   stops with status 1 and the published calibration is left as it was.
2. **Calibrate** (:mod:`services.backtest.calibrate`: the uncalibrated replay and its rule) on exactly the
   planned sessions, not on whatever else the tree holds from earlier nights: the replay reads a view of
   the tree (links to those day files only).
3. **Publish**: the calibration JSON, with an ``inputs`` block (symbols, first/last session, session
   count, sync method, the tree), is written to a temporary name beside ``--calibration-output``, fsynced
   and renamed over it, so a reader sees the old file or the new one, never a torn one.

When ``MLFLOW_TRACKING_URI`` is set (and ``DREAMBOT_MLFLOW_EXPERIMENT``, default ``dreambot``), the job is
one MLflow run named ``nightly-calibration``: the inputs' date range and the sync's counts as parameters,
the calibration's numbers as metrics (:func:`mlops.calibrate.calibration_metrics`), the published JSON as
the artifact ``calibration.json``; its id is also in the JSON (``mlflow_run_id``) and is the last line
printed. A failed job leaves a FAILED run. The server is probed first, so an unreachable one fails in
seconds (status 2).

Stages read the calibration when they start (``calibration.path``, default backtests/calibration.json);
a running session applies a new one when its stages restart (``restartNonce``).

Exit status: 0 published; 1 the sync is incomplete (nothing published; rerun to resume); 2 bad
arguments or configuration (one line).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from services.backtest import calibrate, polygon_sync
from services.backtest.flatfiles import day_path
from services.backtest.polygon_sync import SyncReport
from services.cliutil import OneLineParser, fail

if TYPE_CHECKING:  # mlflow is imported only when a tracking URI is set
    from mlops.tracking import Run

PROG: Final = "python -m ops.nightly_calibration"
RUN_NAME: Final = "nightly-calibration"
ARTIFACT: Final = "calibration.json"


def parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog=PROG, description=__doc__.splitlines()[0])
    polygon_sync.add_sync_args(p, dest_flag="--flatfile-dest")
    p.add_argument("--calibration-output", type=Path, default=Path("backtests/calibration.json"),
                   help="published calibration JSON (default backtests/calibration.json)")
    p.add_argument("--config-dir", type=Path, help="folder of the YAML configs (default config/)")
    return p


@contextmanager
def input_view(report: SyncReport) -> Iterator[Path]:
    """A temporary tree linking exactly the report's (symbol, session) day files."""
    with tempfile.TemporaryDirectory(prefix="dreambot-calibration-inputs-") as tmp:
        root = Path(tmp)
        for symbol in report.symbols:
            (root / symbol).mkdir()
            for session in report.sessions:
                source = day_path(report.dest, symbol, session.date).resolve()
                os.symlink(source, day_path(root, symbol, session.date))
        yield root


def publish(doc: Any, path: Path) -> None:
    """Write JSON to a temporary name beside ``path``, fsync, rename over ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with tmp.open("w", encoding="utf-8") as fh:
            fh.write(json.dumps(doc, sort_keys=True, indent=2, allow_nan=False) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def sync_params(args: argparse.Namespace, report: SyncReport) -> dict[str, Any]:
    return {
        "symbols": " ".join(report.symbols),
        "days": args.days,
        "start": report.first.isoformat(),
        "end": report.last.isoformat(),
        "sessions": len(report.sessions),
        "sync_method": args.sync_method,
        "adjusted": None if args.sync_method == "s3" else not args.unadjusted,
        "flatfile_dest": str(report.dest),
        "calibration_output": str(args.calibration_output),
    }


def calibrate_sessions(args: argparse.Namespace, report: SyncReport) -> dict[str, Any]:
    """Run the calibration CLI's replay and rule on the synced sessions; the resulting document."""
    output: Path = args.calibration_output
    scratch = output.with_name(f".{output.name}.{os.getpid()}.calibrate.tmp")
    try:
        with input_view(report) as view:
            argv = ["--symbols", *report.symbols, "--data", str(view), "--output", str(scratch)]
            if args.config_dir is not None:
                argv += ["--config-dir", str(args.config_dir)]
            calibrate.main(argv, prog=PROG)
        doc: dict[str, Any] = json.loads(scratch.read_text(encoding="utf-8"))
    finally:
        scratch.unlink(missing_ok=True)
    planned = [s.date.isoformat() for s in report.sessions]
    if doc.get("sessions") != planned:
        fail(PROG, f"the replay covered {len(doc.get('sessions', []))} sessions, not the {len(planned)} synced", 1)
    doc["data"] = str(report.dest)
    doc["inputs"] = {"symbols": report.symbols, "first_session": planned[0], "last_session": planned[-1],
                     "sessions": len(planned), "sync_method": args.sync_method, "flatfile_dest": str(report.dest)}
    return doc


def nightly(args: argparse.Namespace, run: Run | None) -> SyncReport:
    """Sync, calibrate, publish; with ``run``, log each step's numbers to it."""
    report = polygon_sync.run(args, prog=PROG)
    print(report.summary())
    if run is not None:
        run.log_params({k: v for k, v in sync_params(args, report).items() if v is not None})
        run.log_metrics({"sync.files_written": len(report.written), "sync.skipped": report.skipped,
                         "sync.bars_written": report.bars, "sync.requests": report.requests,
                         "sync.seconds": report.seconds, "sync.days_without_bars": len(report.empty)})
    if not report.ok:
        fail(PROG, f"sync incomplete; {args.calibration_output} left as it was (rerun to resume)", 1)
    doc = calibrate_sessions(args, report)
    if run is not None:
        from mlops.calibrate import calibration_metrics

        doc["mlflow_run_id"] = run.run_id
        run.log_params({"rule": doc.get("rule")})
        run.log_metrics(calibration_metrics(doc))
    publish(doc, args.calibration_output)
    if run is not None:
        run.log_json(doc, ARTIFACT)
    print(f"published {args.calibration_output} ({report.first}..{report.last}, {len(report.sessions)} sessions)")
    return report


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if not os.environ.get("MLFLOW_TRACKING_URI", "").strip():
        nightly(args, None)
        return 0
    from mlops.tracking import TrackingError, check_server, start_run, tracking_config

    try:
        tracking = tracking_config()
        check_server(tracking)
        # The whole job is the run: a sync or calibration that fails leaves it FAILED.
        with start_run(tracking, RUN_NAME, {"dreambot.job": "nightly-calibration"}) as run:
            nightly(args, run)
    except TrackingError as exc:
        fail(PROG, str(exc))
    print(run.run_id)
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
