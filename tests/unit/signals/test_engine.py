"""SignalEngine end to end on hand-built features and chains, with the shipped playbooks."""

from __future__ import annotations

import pytest

from services.core.calendar import default_calendar
from services.core.events import RegimeChange, encode_json, validate
from services.signals.engine import SignalEngine
from services.signals.gates import Calibration
from services.signals.playbooks import parse_playbooks

from .builders import NS, T0, FixedRecords, chain_for, engine_with, fv, priced_chain, rec, shipped, spy_records, ts_ny

# playbook -> (features that fire it, the same with one condition off by a hair, expected contract)
CASES = {
    "vwap_reversion_calls": ({"close": 618.99, "adx_14": 19.99}, {"adx_14": 20.0}, "SPY250708C00622000"),
    "vwap_reversion_puts": ({"close": 621.01, "adx_14": 19.99}, {"close": 621.0}, "SPY250708P00617000"),
    "orb_calls": (
        {
            "or_breakout_15": 1.0,
            "plus_di_14": 25.0,
            "minus_di_14": 15.0,
            "adx_14": 18.0,
            "close": 620.01,
        },
        {"adx_14": 17.99},
        "SPY250708C00621000",
    ),
    "orb_puts": (
        {
            "or_breakout_15": -1.0,
            "plus_di_14": 15.0,
            "minus_di_14": 25.0,
            "adx_14": 18.0,
            "close": 619.99,
        },
        {"close": 620.0},
        "SPY250708P00618000",
    ),
    "trend_pullback_calls": (
        {"adx_14": 25.01, "plus_di_14": 30.0, "minus_di_14": 15.0, "vwap_dist_atr": 0.2499},
        {"vwap_dist_atr": 0.25},
        "SPY250708C00621000",
    ),
    "trend_pullback_puts": (
        {"adx_14": 25.01, "plus_di_14": 15.0, "minus_di_14": 30.0, "vwap_dist_atr": -0.2499},
        {"adx_14": 25.0},
        "SPY250708P00618000",
    ),
    "pot_fade_puts": ({"close": 621.01}, {"close": 621.0}, "SPY250708P00617000"),
    "pot_fade_calls": ({"close": 618.99}, {"close": 619.0}, "SPY250708C00622000"),
}


def _decision(engine: SignalEngine, name: str, **values: float):
    decisions = {d.playbook: d for d in engine.evaluate(fv(**values))}
    return decisions[name]


@pytest.mark.parametrize("name", sorted(CASES))
def test_each_shipped_playbook_fires_and_not_when_a_condition_is_off_by_a_hair(name: str) -> None:
    fire, hair, contract = CASES[name]
    engine, _ = engine_with()
    decision = _decision(engine, name, **fire)
    assert decision.intent is not None, decision.reason
    assert decision.intent.contract == contract
    assert decision.intent.right == ("C" if name.endswith("calls") else "P")
    validate(decision.intent)  # passes the wire schema's checks

    engine, _ = engine_with()
    missed = _decision(engine, name, **{**fire, **hair})
    assert missed.intent is None
    assert "not met" in missed.reason


def test_pot_fade_is_blocked_by_the_calibration_threshold() -> None:
    # The nearest OTM call (621) has prob_touch 0.80 in the hand-built chain.
    engine, _ = engine_with(calibration=Calibration(1.0, 0.81, "test"))
    decision = _decision(engine, "pot_fade_puts", close=621.01)
    assert decision.intent is None
    assert decision.reason == (
        "gate pot: below threshold: SPY250708C00621000 (strike 621) prob_touch=0.8 >= 0.81 (calibration)"
    )
    engine, _ = engine_with(calibration=Calibration(1.0, 0.80, "test"))
    assert _decision(engine, "pot_fade_puts", close=621.01).fired


