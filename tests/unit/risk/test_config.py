"""risk.yaml schema, calibration intake and events.yaml validation: errors are one readable line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from services.core.settings import CONFIG_DIR, ConfigError
from services.risk.config import (
    RiskConfig,
    SizingLimits,
    load_risk_config,
    load_risk_multiplier,
    read_risk_multiplier,
)
from services.risk.event_halts import load_event_calendar, load_event_halts


def _one_line(exc: pytest.ExceptionInfo[ConfigError]) -> str:
    msg = str(exc.value)
    assert "\n" not in msg
    return msg


def test_shipped_risk_yaml_loads() -> None:
    cfg = load_risk_config()
    assert cfg.max_daily_loss_usd == 1000
    assert cfg.cooldown.scope == "symbol"
    assert cfg.event_halts.path == Path("config/events.yaml")
    assert load_risk_multiplier(cfg) == 1.0  # no calibration file configured
    assert len(load_event_halts(cfg)) > 0


def test_unknown_key_is_one_line(tmp_path: Path) -> None:
    p = tmp_path / "risk.yaml"
    p.write_text("max_daily_los_usd: 500\n")
    with pytest.raises(ConfigError) as info:
        load_risk_config(p)
    msg = _one_line(info)
    assert str(p) in msg and "max_daily_los_usd" in msg and "Extra inputs are not permitted" in msg


def test_unknown_nested_key_names_its_path(tmp_path: Path) -> None:
    p = tmp_path / "risk.yaml"
    p.write_text("cooldown:\n  loses: 2\n")
    with pytest.raises(ConfigError) as info:
        load_risk_config(p)
    assert "cooldown.loses" in _one_line(info)


@pytest.mark.parametrize(
    ("yaml_text", "field"),
    [
        ("max_daily_loss_usd: -100\n", "max_daily_loss_usd"),
        ("max_premium_total_usd: -1\n", "max_premium_total_usd"),
        ("max_contracts_per_order: 0\n", "max_contracts_per_order"),
        ("throttle:\n  max_orders_per_minute: -3\n", "throttle.max_orders_per_minute"),
        ("stale_data:\n  max_heartbeat_age_s: -5\n", "stale_data.max_heartbeat_age_s"),
    ],
)
def test_negative_limit_is_one_line(tmp_path: Path, yaml_text: str, field: str) -> None:
    p = tmp_path / "risk.yaml"
    p.write_text(yaml_text)
    with pytest.raises(ConfigError) as info:
        load_risk_config(p)
    msg = _one_line(info)
    assert field in msg and "greater than" in msg


def test_empty_file_means_defaults(tmp_path: Path) -> None:
    p = tmp_path / "risk.yaml"
    p.write_text("")
    assert load_risk_config(p) == RiskConfig()


def _calibration(tmp_path: Path, doc: object) -> Path:
    p = tmp_path / "calibration.json"
    p.write_text(json.dumps(doc))
    return p


def test_calibration_multiplier_scales_sizing_caps(tmp_path: Path) -> None:
    cal = _calibration(
        tmp_path, {"global": {}, "playbooks": {}, "risk_multiplier": 0.5, "pot_threshold": 0.3}
    )
    cfg = RiskConfig(calibration_path=cal, max_contracts_per_order=10)
    m = load_risk_multiplier(cfg)
    assert m == 0.5
    limits = SizingLimits.from_config(cfg, m)
    # 10 * 0.5 = 5 contracts; 2000 * 0.5 = 1000 USD; 5000 * 0.5 = 2500 USD
    assert (
        limits.max_contracts_per_order,
        limits.max_premium_per_symbol_usd,
        limits.max_premium_total_usd,
    ) == (
        5,
        1000.0,
        2500.0,
    )


def test_calibration_multiplier_is_clamped_and_floors_at_one_contract(tmp_path: Path) -> None:
    cfg = RiskConfig(max_contracts_per_order=10)
    assert SizingLimits.from_config(cfg, 2.0).risk_multiplier == 1.0  # risk_multiplier_max 1.0
    assert (
        SizingLimits.from_config(
            cfg.model_copy(update={"risk_multiplier_max": 2.0}), 2.0
        ).max_contracts_per_order
        == 20
    )
    assert SizingLimits.from_config(cfg, 0.05).max_contracts_per_order == 1  # floor(0.5) -> at least 1
    assert SizingLimits.from_config(cfg, 0.33).max_contracts_per_order == 3  # floor(3.3)


def test_calibration_without_multiplier_key_is_one(tmp_path: Path) -> None:
    assert read_risk_multiplier(_calibration(tmp_path, {"global": {}, "pot_threshold": 0.4})) == 1.0


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        ('{"risk_multiplier": -0.5}', "risk_multiplier must be >= 0"),
        ('{"risk_multiplier": "big"}', "finite number"),
        ("{not json", "not a readable calibration JSON"),
        ("[1, 2]", "JSON object"),
    ],
)
def test_bad_calibration_is_one_line(tmp_path: Path, content: str, needle: str) -> None:
    p = tmp_path / "calibration.json"
    p.write_text(content)
    with pytest.raises(ConfigError) as info:
        read_risk_multiplier(p)
    msg = _one_line(info)
    assert needle in msg and str(p) in msg


def test_missing_calibration_file_is_one_line(tmp_path: Path) -> None:
    cfg = RiskConfig(calibration_path=Path("backtests/calibration.json"))
    with pytest.raises(ConfigError) as info:
        load_risk_multiplier(cfg, base_dir=tmp_path)
    assert "calibration file not found" in _one_line(info)


def test_events_yaml_unquoted_time_is_refused(tmp_path: Path) -> None:
    p = tmp_path / "events.yaml"
    # YAML 1.1 reads a bare 14:00 as the sexagesimal integer 840.
    p.write_text("kinds:\n  FOMC: {time: 14:00, minutes_before: 10, minutes_after: 30}\nevents: []\n")
    with pytest.raises(ConfigError) as info:
        load_event_calendar(p)
    msg = _one_line(info)
    assert "kinds.FOMC.time" in msg and "quoted" in msg and "840" in msg


def test_events_yaml_unknown_kind_is_refused(tmp_path: Path) -> None:
    p = tmp_path / "events.yaml"
    p.write_text(
        'kinds:\n  CPI: {time: "08:30", minutes_before: 10, minutes_after: 30}\n'
        "events:\n  - {kind: GDP, date: 2025-07-30}\n"
    )
    with pytest.raises(ConfigError) as info:
        load_event_calendar(p)
    assert "unknown kind 'GDP'" in _one_line(info)


def test_events_yaml_negative_minutes_is_refused(tmp_path: Path) -> None:
    p = tmp_path / "events.yaml"
    p.write_text('kinds:\n  CPI: {time: "08:30", minutes_before: -10, minutes_after: 30}\n')
    with pytest.raises(ConfigError) as info:
        load_event_calendar(p)
    assert "kinds.CPI.minutes_before" in _one_line(info)


def test_shipped_events_yaml_has_each_kind() -> None:
    cal = load_event_calendar(CONFIG_DIR / "events.yaml")
    kinds = [w.kind for w in cal.windows]
    assert kinds.count("FOMC") == 16  # 8 scheduled meetings a year, 2025 and 2026
    assert kinds.count("CPI") >= 17 and kinds.count("NFP") >= 16
    assert all(w.impact == "high" for w in cal.windows)
    assert len(load_event_calendar(CONFIG_DIR / "events.yaml", min_impact="high")) == len(cal)
