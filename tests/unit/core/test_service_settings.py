"""Stage service settings: env parsing, defaults, one-line errors naming the variable, exit status 2."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from services.core.service import ServiceSettings, settings_from_env
from services.core.settings import CONFIG_DIR, PROJECT_ROOT, ConfigError, RuntimeSettings
from services.wiring import DEFAULT_CALIBRATION, STAGE_ORDER

ENV_EXAMPLE = PROJECT_ROOT / ".env.example"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for name in list(os.environ):
        if name.startswith(("DREAMBOT_", "OMS_")):
            monkeypatch.delenv(name)


def test_defaults() -> None:
    s = settings_from_env()
    assert s.session == "default" and s.topic_prefix == "default"
    assert s.symbols == ["SPY"]
    assert s.kafka_partitions == 3 and s.http_port == 9100
    assert s.mode == "paper" and not s.live_confirm
    assert s.replay_lockstep and s.replay_source is None and s.replay_rate == 0
    assert s.config_dir == CONFIG_DIR and s.calibration == DEFAULT_CALIBRATION
    assert s.lockstep_stages == list(STAGE_ORDER)


def test_values_from_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("DREAMBOT_SESSION", "paper-1")
    monkeypatch.setenv("DREAMBOT_SYMBOLS", " spy, qqq ,SPY,")
    monkeypatch.setenv("DREAMBOT_KAFKA_TOPIC_PREFIX", "dreambot.paper-1")
    monkeypatch.setenv("DREAMBOT_KAFKA_PARTITIONS", "6")
    monkeypatch.setenv("DREAMBOT_HTTP_PORT", "0")
    monkeypatch.setenv("DREAMBOT_REPLAY_SOURCE", str(tmp_path / "bars.csv"))
    monkeypatch.setenv("DREAMBOT_REPLAY_LOCKSTEP", "false")
    monkeypatch.setenv("DREAMBOT_CALIBRATION", "none")
    monkeypatch.setenv("DREAMBOT_LOCKSTEP_STAGES", "features,signals")
    s = settings_from_env()
    assert s.session == "paper-1" and s.topic_prefix == "dreambot.paper-1"
    assert s.symbols == ["SPY", "QQQ"]
    assert s.kafka_partitions == 6 and s.http_port == 0
    assert s.replay_source == tmp_path / "bars.csv" and not s.replay_lockstep
    assert s.calibration is None
    assert s.lockstep_stages == ["features", "signals"]
    spec = s.stage_spec()
    assert spec.symbols == ("SPY", "QQQ") and spec.calibration is None


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("DREAMBOT_HTTP_PORT", "70000", "less than or equal to 65535"),
        ("DREAMBOT_KAFKA_PARTITIONS", "0", "greater than or equal to 1"),
        ("DREAMBOT_SYMBOLS", ",", "at least one symbol"),
        ("DREAMBOT_SYMBOLS", "SPY,S P X", "invalid symbol"),
        ("DREAMBOT_MODE", "yolo", "'paper' or 'live'"),
        ("DREAMBOT_SESSION", "no spaces", "should match pattern"),
        ("DREAMBOT_REPLAY_RATE", "-1", "greater than or equal to 0"),
        ("DREAMBOT_REPLAY_LOCKSTEP", "maybe", "valid boolean"),
        ("DREAMBOT_LOCKSTEP_STAGES", "features,bogus", "unknown stage(s) bogus"),
    ],
)
def test_a_bad_value_is_one_line_naming_the_variable(
        monkeypatch: pytest.MonkeyPatch, name: str, value: str, message: str) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError) as err:
        settings_from_env()
    text = str(err.value)
    assert "\n" not in text
    assert text.startswith(f"environment variable {name}: ")
    assert message in text


def test_live_mode_needs_confirmation(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DREAMBOT_MODE", "live")
    with pytest.raises(ConfigError, match="DREAMBOT_LIVE_CONFIRM=true"):
        settings_from_env()
    monkeypatch.setenv("DREAMBOT_LIVE_CONFIRM", "true")
    assert settings_from_env().mode == "live"


@pytest.mark.parametrize("stage", ["ingest", "features", "signals", "risk", "oms"])
def test_a_stage_process_exits_2_with_one_line(stage: str) -> None:
    env = {"PATH": "/usr/bin:/bin", "DREAMBOT_HTTP_PORT": "not-a-port"}
    done = subprocess.run([sys.executable, "-m", f"services.{stage}.main"], env=env, cwd=PROJECT_ROOT,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert lines == [f"python -m services.{stage}.main: error: environment variable DREAMBOT_HTTP_PORT: "
                     "Input should be a valid integer, unable to parse string as an integer"]


def test_live_oms_refuses_the_paper_broker() -> None:
    env = {"PATH": "/usr/bin:/bin", "DREAMBOT_MODE": "live", "DREAMBOT_LIVE_CONFIRM": "true",
           "DREAMBOT_HTTP_PORT": "0", "OMS_AUDIT_PATH": "/tmp/dreambot-test-audit.jsonl"}
    done = subprocess.run([sys.executable, "-m", "services.oms.main"], env=env, cwd=PROJECT_ROOT,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert re.search(r"error: .*broker\.yaml: broker: paper sends no real orders", done.stderr)


def test_env_example_lists_every_setting() -> None:
    text = ENV_EXAMPLE.read_text(encoding="utf-8")
    listed = set(re.findall(r"^#?\s*([A-Z][A-Z0-9_]+)=", text, flags=re.MULTILINE))
    wanted = {f"DREAMBOT_{name.upper()}" for name in ServiceSettings.model_fields}
    wanted |= {"OMS_AUDIT_PATH", "OMS_AUDIT_ROTATE_MB", "OMS_AUDIT_BACKUPS", "OMS_METRIC_STREAM"}
    assert wanted <= listed, f"missing from .env.example: {sorted(wanted - listed)}"
    known = wanted | {f"DREAMBOT_{name.upper()}" for name in RuntimeSettings.model_fields}
    assert listed <= known, f"not a setting: {sorted(listed - known)}"