def test_intent_prices_size_id_reason_and_features() -> None:
    engine, _ = engine_with()
    intent = _decision(engine, "vwap_reversion_calls", close=618.99, adx_14=19.99).intent
    assert intent is not None
    assert intent.id == f"SPY-vwap_reversion_calls-{T0}"
    assert (intent.ts, intent.underlying, intent.playbook, intent.side) == (
        T0,
        "SPY",
        "vwap_reversion_calls",
        "buy",
    )
    # entry = ask 0.52; TP 0.52 * 1.5 = 0.78; SL 0.52 * 0.7 = 0.364 -> 0.36 (penny ticks)
    assert (intent.limit_price, intent.take_profit, intent.stop_loss) == (0.52, 0.78, 0.36)
    # floor(200 * 1.0 / ((0.52 - 0.36) * 100)) = floor(12.5) = 12, capped at 5
    assert intent.quantity == 5
    r = intent.reason
    assert r.startswith(
        "vwap_reversion_calls buy call on SPY: entry [close=618.99 < vwap_lower_2=619; adx_14=19.99 < 20]"
    )
    assert "time: minutes_since_open=60 in [15, close], minutes_to_close=330 >= 30 (features)" in r
    assert "halt: no event calendar wired" in r
    assert "vol_band: atm_iv=0.15 in [0.05, 0.6]" in r
    assert "spread: spread_bps=0.16 <= 5" in r
    assert "learner: no learner wired" in r
    assert "contract [SPY250708C00622000 (2025-07-08, 0DTE, strike 622, delta 0.31 vs target 0.3±0.1" in r
    assert "3 eligible of 7 calls" in r
    assert "limit 0.52 = ask" in r
    assert "TP 0.78 / SL 0.36 from entry 0.52 (premium +50%/-30%)" in r
    assert "5 contracts: floor($200 x 1 / $16 per contract) = 12, capped at 5" in r
    assert intent.features == {
        "adx_14": 19.99,
        "atm_iv": 0.15,
        "close": 618.99,
        "contract_ask": 0.52,
        "contract_bid": 0.5,
        "contract_delta": 0.31,
        "contract_iv": 0.15,
        "contract_prob_touch": 0.62,
        "contract_strike": 622.0,
        "minutes_since_open": 60.0,
        "minutes_to_close": 330.0,
        "spread_bps": 0.16,
        "underlying_price": 620.0,
        "vwap_lower_2": 619.0,
    }


def test_atr_bracket_and_mid_limit() -> None:
    engine, _ = engine_with()
    intent = _decision(engine, "orb_calls", **CASES["orb_calls"][0]).intent
    assert intent is not None
    # 621C bid/ask 0.80/0.82: mid 0.81 + 0.02 = 0.83, capped at the ask 0.82.
    # |delta| 0.40 x atr 0.4 = 0.16 per ATR: TP 0.82 + 3 x 0.16 = 1.30, SL 0.82 - 1.5 x 0.16 = 0.58.
    assert (intent.limit_price, intent.take_profit, intent.stop_loss) == (0.82, 1.3, 0.58)
    assert intent.quantity == 5  # floor(200 / 24) = 8, capped at 5
    assert intent.features["atr_14"] == 0.4


def test_calibration_risk_multiplier_scales_size() -> None:
    engine, _ = engine_with(calibration=Calibration(0.1, 0.7, "test"))
    intent = _decision(engine, "vwap_reversion_calls", close=618.99, adx_14=19.99).intent
    assert intent is not None and intent.quantity == 1  # floor(200 x 0.1 / 16) = 1
    engine, _ = engine_with(calibration=Calibration(0.05, 0.7, "test"))
    decision = _decision(engine, "vwap_reversion_calls", close=618.99, adx_14=19.99)
    assert decision.intent is None
    assert decision.reason.startswith("size: one contract risks $16 > budget $10")


