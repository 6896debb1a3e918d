"""ops/runbook.md stays honest: each command in it is one a test runs verbatim, each test it names exists."""

from __future__ import annotations

import re
from pathlib import Path

from tests.integration.backtest import test_polygon_sync as sync_tests
from tests.integration.ops import test_nightly_calibration as nightly_tests

ROOT = Path(__file__).resolve().parents[3]
RUNBOOK = ROOT / "ops" / "runbook.md"


def commands() -> list[str]:
    blocks = re.findall(r"```sh\n(.*?)```", RUNBOOK.read_text(), flags=re.S)
    return [line.strip() for block in blocks for line in block.splitlines() if line.strip()]


def test_every_runbook_command_is_one_a_test_runs() -> None:
    tested = {
        " ".join(["python", "-m", *sync_tests.SEED]),
        " ".join(["python", "-m", *sync_tests.SEED, "--sync-method", "s3"]),
        " ".join(["python", "-m", *nightly_tests.SEED]),
    }
    found = commands()
    assert len(found) == 3
    assert set(found) == tested


def test_every_test_the_runbook_names_exists() -> None:
    named = set(re.findall(r"`(test_[a-z0-9_]+)`", RUNBOOK.read_text()))
    defined = {n for module in (sync_tests, nightly_tests) for n in dir(module) if n.startswith("test_")}
    assert named and named <= defined, named - defined
