"""Training job inputs (mlops.train): trades JSON records, features from reasons, the time split."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mlops.train import TrainingInputError, features_from_reason, read_trades, time_split, trade_from_record
from services.learner.engine import LabeledTrade

from .support import MIN, T0

# A reason exactly as the signal engine writes it (from a backtest's trades JSON).
REASON = (
    "orb_puts buy put on SPY: entry [or_breakout_15=-1 == -1; minus_di_14=28.3497 > plus_di_14=6.3257; "
    "adx_14=66.7424 >= 18; close=615.49 < vwap=617.4809]; gates [time: minutes_since_open=28 in [15, 120], "
    "minutes_to_close=362 >= 60 (features); halt: no event halt; vol_band: atm_iv=0.12 in [0.05, 0.8]; "
    "spread: spread_bps=0.1625 <= 5; learner: p=0.61 >= 0.5]; contract [SPY250602P00615000 (2025-06-02, 0DTE, "
    "strike 615, delta 0.407 vs target 0.4±0.1, bid/ask 0.6/0.63)]; bracket [TP 1.27 / SL 0.31 (|delta| 0.407 "
    "x atr_14 0.5245 = 0.2135 per ATR)]; size [5 contracts]"
)


def test_features_from_reason() -> None:
    assert features_from_reason(REASON) == {
        "or_breakout_15": -1.0,
        "minus_di_14": 28.3497,
        "plus_di_14": 6.3257,
        "adx_14": 66.7424,
        "close": 615.49,
        "vwap": 617.4809,
        "minutes_since_open": 28.0,
        "minutes_to_close": 362.0,
        "atm_iv": 0.12,
        "spread_bps": 0.1625,
    }  # "p=0.61" (the learner's own output) is not a feature


def record(i: int, **kw: object) -> dict[str, object]:
    doc: dict[str, object] = {
        "entry_time": "2025-06-02T09:58:00-04:00",
        "exit_time": "2025-06-02T10:15:00-04:00",
        "pnl": 131.02,
        "playbook": "orb_puts",
        "reason": REASON,
        "underlying": "SPY",
        "id": f"ord-{i}",
    }
    doc.update(kw)
    return doc


def test_trade_records() -> None:
    t = trade_from_record(record(0), 0, "trades.json")
    assert t.entry_ts == 1748872680 * 1_000_000_000
    assert t.exit_ts - t.entry_ts == 17 * MIN
    assert (t.id, t.playbook, t.underlying, t.label) == ("ord-0", "orb_puts", "SPY", 1)
    assert t.features["adx_14"] == 66.7424
    with_context = trade_from_record(record(1, context={"adx_14": 12.5, "flag": True}, pnl=0.0), 1, "x")
    assert with_context.features == {"adx_14": 12.5}
    assert with_context.label == 0  # a scratch is not a win


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"pnl": "12"}, "trade 3: pnl must be a finite number"),
        ({"entry_time": "yesterday"}, "entry_time 'yesterday' is not an ISO 8601 time"),
        ({"entry_time": "2025-06-02T09:58:00"}, "has no UTC offset"),
        ({"exit_time": "2025-06-02T09:00:00-04:00"}, "exit_time is before entry_time"),
        ({"playbook": ""}, "playbook must be a non-empty string"),
    ],
)
def test_bad_records_are_one_line(change: dict[str, object], message: str) -> None:
    with pytest.raises(TrainingInputError, match=message):
        trade_from_record(record(3, **change), 3, "trades.json")


def test_read_trades_file_errors(tmp_path: Path) -> None:
    with pytest.raises(TrainingInputError, match="file not found"):
        read_trades(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{")
    with pytest.raises(TrainingInputError, match="not a readable trades JSON"):
        read_trades(bad)
    bad.write_text(json.dumps({"trades": []}))
    with pytest.raises(TrainingInputError, match="expected a JSON list"):
        read_trades(bad)
    bad.write_text(json.dumps([record(0), {"pnl": 1}]))
    with pytest.raises(TrainingInputError, match="trade 1: missing 'entry_time'"):
        read_trades(bad)


def test_time_split_is_ordered_and_purges_overlaps() -> None:
    trades = [
        LabeledTrade(f"t{i}", "p", "SPY", T0 + i * 10 * MIN, T0 + i * 10 * MIN + hold * MIN, 1.0, {})
        for i, hold in enumerate([5, 5, 5, 5, 5, 5, 5, 45, 5, 5])
    ]
    split = time_split(list(reversed(trades)), 0.3)
    assert [t.id for t in split.test] == ["t7", "t8", "t9"]
    # t6 exits at 65 min, before t7 enters at 70: kept. Nothing trained on overlaps the test period.
    assert [t.id for t in split.train] == [f"t{i}" for i in range(7)]
    assert split.purged == 0
    split = time_split(trades, 0.2)  # t7 (held 45 min) is still open when t8 enters: purged
    assert [t.id for t in split.test] == ["t8", "t9"]
    assert split.purged == 1
    assert all(t.exit_ts <= split.test[0].entry_ts for t in split.train)
