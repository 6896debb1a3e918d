"""Readers turning recorded option chains into :class:`ChainSnapshot` events.

- SPXW end-of-day CSV (one row per contract and quote date): one snapshot per quote date, stamped
  at that date's session close in New York (16:00, or 13:00 on an early close).
- SPY puts JSON (1-minute bid/ask per strike with spot): one snapshot per minute; its timestamps
  are naive New York times.

Rows with zero bids are kept (a zero bid is a real market: nobody pays anything). Rows that cannot
be a market are skipped and counted by reason: ``ask_zero`` (ask <= 0), ``crossed`` (bid > ask)
and ``malformed`` (unparsable, non-finite, negative, or a non-positive strike).
"""

from __future__ import annotations

import csv
import datetime as dt
import json
import math
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from services.core.calendar import NEW_YORK, NS_PER_S, MarketCalendar, default_calendar
from services.core.events import ChainSnapshot, OptionQuote, Right, occ_symbol

# Option roots whose underlying has another name (the vendor's "SPXW" rows are SPX options).
ROOT_UNDERLYING: Final = {"SPXW": "SPX", "NDXP": "NDX"}
_RIGHTS: Final[dict[str, Right]] = {"call": "C", "put": "P", "c": "C", "p": "P"}


@dataclass(frozen=True, slots=True)
class ChainFile:
    """Snapshots read from one file, and what was skipped on the way."""

    snapshots: list[ChainSnapshot]
    rows: int  # option rows read
    skipped: dict[str, int] = field(default_factory=dict)  # reason -> rows

    @property
    def kept(self) -> int:
        """Option rows that became quotes."""
        return self.rows - sum(self.skipped.values())


def _quote_problem(strike: float, bid: float, ask: float) -> str | None:
    """Why a row cannot be a quote, or None when it can (zero bids are fine)."""
    if not (math.isfinite(strike) and math.isfinite(bid) and math.isfinite(ask)) or strike <= 0.0 or bid < 0.0:
        return "malformed"
    if ask <= 0.0:
        return "ask_zero"
    if bid > ask:
        return "crossed"
    return None


def _close_ns(day: dt.date, calendar: MarketCalendar) -> int:
    session = calendar.session(day)
    if session is not None:
        return session.close_ns
    return int(dt.datetime.combine(day, dt.time(16, 0), tzinfo=NEW_YORK).timestamp()) * NS_PER_S


def _us_date(text: str) -> dt.date:
    return dt.datetime.strptime(text.strip(), "%m/%d/%Y").date()


def read_spxw_eod_chains(path: str | Path, *, calendar: MarketCalendar | None = None) -> ChainFile:
    """SPXW end-of-day chains: one snapshot per quote date, quotes sorted by expiry, strike, right."""
    cal = calendar or default_calendar()
    by_day: dict[dt.date, list[OptionQuote]] = defaultdict(list)
    spots: dict[dt.date, float] = {}
    roots: dict[dt.date, str] = {}
    skipped: Counter[str] = Counter()
    rows = 0
    with open(path, newline="") as handle:
        for row in csv.DictReader(handle):
            rows += 1
            try:
                day = _us_date(row["quotedate"])
                expiry = _us_date(row["expiration"]).isoformat()
                right = _RIGHTS[row["type"].strip().lower()]
                strike = float(row["strike"])
                bid = float(row["bid"])
                ask = float(row["ask"])
                spot = float(row["underlying_last"])
                oi = float(row["openinterest"] or 0.0)
                root = row["underlying"].strip()
            except (KeyError, ValueError):
                skipped["malformed"] += 1
                continue
            problem = _quote_problem(strike, bid, ask)
            if problem is None and not (math.isfinite(spot) and spot > 0.0 and math.isfinite(oi) and oi >= 0.0):
                problem = "malformed"
            if problem is not None:
                skipped[problem] += 1
                continue
            underlying = ROOT_UNDERLYING.get(root, root)
            ts = _close_ns(day, cal)
            spots.setdefault(day, spot)
            roots.setdefault(day, underlying)
            by_day[day].append(
                OptionQuote(
                    ts=ts,
                    symbol=occ_symbol(root, expiry, right, strike),
                    underlying=underlying,
                    expiry=expiry,
                    strike=strike,
                    right=right,
                    bid=bid,
                    ask=ask,
                    open_interest=oi,
                    underlying_price=spot,
                )
            )
    snapshots = [
        ChainSnapshot(
            ts=_close_ns(day, cal),
            underlying=roots[day],
            underlying_price=spots[day],
            quotes=tuple(sorted(quotes, key=lambda q: (q.expiry, q.strike, q.right))),
        )
        for day, quotes in sorted(by_day.items())
    ]
    return ChainFile(snapshots=snapshots, rows=rows, skipped=dict(skipped))


def _naive_new_york_ns(text: str) -> int:
    local = dt.datetime.fromisoformat(text)
    if local.tzinfo is None:
        local = local.replace(tzinfo=NEW_YORK)
    return int(local.timestamp() * 1_000_000) * 1_000


def read_spy_puts_1min(path: str | Path) -> ChainFile:
    """SPY puts, one snapshot per minute bar; the file's naive timestamps are New York time."""
    with open(path) as handle:
        data: dict[str, Any] = json.load(handle)
    underlying = str(data["symbol"])
    expiry = dt.date.fromisoformat(str(data["expiry"])).isoformat()
    skipped: Counter[str] = Counter()
    rows = 0
    snapshots: list[ChainSnapshot] = []
    for bar in data["bars"]:
        ts = _naive_new_york_ns(str(bar["ts"]))
        spot = float(bar["spot"])
        quotes: list[OptionQuote] = []
        for put in bar["puts"]:
            rows += 1
            try:
                strike, bid, ask = float(put["strike"]), float(put["bid"]), float(put["ask"])
            except (KeyError, TypeError, ValueError):
                skipped["malformed"] += 1
                continue
            problem = _quote_problem(strike, bid, ask)
            if problem is not None:
                skipped[problem] += 1
                continue
            quotes.append(
                OptionQuote(
                    ts=ts,
                    symbol=occ_symbol(underlying, expiry, "P", strike),
                    underlying=underlying,
                    expiry=expiry,
                    strike=strike,
                    right="P",
                    bid=bid,
                    ask=ask,
                    underlying_price=spot,
                )
            )
        if not (math.isfinite(spot) and spot > 0.0):
            skipped["malformed"] += len(quotes)
            continue
        snapshots.append(
            ChainSnapshot(
                ts=ts,
                underlying=underlying,
                underlying_price=spot,
                quotes=tuple(sorted(quotes, key=lambda q: q.strike)),
            )
        )
    return ChainFile(snapshots=snapshots, rows=rows, skipped=dict(skipped))
