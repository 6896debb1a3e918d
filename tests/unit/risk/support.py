"""Shared builders for the risk tests: a harness around RiskEngine with a replay clock."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any
from zoneinfo import ZoneInfo

from services.core import keys
from services.core.clock import ReplayClock
from services.core.events import FeatureVector, OrderEvent, Position, SignalIntent, TradeOutcome
from services.core.state import MemoryState, StateStore
from services.risk.config import RiskConfig
from services.risk.engine import RiskEngine
from services.risk.event_halts import EventCalendar

NS = 1_000_000_000
MIN = 60 * NS
NY = ZoneInfo("America/New_York")


def utc_ns(y: int, m: int, d: int, hh: int, mm: int, ss: int = 0) -> int:
    return int(dt.datetime(y, m, d, hh, mm, ss, tzinfo=dt.UTC).timestamp()) * NS


def ny_ns(y: int, m: int, d: int, hh: int, mm: int, ss: int = 0) -> int:
    return int(dt.datetime(y, m, d, hh, mm, ss, tzinfo=NY).timestamp()) * NS


# Tuesday 2025-07-08, 11:00 EDT (15:00 UTC): a regular session with no economic event.
T0 = utc_ns(2025, 7, 8, 15, 0)


def make_intent(iid: str, ts: int, **kw: Any) -> SignalIntent:
    underlying = kw.pop("underlying", "SPY")
    fields: dict[str, Any] = {
        "id": iid,
        "ts": ts,
        "underlying": underlying,
        "playbook": "orb",
        "contract": f"{underlying}250708C00620000",
        "right": "C",
        "side": "buy",
        "quantity": 1,
        "limit_price": 2.0,
        "take_profit": 3.0,
        "stop_loss": 1.0,
        "reason": "test",
    }
    fields.update(kw)
    return SignalIntent(**fields)


class Harness:
    """A RiskEngine on a ReplayClock and a StateStore, with helpers to feed it."""

    def __init__(
        self,
        config: RiskConfig | None = None,
        *,
        state: StateStore | None = None,
        events: EventCalendar | None = None,
        risk_multiplier: float = 1.0,
        t0: int = T0,
    ) -> None:
        self.clock = ReplayClock(t0)
        self.state: StateStore = state if state is not None else MemoryState()
        self.engine = RiskEngine(
            config or RiskConfig(), self.clock, self.state, events=events, risk_multiplier=risk_multiplier
        )

    def at(self, ts: int) -> int:
        self.clock.advance_to(ts)
        return ts

    def heartbeat(self, ts: int, seq: int = 1) -> None:
        self.state.set(keys.INGEST_HEARTBEAT, json.dumps({"ts": ts, "seq": seq}).encode())

    def features(self, symbol: str, ts: int, **values: float) -> None:
        self.engine.on_features(FeatureVector(ts=ts, symbol=symbol, values=values or {"close": 600.0}))

    def fresh(self, ts: int, underlying: str = "SPY") -> None:
        """Advance to ``ts`` with a current heartbeat and market data for ``underlying``."""
        self.at(ts)
        self.heartbeat(ts)
        self.features(underlying, ts)

    def intent(self, iid: str, ts: int, **kw: Any) -> Any:
        """Decide an intent at ``ts`` with fresh data (the usual happy-path background)."""
        self.fresh(ts, kw.get("underlying", "SPY"))
        return self.engine.on_intent(make_intent(iid, ts, **kw))

    def outcome(self, oid: str, exit_ts: int, pnl: float, underlying: str = "SPY") -> None:
        self.at(exit_ts)
        self.engine.on_outcome(
            TradeOutcome(
                ts=exit_ts,
                id=oid,
                underlying=underlying,
                playbook="orb",
                contract=f"{underlying}250708C00620000",
                entry_ts=exit_ts - MIN,
                exit_ts=exit_ts,
                entry_price=2.0,
                exit_price=2.0 + pnl / 100,
                quantity=1,
                pnl=pnl,
                mae=min(pnl, 0.0),
                mfe=max(pnl, 0.0),
                exit_reason="stop_loss" if pnl < 0 else "take_profit",
                reason="test",
            )
        )

    def position(
        self, contract: str, ts: int, qty: int, avg: float, unrealized: float = 0.0, underlying: str = "SPY"
    ) -> None:
        self.at(ts)
        self.engine.on_position(
            Position(
                ts=ts,
                underlying=underlying,
                contract=contract,
                quantity=qty,
                avg_price=avg,
                realized_pnl=0.0,
                unrealized_pnl=unrealized,
            )
        )

    def order_event(
        self,
        client_order_id: str,
        ts: int,
        status: str,
        qty: int,
        filled: int = 0,
        contract: str = "SPY250708C00620000",
        leg: str = "entry",
        price: float = 2.0,
    ) -> None:
        self.at(ts)
        self.engine.on_order_event(
            OrderEvent(
                ts=ts,
                id=f"ev-{client_order_id}-{ts}",
                order_id=f"b-{client_order_id}",
                client_order_id=client_order_id,
                underlying="SPY",
                contract=contract,
                leg=leg,
                side="buy",
                status=status,
                quantity=qty,
                filled_quantity=filled,
                limit_price=price,
                fill_price=price if filled else None,
            )
        )


class FlakyState:
    """A StateStore whose every method raises ConnectionError while ``down`` (Redis unreachable)."""

    def __init__(self) -> None:
        self.inner = MemoryState()
        self.down = False

    def _check(self) -> None:
        if self.down:
            raise ConnectionError("Error 111 connecting to localhost:6379. Connection refused.")

    def get(self, key: str) -> bytes | None:
        self._check()
        return self.inner.get(key)

    def set(self, key: str, value: bytes, ttl_s: float | None = None) -> None:
        self._check()
        self.inner.set(key, value, ttl_s)

    def delete(self, key: str) -> None:
        self._check()
        self.inner.delete(key)

    def append(self, stream: str, value: bytes, maxlen: int = 10_000) -> None:
        self._check()
        self.inner.append(stream, value, maxlen)

    def read(self, stream: str, count: int = 100) -> list[bytes]:
        self._check()
        return self.inner.read(stream, count)
