"""Intrabar paths: a stop or target inside a bar, on the replay's own synthetic chains.

The bars are hand-built SPY minutes on 2025-07-08 (a full session): flat at 620.00 from 10:00, then one
test bar at 10:03. The chains come from the replay's real chain source (seed 7) through the real
replay feed; the OMS stage gets them in the feed's order (chain at a bar's end, then the bar). A long
SPY 620 call (0DTE; one test the 620 put) is bought on the 10:03 chain; its stop is 0.50 and its target 1.10, both far
from the 10:03 quote, so a bar closing back at 620 fills neither at its end.

Expected prices are worked out here, independently of the code: the SSVI surface of the module
docstring of ``services.ingest.synthetic_chain`` (fewer than 15 returns in the session, so SPY's fixed
level: short vol 0.12, long vol 0.18, tau 0.25, rho -0.7, eta 1, gamma 0.5), Black-76 with rate 0
written out below, ACT/365 to the 16:00 close, and the intrabar rule of ``services.oms.intrabar``:
bid = the model value at the path point minus the distance between the model value and the bid of
the contract's quote in the latest chain, rounded down to the 0.01 tick.
"""

from __future__ import annotations

import datetime as dt
import math
from pathlib import Path

import pytest

from services.app.market_data import synthetic_chain_source
from services.core import topics
from services.core.calendar import NEW_YORK, default_calendar
from services.core.clock import ReplayClock
from services.core.events import Bar, ChainSnapshot, Event, OptionQuote, OrderEvent, TradeOutcome
from services.ingest.feed import ReplayFeed
from services.oms.brokers.paper import PaperBroker
from services.oms.config import load_broker_config
from services.oms.engine import OrderManager
from services.oms.fees import FeeModel
from services.oms.intrabar import SyntheticRepricer, pessimistic_path
from services.oms.stage import OmsStage

from .support import make_config, make_request

NS = 1_000_000_000
DAY = dt.date(2025, 7, 8)
CALL = "SPY250708C00620000"
PUT = "SPY250708P00620000"
STOP, TARGET = 0.50, 1.10
CLOSE_NS = int(dt.datetime(2025, 7, 8, 16, 0, tzinfo=NEW_YORK).timestamp()) * NS


def at(hhmm: str, second: int = 0) -> int:
    h, m = map(int, hhmm.split(":"))
    return int(dt.datetime(2025, 7, 8, h, m, second, tzinfo=NEW_YORK).timestamp()) * NS


def bar(hhmm: str, o: float, h: float, low: float, c: float) -> Bar:
    return Bar(ts=at(hhmm), symbol="SPY", open=o, high=h, low=low, close=c, volume=1000.0, interval_s=60)


def flat(hhmm: str) -> Bar:
    return bar(hhmm, 620.0, 620.0, 620.0, 620.0)


# --- the independent model: SSVI slice + Black-76 (rate 0: forward = spot) ---------------------------


def ncdf(x: float) -> float:
    return 0.5 * (1.0 + math.erf(x / math.sqrt(2.0)))


def call_value(spot: float, strike: float, ts: int) -> float:
    t = (CLOSE_NS - ts) / (365 * 86_400 * NS)
    atm = 0.18 + (0.12 - 0.18) * math.exp(-t / 0.25)
    theta = atm * atm * t
    phi = 1.0 / (theta**0.5 * (1.0 + theta) ** 0.5)
    rho = -0.7
    k = math.log(strike / spot)
    w = theta / 2 * (1 + rho * phi * k + math.sqrt((phi * k + rho) ** 2 + 1 - rho * rho))
    d1 = (-k + w / 2) / math.sqrt(w)
    return spot * ncdf(d1) - strike * ncdf(d1 - math.sqrt(w))


def value(right: str, spot: float, strike: float, ts: int) -> float:
    call = call_value(spot, strike, ts)
    return call if right == "C" else call - (spot - strike)  # put-call parity on the forward, rate 0


def intrabar_bid(last: OptionQuote, spot: float, ts: int) -> float:
    assert last.underlying_price is not None
    then = value(last.right, last.underlying_price, last.strike, last.ts)
    raw = value(last.right, spot, last.strike, ts) - (then - last.bid)
    return math.floor(raw * 100 + 1e-9) / 100


# --- the replay ----------------------------------------------------------------------------------


