"""Contract selection over plain per-contract records.

The chain analysis (``services.options.chain.analyze_chain``: IVs, Greeks and probability
of touch per quote) is turned into :class:`ContractRecord` rows once per chain snapshot; everything
else here is a pure function of those rows, so tests hand-build them.

Selection, for one underlying and one right:

1. keep contracts of the symbol's OCC root (``SPXW`` for SPX dailies, never the AM-settled ``SPX``);
2. rank the listed expiries by days to expiry, counted in trading sessions after today (the market
   calendar when one is given, else weekdays); start at the first listed expiry whose DTE is at
   least the preferred DTE (so when the preferred expiry is not listed, the next listed one is used)
   and move on to later expiries, up to ``max_dte``, while an expiry has no eligible contract;
3. eligible = greeks present, |delta| (or prob_touch) within ``target.value ± target.band``, a bid of
   at least ``min_bid``, spread within ``max_spread`` dollars and ``max_spread_pct`` of the mid, bid
   and ask sizes and open interest at their minimums;
4. the winner is the closest to the target, then the tighter spread, then the lower strike.
"""

from __future__ import annotations

import datetime as dt
import functools
import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

import msgspec
import numpy as np

from services.core.calendar import MarketCalendar
from services.core.events import ChainSnapshot
from services.options.chain import ChainAnalysis, analyze_chain
from services.options.implied_vol import IVStatus
from services.signals.playbooks import ContractRules, fmt

Right = Literal["C", "P"]


class ContractRecord(msgspec.Struct, frozen=True):
    """One option contract as the selector sees it (NaN greeks when the IV solve failed).

    An immutable msgspec Struct rather than a dataclass: a chain analysis makes one per contract
    (thousands per NDX snapshot) and a frozen dataclass costs ~10x more to construct.
    """

    symbol: str
    expiry: str
    strike: float
    right: Right
    bid: float
    ask: float
    bid_size: float = 0.0
    ask_size: float = 0.0
    open_interest: float = 0.0
    delta: float = math.nan
    iv: float = math.nan
    prob_touch: float = math.nan
    status: str = "ok"

    @property
    def mid(self) -> float:
        return (self.bid + self.ask) / 2.0

    @property
    def spread(self) -> float:
        return self.ask - self.bid

    @property
    def spread_pct(self) -> float:
        mid = self.mid
        return self.spread / mid if mid > 0 else math.inf

    @property
    def root(self) -> str:
        return occ_root(self.symbol)

    def metric(self, name: str) -> float:
        """|delta| or prob_touch: the quantity the target is expressed in."""
        return abs(self.delta) if name == "delta" else self.prob_touch


@dataclass(frozen=True, slots=True)
class Selection:
    """The chosen contract, or None, with the rationale either way."""

    contract: ContractRecord | None
    reason: str
    expiry: str | None = None
    dte: int | None = None


@functools.lru_cache(maxsize=1 << 16)  # the same contracts come back in every chain snapshot
def occ_root(symbol: str) -> str:
    """Root of an OCC symbol: ``SPXW`` from ``SPXW250708C06200000`` (a Polygon ``O:`` prefix is dropped)."""
    bare = symbol[2:] if symbol.startswith("O:") else symbol
    return bare[:-15] if len(bare) > 15 else bare


def trading_dte(today: dt.date, expiry: dt.date, calendar: MarketCalendar | None = None) -> int:
    """Sessions after ``today`` up to and including ``expiry`` (0 for a same-day expiry)."""
    if expiry <= today:
        return 0
    if calendar is not None:
        return len(calendar.sessions_between(today + dt.timedelta(days=1), expiry))
    return int(np.busday_count(today + dt.timedelta(days=1), expiry + dt.timedelta(days=1)))


def listed_expiries(
    records: Iterable[ContractRecord],
    *,
    right: Right,
    root: str,
    today: dt.date,
    calendar: MarketCalendar | None = None,
) -> list[tuple[str, int]]:
    """Listed, unexpired expiries of ``root``/``right`` with their DTE, nearest first."""
    dates = sorted({r.expiry for r in records if r.right == right and r.root == root})
    out = []
    for iso in dates:
        day = dt.date.fromisoformat(iso)
        if day >= today:
            out.append((iso, trading_dte(today, day, calendar)))
    return out


