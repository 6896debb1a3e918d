"""The journal recorder's chain cut and its routing of events to tables, on hand-built events."""

from __future__ import annotations

import datetime as dt
import math
from pathlib import Path

import pytest

from services.app.journal_recorder import JournalRecorder, around_the_money, chain_rows
from services.core.calendar import NEW_YORK, default_calendar
from services.core.events import Bar, ChainSnapshot, FeatureVector, OptionQuote, OrderEvent
from services.core.journal import JournalWriter, read_table
from services.options.black_scholes import time_to_expiry

TS = int(dt.datetime(2025, 7, 9, 11, 0, tzinfo=NEW_YORK).timestamp() * 1e9)


def _black_scholes(spot: float, strike: float, t: float, vol: float, call: bool) -> float:
    # Written out here (zero rate and dividend), independently of services.options.
    d1 = (math.log(spot / strike) + 0.5 * vol * vol * t) / (vol * math.sqrt(t))
    d2 = d1 - vol * math.sqrt(t)
    n = lambda x: 0.5 * (1.0 + math.erf(x / math.sqrt(2.0)))  # noqa: E731
    return spot * n(d1) - strike * n(d2) if call else strike * n(-d2) - spot * n(-d1)


def _quote(expiry: str, strike: float, right: str, bid: float = 1.0, ask: float = 1.1) -> OptionQuote:
    sym = f"SPY{expiry[2:4]}{expiry[5:7]}{expiry[8:10]}{right}{int(strike * 1000):08d}"
    return OptionQuote(ts=TS, symbol=sym, underlying="SPY", expiry=expiry, strike=strike, right=right,
                       bid=bid, ask=ask)


def _snapshot(spot: float) -> ChainSnapshot:
    quotes = [_quote(e, float(k), r) for e in ("2025-07-08", "2025-07-09", "2025-07-11")
              for k in range(600, 651) for r in ("C", "P")]
    return ChainSnapshot(ts=TS, underlying="SPY", underlying_price=spot, quotes=tuple(quotes))


def test_the_cut_is_the_nearest_live_expiry_ten_strikes_each_side() -> None:
    cut = around_the_money(_snapshot(624.4))
    assert cut is not None
    assert {q.expiry for q in cut.quotes} == {"2025-07-09"}  # 07-08 is past, 07-11 is further
    assert sorted({q.strike for q in cut.quotes}) == [float(k) for k in range(614, 635)]
    assert len(cut.quotes) == 42


def test_the_cut_stops_at_the_ladder_ends() -> None:
    cut = around_the_money(_snapshot(603.0))
    assert cut is not None
    assert sorted({q.strike for q in cut.quotes}) == [float(k) for k in range(600, 614)]
    assert around_the_money(ChainSnapshot(ts=TS, underlying="SPY", underlying_price=600.0,
                                          quotes=(_quote("2025-07-08", 600.0, "C"),))) is None


def test_chain_rows_recover_the_vol_a_price_was_made_with() -> None:
    cal = default_calendar()
    t = time_to_expiry(TS, "2025-07-09", cal)
    quotes = []
    for k in (620.0, 625.0, 630.0):
        for right in ("C", "P"):
            price = _black_scholes(625.0, k, t, 0.2, right == "C")
            quotes.append(_quote("2025-07-09", k, right, bid=round(price, 4), ask=round(price, 4)))
    rows = chain_rows(ChainSnapshot(ts=TS, underlying="SPY", underlying_price=625.0, quotes=tuple(quotes)), cal)
    assert len(rows) == 6
    for row in rows:
        assert row["iv"] == pytest.approx(0.2, abs=2e-3)
        assert (row["delta"] > 0) == (row["right"] == "C")


def test_events_land_in_their_tables(tmp_path: Path) -> None:
    recorder = JournalRecorder(JournalWriter(tmp_path, "s1", flush_seconds=0))
    bar = Bar(ts=TS, symbol="SPY", open=624.0, high=625.0, low=623.5, close=624.5, volume=1000.0)
    recorder.on_event("md.bars", bar)
    recorder.on_event("features", FeatureVector(ts=TS + 60 * 10**9, symbol="SPY", values={"vwap": 624.2}))
    common = dict(order_id="o1", client_order_id="c1", underlying="SPY", contract="SPY250709C00625000",
                  leg="entry", side="buy", quantity=2)
    recorder.on_event("executions", OrderEvent(ts=TS, id="e1", status="accepted", **common))  # type: ignore[arg-type]
    recorder.on_event("executions", OrderEvent(ts=TS, id="e2", status="filled", filled_quantity=2,  # type: ignore[arg-type]
                                               fill_price=1.05, **common))
    recorder.close()
    features = read_table(tmp_path, "features")
    assert features[["open", "high", "low", "close", "volume", "vwap"]].iloc[0].tolist() == [
        624.0, 625.0, 623.5, 624.5, 1000.0, 624.2]
    assert read_table(tmp_path, "orders")["id"].tolist() == ["e1", "e2"]
    assert read_table(tmp_path, "fills")["id"].tolist() == ["e2"]


def test_a_held_contracts_expiry_is_the_one_journaled_until_it_is_sold(tmp_path: Path) -> None:
    recorder = JournalRecorder(JournalWriter(tmp_path, "s1", flush_seconds=0))
    contract = "SPY250711C00625000"
    common = dict(underlying="SPY", contract=contract, side="buy", quantity=1)

    def fill(order_id: str, leg: str, qty: int) -> OrderEvent:
        return OrderEvent(ts=TS, id=f"e-{order_id}", order_id=order_id, client_order_id=order_id, leg=leg,  # type: ignore[arg-type]
                          status="filled", filled_quantity=qty, fill_price=1.0, **common)  # type: ignore[arg-type]

    recorder.on_event("md.chain", _snapshot(624.4))
    recorder.on_event("executions", fill("o1", "entry", 1))
    assert recorder.held_expiries("SPY") == {"2025-07-11"} and recorder.held_expiries("QQQ") == set()
    recorder.on_event("md.chain", _snapshot(624.4))
    recorder.on_event("executions", fill("o2", "stop_loss", 1))
    assert recorder.held_expiries("SPY") == set()
    recorder.on_event("md.chain", _snapshot(624.4))
    recorder.close()
    chain = read_table(tmp_path, "chain")
    assert chain.groupby("expiry").size().to_dict() == {"2025-07-09": 84, "2025-07-11": 42}