class Run:
    """Bars through the real replay feed into the OMS stage; one bracket sent at 10:02."""

    def __init__(self, bars: list[Bar], *, latency_ms: float | None = 500.0, intrabar: str = "pessimistic",
                 synthetic_chains: bool = True, contract: str = CALL) -> None:
        cal = default_calendar()
        self.clock = ReplayClock(at("09:59"))
        config = make_config(latency_ms=latency_ms, intrabar=intrabar)
        fees = FeeModel(config.fees, 100, config.paper.cash_settled_roots)
        self.oms = OrderManager(PaperBroker(self.clock, config.paper, fees), self.clock, config)
        self.stage = OmsStage(self.oms, self.clock, cal, synthetic_chains=synthetic_chains)
        self.contract = contract
        self.chains: dict[int, ChainSnapshot] = {}
        self.out: list[Event] = []
        for item in ReplayFeed(bars, synthetic_chain_source(7, cal), calendar=cal):
            event = item.event
            if isinstance(event, ChainSnapshot):
                self.chains[event.ts] = event
            if item.topic in (topics.MD_CHAIN, topics.MD_BARS):
                self.clock.advance_to(event.ts)
                self.out.extend(o.event for o in self.stage.handle(item.topic, event))
            if isinstance(event, Bar) and event.ts == at("10:01"):
                ask = self.quote("10:02").ask
                request = make_request("r1", contract, 1, round(ask + 0.05, 2), TARGET, STOP, ts=at("10:02"))
                self.out.extend(o.event for o in self.stage.handle(topics.ORDERS, request))
        self.out.extend(o.event for o in self.stage.finish(self.clock.now_ns()))

    def quote(self, hhmm: str) -> OptionQuote:
        return next(q for q in self.chains[at(hhmm)].quotes if q.symbol == self.contract)

    def fills(self) -> list[tuple[str, int, float | None]]:
        return [(e.leg, e.ts, e.fill_price) for e in self.out if isinstance(e, OrderEvent) and e.status == "filled"]

    def outcome(self) -> TradeOutcome:
        (trade,) = [e for e in self.out if isinstance(e, TradeOutcome)]
        return trade


BEFORE = [flat("10:00"), flat("10:01"), flat("10:02")]  # the entry fills at 10:03's ask
AFTER = [flat("10:04"), flat("10:05")]


def test_the_path_visits_the_adverse_extreme_first_at_quarter_points_inside_the_bar() -> None:
    b = bar("10:03", 620.0, 621.0, 619.0, 620.5)
    long_call = [(at("10:03", 0), 620.0), (at("10:03", 15), 619.0), (at("10:03", 30), 621.0), (at("10:03", 45), 620.5)]
    long_put = [(at("10:03", 0), 620.0), (at("10:03", 15), 621.0), (at("10:03", 30), 619.0), (at("10:03", 45), 620.5)]
    assert list(pessimistic_path(b, +1)) == long_call
    assert list(pessimistic_path(b, -1)) == long_put


def test_the_entry_fills_on_the_next_chain_and_the_brackets_levels_are_out_of_its_reach() -> None:
    run = Run([*BEFORE, flat("10:03"), *AFTER])
    q = run.quote("10:03")
    assert run.fills() == [("entry", at("10:03"), q.ask)]
    assert STOP < q.bid < q.ask < TARGET  # a flat bar touches neither leg


def test_stop_and_target_both_inside_one_bar_take_the_stop_at_the_adverse_points_bid() -> None:
    # 10:03: 620 -> low 618.80 -> high 621.40 -> close 620: the low puts the call's bid under 0.50, the
    # high puts it over 1.10, the close (and the 10:04 chain) leaves both untouched.
    run = Run([*BEFORE, bar("10:03", 620.0, 621.4, 618.8, 620.0), *AFTER])
    last = run.quote("10:03")
    bid = intrabar_bid(last, 618.8, at("10:03", 15))
    assert bid <= STOP < TARGET <= intrabar_bid(last, 621.4, at("10:03", 30))
    assert run.fills() == [("entry", at("10:03"), last.ask), ("stop_loss", at("10:03", 15), bid)]
    # (bid - ask) x 100 - 0.55 buying - 0.56 selling
    assert run.outcome().pnl == pytest.approx((bid - last.ask) * 100 - 1.11)
    assert run.outcome().exit_reason == "stop_loss"