def candidate_expiries(
    records: Iterable[ContractRecord],
    *,
    right: Right,
    root: str,
    today: dt.date,
    dte: int,
    max_dte: int,
    calendar: MarketCalendar | None = None,
) -> list[tuple[str, int]]:
    """Expiries to try in order: the first listed with DTE >= ``dte``, then later ones up to ``max_dte``."""
    listed = listed_expiries(records, right=right, root=root, today=today, calendar=calendar)
    return [(e, d) for e, d in listed if dte <= d <= max_dte]


def nearest_otm(records: Iterable[ContractRecord], *, right: Right, spot: float, expiry: str) -> ContractRecord | None:
    """The first out-of-the-money strike: lowest call strike above spot, highest put strike below."""
    side = [r for r in records if r.right == right and r.expiry == expiry]
    if right == "C":
        otm = [r for r in side if r.strike > spot]
        return min(otm, key=lambda r: (r.strike, r.symbol)) if otm else None
    otm = [r for r in side if r.strike < spot]
    return max(otm, key=lambda r: (r.strike, r.symbol)) if otm else None


class _Filters:
    """The eligibility filters of one ContractRules, bounds and messages computed once per selection."""

    __slots__ = (
        "by_delta",
        "hi",
        "lo",
        "low_oi",
        "max_spread",
        "max_spread_pct",
        "min_ask_size",
        "min_bid",
        "min_bid_size",
        "min_open_interest",
        "no_market",
        "outside",
        "thin_ask",
        "thin_bid",
        "too_wide",
        "too_wide_pct",
    )

    def __init__(self, rules: ContractRules) -> None:
        target = rules.target
        self.by_delta = target.metric == "delta"
        self.lo, self.hi = target.lo, target.hi
        self.min_bid = rules.min_bid
        self.max_spread = rules.max_spread + 1e-9
        self.max_spread_pct = rules.max_spread_pct + 1e-9
        self.min_bid_size = rules.min_bid_size
        self.min_ask_size = rules.min_ask_size
        self.min_open_interest = rules.min_open_interest
        self.outside = f"{target.metric} outside {fmt(target.lo)}..{fmt(target.hi)}"
        self.no_market = f"bid < {fmt(rules.min_bid)} or no two-sided market"
        self.too_wide = f"spread > {fmt(rules.max_spread)}"
        self.too_wide_pct = f"spread > {fmt(rules.max_spread_pct * 100)}% of mid"
        self.thin_bid = f"bid size < {fmt(rules.min_bid_size)}"
        self.thin_ask = f"ask size < {fmt(rules.min_ask_size)}"
        self.low_oi = f"open interest < {fmt(rules.min_open_interest)}"

    def rejection(self, record: ContractRecord) -> str | None:
        """See :func:`rejection` (same filters, same order, same messages)."""
        value = abs(record.delta) if self.by_delta else record.prob_touch
        if record.status != "ok":
            return f"no greeks ({record.status})"
        if not math.isfinite(value):
            return "no greeks"
        if not self.lo <= value <= self.hi:
            return self.outside
        bid, ask = record.bid, record.ask
        if bid < self.min_bid or ask <= bid:
            return self.no_market
        spread = ask - bid
        if spread > self.max_spread:
            return self.too_wide
        mid = (bid + ask) / 2.0
        if (spread / mid if mid > 0 else math.inf) > self.max_spread_pct:
            return self.too_wide_pct
        if record.bid_size < self.min_bid_size:
            return self.thin_bid
        if record.ask_size < self.min_ask_size:
            return self.thin_ask
        if record.open_interest < self.min_open_interest:
            return self.low_oi
        return None


def rejection(record: ContractRecord, rules: ContractRules) -> str | None:
    """Why ``record`` is not eligible (the first failing filter), or None when it is.

    Filters in order: greeks present, target metric within ``value ± band``, bid >= ``min_bid`` with
    a two-sided market, spread within ``max_spread`` and ``max_spread_pct`` of the mid, bid and ask
    sizes, open interest.
    """
    return _Filters(rules).rejection(record)


def _rank(record: ContractRecord, rules: ContractRules) -> tuple[float, float, float, str]:
    # Rounded so that float noise (|0.25-0.30| vs |0.35-0.30|) cannot decide a tie.
    distance = round(abs(record.metric(rules.target.metric) - rules.target.value), 9)
    return (distance, round(record.spread, 9), record.strike, record.symbol)