def test_cooldown_one_intent_per_playbook_per_symbol() -> None:
    engine, _ = engine_with()
    fire = {"close": 618.99, "adx_14": 19.99}
    first = [i.playbook for i in engine.on_features(fv(**fire))]
    assert first == ["vwap_reversion_calls", "pot_fade_calls"]
    assert engine.on_features(fv(**fire)) == []  # a redelivery changes nothing
    later = T0 + 14 * 60 * NS
    engine.on_chain(chain_for(spy_records(), ts=later))
    assert engine.on_features(fv(ts=later, **fire)) == []
    assert engine.last_decisions[("SPY", "vwap_reversion_calls")].reason == (
        "cooldown: fired at 2025-07-08T10:30:00-04:00, next entry from 2025-07-08T10:45:00-04:00"
    )
    after = T0 + 15 * 60 * NS
    engine.on_chain(chain_for(spy_records(), ts=after))
    assert [i.playbook for i in engine.on_features(fv(ts=after, **fire))] == ["vwap_reversion_calls"]


def test_chain_is_analysed_lazily_and_once_per_snapshot() -> None:
    engine, fixed = engine_with()
    engine.on_features(fv())  # nothing's conditions hold
    assert fixed.calls == 0
    engine.on_features(fv(close=618.99, adx_14=19.99))  # two playbooks need the chain
    assert fixed.calls == 1
    engine.on_chain(chain_for(spy_records(), ts=T0 + NS))
    engine.on_features(fv(ts=T0 + 2 * NS, close=621.01, adx_14=19.99))
    assert fixed.calls == 2


def test_no_chain_and_stale_chain() -> None:
    engine = SignalEngine(parse_playbooks(_one_playbook(), "t.yaml"), chain_records_fn=FixedRecords({}))
    assert engine.evaluate(fv(close=618.99, adx_14=19.99))[0].reason == "no option chain received yet"
    engine, _ = engine_with()
    old = T0 + 121 * NS
    decision = {d.playbook: d for d in engine.evaluate(fv(ts=old, close=618.99, adx_14=19.99))}
    assert decision["vwap_reversion_calls"].reason == "option chain is 121s old (max 120s)"


def test_halt_and_learner_block_with_reason() -> None:
    engine, _ = engine_with(is_halted=lambda ts: ts == T0)
    decision = _decision(engine, "vwap_reversion_calls", close=618.99, adx_14=19.99)
    assert decision.reason == "gate halt: economic event halt in force"

    seen = []

    def learner(playbook: str, features) -> float:
        seen.append((playbook, features["adx_14"]))
        return 0.39

    engine, _ = engine_with(learner=learner)
    decision = _decision(engine, "vwap_reversion_calls", close=618.99, adx_14=19.99)
    assert decision.reason == "gate learner: too unlikely: p=0.39 >= 0.4"
    assert seen[0] == ("vwap_reversion_calls", 19.99)

    engine, _ = engine_with(learner=lambda pb, f: 0.4)
    intent = _decision(engine, "vwap_reversion_calls", close=618.99, adx_14=19.99).intent
    assert intent is not None and intent.features["learner_probability"] == 0.4
    assert "learner: p=0.4 >= 0.4" in intent.reason


def _one_playbook(**extra) -> dict:
    pb = {
        "name": "revert",
        "symbols": ["SPY", "SPX"],
        "direction": "call",
        "entry": [{"feature": "close", "op": "<", "ref": "vwap_lower_2"}],
        "bracket": {"mode": "premium", "take_profit_pct": 0.5, "stop_loss_pct": 0.3},
        "sizing": {"risk_per_trade_usd": 500, "max_contracts": 3},
    }
    pb.update(extra)
    return {
        "symbols": {
            "SPY": {"root": "SPY", "kind": "etf", "tick": {"below": 0.01, "above": 0.01}},
            "SPX": {"root": "SPXW", "kind": "index", "max_dte": 2},
        },
        "playbooks": [pb],
    }


def test_named_regime_gate_uses_regime_change_events() -> None:
    cfg = parse_playbooks(_one_playbook(gates={"regime": {"allowed": ["range"]}}), "t.yaml")
    engine, _ = engine_with(config=cfg)
    assert engine.evaluate(fv(close=618.99))[0].reason == "gate regime: no regime reported yet (allowed: range)"
    engine.on_regime(RegimeChange(ts=T0 - NS, underlying="SPY", regime="trend", previous="range", score=3.0))
    assert engine.evaluate(fv(close=618.99))[0].reason == "gate regime: regime 'trend' not in ['range']"
    engine.on_regime(RegimeChange(ts=T0, underlying="SPY", regime="range", previous="trend", score=3.0))
    assert engine.evaluate(fv(close=618.99))[0].fired


