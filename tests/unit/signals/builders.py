"""Hand-built feature vectors, chains and contract records for the signals tests."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

from services.core.events import ChainSnapshot, FeatureVector, OptionQuote, occ_symbol
from services.options.black_scholes import bsm_price
from services.signals.contracts import ContractRecord
from services.signals.engine import SignalEngine
from services.signals.playbooks import PlaybooksConfig, load_playbooks

NS = 1_000_000_000
TODAY = "2025-07-08"  # a Tuesday session, 09:30-16:00 New York (13:30-20:00 UTC)
NEXT = "2025-07-09"


def ts_ny(hour: int, minute: int, day: str = TODAY) -> int:
    """ns timestamp of a New York wall time on ``day`` (EDT, UTC-4, in July)."""
    d = dt.date.fromisoformat(day)
    return int(dt.datetime(d.year, d.month, d.day, hour + 4, minute, tzinfo=dt.UTC).timestamp()) * NS


T0 = ts_ny(10, 30)  # 60 minutes after the open, 330 before the close

BASE: dict[str, float] = {
    "close": 620.0,
    "vwap": 620.0,
    "vwap_sigma": 0.5,
    "vwap_upper_1": 620.5,
    "vwap_upper_2": 621.0,
    "vwap_upper_3": 621.5,
    "vwap_lower_1": 619.5,
    "vwap_lower_2": 619.0,
    "vwap_lower_3": 618.5,
    "atr_14": 0.4,
    "adx_14": 22.0,
    "plus_di_14": 20.0,
    "minus_di_14": 20.0,
    "rv_15": 0.12,
    "or_high_15": 621.0,
    "or_low_15": 618.0,
    "or_breakout_15": 0.0,
    "vwap_dist_atr": 0.0,
    "minutes_since_open": 60.0,
    "minutes_to_close": 330.0,
    "spread": 0.01,
    "spread_bps": 0.16,
    "trade_imbalance": 0.0,
    "atm_iv": 0.15,
}


def fv(symbol: str = "SPY", ts: int = T0, drop: tuple[str, ...] = (), **overrides: float) -> FeatureVector:
    values = {k: v for k, v in BASE.items() if k not in drop}
    values.update(overrides)
    return FeatureVector(ts=ts, symbol=symbol, values=values)


def rec(
    strike: float,
    right: str,
    delta: float,
    *,
    bid: float,
    ask: float,
    expiry: str = TODAY,
    root: str = "SPY",
    touch: float | None = None,
    size: float = 50.0,
    oi: float = 1000.0,
) -> ContractRecord:
    return ContractRecord(
        symbol=occ_symbol(root, expiry, right, strike),
        expiry=expiry,
        strike=strike,
        right=right,  # type: ignore[arg-type]
        bid=bid,
        ask=ask,
        bid_size=size,
        ask_size=size,
        open_interest=oi,
        delta=delta,
        iv=0.15,
        prob_touch=min(1.0, 2 * abs(delta)) if touch is None else touch,
    )


def spy_records(expiry: str = TODAY, root: str = "SPY") -> list[ContractRecord]:
    """A 0DTE SPY chain around 620 with hand-set greeks (nearest OTM call 621, put 619)."""
    calls = [
        (618, 0.62, 2.10, 2.12),
        (619, 0.55, 1.50, 1.52),
        (620, 0.48, 1.10, 1.12),
        (621, 0.40, 0.80, 0.82),
        (622, 0.31, 0.50, 0.52),
        (623, 0.24, 0.30, 0.31),
        (624, 0.17, 0.18, 0.19),
    ]
    puts = [
        (621, -0.60, 1.90, 1.92),
        (620, -0.52, 1.20, 1.22),
        (619, -0.44, 0.85, 0.87),
        (618, -0.37, 0.60, 0.62),
        (617, -0.29, 0.40, 0.41),
        (616, -0.22, 0.25, 0.26),
    ]
    out = [rec(k, "C", d, bid=b, ask=a, expiry=expiry, root=root) for k, d, b, a in calls]
    out += [rec(k, "P", d, bid=b, ask=a, expiry=expiry, root=root) for k, d, b, a in puts]
    return out


def chain_for(records: Sequence[ContractRecord], underlying: str = "SPY", ts: int = T0, spot: float = 620.0):
    quotes = tuple(
        OptionQuote(
            ts=ts,
            symbol=r.symbol,
            underlying=underlying,
            expiry=r.expiry,
            strike=r.strike,
            right=r.right,
            bid=r.bid,
            ask=r.ask,
            bid_size=r.bid_size,
            ask_size=r.ask_size,
            open_interest=r.open_interest,
        )
        for r in records
    )
    return ChainSnapshot(ts=ts, underlying=underlying, underlying_price=spot, quotes=quotes)


class FixedRecords:
    """A chain-records function returning hand-made records per underlying; counts its calls."""

    def __init__(self, records: dict[str, list[ContractRecord]]) -> None:
        self.records = records
        self.calls = 0

    def __call__(self, snapshot: ChainSnapshot, now_ns: int) -> list[ContractRecord]:
        self.calls += 1
        return self.records[snapshot.underlying]


def shipped() -> PlaybooksConfig:
    return load_playbooks()


def engine_with(
    records: dict[str, list[ContractRecord]] | None = None,
    config: PlaybooksConfig | None = None,
    **kwargs,
) -> tuple[SignalEngine, FixedRecords]:
    fixed = FixedRecords(records if records is not None else {"SPY": spy_records()})
    engine = SignalEngine(config or shipped(), chain_records_fn=fixed, **kwargs)
    for underlying, recs in fixed.records.items():
        engine.on_chain(chain_for(recs, underlying))
    return engine, fixed


def priced_chain(spot: float = 620.0, vol: float = 0.15, ts: int = T0, hours_left: float = 5.5) -> ChainSnapshot:
    """A 0DTE SPY chain priced by Black-Scholes (penny-wide quotes around the model price)."""
    t = hours_left / (24 * 365)
    quotes = []
    for right in ("C", "P"):
        for strike in range(612, 629):
            price = float(bsm_price(spot, strike, t, vol, right == "C"))
            quotes.append(
                OptionQuote(
                    ts=ts,
                    symbol=occ_symbol("SPY", TODAY, right, strike),
                    underlying="SPY",
                    expiry=TODAY,
                    strike=strike,
                    right=right,  # type: ignore[arg-type]
                    bid=max(round(price - 0.01, 2), 0.0),
                    ask=round(price + 0.01, 2),
                    bid_size=20,
                    ask_size=30,
                    open_interest=500,
                )
            )
    return ChainSnapshot(ts=ts, underlying="SPY", underlying_price=spot, quotes=tuple(quotes))
