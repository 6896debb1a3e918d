"""Intrabar paths: what a bar's OHLC lets a replay say about the path inside it, pessimistically.

A bar file carries no quotes between bar ends, so without a path a stop or a target inside a bar is
seen only if the bar's close (the chain at its end) still shows it. The rule:

- **Path.** For a contract held by a working bracket, the underlying visits, at increasing times
  inside the bar ``[start, start + interval)``: the open at ``start``, the *adverse* extreme at
  ``start + interval/4``, the *favourable* extreme at ``start + interval/2`` and the close at
  ``start + 3 interval/4`` (the chain at the bar's end follows). Adverse is the low for positive
  underlying exposure (a long call, a short put) and the high for negative (a long put, a short
  call). So when a bar could have touched both a stop and a target, the stop is reached first: the
  ordering is the pessimistic one, not a guess at what happened.
- **Option prices on the path** (bar-end synthetic chains only): the held contract is repriced on
  the synthetic chain's own surface (:mod:`services.ingest.synthetic_chain`: SSVI, Black-76 on the
  forward, rate 0) at the path's underlying price and time, the surface's level being the one of the
  underlying's latest chain (the bar's start). Its bid and ask keep the dollar distance from the model
  value that the contract's quote in that chain had (the chain's seeded spread), rounded outward to
  the chain's tick (the bid down, never below 0; the ask up, at least a tick). Displayed sizes are the
  chain quote's. A contract missing from the latest chain (its strike left the chain's range) gets no
  path. Recorded or live option quotes are their own path: only a bar replay's synthetic chains
  get one (the composition root says which, :class:`services.oms.stage.OmsStage`).

The trailing vol level is rebuilt here from the same (time, spot) sequence the synthetic chain source
priced (every chain it published carries both), with the same rule, so the surface matches the
chain's bit for bit without the OMS sharing the ingest's state. Deterministic: same chains and bars,
same quotes.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Mapping
from typing import Final

import msgspec
import numpy as np

from services.core.calendar import NS_PER_S, MarketCalendar, default_calendar, ny_date
from services.core.events import Bar, ChainSnapshot, OptionQuote
from services.options.black_scholes import black76_greeks, year_fraction
from services.options.svi import svi_implied_vol
from services.options.synthetic_surface import (
    DEFAULT_SURFACES,
    SurfaceModel,
    TrailingRealizedVol,
    TrailingVolRule,
    surface_svi,
    tick_size,
)

#: Where each path point sits in the bar, in quarters of its interval: open, adverse, favourable, close.
PATH_QUARTERS: Final = (0, 1, 2, 3)


def pessimistic_path(bar: Bar, exposure: int) -> tuple[tuple[int, float], ...]:
    """``(ts_ns, underlying price)`` points of ``bar`` for a holding of underlying ``exposure`` (+1/-1):
    open, adverse extreme, favourable extreme, close (see the module docstring)."""
    adverse, favourable = (bar.low, bar.high) if exposure > 0 else (bar.high, bar.low)
    quarter = bar.interval_s * NS_PER_S // 4
    prices = (bar.open, adverse, favourable, bar.close)
    return tuple((bar.ts + q * quarter, p) for q, p in zip(PATH_QUARTERS, prices, strict=True))


def model_value(
    surface: SurfaceModel, spot: float, now_ns: int, expiry: dt.date, strike: float, right: str,
    calendar: MarketCalendar,
) -> float | None:
    """The synthetic chain's model value of one contract (None once it has stopped trading)."""
    t = year_fraction(now_ns, calendar.expiry_close_ns(expiry))
    if t <= 0.0 or not spot > 0.0:
        return None
    strikes = np.array([strike])
    vol = svi_implied_vol(surface_svi(surface, t), np.log(strikes / spot), t)
    price = float(black76_greeks(spot, strikes, t, vol, np.array([right == "C"])).price[0])
    return price if math.isfinite(price) else None


def _to_tick(underlying: str, raw: float, *, up: bool) -> float:
    tick = tick_size(underlying, raw)
    if up:
        return round(max(math.ceil(raw / tick - 1e-9), 1) * tick, 2)
    return round(math.floor(raw / tick + 1e-9) * tick, 2) if raw > 0 else 0.0


class SyntheticRepricer:
    """Reprices a held contract of the replay's synthetic chains at an intrabar underlying price."""

    def __init__(
        self,
        calendar: MarketCalendar | None = None,
        rule: TrailingVolRule | None = None,
        surfaces: Mapping[str, SurfaceModel] = DEFAULT_SURFACES,
    ) -> None:
        self._calendar = calendar or default_calendar()
        self._rule = rule or TrailingVolRule()
        self._surfaces = surfaces
        self._trailing: dict[str, TrailingRealizedVol] = {}
        self._surface: dict[str, SurfaceModel] = {}
        self._chain_ts: dict[str, int] = {}

    def on_chain(self, chain: ChainSnapshot) -> None:
        """The chain source's step for this chain: trailing vol, then the surface the chain was priced on."""
        session = self._calendar.session(ny_date(chain.ts))
        if session is None:
            return
        u = chain.underlying
        rv = self._trailing.setdefault(u, TrailingRealizedVol(self._rule))
        rv.update(chain.ts, chain.underlying_price, session.open_ns)
        self._surface[u] = rv.surface(self._surfaces.get(u, SurfaceModel()))
        self._chain_ts[u] = chain.ts

    def quote_at(self, last: OptionQuote, spot: float, ts: int) -> OptionQuote | None:
        """``last`` (the contract's quote in its underlying's latest chain) moved to ``spot`` at ``ts``;
        None when ``last`` is not from that chain or the contract no longer trades."""
        u = last.underlying
        surface = self._surface.get(u)
        if surface is None or self._chain_ts.get(u) != last.ts or last.underlying_price is None:
            return None
        expiry = dt.date.fromisoformat(last.expiry)
        then = model_value(surface, last.underlying_price, last.ts, expiry, last.strike, last.right, self._calendar)
        now = model_value(surface, spot, ts, expiry, last.strike, last.right, self._calendar)
        if then is None or now is None:
            return None
        bid = _to_tick(u, now - (then - last.bid), up=False)
        ask = _to_tick(u, now + (last.ask - then), up=True)
        return msgspec.structs.replace(last, ts=ts, bid=bid, ask=ask, underlying_price=spot)
