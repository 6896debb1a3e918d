"""The stages' log files: <storage_dir>/logs/<stage>.jsonl, size-rotated, redacted like stderr."""

from __future__ import annotations

import io
import json
import logging
import logging.handlers
from collections.abc import Iterator
from pathlib import Path

import pytest

from services.core.logs import (
    MIB,
    configure_logging,
    configure_stage_logging,
    register_secret,
    stage_log_file,
)
from services.core.session_config import load_session_config
from services.dashboard.main import ConsoleSettings

log = logging.getLogger("dreambot.test_log_files")


@pytest.fixture(autouse=True)
def _root_logger_restored() -> Iterator[None]:
    """configure_logging rewires the root logger; give the next test (and pytest) theirs back."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    for h in root.handlers:
        if h not in handlers:
            h.close()
    root.handlers[:] = handlers
    root.setLevel(level)


def _file_handlers() -> list[logging.FileHandler]:
    return [h for h in logging.getLogger().handlers if isinstance(h, logging.FileHandler)]


def _lines(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_the_file_rotates_at_its_size_and_keeps_the_given_backups(tmp_path: Path) -> None:
    path = stage_log_file(tmp_path, "features")
    stderr = io.StringIO()
    configure_logging("INFO", stderr, log_file=path, max_bytes=4000, backups=2)
    for n in range(200):
        log.info("bar %d handled", n, extra={"pad": "x" * 80})
    assert path == tmp_path / "logs" / "features.jsonl"
    files = [path, path.with_name("features.jsonl.1"), path.with_name("features.jsonl.2")]
    assert all(f.exists() for f in files)
    assert not path.with_name("features.jsonl.3").exists()  # older ones were deleted
    assert all(f.stat().st_size <= 4000 for f in files)
    # Oldest backup first, the live file last: consecutive records ending with the newest.
    kept = [int(str(doc["msg"]).split()[1]) for f in reversed(files) for doc in _lines(f)]
    assert kept == list(range(200 - len(kept), 200)) and len(kept) < 200
    assert len(stderr.getvalue().splitlines()) == 200  # stderr still gets every line


def test_a_restart_appends_and_counts_what_the_file_already_holds(tmp_path: Path) -> None:
    path = tmp_path / "logs" / "oms.jsonl"
    configure_logging("INFO", io.StringIO(), log_file=path, max_bytes=3000, backups=3)
    for n in range(10):
        log.info("first run %d", n, extra={"pad": "y" * 100})
    before = path.stat().st_size
    configure_logging("INFO", io.StringIO(), log_file=path, max_bytes=3000, backups=3)  # the next process
    for n in range(10):
        log.info("second run %d", n, extra={"pad": "y" * 100})
    rotated = path.with_name("oms.jsonl.1")
    assert 0 < before <= 3000 and rotated.exists() and not path.with_name("oms.jsonl.2").exists()
    assert path.stat().st_size <= 3000 and rotated.stat().st_size <= 3000
    msgs = [str(d["msg"]) for f in (rotated, path) for d in _lines(f)]
    assert msgs == [f"first run {n}" for n in range(10)] + [f"second run {n}" for n in range(10)]


def test_registered_secrets_and_tokens_are_masked_in_the_file(tmp_path: Path) -> None:
    secret = "pk-test-7f3a9c21e8b4"
    register_secret(secret)
    path = tmp_path / "logs" / "oms.jsonl"
    configure_logging("INFO", io.StringIO(), log_file=path)
    log.info(f"broker answered for key {secret} with Bearer eyJhbGci.payload-sig",
             extra={"access_token": "tok-plain-value", "url": "redis://:hunter2pw@redis:6379/0"})
    text = path.read_text(encoding="utf-8")
    for leaked in (secret, "eyJhbGci.payload-sig", "tok-plain-value", "hunter2pw"):
        assert leaked not in text
    (doc,) = _lines(path)
    assert doc["msg"] == "broker answered for key *** with Bearer ***"
    assert doc["access_token"] == "***" and doc["url"] == "redis://:***@redis:6379/0"


def test_configuring_twice_keeps_one_file_handler(tmp_path: Path) -> None:
    first, second = tmp_path / "logs" / "a.jsonl", tmp_path / "logs" / "b.jsonl"
    configure_logging("INFO", io.StringIO(), log_file=first)
    configure_logging("INFO", io.StringIO(), log_file=first)
    assert len(_file_handlers()) == 1 and len(logging.getLogger().handlers) == 2
    log.info("once")
    assert [d["msg"] for d in _lines(first)] == ["once"]
    configure_logging("INFO", io.StringIO(), log_file=second)  # the old file is closed, not written on
    log.info("moved")
    assert [h.baseFilename for h in _file_handlers()] == [str(second)]
    assert [d["msg"] for d in _lines(first)] == ["once"]
    assert [d["msg"] for d in _lines(second)] == ["moved"]


def test_an_unwritable_folder_is_one_stderr_line_then_stderr_only(tmp_path: Path) -> None:
    blocker = tmp_path / "storage"
    blocker.write_text("a file where the storage folder should be")  # mkdir fails even as root
    stderr = io.StringIO()
    # At ERROR the warning is still shown: it says where the lines are not going.
    configure_logging("ERROR", stderr, log_file=stage_log_file(blocker, "risk"))
    (line,) = stderr.getvalue().splitlines()
    doc = json.loads(line)
    assert doc["level"] == "WARNING" and doc["msg"] == "log file unavailable; logging to stderr only"
    assert doc["log_file"] == str(blocker / "logs" / "risk.jsonl") and doc["error"]
    assert _file_handlers() == []
    log.error("still logged")
    assert json.loads(stderr.getvalue().splitlines()[-1])["msg"] == "still logged"


def test_stage_logging_follows_the_session_config_variables(tmp_path: Path) -> None:
    config = load_session_config(environ={"DREAMBOT_STORAGE_DIR": str(tmp_path), "DREAMBOT_LOG_ROTATE_MB": "0.5",
                                          "DREAMBOT_LOG_BACKUPS": "3"}, use_env_file=False).config
    configure_stage_logging("signals", config)
    (handler,) = _file_handlers()
    assert isinstance(handler, logging.handlers.RotatingFileHandler)
    assert (handler.baseFilename, handler.maxBytes, handler.backupCount) == (
        str(tmp_path / "logs" / "signals.jsonl"), MIB // 2, 3)
    log.info("signals up")
    assert [d["msg"] for d in _lines(tmp_path / "logs" / "signals.jsonl")] == ["signals up"]


def test_the_console_reads_the_same_variables(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DREAMBOT_STORAGE_DIR", str(tmp_path))
    monkeypatch.setenv("DREAMBOT_LOG_ROTATE_MB", "2")
    monkeypatch.setenv("DREAMBOT_LOG_BACKUPS", "7")
    configure_stage_logging("console", ConsoleSettings())
    (handler,) = _file_handlers()
    assert isinstance(handler, logging.handlers.RotatingFileHandler)
    assert (handler.baseFilename, handler.maxBytes, handler.backupCount) == (
        str(tmp_path / "logs" / "console.jsonl"), 2 * MIB, 7)


@pytest.mark.parametrize(("env", "field"), [({"DREAMBOT_LOG_ROTATE_MB": "0"}, "DREAMBOT_LOG_ROTATE_MB"),
                                            ({"DREAMBOT_LOG_BACKUPS": "0"}, "DREAMBOT_LOG_BACKUPS")])
def test_rotation_settings_are_validated(env: dict[str, str], field: str) -> None:
    from services.core.settings import ConfigError

    with pytest.raises(ConfigError, match=field):
        load_session_config(environ=env, use_env_file=False)
