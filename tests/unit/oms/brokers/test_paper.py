"""PaperBroker fill rules, straight against the broker (no OMS in between).

Fees here (support.TEST_FEES): buys 0.55 per contract, sells 0.56.
"""

from __future__ import annotations

import pytest

from services.core.clock import ReplayClock
from services.core.events import OrderEvent
from services.oms.brokers.base import BrokerError, SettlementPriceMissingError, UnknownOrderError
from services.oms.brokers.paper import PaperBroker
from services.oms.orders import OrderBook

from ..support import (
    CLOSE_TS,
    NS,
    SPXW_C6200,
    SPY_C620,
    SPY_C620_NEXT_WEEK,
    SPY_P615,
    T0,
    make_broker,
    make_quote,
    make_request,
)


class Venue:
    """A paper broker on a replay clock whose every event is checked by an independent OrderBook."""

    def __init__(self, **paper: object) -> None:
        self.clock = ReplayClock(T0)
        self.broker: PaperBroker = make_broker(self.clock, **paper)
        self.book = OrderBook()

    def _check(self, events: list[OrderEvent]) -> list[OrderEvent]:
        for e in events:
            if not self.book.seen(e):
                self.book.apply(e)
        return events

    def quote(self, s: float, contract: str, bid: float, ask: float, **kw: float) -> list[OrderEvent]:
        ts = T0 + int(s * NS)
        self.clock.advance_to(ts)
        return self._check(self.broker.on_option_quote(make_quote(contract, ts, bid, ask, **kw)))

    def submit(self, s: float, rid: str, contract: str, qty: int, limit: float, tp: float, sl: float,
               **kw: object) -> list[OrderEvent]:
        self.clock.advance_to(T0 + int(s * NS))
        req = make_request(rid, contract, qty, limit, tp, sl, **kw)  # type: ignore[arg-type]
        return self._check(self.broker.submit_otoco(req, rid))

    def call(self, events: list[OrderEvent]) -> list[OrderEvent]:
        return self._check(events)


def _fills(events: list[OrderEvent], leg: str | None = None) -> list[tuple[str, int, float]]:
    """(leg, cumulative filled, this fill's price) of each fill."""
    return [(e.leg, e.filled_quantity, e.fill_price or 0.0) for e in events
            if e.status in ("partial", "filled") and (leg is None or e.leg == leg)]


def _status(events: list[OrderEvent], leg: str) -> list[str]:
    return [e.status for e in events if e.leg == leg]


def test_marketable_buy_pays_ask_plus_slippage_capped_at_limit() -> None:
    v = Venue(slippage_ticks=2)
    v.quote(0, SPY_C620, 1.00, 1.05)
    # SPY is penny-wide at every price: 1.05 + 2 x 0.01 = 1.07 <= limit 1.10.
    assert _fills(v.submit(1, "a", SPY_C620, 1, 1.10, 1.50, 0.80)) == [("entry", 1, 1.07)]
    # With limit 1.06 the slippage is capped by the limit: min(1.06, 1.07) = 1.06.
    assert _fills(v.submit(2, "b", SPY_C620, 1, 1.06, 1.50, 0.80)) == [("entry", 1, 1.06)]
    # SPXW below $3 ticks 0.05: 2.00 + 2 x 0.05 = 2.10; at/above $3 ticks 0.10: 3.00 + 0.20 = 3.20.
    v.quote(3, SPXW_C6200, 1.90, 2.00)
    assert _fills(v.submit(4, "c", SPXW_C6200, 1, 2.50, 4.0, 1.0)) == [("entry", 1, 2.10)]
    v.quote(5, SPXW_C6200, 2.90, 3.00)
    assert _fills(v.submit(6, "d", SPXW_C6200, 1, 3.50, 5.0, 1.0)) == [("entry", 1, 3.20)]


def test_resting_limit_fills_only_when_the_ask_reaches_it_and_at_the_limit() -> None:
    v = Venue(slippage_ticks=1)
    v.quote(0, SPY_C620, 1.00, 1.10)
    out = v.submit(1, "a", SPY_C620, 1, 1.05, 1.50, 0.80)
    assert _status(out, "entry") == ["accepted", "working"]
    assert v.quote(2, SPY_C620, 1.04, 1.06) == []  # ask 1.06 > 1.05
    assert v.quote(3, SPY_C620, 1.05, 1.06) == []  # bid at our limit is not a trade through
    # ask 1.02 < limit: a resting buy fills at its limit 1.05 (no slippage, no improvement).
    out = v.quote(4, SPY_C620, 1.00, 1.02)
    assert _fills(out, "entry") == [("entry", 1, 1.05)]


