"""Deterministic synthetic option chains priced from a skewed, arbitrage-free vol surface.

The surface is SSVI (Gatheral & Jacquier 2014): at-the-money total variance ``theta(t) = atm_vol(t)^2 t``
with an upward-sloping term structure, and per expiry the slice
``w(k) = theta/2 (1 + rho phi k + sqrt((phi k + rho)^2 + 1 - rho^2))`` with the power-law
``phi(theta) = eta / (theta^gamma (1 + theta)^(1 - gamma))``. With ``eta (1 + |rho|) <= 2`` and
``gamma <= 1/2`` it is free of static arbitrage, and every slice is a raw SVI (see
:func:`surface_svi`), so the chain's "true" smile is known exactly to tests.

Quotes: the Black-76 value on the forward ``S exp(r t)`` ± half a spread of 1 % of the value plus
0.2 vol points of vega growing with the squared distance from the money (in ATM standard
deviations), at least a tick, rounded outward to the tick (penny names 0.01 under $3 and 0.05
above; indices 0.05 / 0.10). Far out-of-the-money contracts therefore show the real pattern of a
zero bid under a one-tick ask. Sizes and open interest are seeded random numbers, larger near the money.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass
from typing import Final

import numpy as np

from services.core.calendar import MarketCalendar, default_calendar
from services.core.events import ChainSnapshot, OptionQuote, occ_symbol
from services.features.options.black_scholes import black76_greeks, year_fraction
from services.features.options.svi import SVIParams, svi_implied_vol

# Roots of PM-settled index options: SPXW (weeklies and dailies) and NDXP.
OPTION_ROOTS: Final = {"SPX": "SPXW", "NDX": "NDXP"}
STRIKE_STEPS: Final = {"SPX": 5.0, "NDX": 5.0, "SPY": 1.0, "QQQ": 1.0}
PENNY_NAMES: Final = frozenset({"SPY", "QQQ", "IWM"})
INDEX_NAMES: Final = frozenset({"SPX", "NDX", "RUT", "XSP"})


@dataclass(frozen=True, slots=True)
class SurfaceModel:
    """SSVI surface: ATM vol from ``short_vol`` (t -> 0) rising to ``long_vol`` over ``tau`` years."""

    short_vol: float = 0.12
    long_vol: float = 0.18
    tau: float = 0.25
    rho: float = -0.7
    eta: float = 1.0
    gamma: float = 0.5

    def atm_vol(self, t: float) -> float:
        """At-the-money implied vol at maturity ``t`` (years)."""
        return self.long_vol + (self.short_vol - self.long_vol) * math.exp(-t / self.tau)


DEFAULT_SURFACES: Final = {
    "SPX": SurfaceModel(),
    "SPY": SurfaceModel(),
    "NDX": SurfaceModel(short_vol=0.16, long_vol=0.23),
    "QQQ": SurfaceModel(short_vol=0.16, long_vol=0.23),
}


def surface_svi(model: SurfaceModel, t: float) -> SVIParams:
    """The raw SVI parameters of the SSVI slice at maturity ``t`` (years > 0)."""
    theta = model.atm_vol(t) ** 2 * t
    phi = model.eta / (theta**model.gamma * (1.0 + theta) ** (1.0 - model.gamma))
    rho = model.rho
    return SVIParams(
        a=0.5 * theta * (1.0 - rho * rho),
        b=0.5 * theta * phi,
        rho=rho,
        m=-rho / phi,
        sigma=math.sqrt(1.0 - rho * rho) / phi,
    )


def strike_step(underlying: str, spot: float) -> float:
    """Listed strike increment: 1 for SPY/QQQ, 5 for SPX/NDX, else by price level."""
    return STRIKE_STEPS.get(underlying, 1.0 if spot < 1000.0 else 5.0)


def tick_size(underlying: str, price: float) -> float:
    """Minimum price increment: penny names 0.01 under $3 (0.05 above); others 0.05 / 0.10."""
    if underlying in PENNY_NAMES:
        return 0.01 if price < 3.0 else 0.05
    return 0.05 if price < 3.0 else 0.10


def option_root(underlying: str) -> str:
    """OCC root for the underlying's PM-settled dailies (SPX -> SPXW, NDX -> NDXP)."""
    return OPTION_ROOTS.get(underlying, underlying)


