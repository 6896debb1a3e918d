"""Backtest honesty: deterministic outputs, and no decision can see the future."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import msgspec
import numpy as np

from services.app.market_data import MarketData, load_market_data
from services.backtest.main import run_backtest, write_outputs
from services.core.calendar import NEW_YORK
from services.core.datasets import SAMPLE_BARS
from services.core.events import Bar, encode_msgpack
from services.core.session_config import SessionConfig

NS = 1_000_000_000


UNCALIBRATED = SessionConfig(symbols=("SPY",), calibration={"path": None})


def _sample() -> MarketData:
    return load_market_data(["SPY"], SAMPLE_BARS)


def test_same_input_gives_byte_identical_outputs(tmp_path: Path) -> None:
    files = []
    for run in ("a", "b"):
        result = run_backtest(UNCALIBRATED, _sample())
        out = tmp_path / run
        write_outputs(result, out / "summary.json", out / "trades.json", out)
        files.append(out)
    for name in ("trades.json", "summary.json", "summary.csv", "fill_quality.csv"):
        assert (files[0] / name).read_bytes() == (files[1] / name).read_bytes(), name
    assert (files[0] / "trades.json").read_bytes() != b"[]\n"  # the sample really trades


def test_changing_bars_after_t_leaves_every_earlier_decision_unchanged() -> None:
    cutoff = int(dt.datetime(2025, 7, 9, 10, 40, tzinfo=NEW_YORK).timestamp()) * NS
    base = _sample()
    rng = np.random.default_rng(3)
    altered: list[Bar] = []
    for b in base.bars["SPY"]:
        if b.ts + 60 * NS <= cutoff:  # bars completed by the cutoff stay as they were
            altered.append(b)
            continue
        k = float(rng.uniform(0.97, 1.03))
        o, c = b.open * k, b.close * float(rng.uniform(0.97, 1.03))
        hi, lo = max(o, c) * 1.001, min(o, c) * 0.999
        altered.append(msgspec.structs.replace(b, open=o, high=hi, low=lo, close=c, volume=b.volume * 2 + 1))
    future = MarketData({"SPY": altered}, {}, "altered")

    a = run_backtest(UNCALIBRATED, base).record
    b = run_backtest(UNCALIBRATED, future).record

    def before(events: list) -> list[bytes]:  # type: ignore[type-arg]
        return [encode_msgpack(e) for e in events if e.ts < cutoff]

    assert before(a.intents), "the sample must fire signals before the cutoff for this test to mean anything"
    assert before(a.intents) == before(b.intents)
    assert before(a.orders) == before(b.orders)
    assert before(a.rejections) == before(b.rejections)
    assert before(a.order_events) == before(b.order_events)
    assert before(a.outcomes) == before(b.outcomes)
    # ...and the altered future really changed what happened after it.
    assert [encode_msgpack(e) for e in a.order_events] != [encode_msgpack(e) for e in b.order_events]
