"""Deterministic synthetic option chains priced from a skewed, arbitrage-free vol surface.

The surface is SSVI (Gatheral & Jacquier 2014): at-the-money total variance ``theta(t) = atm_vol(t)^2 t``
with an upward-sloping term structure, and per expiry the slice
``w(k) = theta/2 (1 + rho phi k + sqrt((phi k + rho)^2 + 1 - rho^2))`` with the power-law
``phi(theta) = eta / (theta^gamma (1 + theta)^(1 - gamma))``. With ``eta (1 + |rho|) <= 2`` and
``gamma <= 1/2`` it is free of static arbitrage, and every slice is a raw SVI (see
:func:`surface_svi`), so the chain's "true" smile is known exactly to tests.

Vol level: :class:`TrailingVolRule` makes the surface follow the market. Its at-the-money
short-dated vol is the underlying's trailing realised vol times ``1 + vrp`` (a volatility risk
premium: implied vol usually sits above realised), clamped to ``[min_vol, max_vol]``; the surface's
long-dated vol stays at the model's level, so the term structure mean-reverts. Realised vol is
measured in real elapsed time: ``sqrt(sum r_i^2 / elapsed)`` over the log returns of the spots
seen in the last ``window_s`` seconds of the same session, ``elapsed`` in trading years (252
sessions of 23,400 s), so missing minutes and 5-minute bars are annualised correctly. Until
``min_returns`` returns are in the window the model's own short vol is used.

Quotes: the Black-76 value on the forward ``S exp(r t)`` ± half a spread of 1 % of the value plus
0.2 vol points of vega growing with the squared distance from the money (in ATM standard
deviations), at least a tick, rounded outward to the tick (penny names 0.01 under $3 and 0.05
above; indices 0.05 / 0.10). Far out-of-the-money contracts therefore show the real pattern of a
zero bid under a one-tick ask. Sizes and open interest are seeded random numbers, larger near the money.
"""

from __future__ import annotations

import datetime as dt
import functools
import math
from typing import Final

import numpy as np

from services.core.calendar import MarketCalendar, default_calendar
from services.core.events import ChainSnapshot, OptionQuote, occ_symbol
from services.options.black_scholes import black76_greeks, year_fraction
from services.options.svi import svi_implied_vol
from services.options.synthetic_surface import (
    DEFAULT_SURFACES,
    PENNY_NAMES,
    TICK_THRESHOLD,
    TRADING_SECONDS_PER_YEAR,
    SurfaceModel,
    TrailingRealizedVol,
    TrailingVolRule,
    surface_svi,
    tick_size,
)
from services.options.synthetic_surface import (
    TICK_TABLE as _TICKS,
)

__all__ = [
    "DEFAULT_SURFACES", "INDEX_NAMES", "OPTION_ROOTS", "PENNY_NAMES", "SPREAD_MODEL", "STRIKE_STEPS",
    "TICK_THRESHOLD", "TRADING_SECONDS_PER_YEAR", "SurfaceModel", "TrailingRealizedVol", "TrailingVolRule",
    "option_root", "strike_step", "surface_svi", "synthetic_chain", "tick_size",
]

# Roots of PM-settled index options: SPXW (weeklies and dailies) and NDXP.
OPTION_ROOTS: Final = {"SPX": "SPXW", "NDX": "NDXP"}
STRIKE_STEPS: Final = {"SPX": 5.0, "NDX": 5.0, "SPY": 1.0, "QQQ": 1.0}
INDEX_NAMES: Final = frozenset({"SPX", "NDX", "RUT", "XSP"})



#: How quotes are spread around the model value (stated in every backtest's outputs).
SPREAD_MODEL: Final = ("bid/ask = Black-76 value -/+ half a width; width = (1% of the value + 0.2 vol points "
                       "of vega x (1 + min(z, 6)^2)) x a seeded jitter in [0.8, 1.25], z = distance from the money "
                       "in ATM std devs; at least one tick, rounded outward to the tick (0.01 under $3 / 0.05 for "
                       "SPY, QQQ; 0.05 / 0.10 for indices); bid 0 under half a tick")



