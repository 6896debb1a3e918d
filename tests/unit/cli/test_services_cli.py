"""`dreambot services`: bad arguments are one readable line and exit 2, before anything starts."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from services.core.settings import PROJECT_ROOT


def _services(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "services.cli", "services", *args], capture_output=True, text=True,
                          cwd=tmp_path, timeout=120, stdin=subprocess.DEVNULL)


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["up", "--console-port", "0"], "invalid port '0'"),
        (["up", "--console-port", "70000"], "invalid port '70000'"),
        (["up", "--console-port", "web"], "invalid port 'web'"),
        (["up", "--no-console", "--console-port", "9000"], "contradict"),
        (["up", "--data", "nope.csv"], "--data nope.csv: no such file"),
        (["up", "--timeout", "0"], "--timeout 0: must be > 0"),
        (["up", "--symbols", " , "], "name at least one underlying"),
        (["up", "--config-dir", "no-such-dir"], "--config-dir no-such-dir: no such folder"),
        (["up", "--session", "bad name!"], "invalid session name 'bad name!'"),
        (["down", "--session", "../elsewhere"], "invalid session name '../elsewhere'"),
        (["status", "--session", "never-started"], "no deployment recorded for session 'never-started'"),
        (["down", "--session", "never-started", "--purge"], "no deployment recorded for session 'never-started'"),
        (["sideways"], "invalid choice"),
    ],
)
def test_one_line_errors(tmp_path: Path, argv: list[str], needle: str) -> None:
    proc = _services(tmp_path, *argv)
    assert proc.returncode == 2, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert lines[0].startswith("dreambot services") and needle in lines[0], lines[0]
    # Refused before anything started: no state folder, no server.
    assert not (tmp_path / "storage").exists()


def test_help_names_the_local_stack() -> None:
    proc = subprocess.run([sys.executable, "-m", "services.cli", "services", "up", "--help"], capture_output=True,
                          text=True, cwd=PROJECT_ROOT, timeout=60)
    assert proc.returncode == 0
    assert "--kafka-bootstrap" in proc.stdout and "start one for the session" in proc.stdout
    assert "--console-port" in proc.stdout
