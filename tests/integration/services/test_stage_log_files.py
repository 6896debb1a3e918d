"""A services-mode stage process (and the console) on the real Kafka broker and redis-server writes its
JSON log lines to ``<DREAMBOT_STORAGE_DIR>/logs/<stage>.jsonl`` as well as to stderr."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.integration.services.conftest import Launch, new_session

pytestmark = pytest.mark.integration


def _json_lines(path: Path) -> list[dict[str, object]]:
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("{"):
            out.append(json.loads(line))
    return out


def test_a_stage_and_the_console_log_to_storage_logs(launch: Launch, tmp_path: Path) -> None:
    storage = tmp_path / "storage"
    dep = launch(new_session("logfile"), stages=("features",), lockstep=False, console=True,
                 env={"DREAMBOT_STORAGE_DIR": str(storage)})
    assert dep.stop("features", timeout_s=30) == 0
    dep.stop("console", timeout_s=30)

    stage_file = storage / "logs" / "features.jsonl"
    lines = [json.loads(line) for line in stage_file.read_text(encoding="utf-8").splitlines()]
    assert all({"ts", "level", "logger", "msg"} <= set(doc) for doc in lines)
    started = [d for d in lines if d["msg"] == "stage running"]
    assert [d["stage"] for d in started] == ["features"] and started[0]["prefix"] == dep.prefix
    assert lines[-1]["msg"] == "stage stopped"
    # The same records as the process's stderr (which the launcher keeps in its own log file).
    stderr_msgs = [d["msg"] for d in _json_lines(dep.processes["features"].log)]
    assert [d["msg"] for d in lines] == stderr_msgs

    console = [json.loads(line) for line in (storage / "logs" / "console.jsonl").read_text().splitlines()]
    serving = [d for d in console if d["msg"] == "console serving"]
    assert len(serving) == 1 and serving[0]["session"] == dep.session