def test_a_long_put_meets_the_high_first() -> None:
    # The same bar for the 620 put: its adverse extreme is the high (621.40), reached at 10:03:15.
    run = Run([*BEFORE, bar("10:03", 620.0, 621.4, 618.8, 620.0), *AFTER], contract=PUT)
    last = run.quote("10:03")
    bid = intrabar_bid(last, 621.4, at("10:03", 15))
    assert bid <= STOP < TARGET <= intrabar_bid(last, 618.8, at("10:03", 30))
    assert run.fills() == [("entry", at("10:03"), last.ask), ("stop_loss", at("10:03", 15), bid)]


def test_without_the_path_the_same_bar_fills_nothing() -> None:
    run = Run([*BEFORE, bar("10:03", 620.0, 621.4, 618.8, 620.0), *AFTER], intrabar="off")
    assert [leg for leg, _, _ in run.fills()] == ["entry"]


def test_chains_that_are_venue_quotes_get_no_modelled_path() -> None:
    # A live or captured session (the composition root says the chains are not synthetic): the quotes
    # are their own path, nothing is held or modelled.
    run = Run([*BEFORE, bar("10:03", 620.0, 621.4, 618.8, 620.0), *AFTER], synthetic_chains=False)
    assert [leg for leg, _, _ in run.fills()] == ["entry"]


def test_a_bar_that_only_reaches_the_target_inside_fills_it_at_its_limit() -> None:
    # The low (619.90) keeps the bid above the stop; the high 621.40 reaches the target; closes at 620.
    run = Run([*BEFORE, bar("10:03", 620.0, 621.4, 619.9, 620.0), *AFTER])
    last = run.quote("10:03")
    assert intrabar_bid(last, 619.9, at("10:03", 15)) > STOP
    assert intrabar_bid(last, 621.4, at("10:03", 30)) >= TARGET
    assert run.fills() == [("entry", at("10:03"), last.ask), ("take_profit", at("10:03", 30), TARGET)]
    assert run.outcome().exit_reason == "take_profit"


def test_a_bar_that_only_wicks_through_the_stop_fills_it() -> None:
    # Low 619.00, high 620.10, close 620: only the wick is under the stop.
    run = Run([*BEFORE, bar("10:03", 620.0, 620.1, 619.0, 620.0), *AFTER])
    last = run.quote("10:03")
    bid = intrabar_bid(last, 619.0, at("10:03", 15))
    assert bid <= STOP
    assert run.fills() == [("entry", at("10:03"), last.ask), ("stop_loss", at("10:03", 15), bid)]


def test_a_leg_not_yet_live_ignores_the_bars_path() -> None:
    # With 50 s of latency the exit legs, sent at the entry's 10:03:00 fill, reach the venue at 10:03:50:
    # after every point of the 10:03 bar (0, 15, 30, 45 s). The wick is missed; the 10:04 chain (back
    # at 620) fills nothing either, and the position is still open at the end of the data.
    wick = bar("10:03", 620.0, 620.1, 619.0, 620.0)
    slow = Run([*BEFORE, wick, *AFTER], latency_ms=50_000.0)
    assert [leg for leg, _, _ in slow.fills()] == ["entry"]
    assert not [e for e in slow.out if isinstance(e, TradeOutcome)]
    # The same legs live by the next bar meet its wick: the path of 10:04 stops them at 10:04:15.
    late = Run([*BEFORE, flat("10:03"), bar("10:04", 620.0, 620.1, 619.0, 620.0), flat("10:05")],
               latency_ms=50_000.0)
    last = late.quote("10:04")
    assert late.fills()[1:] == [("stop_loss", at("10:04", 15), intrabar_bid(last, 619.0, at("10:04", 15)))]


def test_the_repriced_quote_at_the_chains_own_spot_and_time_is_the_chains_quote() -> None:
    run = Run([*BEFORE, flat("10:03"), *AFTER])
    repricer = SyntheticRepricer(default_calendar())
    for ts in sorted(run.chains):
        repricer.on_chain(run.chains[ts])
        if ts == at("10:03"):
            break
    last = run.quote("10:03")
    same = repricer.quote_at(last, 620.0, last.ts)
    assert same is not None and (same.bid, same.ask) == (last.bid, last.ask)


def test_broker_yaml_turns_it_off_with_a_bare_off(tmp_path: Path) -> None:
    path = tmp_path / "broker.yaml"
    path.write_text("paper:\n  intrabar: off\n")
    assert load_broker_config(path).paper.intrabar == "off"  # YAML reads `off` as false
    path.write_text("paper: {}\n")
    assert load_broker_config(path).paper.intrabar == "pessimistic"
