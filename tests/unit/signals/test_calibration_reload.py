"""A running signals stage re-reads the published calibration at the next session open, atomically.

The file is published the way the nightly job does it (:func:`ops.nightly_calibration.publish`: a
temporary file renamed over the old one). Values expected below are the ones written by the test.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from ops.nightly_calibration import publish
from services.core.calibration_watch import CalibrationWatch
from services.core.settings import ConfigError
from services.signals.engine import SignalEngine
from services.signals.gates import Calibration, calibration_from_doc
from services.signals.playbooks import CalibrationConfig
from services.signals.stage import SignalStage
from tests.unit.signals.builders import NEXT, TODAY, fv, shipped, ts_ny

DEFAULTS = CalibrationConfig(risk_multiplier=1.0, pot_threshold=0.7)


def _doc(
    mult: float, pot: float, first: str = "2025-04-01", last: str = "2025-07-07", run: str = "r1"
) -> dict[str, object]:
    return {"risk_multiplier": mult, "pot_threshold": pot, "mlflow_run_id": run,
            "inputs": {"symbols": ["SPY"], "first_session": first, "last_session": last, "sessions": 60}}


def _stage(path: Path, *, reload: bool = True) -> tuple[SignalStage, CalibrationWatch[Calibration]]:
    watch = CalibrationWatch(path, path.name, lambda doc, shown: calibration_from_doc(doc, DEFAULTS, shown),
                             stage="signals", reload=reload)
    start = watch.start()
    engine = SignalEngine(shipped(), calibration=start or Calibration(1.0, 0.7, "defaults"))
    return SignalStage(engine, watch), watch


def _values(stage: SignalStage) -> tuple[float, float]:
    c = stage.engine.calibration
    return c.risk_multiplier, c.pot_threshold


def test_a_calibration_published_mid_session_applies_at_the_next_session_open(tmp_path: Path) -> None:
    path = tmp_path / "calibration.json"
    publish(_doc(1.0, 0.7), path)
    stage, watch = _stage(path)
    stage.handle("features", fv(ts=ts_ny(9, 31)))
    assert _values(stage) == (1.0, 0.7)

    publish(_doc(0.5, 0.85, last="2025-07-08", run="r2"), path)  # the nightly job, during the session
    for minute in (32, 45, 59):
        stage.handle("features", fv(ts=ts_ny(15, minute)))
    assert _values(stage) == (1.0, 0.7), "a session never changes calibration while it trades"

    stage.handle("features", fv(ts=ts_ny(4, 0, NEXT)))  # first event of the next New York date
    assert _values(stage) == (0.5, 0.85)
    assert watch.current is not None and watch.current.mlflow_run_id == "r2"
    assert (watch.current.first_session, watch.current.last_session) == ("2025-04-01", "2025-07-08")
    assert watch.reloads == 1


def test_a_torn_or_invalid_file_is_refused_with_one_line_and_the_old_values_kept(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "calibration.json"
    publish(_doc(0.8, 0.75), path)
    stage, watch = _stage(path)
    stage.handle("features", fv(ts=ts_ny(10, 0)))
    text = json.dumps(_doc(0.4, 0.9))
    path.write_text(text[: len(text) // 2])  # written in place and cut short: what rename-publishing prevents
    with caplog.at_level(logging.WARNING, logger="services.core.calibration_watch"):
        stage.handle("features", fv(ts=ts_ny(10, 0, NEXT)))
        stage.handle("features", fv(ts=ts_ny(10, 0, "2025-07-10")))  # the same bad file: not told again
    refused = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(refused) == 1 and "calibration refused" in refused[0].getMessage()
    assert "invalid calibration JSON" in refused[0].getMessage()
    assert _values(stage) == (0.8, 0.75) and watch.refusals == 1

    publish({"risk_multiplier": 7.0}, path)  # parses, but out of signals' range [0, 5]
    stage.handle("features", fv(ts=ts_ny(10, 0, "2025-07-11")))
    assert _values(stage) == (0.8, 0.75) and watch.refusals == 2

    path.unlink()
    stage.handle("features", fv(ts=ts_ny(10, 0, "2025-07-14")))
    assert _values(stage) == (0.8, 0.75) and watch.refusals == 3

    publish(_doc(0.6, 0.65), path)  # a good one again
    stage.handle("features", fv(ts=ts_ny(10, 0, "2025-07-15")))
    assert _values(stage) == (0.6, 0.65)


def test_a_replay_pins_the_calibration_it_started_with(tmp_path: Path) -> None:
    path = tmp_path / "calibration.json"
    publish(_doc(1.0, 0.7), path)
    stage, watch = _stage(path, reload=False)
    stage.handle("features", fv(ts=ts_ny(10, 0)))
    publish(_doc(0.5, 0.9), path)
    for day in (NEXT, "2025-07-10", "2025-07-11"):
        stage.handle("features", fv(ts=ts_ny(10, 0, day)))
    assert _values(stage) == (1.0, 0.7) and watch.reloads == 0


def test_a_file_that_appears_later_is_taken_and_the_same_bytes_again_are_not_a_reload(tmp_path: Path) -> None:
    path = tmp_path / "calibration.json"
    stage, watch = _stage(path)
    assert _values(stage) == (1.0, 0.7)  # absent at start: the configured defaults
    stage.handle("features", fv(ts=ts_ny(10, 0)))
    publish(_doc(0.9, 0.8), path)
    stage.handle("features", fv(ts=ts_ny(10, 0, NEXT)))
    assert _values(stage) == (0.9, 0.8) and watch.reloads == 1
    publish(_doc(0.9, 0.8), path)  # republished, same content (new inode and mtime)
    stage.handle("features", fv(ts=ts_ny(10, 0, "2025-07-10")))
    assert watch.reloads == 1


def test_an_invalid_file_at_start_up_is_one_config_error(tmp_path: Path) -> None:
    path = tmp_path / "calibration.json"
    path.write_text("[1, 2]")
    with pytest.raises(ConfigError, match="must be a JSON object"):
        _stage(path)
    assert TODAY < NEXT
