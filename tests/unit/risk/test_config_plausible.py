"""risk.yaml and the session's risk overrides refuse values that are not plausible limits, each as
one ConfigError line naming the file and the field."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.app.stages import apply_risk_overrides
from services.core.session_config import RiskOverrides, load_session_config
from services.core.settings import CONFIG_DIR, ConfigError, load_yaml
from services.risk.config import load_risk_config

SHIPPED = (CONFIG_DIR / "risk.yaml").read_text(encoding="utf-8")


def _risk_yaml(tmp_path: Path, extra: str) -> Path:
    path = tmp_path / "risk.yaml"
    path.write_text(f"{SHIPPED}\n{extra}\n", encoding="utf-8")
    return path


@pytest.mark.parametrize(("line", "field", "why"), [
    ("max_daily_loss_usd: .inf", "max_daily_loss_usd", "finite number"),
    ("max_daily_loss_usd: .nan", "max_daily_loss_usd", "finite number"),
    ("max_daily_loss_usd: true", "max_daily_loss_usd", "true is a yes/no, not a value for this setting"),
    ("max_open_positions: true", "max_open_positions", "true is a yes/no"),
    ("max_contracts_per_order: false", "max_contracts_per_order", "false is a yes/no"),
    ("max_daily_loss_usd: 1e300", "max_daily_loss_usd", "less than or equal to 10000000"),
    ("max_premium_total_usd: 0", "max_premium_total_usd", "greater than 0"),
    ("max_contracts_per_order: 1000000", "max_contracts_per_order", "less than or equal to 10000"),
])
def test_implausible_limits_are_refused(tmp_path: Path, line: str, field: str, why: str) -> None:
    # A later duplicate key wins in YAML: the shipped file with one limit replaced.
    path = _risk_yaml(tmp_path, line)
    with pytest.raises(ConfigError) as info:
        apply_risk_overrides(load_yaml(path), RiskOverrides(), str(path))
    message = str(info.value)
    assert message.startswith(f"{path}: {field}: ") and why in message and "\n" not in message


def test_a_yes_no_setting_still_takes_true_and_false(tmp_path: Path) -> None:
    path = _risk_yaml(tmp_path, "daily_loss_resets_next_session: false")
    assert apply_risk_overrides(load_yaml(path), RiskOverrides(), str(path)).daily_loss_resets_next_session is False


def test_an_empty_risk_yaml_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "risk.yaml"
    path.write_text("# nothing here\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="empty file"):
        apply_risk_overrides(load_yaml(path), RiskOverrides(), str(path))


def test_a_binary_risk_yaml_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "risk.yaml"
    path.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\xff\xfe")
    with pytest.raises(ConfigError) as info:
        load_risk_config(path)
    assert str(info.value).startswith(f"{path}: not a text (UTF-8) YAML file: byte ") and "\n" not in str(info.value)


def test_a_folder_named_risk_yaml_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "risk.yaml").mkdir()
    with pytest.raises(ConfigError, match="cannot read"):
        load_risk_config(tmp_path / "risk.yaml")


@pytest.mark.parametrize(("value", "why"), [
    ("true", "true is a yes/no"), (".inf", "finite number"), ("1e300", "less than or equal to 10000000"),
])
def test_session_file_risk_overrides_are_checked_alike(tmp_path: Path, value: str, why: str) -> None:
    session = tmp_path / "session.yaml"
    session.write_text(f"risk:\n  max_daily_loss_usd: {value}\n", encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_session_config(session_file=session, environ={}, use_env_file=False)
    assert "risk.max_daily_loss_usd" in str(info.value) and why in str(info.value)


def test_an_environment_override_of_inf_is_refused() -> None:
    with pytest.raises(ConfigError, match="finite number"):
        load_session_config(environ={"DREAMBOT_RISK__MAX_DAILY_LOSS_USD": "inf"}, use_env_file=False)
