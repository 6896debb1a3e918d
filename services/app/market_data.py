"""Where a replay's market data comes from: a file or folder, or deterministic synthetic bars,
plus the option chain source (synthetic, priced from a skewed surface around the real underlying).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from services.core.calendar import MarketCalendar, default_calendar, ny_date
from services.core.events import Bar, ChainSnapshot
from services.ingest.feed import ChainSource
from services.ingest.sources import open_bars
from services.ingest.synthetic import synthetic_bars
from services.ingest.synthetic_chain import TrailingVolRule
from services.ingest.validation import BarSpacing, RejectionReport, bar_spacing

START_PRICES = {"SPY": 620.0, "QQQ": 520.0, "SPX": 6200.0, "NDX": 22500.0}
SYNTHETIC_START = dt.date(2025, 6, 2)


@dataclass
class MarketData:
    """Bars per symbol (each in time order), the rejection report of each file read and the bar
    interval and spacing of each symbol's bars."""

    bars: dict[str, list[Bar]]
    reports: dict[str, RejectionReport]
    source: str
    spacing: dict[str, BarSpacing] = field(default_factory=dict)

    @property
    def session_dates(self) -> list[dt.date]:
        return sorted({ny_date(b.ts) for bars in self.bars.values() for b in bars})


def load_market_data(
    symbols: Sequence[str],
    data: Path | None,
    *,
    table: str | None = None,
    tz: str | None = None,
    sessions: int = 1,
    seed: int = 7,
    interval_s: int | None = None,
) -> MarketData:
    """Read ``symbols`` from ``data`` (any supported file or a flat-file folder) or synthesise them.

    ``interval_s`` is the bar length; None reads it from the file (synthetic bars are 60 s)."""
    if data is None:
        bars = {
            s: synthetic_bars(s, SYNTHETIC_START, sessions, seed + i, START_PRICES.get(s, 100.0))
            for i, s in enumerate(symbols)
        }
        spacing = {s: bar_spacing([b.ts for b in b_], 60) for s, b_ in bars.items()}
        return MarketData(bars, {}, f"synthetic (seed {seed}, {sessions} session(s) from {SYNTHETIC_START})",
                          spacing)
    bars, reports, spacings = {}, {}, {}
    for s in symbols:
        replay = open_bars(data, s, table=table, tz=tz, interval_s=interval_s)
        bars[s] = list(replay)
        reports[s] = replay.report
        spacings[s] = replay.spacing
    return MarketData(bars, reports, str(data), spacings)


def synthetic_chain_source(seed: int = 7, calendar: MarketCalendar | None = None,
                           vol_rule: TrailingVolRule | None = None) -> ChainSource:
    """0DTE and next-session chains priced around each bar's close (deterministic per seed), on a
    surface whose vol level follows the underlying's trailing realised vol (``vol_rule``, see
    :mod:`services.ingest.synthetic_chain`). It only ever sees spots up to the chain's instant."""
    from services.ingest.synthetic_chain import DEFAULT_SURFACES, SurfaceModel, TrailingRealizedVol, synthetic_chain

    cal = calendar or default_calendar()
    rule = vol_rule or TrailingVolRule()
    trailing: dict[str, TrailingRealizedVol] = {}

    def source(underlying: str, spot: float, now_ns: int) -> ChainSnapshot | None:
        today = ny_date(now_ns)
        session = cal.session(today)
        if session is None:
            return None
        rv = trailing.setdefault(underlying, TrailingRealizedVol(rule))
        rv.update(now_ns, spot, session.open_ns)
        surface = rv.surface(DEFAULT_SURFACES.get(underlying, SurfaceModel()))
        expiries = [today, cal.next_session(today).date] if now_ns < session.close_ns else [
            cal.next_session(today).date]
        return synthetic_chain(underlying, spot, now_ns, expiries, seed=seed, calendar=cal, surface=surface)

    return source


def option_price_disclosure(vol_rule: TrailingVolRule | None = None) -> dict[str, str]:
    """Where a replay's option prices come from, stated in every backtest output."""
    from services.ingest.synthetic_chain import SPREAD_MODEL

    rule = vol_rule or TrailingVolRule()
    return {
        "source": "synthetic",
        "detail": "bar files carry no option quotes: every option price is modelled, none was observed",
        "model": "SSVI surface (services/ingest/synthetic_chain.py), Black-76 values on the underlying's bar close",
        "vol_rule": rule.describe(),
        "vrp": f"{rule.vrp:g}",
        "spread_model": SPREAD_MODEL,
    }
