"""The seed's nightly command, verbatim, against the Polygon sim and a real MLflow tracking server.

It syncs the 60 sessions, calibrates on exactly them (checked against the source history read here),
publishes the JSON and leaves a FINISHED run whose parameters carry the inputs' date range. A sync that
cannot complete publishes nothing and leaves a FAILED run.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from tests.harness.mlflow_server import MlflowServer
from tests.integration.backtest.conftest import History, PolygonSimProcess, rest_env, run_cli
from tests.integration.backtest.test_polygon_sync import assert_tree_equals_source

pytestmark = pytest.mark.integration

SEED = ["ops.nightly_calibration", "--symbols", "SPY", "QQQ", "SPX", "NDX", "--days", "60", "--sync-method", "rest",
        "--flatfile-dest", "data/flatfiles", "--calibration-output", "backtests/calibration.json"]


def only_run(server: MlflowServer, experiment: str) -> object:
    client = MlflowClient(tracking_uri=server.uri)
    exp = client.get_experiment_by_name(experiment)
    assert exp is not None
    runs = client.search_runs([exp.experiment_id])
    assert len(runs) == 1
    return runs[0]


@pytest.mark.timeout(2400)  # the 60-session, four-symbol replay takes minutes on a shared machine
def test_seed_nightly_command_syncs_calibrates_publishes_and_logs(
    sim: PolygonSimProcess, history: History, mlflow_server: MlflowServer, experiment: str, tmp_path: Path
) -> None:
    # A day already synced by an earlier night, and one outside the window, must not change the inputs.
    old = history.days[0].replace(year=history.days[0].year - 1)
    (tmp_path / "data" / "flatfiles" / "SPY").mkdir(parents=True)
    stray = tmp_path / "data" / "flatfiles" / "SPY" / f"{old}.csv"
    stray.write_text((history.root / "SPY" / f"{history.days[0]}.csv").read_text())
    env = dict(rest_env(sim), MLFLOW_TRACKING_URI=mlflow_server.uri, DREAMBOT_MLFLOW_EXPERIMENT=experiment)
    out = run_cli(SEED, env, tmp_path, timeout=2300)
    assert out.returncode == 0, out.stderr[-3000:]
    stray.unlink()
    assert_tree_equals_source(tmp_path / "data" / "flatfiles", history)

    doc = json.loads((tmp_path / "backtests" / "calibration.json").read_text())
    days = [d.isoformat() for d in history.days]
    assert doc["sessions"] == days
    assert doc["inputs"] == {"symbols": ["SPY", "QQQ", "SPX", "NDX"], "first_session": days[0],
                             "last_session": days[-1], "sessions": 60, "sync_method": "rest",
                             "flatfile_dest": "data/flatfiles"}
    assert doc["bars"] == 4 * sum(len(history.source("SPY", d)) for d in history.days)
    assert set(doc["symbols"]) == {"SPY", "QQQ", "SPX", "NDX"}
    assert 0.25 <= doc["risk_multiplier"] <= 1.5 and 0.5 <= doc["pot_threshold"] <= 0.95
    assert not list((tmp_path / "backtests").glob(".*"))  # no temporary file left beside it

    run = only_run(mlflow_server, experiment)
    assert run.info.status == "FINISHED"  # type: ignore[attr-defined]
    assert out.stdout.strip().splitlines()[-1] == run.info.run_id == doc["mlflow_run_id"]  # type: ignore[attr-defined]
    params = run.data.params  # type: ignore[attr-defined]
    assert (params["start"], params["end"], params["sessions"]) == (days[0], days[-1], "60")
    assert params["symbols"] == "SPY QQQ SPX NDX" and params["sync_method"] == "rest" and params["days"] == "60"
    metrics = run.data.metrics  # type: ignore[attr-defined]
    assert metrics["risk_multiplier"] == doc["risk_multiplier"]
    assert metrics["sync.files_written"] == 240 - 0 and metrics["bars"] == doc["bars"]
    client = MlflowClient(tracking_uri=mlflow_server.uri)
    local = client.download_artifacts(run.info.run_id, "calibration.json", str(tmp_path))  # type: ignore[attr-defined]
    assert json.loads(Path(local).read_text()) == doc


def test_an_incomplete_sync_publishes_nothing_and_fails_the_run(
    sim: PolygonSimProcess, mlflow_server: MlflowServer, experiment: str, tmp_path: Path
) -> None:
    published = tmp_path / "backtests" / "calibration.json"
    published.parent.mkdir()
    published.write_text('{"risk_multiplier": 0.8, "pot_threshold": 0.7}\n')
    sim.admin("/sim/fail", {"status": 503, "count": 4})  # the first request and its three retries
    env = dict(rest_env(sim), MLFLOW_TRACKING_URI=mlflow_server.uri, DREAMBOT_MLFLOW_EXPERIMENT=experiment)
    args = ["ops.nightly_calibration", "--symbols", "SPY", "--days", "2", "--flatfile-dest", "data/flatfiles",
            "--calibration-output", "backtests/calibration.json"]
    out = run_cli(args, env, tmp_path)
    assert out.returncode == 1, out.stderr[-2000:]
    assert "stopped: Polygon /v2/aggs/ticker/SPY" in out.stdout and "HTTP 503" in out.stdout
    assert out.stderr.strip().splitlines()[-1] == (
        "python -m ops.nightly_calibration: error: sync incomplete; backtests/calibration.json left as it was "
        "(rerun to resume)")
    assert published.read_text() == '{"risk_multiplier": 0.8, "pot_threshold": 0.7}\n'
    run = only_run(mlflow_server, experiment)
    assert run.info.status == "FAILED"  # type: ignore[attr-defined]
    assert run.data.params["start"] and run.data.metrics["sync.files_written"] == 0  # type: ignore[attr-defined]
    # The rerun resumes and publishes.
    out = run_cli(args, env, tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    assert json.loads(published.read_text())["inputs"]["sessions"] == 2


def test_unreachable_mlflow_fails_fast_in_one_line(sim: PolygonSimProcess, tmp_path: Path) -> None:
    env = dict(rest_env(sim), MLFLOW_TRACKING_URI="http://127.0.0.1:9")
    out = run_cli(["ops.nightly_calibration", "--symbols", "SPY", "--days", "1"], env, tmp_path, timeout=60)
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == [
        "python -m ops.nightly_calibration: error: cannot reach MLflow at http://127.0.0.1:9: [Errno 111] "
        "Connection refused"]
    assert not (tmp_path / "data").exists()


def test_without_a_tracking_uri_the_job_publishes_only_the_file(
    sim: PolygonSimProcess, history: History, tmp_path: Path
) -> None:
    args = ["ops.nightly_calibration", "--symbols", "QQQ", "NDX", "--days", "2", "--sync-method", "rest",
            "--flatfile-dest", "data/flatfiles", "--calibration-output", "backtests/calibration.json"]
    out = run_cli(args, rest_env(sim), tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    doc = json.loads((tmp_path / "backtests" / "calibration.json").read_text())
    assert doc["sessions"] == [d.isoformat() for d in history.days[-2:]] and "mlflow_run_id" not in doc
    assert doc["bars"] == sum(len(history.source(s, d)) for s in ("QQQ", "NDX") for d in history.days[-2:])
    assert out.stdout.strip().splitlines()[-1].startswith("published backtests/calibration.json")