def strike_step(underlying: str, spot: float) -> float:
    """Listed strike increment: 1 for SPY/QQQ, 5 for SPX/NDX, else by price level."""
    return STRIKE_STEPS.get(underlying, 1.0 if spot < 1000.0 else 5.0)



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
    step = strike_step(underlying, spot)
    strikes = np.arange(math.ceil(spot * (1.0 + lo_pct) / step), math.floor(spot * (1.0 + hi_pct) / step) + 1) * step
    strikes = strikes[strikes > 0.0]
    root = option_root(underlying)
    strike_list = strikes.tolist()
    n = strikes.size
    # Per priced expiry, calls then puts, one block of 2n contracts; the blocks are priced together.
    blocks: list[tuple[np.ndarray, ...]] = []
    symbols: list[str] = []
    expiry_isos: list[str] = []
    for expiry in sorted(set(expiries)):
        t = year_fraction(now_ns, cal.expiry_close_ns(expiry))
        if t <= 0.0 or n == 0:
            continue  # expired (or closing right now): no longer listed
        (c_jitter, c_bid, c_ask, c_oi), (p_jitter, p_bid, p_ask, p_oi) = _draws(seed, n, len(blocks))
        fwd = spot * math.exp(rate * t)
        params = surface_svi(model, t)
        log_moneyness = np.log(strikes / fwd)
        vol = svi_implied_vol(params, log_moneyness, t)
        z = np.abs(log_moneyness) / (model.atm_vol(t) * math.sqrt(t))  # distance in ATM std devs
        z2 = np.minimum(z, 6.0) ** 2
        near = np.exp(-0.5 * z2)
        size_scale = 1 + np.rint(20 * near)
        greeks = black76_greeks(
            fwd, np.concatenate((strikes, strikes)), t, np.concatenate((vol, vol)), np.arange(2 * n) < n, rate=rate
        )
        # Width: 1 % of the value plus 0.2 vol points of vega, the vol part growing with z^2.
        width = 0.01 * greeks.price + 0.002 * greeks.vega * (1.0 + np.concatenate((z2, z2)))
        blocks.append(
            (
                greeks.price,
                width * np.concatenate((c_jitter, p_jitter)),
                np.concatenate((c_bid * size_scale, p_bid * size_scale)),
                np.concatenate((c_ask * size_scale, p_ask * size_scale)),
                np.concatenate((np.rint(c_oi * (0.05 + near)), np.rint(p_oi * (0.05 + near)))),
            )
        )
        expiry_iso = expiry.isoformat()
        symbols += _symbols(root, expiry_iso, "C", strike_list)
        symbols += _symbols(root, expiry_iso, "P", strike_list)
        expiry_isos.append(expiry_iso)
    quotes: list[OptionQuote] = []
    if blocks:
        theo, spread, bid_sizes, ask_sizes, oi = (np.concatenate(column) for column in zip(*blocks, strict=True))
        bid, ask = _quote_prices(underlying, theo, spread)
        bid_sizes = np.where(bid > 0.0, bid_sizes, 0.0)
        bids, asks, bid_qty, ask_qty, ois = (a.tolist() for a in (bid, ask, bid_sizes, ask_sizes, oi))
        block = 0
        for expiry_iso in expiry_isos:
            for right in ("C", "P"):
                part = slice(block, block + n)
                block += n
                quotes.extend(
                    OptionQuote(
                        ts=now_ns,
                        symbol=symbol,
                        underlying=underlying,
                        expiry=expiry_iso,
                        strike=strike,
                        right=right,
                        bid=b,
                        ask=a,
                        bid_size=bs,
                        ask_size=asz,
                        open_interest=o,
                        underlying_price=spot,
                    )
                    for symbol, strike, b, a, bs, asz, o in zip(
                        symbols[part],
                        strike_list,
                        bids[part],
                        asks[part],
                        bid_qty[part],
                        ask_qty[part],
                        ois[part],
                        strict=True,
                    )
                )
    return ChainSnapshot(ts=now_ns, underlying=underlying, underlying_price=spot, quotes=tuple(quotes))


# --- vectorized pieces of synthetic_chain (each equal, bit for bit, to the per-contract arithmetic) ----