def synthetic_chain(
    underlying: str,
    spot: float,
    now_ns: int,
    expiries: list[dt.date],
    *,
    seed: int,
    strikes_pct: tuple[float, float] = (-0.05, 0.05),
    calendar: MarketCalendar | None = None,
    rate: float = 0.0,
    surface: SurfaceModel | None = None,
) -> ChainSnapshot:
    """Calls and puts of every expiry still open at ``now_ns``; same inputs, same chain.

    Strikes lie within ``spot * (1 + strikes_pct)`` on the listed increment; the forward is
    ``spot * exp(rate t)``; expiries at or past their close are left out.
    """
    if not spot > 0.0:
        raise ValueError(f"spot must be positive, got {spot}")
    lo_pct, hi_pct = strikes_pct
    if not -1.0 < lo_pct <= hi_pct:
        raise ValueError(f"strikes_pct must satisfy -1 < low <= high, got {strikes_pct}")
    cal = calendar or default_calendar()
    model = surface or DEFAULT_SURFACES.get(underlying, SurfaceModel())
    rng = np.random.default_rng(seed)
    step = strike_step(underlying, spot)
    strikes = np.arange(math.ceil(spot * (1.0 + lo_pct) / step), math.floor(spot * (1.0 + hi_pct) / step) + 1) * step
    strikes = strikes[strikes > 0.0]
    root = option_root(underlying)
    quotes: list[OptionQuote] = []
    for expiry in sorted(set(expiries)):
        t = year_fraction(now_ns, cal.expiry_close_ns(expiry))
        if t <= 0.0 or strikes.size == 0:
            continue  # expired (or closing right now): no longer listed
        fwd = spot * math.exp(rate * t)
        params = surface_svi(model, t)
        log_moneyness = np.log(strikes / fwd)
        vol = svi_implied_vol(params, log_moneyness, t)
        z = np.abs(log_moneyness) / (model.atm_vol(t) * math.sqrt(t))  # distance in ATM std devs
        expiry_iso = expiry.isoformat()
        for right in ("C", "P"):
            greeks = black76_greeks(fwd, strikes, t, vol, right == "C", rate=rate)
            theo = greeks.price
            # Width: 1 % of the value plus 0.2 vol points of vega, the vol part growing with z^2.
            width = 0.01 * theo + 0.002 * greeks.vega * (1.0 + np.minimum(z, 6.0) ** 2)
            jitter = rng.uniform(0.8, 1.25, strikes.size)
            near = np.exp(-0.5 * np.minimum(z, 6.0) ** 2)
            bid_sizes = rng.integers(1, 40, strikes.size) * (1 + np.rint(20 * near))
            ask_sizes = rng.integers(1, 40, strikes.size) * (1 + np.rint(20 * near))
            oi = np.rint(rng.lognormal(6.0, 1.0, strikes.size) * (0.05 + near))
            for i, strike in enumerate(strikes):
                price = float(theo[i])
                tick = tick_size(underlying, price)
                half = 0.5 * max(float(width[i]) * float(jitter[i]), tick)
                if price < 0.5 * tick:
                    bid, ask = 0.0, tick  # worthless: nobody bids, the ask sits at one tick
                else:
                    bid_raw = max(price - half, 0.0)
                    bid_tick = tick_size(underlying, bid_raw)
                    bid = math.floor(bid_raw / bid_tick + 1e-9) * bid_tick
                    ask_tick = tick_size(underlying, price + half)
                    ask = max(math.ceil((price + half) / ask_tick - 1e-9) * ask_tick, ask_tick)
                quotes.append(
                    OptionQuote(
                        ts=now_ns,
                        symbol=occ_symbol(root, expiry_iso, right, float(strike)),
                        underlying=underlying,
                        expiry=expiry_iso,
                        strike=float(strike),
                        right=right,
                        bid=round(bid, 2),
                        ask=round(ask, 2),
                        bid_size=float(bid_sizes[i]) if bid > 0.0 else 0.0,
                        ask_size=float(ask_sizes[i]),
                        open_interest=float(oi[i]),
                        underlying_price=spot,
                    )
                )
    return ChainSnapshot(ts=now_ns, underlying=underlying, underlying_price=spot, quotes=tuple(quotes))