def test_spx_trades_spxw_and_index_skips_spread_gate() -> None:
    cfg = parse_playbooks(_one_playbook(gates={"max_spread_bps": 5}), "t.yaml")
    spxw = [
        rec(6210, "C", 0.31, bid=6.00, ask=6.20, root="SPXW"),
        rec(6220, "C", 0.24, bid=4.00, ask=4.20, root="SPXW"),
    ]
    am = [rec(6210, "C", 0.30, bid=6.00, ask=6.10, root="SPX")]  # AM-settled root: never traded
    fixed = FixedRecords({"SPX": am + spxw})
    engine = SignalEngine(cfg, chain_records_fn=fixed)
    engine.on_chain(chain_for(am + spxw, "SPX", spot=6200.0))
    values = {k: v * 10 for k, v in {"close": 618.99, "vwap_lower_2": 619.0}.items()}
    feats = fv("SPX", drop=("spread_bps",), **values)
    intent = engine.on_features(feats)[0]
    assert intent.contract == "SPXW250708C06210000"
    # SPX-style ticks: 0.05 at/above $3. TP 6.20 x 1.5 = 9.30; SL 6.20 x 0.7 = 4.34 -> 4.35.
    assert (intent.limit_price, intent.take_profit, intent.stop_loss) == (6.2, 9.3, 4.35)
    assert intent.quantity == 2  # floor(500 / 185) = 2
    assert "spread: not applicable: cash index has no quote spread" in intent.reason


def test_time_window_from_calendar_when_features_lack_it() -> None:
    cfg = parse_playbooks(_one_playbook(gates={"time_window": {"min_after_open": 15}}), "t.yaml")
    engine = SignalEngine(cfg, calendar=default_calendar(), chain_records_fn=FixedRecords({"SPY": spy_records()}))
    early, on_time = ts_ny(9, 44), ts_ny(9, 45)
    engine.on_chain(chain_for(spy_records(), ts=early))
    feats = fv(ts=early, drop=("minutes_since_open",), close=618.99)
    assert engine.evaluate(feats)[0].reason == (
        "gate time: too early: minutes_since_open=14 in [15, close], minutes_to_close=376 >= 0 (calendar)"
    )
    engine.on_chain(chain_for(spy_records(), ts=on_time))
    assert engine.evaluate(fv(ts=on_time, drop=("minutes_since_open",), close=618.99))[0].fired


def test_disabled_playbooks_and_other_symbols_are_not_evaluated() -> None:
    cfg = parse_playbooks(_one_playbook(enabled=False), "t.yaml")
    engine, _ = engine_with(config=cfg)
    assert engine.evaluate(fv(close=618.99)) == []
    engine, _ = engine_with()
    assert engine.evaluate(fv("IWM", close=618.99)) == []


def test_deterministic_replay() -> None:
    def run() -> list[bytes]:
        engine, _ = engine_with()
        out = []
        for k, values in enumerate(CASES.values()):
            ts = T0 + k * 60 * NS
            engine.on_chain(chain_for(spy_records(), ts=ts))
            out += [encode_json(i) for i in engine.on_features(fv(ts=ts, **values[0]))]
        return out

    first = run()
    assert len(first) >= len(CASES)
    assert first == run()


def test_default_chain_analysis_end_to_end() -> None:
    engine = SignalEngine(shipped(), calendar=default_calendar())
    engine.on_chain(priced_chain())
    decisions = {d.playbook: d for d in engine.evaluate(fv(close=618.99, adx_14=19.99))}
    intent = decisions["vwap_reversion_calls"].intent
    assert intent is not None, decisions["vwap_reversion_calls"].reason
    assert intent.contract.startswith("SPY250708C")
    assert 0.20 <= intent.features["contract_delta"] <= 0.40
    assert intent.take_profit > intent.limit_price > intent.stop_loss > 0