_MAX_TICKS = 2**21  # (k * cents) / 100 == round(k * tick, 2) checked exhaustively for 0 <= k < 2**21


def _quote_prices(underlying: str, theo: np.ndarray, spread: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Bid and ask of each contract: ``theo`` ± half of ``spread`` (at least a tick), rounded outward
    to the tick of each price; a contract worth under half a tick is bid 0 / offered at one tick.

    The per-contract rule, vectorized: ``tick_size`` of the value, of the raw bid and of the raw ask;
    bid = floor(raw bid / tick) ticks, ask = max(ceil(raw ask / tick), 1) ticks, both rounded to the
    cent. A price of k ticks is returned as ``(k * cents) / 100``, the double ``round(k * tick, 2)``
    gives (the nearest one to the two-decimal number), without a Python loop.
    """
    lo, hi = _TICKS[underlying in PENNY_NAMES]
    lo_c, hi_c = round(lo * 100), round(hi * 100)
    tick = np.where(theo < TICK_THRESHOLD, lo, hi)
    half = 0.5 * np.maximum(spread, tick)
    bid_raw = np.maximum(theo - half, 0.0)
    bid_low = bid_raw < TICK_THRESHOLD
    bid_ticks = np.floor(bid_raw / np.where(bid_low, lo, hi) + 1e-9)
    ask_raw = theo + half
    ask_low = ask_raw < TICK_THRESHOLD
    ask_ticks = np.maximum(np.ceil(ask_raw / np.where(ask_low, lo, hi) - 1e-9), 1.0)
    ask_cents = np.where(ask_low, lo_c, hi_c)
    worthless = theo < 0.5 * tick  # nobody bids; the ask sits at one tick of the value
    if worthless.any():
        bid_ticks = np.where(worthless, 0.0, bid_ticks)
        ask_ticks = np.where(worthless, 1.0, ask_ticks)
        ask_cents = np.where(worthless, np.where(theo < TICK_THRESHOLD, lo_c, hi_c), ask_cents)
    if not (bid_ticks.max(initial=0.0) < _MAX_TICKS and ask_ticks.max(initial=0.0) < _MAX_TICKS):
        raise ValueError("option price beyond the synthetic chain's tick range (or not a number)")
    bid = (bid_ticks * np.where(bid_low, lo_c, hi_c)) / 100.0
    ask = (ask_ticks * ask_cents) / 100.0
    return bid, ask


@functools.lru_cache(maxsize=256)
def _draws(seed: int, n: int, index: int) -> tuple[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray], ...]:
    """The random numbers of the ``index``-th priced expiry of a chain with ``n`` strikes, per right
    (C, P): jitter, bid-size and ask-size draws, open-interest draw.

    Every chain restarts ``default_rng(seed)`` and draws, expiry after expiry and C before P,
    ``uniform(0.8, 1.25)``, ``integers(1, 40)`` twice and ``lognormal(6, 1)``, ``n`` each; so the
    draws depend only on (seed, n, index) and are replayed once, then reused (read-only).
    """
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(2 * (index + 1)):
        arrays = (
            rng.uniform(0.8, 1.25, n),
            rng.integers(1, 40, n),
            rng.integers(1, 40, n),
            rng.lognormal(6.0, 1.0, n),
        )
        for a in arrays:
            a.setflags(write=False)
        out.append(arrays)
    return tuple(out[2 * index :])


_SYMBOL_TABLES: dict[tuple[str, str, str], dict[float, str]] = {}


def _symbols(root: str, expiry_iso: str, right: str, strikes: list[float]) -> list[str]:
    """OCC symbols of ``strikes``, remembered per (root, expiry, right) (the last 64 such series)."""
    key = (root, expiry_iso, right)
    table = _SYMBOL_TABLES.get(key)
    if table is None:
        if len(_SYMBOL_TABLES) >= 64:
            _SYMBOL_TABLES.clear()
        table = _SYMBOL_TABLES[key] = {}
    out = []
    for strike in strikes:
        symbol = table.get(strike)
        if symbol is None:
            symbol = table[strike] = occ_symbol(root, expiry_iso, right, strike)
        out.append(symbol)
    return out
