"""The live feed's assembly: Polygon frames (as the sim puts them on the wire) in, md.* outputs out;
duplicates after a reconnect dropped, the gap backfilled, chains and heartbeats on their own clocks."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import msgspec
import pytest

from services.core import keys, shared_state, topics
from services.core.calendar import NS_PER_S, default_calendar
from services.core.events import Bar
from services.core.state import MemoryState
from services.ingest.capture import CaptureError
from services.ingest.polygon_live import (
    CapturedVenue,
    MinuteAssembler,
    chain_expiries,
    cluster_url,
    subscriptions,
)
from services.ingest.polygon_parsing import parse_frame
from services.sim.polygon import SimMarket
from tests.unit.sim.conftest import SAMPLE

CAL = default_calendar()


@pytest.fixture(scope="module")
def market() -> SimMarket:
    from services.ingest.sources import open_bars

    return SimMarket(list(open_bars(SAMPLE, "SPY")), "SPY")


def frames(market: SimMarket, i: int) -> list[str]:
    inside, am = market.bar_messages(i)
    return [json.dumps(inside), json.dumps([am])]


def feed(asm: MinuteAssembler, market: SimMarket, bars: range, connection: int = 1) -> list[Any]:
    out = []
    for i in bars:
        for frame in frames(market, i):
            out.extend(asm.on_frame("stocks", connection, parse_frame(frame)))
    return out


def answers(*records: dict[str, Any]) -> Iterator[dict[str, Any]]:
    return iter(records)


def minutes(outs: list[Any]) -> list[int]:
    return [o.event.ts for o in outs if o.topic == topics.MD_BARS]


def first_rth(market: SimMarket) -> int:
    return next(i for i, b in enumerate(market.bars) if CAL.is_open(b.ts))


def test_urls_and_channels() -> None:
    assert cluster_url("wss://socket.polygon.io", "stocks") == "wss://socket.polygon.io/stocks"
    assert cluster_url("ws://127.0.0.1:9/stocks/", "indices") == "ws://127.0.0.1:9/indices"
    assert subscriptions(["SPY", "SPX", "QQQ"], "stocks") == ("AM.SPY", "Q.SPY", "T.SPY", "AM.QQQ", "Q.QQQ", "T.QQQ")
    assert subscriptions(["SPY", "SPX", "NDX"], "indices") == ("AM.I:SPX", "AM.I:NDX")


def test_frames_become_bars_quotes_and_trades_in_wire_order(market: SimMarket) -> None:
    no_chain = {"k": "chain", "sym": "SPY", "e": None}  # each regular-hours minute asks; these fail
    asm = MinuteAssembler(["SPY"], CapturedVenue(answers(no_chain, no_chain, no_chain)), None, CAL,
                          heartbeat_secs=5, chain_every_s=60)
    start = first_rth(market)
    outs = feed(asm, market, range(start, start + 3))
    names = {"Q": topics.MD_QUOTES, "T": topics.MD_TRADES, "AM": topics.MD_BARS}
    wire = [names[m["ev"]] for i in range(start, start + 3) for f in frames(market, i) for m in json.loads(f)]
    assert [o.topic for o in outs] == wire and topics.MD_TRADES in wire
    bars = [o.event for o in outs if o.topic == topics.MD_BARS]
    for got, want in zip(bars, market.bars[start:start + 3], strict=True):
        assert (got.ts, got.open, got.high, got.low, got.close, got.volume, got.interval_s) == (
            want.ts, want.open, want.high, want.low, want.close, want.volume, want.interval_s)
    assert asm.stats.quotes == sum(1 for o in outs if o.topic == topics.MD_QUOTES) > 0


def test_reconnect_drops_repeats_and_backfills_the_gap(market: SimMarket) -> None:
    missing = market.bars[10:14]
    venue = CapturedVenue(answers({"k": "backfill", "sym": "SPY", "e": [msgspec.to_builtins(b) for b in missing]}))
    asm = MinuteAssembler(["SPY"], venue, None, CAL, heartbeat_secs=5, chain_every_s=60)
    outs = feed(asm, market, range(10))
    outs += feed(asm, market, range(9, 10), connection=2)  # the last bar again, then the market moved on
    outs += feed(asm, market, range(14, 17), connection=2)
    assert minutes(outs) == [b.ts for b in market.bars[:17]]
    s = asm.stats
    assert (s.reconnects, s.backfills, s.backfilled, s.duplicates) == (1, 1, 4, 1)
    assert s.stale > 0  # the repeated bar's quotes and trades were not emitted twice


def test_no_backfill_without_a_reconnect(market: SimMarket) -> None:
    # A quiet minute on one connection is no hole: the venue is not asked (it would raise: no answer).
    asm = MinuteAssembler(["SPY"], CapturedVenue(answers()), None, CAL, heartbeat_secs=5, chain_every_s=60)
    outs = feed(asm, market, range(0, 3)) + feed(asm, market, range(5, 7))
    assert len(minutes(outs)) == 5 and asm.stats.backfills == 0


def test_heartbeat_is_periodic_not_per_bar(market: SimMarket) -> None:
    state = MemoryState()
    asm = MinuteAssembler(["SPY"], CapturedVenue(answers()), state, CAL, heartbeat_secs=600, chain_every_s=60)
    feed(asm, market, range(0, 300))  # 04:00-09:00, five hours of premarket
    assert asm.stats.bars == 300
    assert 30 <= asm.stats.heartbeats <= 31  # one per 10 minutes of feed time, not 300
    beat = shared_state.decode_heartbeat(state.get(keys.INGEST_HEARTBEAT) or b"")
    assert beat.ts <= asm.newest_ts and asm.newest_ts - beat.ts < 600 * NS_PER_S
    asm.heartbeat()  # the wall-clock timer's tick writes the newest data time at once
    assert shared_state.decode_heartbeat(state.get(keys.INGEST_HEARTBEAT) or b"").ts == asm.newest_ts
    assert asm.stats.heartbeats >= 31


def test_chains_are_asked_for_on_their_interval_in_regular_hours(market: SimMarket) -> None:
    start = first_rth(market)
    bar: Bar = market.bars[start]
    end = bar.ts + 60 * NS_PER_S
    chain, _ = market.chain(end)
    records = [{"k": "chain", "sym": "SPY", "e": msgspec.to_builtins(chain)}]
    records += [{"k": "chain", "sym": "SPY", "e": None}] * 5  # failed requests: no output, no crash
    venue_records = iter(records)
    asm = MinuteAssembler(["SPY"], CapturedVenue(venue_records), None, CAL, heartbeat_secs=5, chain_every_s=300)
    outs = feed(asm, market, range(start - 5, start + 30))
    assert next(venue_records, None) is None  # exactly 6 requests: 30 minutes at one per 5 minutes
    chains = [o for o in outs if o.topic == topics.MD_CHAIN]
    assert len(chains) == 1 and asm.stats.chains == 1
    # the chain comes before the bar that asked for it, as in the replay feed
    at = outs.index(chains[0])
    assert outs[at + 1].topic == topics.MD_BARS and outs[at + 1].event.ts == bar.ts


def test_a_capture_out_of_step_is_an_error(market: SimMarket) -> None:
    start = first_rth(market)
    asm = MinuteAssembler(["SPY"], CapturedVenue(answers({"k": "tick"})), None, CAL, heartbeat_secs=5,
                          chain_every_s=60)
    with pytest.raises(CaptureError, match="asked for chain SPY, the capture has tick"):
        feed(asm, market, range(start, start + 1))


def test_expiries_are_0dte_and_1dte() -> None:
    import datetime as dt

    wed_10am = 1_752_069_600_000_000_000  # 2025-07-09 10:00 New York
    assert chain_expiries(CAL, wed_10am) == (dt.date(2025, 7, 9), dt.date(2025, 7, 10))
    fri_after_close = wed_10am + 2 * 86_400 * NS_PER_S + 7 * 3600 * NS_PER_S  # Friday 17:00
    assert chain_expiries(CAL, fri_after_close) == (dt.date(2025, 7, 14), dt.date(2025, 7, 15))
