"""Contextual gates block with their reason; boundaries are inclusive as documented."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from services.core.calendar import default_calendar
from services.core.settings import ConfigError
from services.signals.gates import (
    Calibration,
    GateContext,
    context_gates,
    halt_gate,
    learner_gate,
    load_calibration,
    pot_gate,
    regime_gate,
    spread_gate,
    time_window_gate,
    vol_band_gate,
)
from services.signals.playbooks import (
    CalibrationConfig,
    Gates,
    LearnerGate,
    PotGate,
    RegimeGate,
    TimeWindowGate,
    VolBandGate,
)

from .builders import T0, rec, ts_ny

WINDOW = TimeWindowGate(min_after_open=15, max_after_open=120, min_before_close=30)


@pytest.mark.parametrize(
    ("since", "to_close", "passed", "prefix"),
    [
        (15.0, 300.0, True, "minutes_since_open=15"),
        (14.99, 300.0, False, "too early: "),
        (120.0, 300.0, True, "minutes_since_open=120"),
        (120.01, 300.0, False, "too late: "),
        (60.0, 30.0, True, "minutes_since_open=60"),
        (60.0, 29.99, False, "too close to the close: "),
    ],
)
def test_time_window_boundaries(since: float, to_close: float, passed: bool, prefix: str) -> None:
    result = time_window_gate(WINDOW, {"minutes_since_open": since, "minutes_to_close": to_close}, T0)
    assert result.passed is passed
    assert result.reason.startswith(prefix)


def test_time_window_reason_text() -> None:
    result = time_window_gate(WINDOW, {"minutes_since_open": 14.99, "minutes_to_close": 300}, T0)
    assert result.reason == ("too early: minutes_since_open=14.99 in [15, 120], minutes_to_close=300 >= 30 (features)")


def test_time_window_from_calendar() -> None:
    cal = default_calendar()
    # 2025-07-03 closes early at 13:00 New York: 12:31 is 29 minutes before the close.
    result = time_window_gate(WINDOW, {}, ts_ny(12, 31, "2025-07-03"), cal)
    assert not result.passed
    assert result.reason == ("too late: minutes_since_open=181 in [15, 120], minutes_to_close=29 >= 30 (calendar)")
    assert time_window_gate(WINDOW, {}, ts_ny(9, 45), cal).passed
    assert time_window_gate(WINDOW, {}, ts_ny(11, 0, "2025-07-04"), cal).reason == "no trading session today"
    assert not time_window_gate(WINDOW, {}, T0).passed  # neither features nor a calendar


def test_vol_band_boundaries() -> None:
    band = VolBandGate(feature="rv_15", lo=0.10, hi=0.40)
    assert vol_band_gate(band, {"rv_15": 0.10}).passed
    assert vol_band_gate(band, {"rv_15": 0.40}).passed
    low = vol_band_gate(band, {"rv_15": 0.0999})
    assert (low.passed, low.reason) == (False, "outside band: rv_15=0.0999 in [0.1, 0.4]")
    assert not vol_band_gate(band, {"rv_15": 0.4001}).passed
    assert vol_band_gate(band, {}).reason == "rv_15 missing (warming up)"


def test_spread_gate() -> None:
    assert spread_gate(5, {"spread_bps": 5.0}).passed
    wide = spread_gate(5, {"spread_bps": 5.01})
    assert (wide.passed, wide.reason) == (False, "too wide: spread_bps=5.01 <= 5")
    assert spread_gate(5, {}).reason == "spread_bps missing (no quotes yet)"
    assert not spread_gate(5, {}).passed
    assert spread_gate(5, {}, index=True).passed


def test_halt_gate_uses_the_injected_callable() -> None:
    halted_at = {T0}
    assert not halt_gate(halted_at.__contains__, T0).passed
    assert halt_gate(halted_at.__contains__, T0 + 1).passed
    assert halt_gate(None, T0).reason == "no event calendar wired"


def test_regime_gate() -> None:
    named = RegimeGate(allowed=("range", "quiet"))
    assert not regime_gate(named, {}, None).passed
    assert regime_gate(named, {}, "trend").reason == "regime 'trend' not in ['range', 'quiet']"
    assert regime_gate(named, {}, "quiet").passed
    band = RegimeGate(feature="adx_14", hi=20)
    assert regime_gate(band, {"adx_14": 20.0}, None).reason == "adx_14=20 in [-inf, 20]"
    assert regime_gate(band, {"adx_14": 20.01}, None).reason == "outside band: adx_14=20.01 in [-inf, 20]"
    both = RegimeGate(allowed=("range",), feature="adx_14", lo=5, hi=20)
    assert regime_gate(both, {"adx_14": 10.0}, "range").reason == "regime 'range' allowed, adx_14=10 in [5, 20]"


def test_pot_gate_threshold_from_calibration_or_config() -> None:
    call = rec(621, "C", 0.40, bid=0.80, ask=0.82, touch=0.70)
    cal = Calibration(1.0, 0.70, "test")
    ok = pot_gate(PotGate(right="call"), cal, call)
    assert ok.passed
    assert ok.reason == "SPY250708C00621000 (strike 621) prob_touch=0.7 >= 0.7 (calibration)"
    below = pot_gate(PotGate(right="call"), Calibration(1.0, 0.7001, "test"), call)
    assert not below.passed and below.reason.startswith("below threshold: ")
    fixed = pot_gate(PotGate(right="call", threshold=0.9), cal, call)
    assert not fixed.passed and fixed.reason.endswith(">= 0.9 (config)")
    assert pot_gate(PotGate(right="put"), cal, None).reason == "no OTM put strike listed"


def test_learner_gate() -> None:
    cfg = LearnerGate(min_probability=0.55)
    result, p = learner_gate(cfg, None, "pb", {})
    assert (result.passed, result.reason, p) == (True, "no learner wired", None)
    result, p = learner_gate(cfg, lambda name, f: 0.54, "pb", {})
    assert (result.passed, result.reason, p) == (False, "too unlikely: p=0.54 >= 0.55", 0.54)
    result, p = learner_gate(cfg, lambda name, f: 0.55, "pb", {})
    assert result.passed and p == 0.55
    result, _ = learner_gate(cfg, lambda name, f: float("nan"), "pb", {})
    assert not result.passed


def test_context_gates_stop_at_first_failure() -> None:
    calls: list[str] = []

    def learner(name: str, features) -> float:
        calls.append(name)
        return 1.0

    gates = Gates(time_window=WINDOW, vol_band=VolBandGate(lo=0.1, hi=0.2), max_spread_bps=5)
    values = {"minutes_since_open": 10.0, "minutes_to_close": 300.0, "atm_iv": 0.15, "spread_bps": 1.0}
    results, p = context_gates(gates, "pb", GateContext(ts=T0, values=values, learner=learner))
    assert [r.gate for r in results] == ["time"] and not results[-1].passed
    assert calls == [] and p is None
    values["minutes_since_open"] = 60.0
    results, p = context_gates(gates, "pb", GateContext(ts=T0, values=values, learner=learner))
    assert [r.gate for r in results] == ["time", "halt", "vol_band", "spread", "learner"]
    assert all(r.passed for r in results) and calls == ["pb"] and p == 1.0


def test_calibration_file(tmp_path: Path) -> None:
    cfg = CalibrationConfig(path=tmp_path / "cal.json", risk_multiplier=1.0, pot_threshold=0.6)
    absent = load_calibration(cfg)
    assert (absent.risk_multiplier, absent.pot_threshold) == (1.0, 0.6)
    assert absent.source.startswith("defaults (")
    (tmp_path / "cal.json").write_text(json.dumps({"risk_multiplier": 0.5, "pot_threshold": 0.8, "n": 3}))
    got = load_calibration(cfg)
    assert (got.risk_multiplier, got.pot_threshold) == (0.5, 0.8)
    (tmp_path / "cal.json").write_text(json.dumps({"pot_threshold": 0.75}))
    assert load_calibration(cfg).risk_multiplier == 1.0  # a missing key keeps the config's value
    (tmp_path / "cal.json").write_text(json.dumps({"pot_threshold": 1.5}))
    with pytest.raises(ConfigError, match=r"cal.json: pot_threshold: 1.5 is outside \[0, 1\]"):
        load_calibration(cfg)
    (tmp_path / "cal.json").write_text("{nope")
    with pytest.raises(ConfigError, match="invalid calibration JSON"):
        load_calibration(cfg)
    (tmp_path / "cal.json").write_text(json.dumps({"risk_multiplier": 2}))
    relative = CalibrationConfig(path=Path("cal.json"))
    got = load_calibration(relative, root=tmp_path)
    assert got.source.endswith("cal.json") and got.risk_multiplier == 2.0
    assert load_calibration(CalibrationConfig()).source == "defaults"
