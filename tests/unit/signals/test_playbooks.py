"""Playbook config: the shipped file loads; every kind of mistake is one readable line; conditions."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest

from services.core.settings import ConfigError
from services.signals.playbooks import (
    KNOWN_FEATURES,
    Condition,
    PlaybooksConfig,
    load_playbooks,
    parse_playbooks,
)

SOURCE = "config/playbooks.yaml"

RAW: dict = {
    "symbols": {"SPY": {"root": "SPY", "kind": "etf"}, "SPX": {"root": "SPXW", "kind": "index"}},
    "playbooks": [
        {
            "name": "vwap_reversion_calls",
            "symbols": ["SPY", "SPX"],
            "direction": "call",
            "entry": [
                {"feature": "close", "op": "<", "ref": "vwap_lower_2"},
                {"feature": "adx_14", "op": "<", "value": 20},
            ],
            "gates": {"vol_band": {"feature": "atm_iv", "lo": 0.05, "hi": 0.6}},
            "bracket": {"mode": "premium", "take_profit_pct": 0.5, "stop_loss_pct": 0.3},
            "sizing": {"risk_per_trade_usd": 200, "max_contracts": 5},
        }
    ],
}


def _error(edit) -> str:
    raw = copy.deepcopy(RAW)
    edit(raw["playbooks"][0])
    with pytest.raises(ConfigError) as exc:
        parse_playbooks(raw, SOURCE)
    message = str(exc.value)
    assert "\n" not in message
    return message


def test_shipped_config_loads() -> None:
    cfg = load_playbooks()
    assert isinstance(cfg, PlaybooksConfig)
    names = [p.name for p in cfg.playbooks]
    assert names == [
        "vwap_reversion_calls",
        "vwap_reversion_puts",
        "orb_calls",
        "orb_puts",
        "trend_pullback_calls",
        "trend_pullback_puts",
        "pot_fade_puts",
        "pot_fade_calls",
    ]
    assert cfg.symbols["SPX"].root == "SPXW"
    assert {p.direction for p in cfg.playbooks} == {"call", "put"}
    assert all(p.symbols for p in cfg.playbooks)
    assert [p.name for p in cfg.for_symbol("SPY")] == names


def test_minimal_config_parses_with_defaults() -> None:
    cfg = parse_playbooks(RAW, SOURCE)
    pb = cfg.playbooks[0]
    assert pb.enabled and pb.cooldown_minutes == 15 and pb.limit.at == "ask"
    assert pb.contract.target.metric == "delta" and pb.contract.target.value == 0.30
    assert pb.gates.event_halts and pb.gates.learner.min_probability == 0.5
    assert pb.right == "C"


def test_unknown_feature_names_playbook_entry_and_suggests() -> None:
    msg = _error(lambda pb: pb["entry"][1].update(feature="adx_41"))
    assert msg == (
        "config/playbooks.yaml: playbook 'vwap_reversion_calls' entry[1]: "
        "unknown feature 'adx_41' (did you mean 'adx_14'?)"
    )


def test_unknown_ref_feature() -> None:
    msg = _error(lambda pb: pb["entry"][0].update(ref="vwap_lowr_2"))
    assert msg == (
        "config/playbooks.yaml: playbook 'vwap_reversion_calls' entry[0]: "
        "unknown feature 'vwap_lowr_2' (did you mean 'vwap_lower_2'?)"
    )


def test_unknown_gate_feature() -> None:
    msg = _error(lambda pb: pb["gates"]["vol_band"].update(feature="zzz"))
    assert msg == "config/playbooks.yaml: playbook 'vwap_reversion_calls' gates.vol_band: unknown feature 'zzz'"


def test_bad_range() -> None:
    msg = _error(lambda pb: pb["gates"]["vol_band"].update(lo=0.7, hi=0.6))
    assert msg == "config/playbooks.yaml: playbook 'vwap_reversion_calls' gates.vol_band: bad range: lo 0.7 > hi 0.6"
    msg = _error(lambda pb: pb["entry"].append({"feature": "vwap_dist_atr", "op": "between", "value": [1, -1]}))
    assert msg == "config/playbooks.yaml: playbook 'vwap_reversion_calls' entry[2]: bad range: lo 1 > hi -1"
    msg = _error(lambda pb: pb["gates"].update(time_window={"min_after_open": 60, "max_after_open": 30}))
    assert msg == (
        "config/playbooks.yaml: playbook 'vwap_reversion_calls' gates.time_window: "
        "bad range: min_after_open 60 > max_after_open 30"
    )


def test_unknown_symbol() -> None:
    msg = _error(lambda pb: pb["symbols"].append("QQQ"))
    assert msg == (
        "config/playbooks.yaml: playbook 'vwap_reversion_calls' symbols[2]: unknown symbol 'QQQ' (known: SPX, SPY)"
    )
    msg = _error(lambda pb: pb["symbols"].append("SPYY"))
    assert msg.endswith("symbols[2]: unknown symbol 'SPYY' (did you mean 'SPY'?)")


def test_unknown_op() -> None:
    msg = _error(lambda pb: pb["entry"][1].update(op="=<"))
    assert msg == (
        "config/playbooks.yaml: playbook 'vwap_reversion_calls' entry[1]: "
        "unknown op '=<' (expected one of <, <=, >, >=, ==, !=, between)"
    )


def test_missing_field() -> None:
    msg = _error(lambda pb: pb.pop("direction"))
    assert msg == "config/playbooks.yaml: playbook 'vwap_reversion_calls': missing field 'direction'"
    msg = _error(lambda pb: pb["entry"][1].pop("value"))
    assert msg == (
        "config/playbooks.yaml: playbook 'vwap_reversion_calls' entry[1]: missing field 'value' (or 'ref') for op '<'"
    )
    msg = _error(lambda pb: pb["bracket"].pop("stop_loss_pct"))
    assert msg == (
        "config/playbooks.yaml: playbook 'vwap_reversion_calls' bracket: "
        "missing field 'stop_loss_pct' for mode 'premium'"
    )


def test_unknown_field_and_bad_values() -> None:
    msg = _error(lambda pb: pb.update(cooldown_minute=5))
    assert msg == "config/playbooks.yaml: playbook 'vwap_reversion_calls': unknown field 'cooldown_minute'"
    msg = _error(lambda pb: pb.update(direction="calls"))
    assert msg == (
        "config/playbooks.yaml: playbook 'vwap_reversion_calls' direction: "
        "Input should be 'call' or 'put' (got 'calls')"
    )
    msg = _error(lambda pb: pb["sizing"].update(max_contracts=0))
    assert msg == (
        "config/playbooks.yaml: playbook 'vwap_reversion_calls' sizing.max_contracts: "
        "Input should be greater than or equal to 1 (got 0)"
    )
    msg = _error(lambda pb: pb.update(name="Bad Name"))
    assert "playbook 'Bad Name' name: name 'Bad Name' must match" in msg


def test_several_errors_are_counted_on_one_line() -> None:
    def edit(pb: dict) -> None:
        pb["entry"][1]["feature"] = "adx_41"
        pb.pop("sizing")

    msg = _error(edit)
    assert msg.endswith("(and 1 more)")


def test_duplicate_names_and_symbol_section_errors() -> None:
    raw = copy.deepcopy(RAW)
    raw["playbooks"].append(copy.deepcopy(raw["playbooks"][0]))
    with pytest.raises(ConfigError, match=r"playbook 'vwap_reversion_calls' name: duplicate playbook name"):
        parse_playbooks(raw, SOURCE)
    raw = copy.deepcopy(RAW)
    raw["symbols"]["SPY"]["dte"] = 3
    raw["symbols"]["SPY"]["max_dte"] = 1
    with pytest.raises(ConfigError) as exc:
        parse_playbooks(raw, SOURCE)
    assert str(exc.value) == "config/playbooks.yaml: symbol 'SPY': bad range: dte 3 > max_dte 1"


def test_load_from_file_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "playbooks.yaml"
    path.write_text("playbooks: []\nsymbols: {SPY: {root: SPY, kind: etf}}\n")
    with pytest.raises(ConfigError) as exc:
        load_playbooks(path)
    assert str(exc.value) == f"{path}: playbooks: needs at least 1 item(s), got 0"
    path.write_text("playbooks: [\n")
    with pytest.raises(ConfigError, match="invalid YAML"):
        load_playbooks(path)


@pytest.mark.parametrize(
    ("cond", "values", "passed", "detail"),
    [
        ({"op": "<", "value": 20}, {"adx_14": 19.99}, True, "adx_14=19.99 < 20"),
        ({"op": "<", "value": 20}, {"adx_14": 20.0}, False, "adx_14=20 < 20"),
        ({"op": "<=", "value": 20}, {"adx_14": 20.0}, True, "adx_14=20 <= 20"),
        ({"op": ">", "value": 20}, {"adx_14": 20.0}, False, "adx_14=20 > 20"),
        ({"op": ">=", "value": 20}, {"adx_14": 20.0}, True, "adx_14=20 >= 20"),
        ({"op": "==", "value": 20}, {"adx_14": 20.0}, True, "adx_14=20 == 20"),
        ({"op": "!=", "value": 20}, {"adx_14": 20.0}, False, "adx_14=20 != 20"),
        ({"op": "between", "value": [10, 20]}, {"adx_14": 20.0}, True, "adx_14=20 between [10, 20]"),
        ({"op": "between", "value": [10, 20]}, {"adx_14": 20.01}, False, "adx_14=20.01 between [10, 20]"),
        (
            {"op": ">", "ref": "minus_di_14"},
            {"adx_14": 30.0, "minus_di_14": 29.0},
            True,
            "adx_14=30 > minus_di_14=29",
        ),
        ({"op": ">", "ref": "minus_di_14"}, {"adx_14": 30.0}, False, "minus_di_14 missing (warming up)"),
        ({"op": ">", "value": 1}, {}, False, "adx_14 missing (warming up)"),
    ],
)
def test_condition_evaluation(cond: dict, values: dict, passed: bool, detail: str) -> None:
    result = Condition(feature="adx_14", **cond).evaluate(values)
    assert (result.passed, result.detail) == (passed, detail)


def test_known_features_cover_engine_and_chain_names() -> None:
    for name in ("close", "vwap_upper_3", "or_breakout_30", "trade_intensity", "atm_iv", "term_slope"):
        assert name in KNOWN_FEATURES
