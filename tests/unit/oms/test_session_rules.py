"""Entry TTL and flatten-before-close in the OMS, on the real SPY put tape (2024-06-03, 1-minute bid/ask).

The 525 put's quotes used below, read off the recording: 10:00 bid 1.61 / ask 1.69; 10:01 ask 1.47;
10:02-10:09 bids 1.51..1.68.
"""

from __future__ import annotations

import datetime as dt

import msgspec
import pytest

from services.core.clock import ReplayClock
from services.core.events import Event, OrderEvent, TradeOutcome
from services.oms.brokers.paper import PaperBroker
from services.oms.engine import OrderManager
from services.oms.fees import FeeModel

from .support import Harness, make_request
from .test_engine_realdata import NEW_YORK, PUT_525, _tape

NS = 1_000_000_000


def at(hhmm: str, second: int = 0) -> int:
    h, m = (int(x) for x in hhmm.split(":"))
    return int(dt.datetime(2024, 6, 3, h, m, second, tzinfo=NEW_YORK).timestamp()) * NS


def replay(expires: int | None = None, flatten: int | None = None) -> tuple[Harness, list[Event]]:
    """The tape with one request at 10:00: buy 2 at 1.50 (rests: the ask is 1.69), tp 1.75, stop 1.40."""
    h = Harness()
    # The harness's clock starts in 2025; this tape is 2024, and the clock never moves backwards.
    h.clock = ReplayClock(at("09:59"))
    h.broker = PaperBroker(h.clock, h.config.paper, FeeModel(h.config.fees, 100, h.config.paper.cash_settled_roots))
    h.oms = OrderManager(h.broker, h.clock, h.config, h.audit)
    out: list[Event] = []
    for ts, quote in _tape():
        h.clock.advance_to(ts)
        out.extend(h.oms.on_option_quote(quote))
        if ts == at("10:00"):
            request = msgspec.structs.replace(make_request("r1", PUT_525, 2, 1.50, 1.75, 1.40, ts=ts),
                                              entry_expires_ts=expires, flatten_ts=flatten)
            out.extend(h.oms.on_order_request(request))
    return h, out


def entry_events(out: list[Event]) -> list[OrderEvent]:
    return [e for e in out if isinstance(e, OrderEvent) and e.leg == "entry"]


@pytest.mark.realdata
def test_an_entry_never_fills_after_its_ttl() -> None:
    # TTL 30 s: the first quote the limit 1.50 could trade against is 10:01's ask 1.47, after the deadline.
    h, out = replay(expires=at("10:00", 30))
    entries = entry_events(out)
    assert [e.status for e in entries] == ["accepted", "working", "canceled"]
    assert entries[-1].ts == at("10:01") and entries[-1].filled_quantity == 0
    assert not [e for e in out if isinstance(e, OrderEvent) and e.fill_price is not None]
    assert h.oms.entries_expired == ["r1"] and h.oms.is_flat()
    # The bracket's exits never went live: held children are canceled with the entry.
    children = [e for e in out if isinstance(e, OrderEvent) and e.leg != "entry"]
    assert {e.status for e in children} == {"accepted", "canceled"}


@pytest.mark.realdata
def test_an_entry_fills_up_to_its_deadline() -> None:
    # Deadline 10:01:00 exactly: the 10:01 quote is at (not after) it, so 2 @ 1.50 fill, as without a TTL.
    h, out = replay(expires=at("10:01"))
    fills = [e for e in entry_events(out) if e.status == "filled"]
    assert [(e.ts, e.filled_quantity, e.fill_price) for e in fills] == [(at("10:01"), 2, 1.50)]
    assert h.oms.entries_expired == []
    # No fill more than the TTL after the signal: every entry fill is within 60 s of the 10:00 request.
    assert all(e.ts - at("10:00") <= 60 * NS for e in fills)


@pytest.mark.realdata
def test_a_request_arriving_after_its_deadline_is_refused() -> None:
    _, out = replay(expires=at("09:59"))
    assert [e.status for e in entry_events(out)] == ["rejected"]
    assert "expired 60 s before it reached the OMS" in entry_events(out)[0].reason


@pytest.mark.realdata
def test_the_bracket_is_flattened_at_its_flatten_time() -> None:
    # Filled 2 @ 1.50 at 10:01; flatten at 10:05 sells both at the 10:05 bid (the newest quote then).
    tape = dict(_tape())
    bid_1005 = tape[at("10:05")].bid
    assert 1.40 < bid_1005 < 1.75  # neither exit leg would have fired by itself
    h, out = replay(flatten=at("10:05"))
    result = [e for e in out if isinstance(e, TradeOutcome)]
    assert len(result) == 1
    trade = result[0]
    assert (trade.exit_reason, trade.exit_ts, trade.exit_price) == ("session_close", at("10:05"), bid_1005)
    # pnl = (bid - 1.50) x 2 x 100 - 2 x 0.55 (buys) - 2 x 0.56 (sells)
    assert trade.pnl == pytest.approx((bid_1005 - 1.50) * 200 - 1.10 - 1.12)
    assert h.oms.flattened_at_close == ["r1"]
    assert h.oms.is_flat() and not list(h.oms.book.live())
    # The take-profit and stop were canceled at 10:05, nothing of the bracket stays working.
    exits = [e for e in out if isinstance(e, OrderEvent) and e.leg in ("take_profit", "stop_loss")]
    assert [e.status for e in exits if e.ts == at("10:05")] == ["canceled", "canceled"]