def test_partial_fills_by_displayed_size_remainder_keeps_working() -> None:
    v = Venue()
    v.quote(0, SPY_C620, 1.00, 1.05, ask_size=2, bid_size=3)
    out = v.submit(1, "a", SPY_C620, 5, 1.05, 1.50, 0.80)
    assert _fills(out, "entry") == [("entry", 2, 1.05)]  # 2 displayed
    assert [e.status for e in out if e.leg == "entry"] == ["accepted", "partial"]
    # The same quote's size is used up: a second order on it gets nothing until a new quote.
    out2 = v.submit(2, "b", SPY_C620, 1, 1.05, 1.50, 0.80)
    assert _fills(out2) == [] and _status(out2, "entry") == ["accepted", "working"]
    out = v.quote(3, SPY_C620, 1.00, 1.04, ask_size=2.7)  # floor(2.7) = 2 for buyers, oldest first
    assert _fills(out, "entry") == [("entry", 4, 1.05)]
    out = v.quote(4, SPY_C620, 1.00, 1.04, ask_size=10)
    assert [(e.client_order_id, e.filled_quantity) for e in out if e.status in ("partial", "filled")] == [
        ("a", 5), ("b", 1)]
    # A price with size 0 means size unknown: no limit.
    v2 = Venue()
    v2.quote(0, SPY_C620, 1.00, 1.05)
    assert _fills(v2.submit(1, "a", SPY_C620, 50, 1.05, 1.50, 0.80)) == [("entry", 50, 1.05)]
    # partial_fills off: sizes are ignored.
    v3 = Venue(partial_fills=False)
    v3.quote(0, SPY_C620, 1.00, 1.05, ask_size=1)
    assert _fills(v3.submit(1, "a", SPY_C620, 5, 1.05, 1.50, 0.80)) == [("entry", 5, 1.05)]


def test_no_offer_no_fill() -> None:
    v = Venue()
    v.quote(0, SPY_C620, 0.0, 0.0)
    out = v.submit(1, "a", SPY_C620, 1, 1.05, 1.50, 0.80)
    assert _status(out, "entry") == ["accepted", "working"]


def test_stop_triggers_on_bid_and_fills_at_bid_even_later_when_no_bid() -> None:
    v = Venue()
    v.quote(0, SPY_C620, 1.00, 1.05)
    v.submit(1, "a", SPY_C620, 2, 1.05, 1.50, 0.80)
    # bid 0 <= stop 0.80 triggers it, but there is nobody to sell to.
    assert v.quote(2, SPY_C620, 0.0, 0.90) == []
    # Once triggered it is a market order: sells at the bid 0.60, even far below the stop.
    out = v.quote(3, SPY_C620, 0.60, 0.70, bid_size=1)
    assert _fills(out, "stop_loss") == [("stop_loss", 1, 0.60)]
    # OCO: the stop's partial fill shrinks the take profit 2 -> 1.
    assert [(e.status, e.quantity) for e in out if e.leg == "take_profit"] == [("modified", 1)]
    out = v.quote(4, SPY_C620, 0.55, 0.70, bid_size=5)
    assert _fills(out, "stop_loss") == [("stop_loss", 2, 0.55)]
    assert _status(out, "take_profit") == ["canceled"]
    assert v.broker.positions() == {}
    assert v.broker.open_orders() == []
    # A triggered or finished stop can no longer be modified: nothing happens.
    stop_id = next(e.order_id for e in out if e.leg == "stop_loss")
    assert v.broker.modify_stop(stop_id, 0.5) == []


def test_take_profit_marketable_at_activation_gets_the_better_bid() -> None:
    v = Venue()
    # A crossed/locked print: entry fills at ask 1.05 and the bid 1.60 is already above tp 1.50,
    # so the take profit is marketable when it activates: it sells at max(1.50, bid 1.60) = 1.60.
    v.quote(0, SPY_C620, 1.60, 1.05)
    out = v.submit(1, "a", SPY_C620, 1, 1.10, 1.50, 0.80)
    assert _fills(out) == [("entry", 1, 1.05), ("take_profit", 1, 1.60)]


def test_short_premium_bracket_mirrors_the_rules() -> None:
    v = Venue()
    v.quote(0, SPY_P615, 1.00, 1.05)
    # Sell 2 puts at limit 0.95: bid 1.00 >= 0.95 -> marketable, sells at max(0.95, 1.00) = 1.00.
    out = v.submit(1, "s", SPY_P615, 2, 0.95, 0.50, 1.60, side="sell")
    assert _fills(out, "entry") == [("entry", 2, 1.00)]
    assert v.broker.positions() == {SPY_P615: -2}
    # Buy stop triggers when the ask >= 1.60 and pays the ask.
    out = v.quote(2, SPY_P615, 1.55, 1.65)
    assert _fills(out, "stop_loss") == [("stop_loss", 2, 1.65)]
    assert v.broker.positions() == {}


