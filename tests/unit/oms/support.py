"""Builders for OMS tests: quotes, requests and a harness wiring the OrderManager to the paper broker."""

from __future__ import annotations

import datetime as dt
from typing import Any

from services.core.clock import ReplayClock
from services.core.events import (
    Event,
    FeatureVector,
    OptionQuote,
    OrderEvent,
    OrderRequest,
    Position,
    RiskAction,
    RiskCommand,
    Side,
    TradeOutcome,
)
from services.oms.audit import MemoryAudit
from services.oms.brokers.paper import PaperBroker
from services.oms.config import BrokerConfig, FeeSchedule, PaperConfig, StopSyncConfig
from services.oms.engine import OrderManager
from services.oms.fees import FeeModel
from services.oms.orders import OptionContract

NS = 1_000_000_000
#: 2025-07-08 10:00 New York (a Tuesday session, 16:00 close).
T0 = int(dt.datetime(2025, 7, 8, 14, 0, tzinfo=dt.UTC).timestamp()) * NS
CLOSE_TS = int(dt.datetime(2025, 7, 8, 20, 0, tzinfo=dt.UTC).timestamp()) * NS

SPY_C620 = "SPY250708C00620000"
SPY_P615 = "SPY250708P00615000"
SPXW_C6200 = "SPXW250708C06200000"
SPY_C620_NEXT_WEEK = "SPY250715C00620000"

#: Round numbers so scenario arithmetic is easy to follow: a buy costs 0.55 per contract
#: (0.50 commission + 0.02 ORF + 0.03 OCC), a sell 0.56 (+ 0.01 TAF); no SEC fee.
TEST_FEES = FeeSchedule(
    commission_per_contract=0.50,
    orf_per_contract=0.02,
    occ_per_contract=0.03,
    taf_per_contract=0.01,
    sec_fee_rate=0.0,
)


def underlying_of(contract: str) -> str:
    root = OptionContract.parse(contract).root
    return {"SPXW": "SPX", "NDXP": "NDX"}.get(root, root)


def make_quote(
    contract: str,
    ts: int,
    bid: float,
    ask: float,
    bid_size: float = 0.0,
    ask_size: float = 0.0,
    underlying_price: float | None = None,
) -> OptionQuote:
    terms = OptionContract.parse(contract)
    return OptionQuote(
        ts=ts,
        symbol=contract,
        underlying=underlying_of(contract),
        expiry=terms.expiry.isoformat(),
        strike=terms.strike,
        right=terms.right,
        bid=bid,
        ask=ask,
        bid_size=bid_size,
        ask_size=ask_size,
        underlying_price=underlying_price,
    )


def make_request(
    rid: str,
    contract: str,
    quantity: int,
    limit: float,
    take_profit: float,
    stop_loss: float,
    side: Side = "buy",
    ts: int = T0,
    underlying_stop: float | None = None,
    playbook: str = "test_playbook",
) -> OrderRequest:
    return OrderRequest(
        ts=ts,
        id=rid,
        intent_id=f"intent-{rid}",
        underlying=underlying_of(contract),
        contract=contract,
        side=side,
        quantity=quantity,
        limit_price=limit,
        take_profit=take_profit,
        stop_loss=stop_loss,
        playbook=playbook,
        underlying_stop=underlying_stop,
    )


def make_config(
    *,
    fees: FeeSchedule = TEST_FEES,
    stop_sync: StopSyncConfig | None = None,
    **paper: Any,
) -> BrokerConfig:
    return BrokerConfig(
        fees=fees,
        paper=PaperConfig(**paper),
        stop_sync=stop_sync or StopSyncConfig(enabled=False),
    )


def make_broker(clock: ReplayClock, **paper: Any) -> PaperBroker:
    fees = paper.pop("fees", TEST_FEES)
    cfg = PaperConfig(**paper)
    return PaperBroker(clock, cfg, FeeModel(fees, 100, cfg.cash_settled_roots))


class Harness:
    """OrderManager + PaperBroker on a replay clock; ``at(seconds)`` is T0 + seconds."""

    def __init__(self, config: BrokerConfig | None = None) -> None:
        self.config = config or make_config()
        self.clock = ReplayClock(T0)
        fees = FeeModel(self.config.fees, self.config.multiplier, self.config.paper.cash_settled_roots)
        self.broker = PaperBroker(self.clock, self.config.paper, fees)
        self.audit = MemoryAudit()
        self.oms = OrderManager(self.broker, self.clock, self.config, self.audit)
        self.events: list[Event] = []

    def at(self, seconds: float) -> int:
        ts = T0 + int(seconds * NS)
        self.clock.advance_to(ts)
        return ts

    def _keep(self, out: list[Event]) -> list[Event]:
        self.events.extend(out)
        return out

    def quote(self, seconds: float, contract: str, bid: float, ask: float, **kw: Any) -> list[Event]:
        ts = self.at(seconds)
        return self._keep(self.oms.on_option_quote(make_quote(contract, ts, bid, ask, **kw)))

    def submit(self, seconds: float, request: OrderRequest) -> list[Event]:
        self.at(seconds)
        return self._keep(self.oms.on_order_request(request))

    def command(self, seconds: float, cid: str, action: RiskAction, underlying: str = "SPY", **kw: Any) -> list[Event]:
        ts = self.at(seconds)
        cmd = RiskCommand(ts=ts, id=cid, underlying=underlying, action=action, reason=f"test {action}", **kw)
        return self._keep(self.oms.on_risk_command(cmd))

    def features(self, seconds: float, symbol: str, close: float, atr: float) -> list[Event]:
        ts = self.at(seconds)
        fv = FeatureVector(ts=ts, symbol=symbol, values={"close": close, "atr_14": atr})
        return self._keep(self.oms.on_features(fv))

    def fills(self, out: list[Event], leg: str | None = None) -> list[tuple[int, float, float]]:
        """(quantity, price, fees) of each fill in ``out``, quantities per fill (not cumulative)."""
        deltas = fill_deltas(self.events)
        return [deltas[e.id] for e in order_events(out, leg) if e.id in deltas]

    def session_close(self, settle: dict[str, float]) -> list[Event]:
        self.clock.advance_to(CLOSE_TS)
        return self._keep(self.oms.on_session_close(CLOSE_TS, settle))


def order_events(events: list[Event], leg: str | None = None) -> list[OrderEvent]:
    return [e for e in events if isinstance(e, OrderEvent) and (leg is None or e.leg == leg)]


def statuses(events: list[Event], leg: str | None = None) -> list[str]:
    return [e.status for e in order_events(events, leg)]


def fill_deltas(history: list[Event]) -> dict[str, tuple[int, float, float]]:
    """Event id -> (this fill's quantity, price, fees) for every fill event in ``history``."""
    out: dict[str, tuple[int, float, float]] = {}
    done: dict[str, int] = {}
    for e in order_events(history):
        if e.status in ("partial", "filled") and e.fill_price is not None:
            out[e.id] = (e.filled_quantity - done.get(e.order_id, 0), e.fill_price, e.fees)
            done[e.order_id] = e.filled_quantity
    return out


def outcomes(events: list[Event]) -> list[TradeOutcome]:
    return [e for e in events if isinstance(e, TradeOutcome)]


def positions(events: list[Event]) -> list[Position]:
    return [e for e in events if isinstance(e, Position)]
