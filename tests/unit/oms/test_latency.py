"""The paper broker's latency model on the real SPY put tape (2024-06-03, 1-minute bid/ask of the 525 put).

Quotes used, read off the recording: 10:10 1.76/1.78, 10:11 1.69/1.70, 10:12 1.67/1.68, 10:13 1.73/1.75,
10:14 1.58/1.60, 10:15 1.54/1.55, 10:16 1.48/1.49. Fees: buys 0.55, sells 0.56 per contract.
"""

from __future__ import annotations

import pytest

from services.core.clock import ReplayClock
from services.core.events import Event, OrderEvent, TradeOutcome
from services.oms.brokers.paper import PaperBroker
from services.oms.engine import OrderManager
from services.oms.fees import FeeModel

from .support import Harness, make_config, make_request
from .test_engine_realdata import PUT_525, _tape
from .test_session_rules import at


def replay(latency_ms: float | None, hhmm: str, limit: float, tp: float, stop: float) -> list[Event]:
    h = Harness(make_config(latency_ms=latency_ms))
    h.clock = ReplayClock(at("09:59"))
    h.broker = PaperBroker(h.clock, h.config.paper, FeeModel(h.config.fees, 100, h.config.paper.cash_settled_roots))
    h.oms = OrderManager(h.broker, h.clock, h.config, h.audit)
    out: list[Event] = []
    for ts, quote in _tape():
        h.clock.advance_to(ts)
        out.extend(h.oms.on_option_quote(quote))
        if ts == at(hhmm):
            out.extend(h.oms.on_order_request(make_request("r", PUT_525, 1, limit, tp, stop, ts=ts)))
    return out


def fills(out: list[Event]) -> list[tuple[str, int, float | None]]:
    return [(e.leg, e.ts, e.fill_price) for e in out if isinstance(e, OrderEvent) and e.status == "filled"]


def outcome(out: list[Event]) -> TradeOutcome:
    (trade,) = [e for e in out if isinstance(e, TradeOutcome)]
    return trade


@pytest.mark.realdata
@pytest.mark.parametrize("latency_ms", [0.0, 500.0, 45_000.0])
def test_an_entry_fills_on_the_next_quote_after_the_delay_never_the_one_in_hand(latency_ms: float) -> None:
    # Sent at 10:10 (ask 1.78 <= limit 1.80): no latency fills it on that quote at 1.78. With latency
    # its first look is 10:11 (later than 10:10 + 0, 0.5 or 45 s), marketable at the ask: 1.70.
    assert fills(replay(None, "10:10", 1.80, 2.00, 1.55))[0] == ("entry", at("10:10"), 1.78)
    out = replay(latency_ms, "10:10", 1.80, 2.00, 1.55)
    assert fills(out) == [("entry", at("10:11"), 1.70), ("stop_loss", at("10:15"), 1.54)]
    # (1.54 - 1.70) x 100 - 0.55 - 0.56
    assert outcome(out).pnl == pytest.approx(-17.11)


@pytest.mark.realdata
def test_a_delay_longer_than_the_quote_spacing_skips_quotes() -> None:
    # 90 s: 10:11 is too early (10:10 + 90 s = 10:11:30), so 10:12's ask 1.68 is the first look.
    assert fills(replay(90_000.0, "10:10", 1.80, 2.00, 1.55))[0] == ("entry", at("10:12"), 1.68)


@pytest.mark.realdata
def test_exit_legs_never_trade_on_the_quote_that_filled_the_entry() -> None:
    # Sent at 10:14 (ask 1.60 <= 1.65, bid 1.58 <= stop 1.62). Without latency the entry fills at 1.60
    # and the stop triggers on that same quote: out at 1.58 within one quote.
    assert fills(replay(None, "10:14", 1.65, 2.00, 1.62)) == [
        ("entry", at("10:14"), 1.60), ("stop_loss", at("10:14"), 1.58)]
    # With latency the entry fills at 10:15 (ask 1.55) and its stop goes live then: 10:15's bid 1.54 is
    # the quote in hand, so the stop first meets 10:16 (bid 1.48 <= 1.62) and sells at 1.48.
    out = replay(500.0, "10:14", 1.65, 2.00, 1.62)
    assert fills(out) == [("entry", at("10:15"), 1.55), ("stop_loss", at("10:16"), 1.48)]
    assert outcome(out).pnl == pytest.approx((1.48 - 1.55) * 100 - 0.55 - 0.56)
