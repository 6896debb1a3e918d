"""Session edges on real recordings: expiring options settle at the underlying's last print at or before
the close (13:00 on early-close days), checked against the CSV read here with the csv module."""

from __future__ import annotations

import csv
import datetime as dt
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from services.app.market_data import MarketData, load_market_data, synthetic_chain_source
from services.app.stages import build_feed
from services.backtest.embedded import EmbeddedSession
from services.core import topics
from services.core.calendar import NEW_YORK, NS_PER_S, default_calendar, ny_date
from services.core.datasets import SPY_1MIN
from services.core.events import Bar, ChainSnapshot, OrderEvent, SignalIntent
from services.core.session_config import SessionConfig
from services.core.settings import CONFIG_DIR
from services.core.stage import Output
from tests.realdata import require_real

CAL = default_calendar()
DAY = dt.date(2025, 7, 8)


def csv_closes(path: Path, day: dt.date) -> dict[dt.time, float]:
    """Close of every bar of ``day`` by its New York start time, straight from the file."""
    out: dict[dt.time, float] = {}
    with path.open(newline="") as fh:
        for row in csv.DictReader(fh):
            moment = dt.datetime.fromisoformat(row["Datetime"]).astimezone(NEW_YORK)
            if moment.date() == day:
                out[moment.time()] = float(row["Close"])
    return out


def config_without_stop_sync(tmp_path: Path) -> Path:
    """config/ copied with stop sync off, so a position entered here is held to expiry."""
    target = tmp_path / "config"
    shutil.copytree(CONFIG_DIR, target)
    broker = yaml.safe_load((target / "broker.yaml").read_text())
    broker["stop_sync"]["enabled"] = False
    (target / "broker.yaml").write_text(yaml.safe_dump(broker))
    return target


def shifted(bars: list[Bar], days: int) -> list[Bar]:
    """The same real bars on another date, same New York wall-clock times."""
    out = []
    for b in bars:
        local = dt.datetime.fromtimestamp(b.ts / NS_PER_S, tz=NEW_YORK)
        moved = dt.datetime.combine(local.date() + dt.timedelta(days=days), local.time(), tzinfo=NEW_YORK)
        out.append(Bar(ts=int(moved.timestamp()) * NS_PER_S, symbol=b.symbol, open=b.open, high=b.high,
                       low=b.low, close=b.close, volume=b.volume, interval_s=b.interval_s))
    return out


def hold_to_expiry(tmp_path: Path, bars: list[Bar], entry_end: dt.datetime, strike: float, *,
                   expiry: dt.date | None = None, flatten_ts: int | None = None,
                   session_out: list[EmbeddedSession] | None = None) -> list[OrderEvent]:
    """Replay ``bars``; at the bar ending ``entry_end`` a 1-lot of the ``strike`` call (0DTE unless
    ``expiry``) is bought through signals -> risk -> OMS with a bracket too wide to trigger. Its order events."""
    config = SessionConfig(symbols=("SPY",), calibration={"path": None}, config_dir=config_without_stop_sync(tmp_path),
                           playbooks={"enabled": []})
    session = EmbeddedSession(config)
    feed = build_feed(config, session.state, session.calendar, MarketData({"SPY": bars}, {}, "test"))
    entry_ns = int(entry_end.timestamp()) * NS_PER_S
    contract = f"SPY{expiry or entry_end.date():%y%m%d}C{int(strike * 1000):08d}"
    if session_out is not None:
        session_out.append(session)

    def with_intent() -> Iterator[Output]:
        chain: ChainSnapshot | None = None
        for out in feed:
            yield out
            if isinstance(out.event, ChainSnapshot):
                chain = out.event
            if isinstance(out.event, Bar) and out.event.ts + 60 * NS_PER_S == entry_ns:
                assert chain is not None and chain.ts == entry_ns
                quote = next(q for q in chain.quotes if q.symbol == contract)
                yield Output(topics.SIGNALS, "SPY", SignalIntent(
                    ts=entry_ns, id=f"SPY-test-{entry_ns}", underlying="SPY", playbook="test", contract=contract,
                    # A marketable limit: with the broker's latency it fills on the next chain's ask.
                    right="C", side="buy", quantity=1, limit_price=round(quote.ask * 1.5, 2),
                    take_profit=round(quote.ask * 50, 2),
                    stop_loss=0.01, reason="hold to expiry", entry_expires_ts=entry_ns + 120 * NS_PER_S,
                    flatten_ts=flatten_ts))

    record = session.run(with_intent())
    return [e for e in record.order_events if e.contract == contract]


@pytest.mark.realdata
@pytest.mark.parametrize(("shift_days", "close_time"), [(0, dt.time(16, 0)), (-5, dt.time(13, 0))],
                         ids=["regular close 16:00", "early close 13:00 (2025-07-03)"])
