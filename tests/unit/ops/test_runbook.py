"""ops/runbook.md stays honest: each command in it is one a test runs verbatim, each test it names exists,
and its sections are the ones other files link to."""

from __future__ import annotations

import re
from pathlib import Path

from tests.integration.backtest import test_polygon_sync as sync_tests
from tests.integration.ops import test_nightly_calibration as nightly_tests
from tests.integration.ops import test_runbook_embedded as embedded_tests
from tests.integration.ops import test_runbook_kill_switch as kill_switch_tests
from tests.integration.ops import test_runbook_tradier as tradier_tests
from tests.integration.services import test_one_machine as one_machine_tests
from tests.k8s import test_runbook_cluster as cluster_tests

ROOT = Path(__file__).resolve().parents[3]
RUNBOOK = ROOT / "ops" / "runbook.md"
TESTS = ROOT / "tests"

SECTIONS = [
    "Start and stop a session",
    "Kill switch and flatten",
    "A stale feed",
    "A Tradier outage",
    "A failed nightly job",
    "Restoring after a crash",
    "Rotating credentials",
]


def commands() -> list[str]:
    blocks = re.findall(r"```sh\n(.*?)```", RUNBOOK.read_text(), flags=re.S)
    return [line.strip() for block in blocks for line in block.splitlines() if line.strip()]


def commands_tests_run() -> set[str]:
    """Every command some test runs exactly as written (by bash, or argv for argv)."""
    return {
        " ".join(["python", "-m", *sync_tests.SEED]),
        " ".join(["python", "-m", *sync_tests.SEED, "--sync-method", "s3"]),
        " ".join(["python", "-m", *nightly_tests.SEED]),
        *embedded_tests.COMMANDS,
        *kill_switch_tests.COMMANDS,
        *tradier_tests.COMMANDS,
        *cluster_tests.SESSION_COMMANDS,
        *cluster_tests.ROTATION_COMMANDS,
        # test_services_up_status_down_up_purge runs the README's four services commands verbatim.
        *one_machine_tests.readme_commands(),
    }


def test_every_runbook_command_is_one_a_test_runs() -> None:
    found = commands()
    assert len(found) >= 30, found
    untested = [c for c in found if c not in commands_tests_run()]
    assert not untested, f"runbook commands no test runs verbatim: {untested}"


def test_the_services_commands_are_the_four_the_one_machine_test_runs() -> None:
    readme = one_machine_tests.readme_commands()
    assert sorted(readme) == sorted(["dreambot services up --data data/sample/spy_1min_2025-07-09.csv",
                                     "dreambot services status", "dreambot services down",
                                     "dreambot services down --purge"])


def test_every_test_the_runbook_names_exists() -> None:
    named = set(re.findall(r"`(test_[a-z0-9_]+)`", RUNBOOK.read_text()))
    defined = {m.group(1) for path in TESTS.rglob("test_*.py")
               for m in re.finditer(r"^def (test_[a-z0-9_]+)\(", path.read_text(), flags=re.M)}
    assert len(named) >= 30 and named <= defined, named - defined


def test_the_sections_other_files_link_to() -> None:
    headings = re.findall(r"^## (.+)$", RUNBOOK.read_text(), flags=re.M)
    assert [h for h in headings if h in SECTIONS] == SECTIONS
    if "Alerts" in headings:
        assert headings[-1] == "Alerts", "the Alerts section stays last"


def test_the_readme_operating_commands_are_ones_a_test_runs() -> None:
    text = (ROOT / "README.md").read_text()
    section = text.split("## Operating a session", 1)[1].split("\n## ", 1)[0]
    readme = [ln.strip() for ln in section.splitlines() if ln.startswith("    dreambot ")]
    assert len(readme) == 4 and set(readme) <= set(kill_switch_tests.COMMANDS), readme