def select_contract(
    records: Sequence[ContractRecord],
    *,
    right: Right,
    root: str,
    today: dt.date,
    dte: int,
    max_dte: int,
    rules: ContractRules,
    calendar: MarketCalendar | None = None,
) -> Selection:
    """Pick the contract to buy (see the module docstring for the rules), or None with the reason."""
    side = "calls" if right == "C" else "puts"
    expiries = candidate_expiries(
        records, right=right, root=root, today=today, dte=dte, max_dte=max_dte, calendar=calendar
    )
    if not expiries:
        listed = listed_expiries(records, right=right, root=root, today=today, calendar=calendar)
        shown = ", ".join(f"{e} ({d}DTE)" for e, d in listed) or "none"
        return Selection(None, f"no {root} {side} expiry with {dte}..{max_dte}DTE listed (listed: {shown})")
    skipped: list[str] = []
    reject = _Filters(rules).rejection
    for expiry, days in expiries:
        pool = [r for r in records if r.right == right and r.expiry == expiry and r.root == root]
        eligible = []
        why: Counter[str] = Counter()
        for r in pool:
            problem = reject(r)
            if problem is None:
                eligible.append(r)
            else:
                why[problem] += 1
        if eligible:
            best = min(eligible, key=lambda r: _rank(r, rules))
            t = rules.target
            reason = (
                f"{best.symbol} ({expiry}, {days}DTE, strike {fmt(best.strike)}, "
                f"{t.metric} {fmt(best.metric(t.metric))} vs target {fmt(t.value)}±{fmt(t.band)}, "
                f"bid/ask {fmt(best.bid)}/{fmt(best.ask)}, spread {fmt(best.spread)} "
                f"= {best.spread_pct * 100:.1f}% of mid, size {fmt(best.bid_size)}x{fmt(best.ask_size)}, "
                f"OI {fmt(best.open_interest)}; {len(eligible)} eligible of {len(pool)} {side}"
            )
            if skipped:
                reason += "; skipped " + "; ".join(skipped)
            return Selection(best, reason, expiry, days)
        skipped.append(f"{expiry} ({days}DTE): {_summary(len(pool), side, why)}")
    return Selection(None, "no eligible contract: " + "; ".join(skipped))


def _summary(total: int, side: str, why: Counter[str]) -> str:
    parts = ", ".join(f"{n} {reason}" for reason, n in sorted(why.items(), key=lambda kv: (-kv[1], kv[0])))
    return f"{total} {side}" + (f" rejected ({parts})" if parts else "")


# --- from the chain analysis --------------------------------------------------------------------


def records_from_analysis(analysis: ChainAnalysis) -> list[ContractRecord]:
    """One record per contract of a chain analysis (its per-contract arrays are in snapshot order)."""
    names: dict[int, str] = {}
    records = []
    columns = zip(
        analysis.symbol.tolist(),
        analysis.expiry.tolist(),
        analysis.strike.tolist(),
        analysis.is_call.tolist(),
        analysis.bid.tolist(),
        analysis.ask.tolist(),
        analysis.bid_size.tolist(),
        analysis.ask_size.tolist(),
        analysis.open_interest.tolist(),
        analysis.delta.tolist(),
        analysis.iv.tolist(),
        analysis.prob_touch.tolist(),
        analysis.status.tolist(),
        strict=True,
    )
    for symbol, expiry, strike, is_call, bid, ask, bid_size, ask_size, oi, delta, iv, touch, code in columns:
        status = names.get(code)
        if status is None:
            status = names[code] = status_name(code)
        records.append(
            ContractRecord(
                symbol=symbol,
                expiry=expiry,
                strike=strike,
                right="C" if is_call else "P",
                bid=bid,
                ask=ask,
                bid_size=bid_size,
                ask_size=ask_size,
                open_interest=oi,
                delta=delta,
                iv=iv,
                prob_touch=touch,
                status=status,
            )
        )
    return records


def status_name(code: int) -> str:
    """``ok`` for a solved contract, else the IVStatus name (``no_quote``, ``no_time_value``, ...)."""
    try:
        status = IVStatus(code)
    except ValueError:
        return f"status {code}"
    return "ok" if status is IVStatus.OK else status.name.lower()


def chain_records(
    snapshot: ChainSnapshot, now_ns: int, *, rate: float = 0.0, calendar: MarketCalendar | None = None
) -> list[ContractRecord]:
    """Analyse a chain snapshot (IV, greeks, probability of touch) into contract records."""
    # Records need per-contract numbers only: no SVI fits.
    return records_from_analysis(analyze_chain(snapshot, now_ns, rate=rate, calendar=calendar, svi_expiries=0))