def test_underlying_stop_triggers_when_enabled() -> None:
    v = Venue(stop_on_underlying=True)
    v.quote(0, SPY_C620, 1.00, 1.05)
    v.submit(1, "a", SPY_C620, 1, 1.05, 1.50, 0.50, underlying_stop=618.0)
    assert v.call(v.broker.on_underlying("SPY", 618.5, T0 + 2 * NS)) == []
    # Long call: the stop fires at or below 618 and sells against the last quote's bid 1.00.
    out = v.call(v.broker.on_underlying("SPY", 617.9, T0 + 3 * NS))
    assert _fills(out, "stop_loss") == [("stop_loss", 1, 1.00)]
    assert out[0].ts == T0 + 3 * NS and "underlying stop" in out[0].reason
    # Disabled: the level is ignored.
    off = Venue()
    off.quote(0, SPY_C620, 1.00, 1.05)
    off.submit(1, "a", SPY_C620, 1, 1.05, 1.50, 0.50, underlying_stop=618.0)
    assert off.broker.on_underlying("SPY", 600.0, T0 + 2 * NS) == []


def test_idempotent_client_order_ids() -> None:
    v = Venue()
    first = v.submit(0, "same", SPY_C620, 1, 1.05, 1.50, 0.80)
    again = v.submit(1, "same", SPY_C620, 1, 1.05, 1.50, 0.80)
    assert {e.order_id for e in again} == {e.order_id for e in first}
    assert [e.id for e in again] == ["paper-1.2", "paper-2.1", "paper-3.1"]  # latest state, same ids
    assert len(v.broker.open_orders()) == 3
    m1 = v.broker.submit_market("flat-1", "SPY", SPY_C620, "sell", 1)
    m2 = v.broker.submit_market("flat-1", "SPY", SPY_C620, "sell", 1)
    assert m2[-1] == m1[-1] and len(v.broker.open_orders()) == 4


def test_rejects_out_of_order_bracket_and_bad_symbols() -> None:
    v = Venue()
    out = v.submit(0, "bad", SPY_C620, 1, 1.05, 1.00, 0.80)  # take profit below the entry
    assert [e.status for e in out] == ["rejected"] * 3
    assert "stop_loss < limit_price < take_profit" in out[0].reason
    out = v.call(v.broker.submit_market("m", "SPY", "NOT-A-CONTRACT", "sell", 1))
    assert [e.status for e in out] == ["rejected"]
    with pytest.raises(UnknownOrderError):
        v.broker.cancel("nope")
    entry = v.submit(1, "ok", SPY_C620, 1, 1.05, 1.50, 0.80)[0]
    with pytest.raises(BrokerError, match="not a stop"):
        v.broker.modify_stop(entry.order_id, 0.9)


def test_entry_cancel_after_partial_shrinks_children() -> None:
    v = Venue()
    v.quote(0, SPY_C620, 1.00, 1.05, ask_size=3)
    out = v.submit(1, "a", SPY_C620, 5, 1.05, 1.50, 0.80)
    entry_id = out[0].order_id
    out = v.call(v.broker.cancel(entry_id))
    assert [(e.leg, e.status, e.quantity) for e in out] == [
        ("entry", "canceled", 5), ("take_profit", "modified", 3), ("stop_loss", "modified", 3)]
    assert v.broker.cancel(entry_id) == []  # terminal: nothing more


def test_session_close_expires_and_settles_only_expiring_contracts() -> None:
    v = Venue()
    v.quote(0, SPY_C620, 1.00, 1.05)
    v.quote(0, SPY_C620_NEXT_WEEK, 2.00, 2.05)
    v.submit(1, "today", SPY_C620, 1, 1.05, 1.50, 0.80)
    v.submit(2, "later", SPY_C620_NEXT_WEEK, 1, 2.05, 3.00, 1.50)
    v.submit(3, "resting", SPY_C620, 1, 0.90, 1.50, 0.50)
    with pytest.raises(SettlementPriceMissingError, match="settle_prices"):
        v.broker.on_session_close(CLOSE_TS, {})
    out = v.call(v.broker.on_session_close(CLOSE_TS, {"SPY": 619.0}))
    # Today's contract: legs expire, the position expires worthless (619 < 620 strike) at 0.
    assert {(e.client_order_id, e.status) for e in out if e.status == "expired"} == {
        ("today", "expired"), ("resting", "expired")}
    settled = [e for e in out if e.status == "filled"]
    assert [(e.contract, e.fill_price, e.reason.split(" ")[0]) for e in settled] == [
        (SPY_C620, 0.0, "expiry:worthless")]
    # Next week's bracket keeps working (gtc) and its position stays.
    assert v.broker.positions() == {SPY_C620_NEXT_WEEK: 1}
    assert {e.client_order_id for e in v.broker.open_orders()} == {"later"}


def test_day_duration_expires_every_order_at_the_close() -> None:
    v = Venue(duration="day")
    v.quote(0, SPY_C620_NEXT_WEEK, 2.00, 2.05)
    v.submit(1, "later", SPY_C620_NEXT_WEEK, 1, 2.05, 3.00, 1.50)
    out = v.call(v.broker.on_session_close(CLOSE_TS, {"SPY": 619.0}))
    assert sorted(e.leg for e in out if e.status == "expired") == ["stop_loss", "take_profit"]
    assert v.broker.positions() == {SPY_C620_NEXT_WEEK: 1}  # not expiring: held overnight