def test_expiring_options_settle_at_the_last_print_at_or_before_the_close(
        tmp_path: Path, shift_days: int, close_time: dt.time) -> None:
    path = require_real(SPY_1MIN)
    real = [b for b in load_market_data(["SPY"], path).bars["SPY"] if ny_date(b.ts) == DAY]
    bars = shifted(real, shift_days)
    day = DAY + dt.timedelta(days=shift_days)
    session = CAL.session(day)
    assert session is not None and session.close_ns == int(
        dt.datetime.combine(day, close_time, tzinfo=NEW_YORK).timestamp()) * NS_PER_S
    closes = csv_closes(path, DAY)  # by wall-clock time: the shift keeps it
    last = (dt.datetime.combine(day, close_time) - dt.timedelta(minutes=1)).time()
    before = (dt.datetime.combine(day, close_time) - dt.timedelta(minutes=2)).time()
    # The last print at or before the close is the close of the bar starting one minute before it.
    settle = closes[last]
    assert settle != closes[before]  # otherwise this recording could not tell the two apart
    strike = float(int(min(settle, closes[before])) - 1)  # in the money at either price
    entry_end = dt.datetime.combine(day, close_time, tzinfo=NEW_YORK) - dt.timedelta(minutes=60)
    events = hold_to_expiry(tmp_path, bars, entry_end, strike)
    entry = [e for e in events if e.leg == "entry" and e.status == "filled"]
    assert len(entry) == 1
    settlement = [e for e in events if e.status == "filled" and e.reason.startswith("expiry")]
    assert len(settlement) == 1
    fill = settlement[0]
    assert fill.fill_price == pytest.approx(round(settle - strike, 2))
    assert fill.fill_price != pytest.approx(round(closes[before] - strike, 2))
    assert fill.ts == session.close_ns
    assert f"(SPY {settle:.2f})" in fill.reason
    # Nothing of this bracket is left working past the close.
    live = {e.order_id: e.status for e in events}
    assert all(s in ("filled", "canceled", "expired", "rejected") for s in live.values())


@pytest.mark.realdata
def test_a_day_trading_bracket_is_flat_before_the_close_and_holding_overnight_is_explicit(tmp_path: Path) -> None:
    path = require_real(SPY_1MIN)
    bars = [b for b in load_market_data(["SPY"], path).bars["SPY"] if ny_date(b.ts) == DAY]
    next_day = CAL.next_session(DAY).date
    closes = csv_closes(path, DAY)
    strike = float(int(closes[dt.time(14, 59)]))
    entry_end = dt.datetime.combine(DAY, dt.time(15, 0), tzinfo=NEW_YORK)
    flatten = int(dt.datetime.combine(DAY, dt.time(15, 55), tzinfo=NEW_YORK).timestamp()) * NS_PER_S
    contract = f"SPY{next_day:%y%m%d}C{int(strike * 1000):08d}"
    # Flattened at 15:55; the market order reaches the paper venue 500 ms later (broker.yaml latency_ms),
    # so it sells at the first quote after that: the 1DTE call's bid in the chain the feed builds at the
    # end of the 15:55 bar (15:56), rebuilt here.
    sold_at = flatten + 60 * NS_PER_S
    source = synthetic_chain_source(seed=7, calendar=CAL)
    bid = None
    for b in bars:
        if CAL.is_open(b.ts):
            chain = source("SPY", b.close, b.ts + 60 * NS_PER_S)
            if b.ts + 60 * NS_PER_S == sold_at:
                assert chain is not None
                bid = next(q.bid for q in chain.quotes if q.symbol == contract)
    assert bid is not None and bid > 0

    sessions: list[EmbeddedSession] = []
    events = hold_to_expiry(tmp_path / "flat", bars, entry_end, strike, expiry=next_day, flatten_ts=flatten,
                            session_out=sessions)
    (outcome,) = [o for o in sessions[0].record.outcomes if o.contract == contract]
    assert (outcome.exit_reason, outcome.exit_ts, outcome.exit_price) == ("session_close", sold_at, bid)
    flat = [e for e in events if e.leg == "flatten" and e.status == "filled"]
    assert [(e.ts, e.fill_price, e.filled_quantity) for e in flat] == [(sold_at, bid, 1)]
    # The take-profit and stop were canceled at the flatten; nothing is working or held at the close.
    assert {e.status for e in events if e.leg in ("take_profit", "stop_loss") and e.ts == flatten} == {"canceled"}
    assert sessions[0].oms.is_flat()

    # The same bracket with no flatten time (a playbook with hold_overnight: true) is still held, and its
    # exits still working, when the day's data ends: carrying it is the explicit choice.
    sessions = []
    events = hold_to_expiry(tmp_path / "hold", bars, entry_end, strike, expiry=next_day, session_out=sessions)
    assert not [o for o in sessions[0].record.outcomes if o.contract == contract]
    assert sessions[0].oms.positions.positions[contract].quantity == 1
    assert {leg.leg for leg in sessions[0].oms.book.live()} == {"take_profit", "stop_loss"}
