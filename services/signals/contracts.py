"""Contract selection over plain per-contract records.

The chain analysis (``services.features.options.chain.analyze_chain``: IVs, Greeks and probability
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
import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from services.core.calendar import MarketCalendar
from services.core.events import ChainSnapshot
from services.features.options.chain import ChainAnalysis, analyze_chain
from services.features.options.implied_vol import IVStatus
from services.signals.playbooks import ContractRules, fmt

Right = Literal["C", "P"]


@dataclass(frozen=True, slots=True)
class ContractRecord:
    """One option contract as the selector sees it (NaN greeks when the IV solve failed)."""

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


def rejection(record: ContractRecord, rules: ContractRules) -> str | None:
    """Why ``record`` is not eligible (the first failing filter), or None when it is."""
    target = rules.target
    value = record.metric(target.metric)
    if record.status != "ok":
        return f"no greeks ({record.status})"
    if not math.isfinite(value):
        return "no greeks"
    if not target.lo <= value <= target.hi:
        return f"{target.metric} outside {fmt(target.lo)}..{fmt(target.hi)}"
    if record.bid < rules.min_bid or record.ask <= record.bid:
        return f"bid < {fmt(rules.min_bid)} or no two-sided market"
    if record.spread > rules.max_spread + 1e-9:
        return f"spread > {fmt(rules.max_spread)}"
    if record.spread_pct > rules.max_spread_pct + 1e-9:
        return f"spread > {fmt(rules.max_spread_pct * 100)}% of mid"
    if record.bid_size < rules.min_bid_size:
        return f"bid size < {fmt(rules.min_bid_size)}"
    if record.ask_size < rules.min_ask_size:
        return f"ask size < {fmt(rules.min_ask_size)}"
    if record.open_interest < rules.min_open_interest:
        return f"open interest < {fmt(rules.min_open_interest)}"
    return None


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
    for expiry, days in expiries:
        pool = [r for r in records if r.right == right and r.expiry == expiry and r.root == root]
        eligible = []
        why: Counter[str] = Counter()
        for r in pool:
            problem = rejection(r, rules)
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
    n = int(analysis.symbol.size)
    return [
        ContractRecord(
            symbol=str(analysis.symbol[i]),
            expiry=str(analysis.expiry[i]),
            strike=float(analysis.strike[i]),
            right="C" if bool(analysis.is_call[i]) else "P",
            bid=float(analysis.bid[i]),
            ask=float(analysis.ask[i]),
            bid_size=float(analysis.bid_size[i]),
            ask_size=float(analysis.ask_size[i]),
            open_interest=float(analysis.open_interest[i]),
            delta=float(analysis.delta[i]),
            iv=float(analysis.iv[i]),
            prob_touch=float(analysis.prob_touch[i]),
            status=status_name(int(analysis.status[i])),
        )
        for i in range(n)
    ]


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
    return records_from_analysis(analyze_chain(snapshot, now_ns, rate=rate, calendar=calendar))
