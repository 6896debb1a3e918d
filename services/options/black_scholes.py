"""Black-Scholes-Merton and Black-76 prices and Greeks, vectorised over numpy arrays.

Conventions (shared by the whole ``options`` package):

- time in years, ACT/365 on exact nanoseconds (:func:`year_fraction`); an option stops living at
  its expiry date's session close from the market calendar, so a 0DTE at 15:59 has one minute left;
- volatility per unit (0.20 = 20 %), rates continuously compounded;
- every price is the Black-76 price on the forward ``F`` discounted with ``exp(-r t)``; the
  Black-Scholes-Merton form is the special case ``F = S exp((r - q) t)``;
- Greeks are per unit: ``delta``/``gamma`` with respect to spot (the carry ``ln(F/S)/t`` held fixed),
  ``vega`` per 1.00 of vol (divide by 100 for a vol point), ``theta`` per year of calendar time
  (divide by 365 for a day), ``vanna`` = d delta / d vol.
"""

from __future__ import annotations

import datetime as dt
import math
from typing import NamedTuple

import numpy as np
import numpy.typing as npt
from numba import njit

from services.core.calendar import MarketCalendar, default_calendar

FloatArray = npt.NDArray[np.float64]

NS_PER_YEAR = 365 * 86_400 * 1_000_000_000
_INV_SQRT2 = 0.7071067811865475244
_INV_SQRT_2PI = 0.3989422804014326779
_INV_SQRT_PI = 0.56418958354775628695
_SQRT_HALF_PI = 1.2533141373155002512
_SQRT_2PI = 2.5066282746310005024


def year_fraction(now_ns: int, expiry_ns: int) -> float:
    """ACT/365 year fraction between two ns timestamps (negative once ``expiry_ns`` has passed)."""
    return (expiry_ns - now_ns) / NS_PER_YEAR


def _as_date(expiry: dt.date | str) -> dt.date:
    return expiry if isinstance(expiry, dt.date) else dt.date.fromisoformat(expiry)


def expiry_time_ns(expiry: dt.date | str, calendar: MarketCalendar | None = None) -> int:
    """When an option expiring on ``expiry`` stops trading: that date's session close (ns, UTC)."""
    return (calendar or default_calendar()).expiry_close_ns(_as_date(expiry))


def time_to_expiry(now_ns: int, expiry: dt.date | str, calendar: MarketCalendar | None = None) -> float:
    """Years (ACT/365) from ``now_ns`` to the expiry date's close; a 0DTE counts its minutes left."""
    return year_fraction(now_ns, expiry_time_ns(expiry, calendar))


class Greeks(NamedTuple):
    """Price and sensitivities, one array element per contract (see the module conventions)."""

    price: FloatArray
    delta: FloatArray
    gamma: FloatArray
    vega: FloatArray
    theta: FloatArray
    vanna: FloatArray


# --- scalar kernels (numba) ----------------------------------------------------------------------


@njit(cache=True, inline="always")
def ncdf(z: float) -> float:
    """Standard normal CDF; erfc keeps full relative accuracy in the lower tail."""
    return 0.5 * math.erfc(-z * _INV_SQRT2)


@njit(cache=True, inline="always")
def npdf(z: float) -> float:
    """Standard normal density."""
    return _INV_SQRT_2PI * math.exp(-0.5 * z * z)


# W. J. Cody's rational approximations of erf/erfc (Math. Comp. 1969), lowest degree first.
_ERF_SMALL_P = (3209.37758913846947, 377.485237685302021, 113.864154151050156, 3.1611237438705656, 0.185777706184603153)
_ERF_SMALL_Q = (2844.23683343917062, 1282.61652607737228, 244.024637934444173, 23.6012909523441209, 1.0)
_ERFC_MID_P = (
    1230.33935479799725, 2051.07837782607147, 1712.04761263407058, 881.95222124176909, 298.635138197400131,
    66.1191906371416295, 8.88314979438837594, 0.564188496988670089, 2.15311535474403846e-8,
)  # fmt: skip
_ERFC_MID_Q = (
    1230.33935480374942, 3439.36767414372164, 4362.61909014324716, 3290.79923573345963, 1621.38957456669019,
    537.181101862009858, 117.693950891312499, 15.7449261107098347, 1.0,
)  # fmt: skip
_ERFC_BIG_P = (
    6.58749161529837803e-4, 0.0160837851487422766, 0.125781726111229246, 0.360344899949804439,
    0.305326634961232344, 0.0163153871373020978,
)  # fmt: skip
_ERFC_BIG_Q = (
    0.00233520497626869185, 0.0605183413124413191, 0.527905102951428412, 1.87295284992346047,
    2.56852019228982242, 1.0,
)  # fmt: skip


@njit(cache=True, inline="always")
def horner(coef: tuple[float, ...], x: float) -> float:
    """Polynomial with coefficients ``coef`` (lowest degree first) at ``x``."""
    acc = coef[len(coef) - 1]
    for j in range(len(coef) - 2, -1, -1):
        acc = acc * x + coef[j]
    return acc


@njit(cache=True)
def erfcx_nonneg(y: float) -> float:
    """Scaled complementary error function exp(y^2) erfc(y) for y >= 0 (Cody 1969, ~1e-16 relative)."""
    if y <= 0.46875:
        ysq = y * y
        return (1.0 - y * horner(_ERF_SMALL_P, ysq) / horner(_ERF_SMALL_Q, ysq)) * math.exp(ysq)
    if y <= 4.0:
        return horner(_ERFC_MID_P, y) / horner(_ERFC_MID_Q, y)
    if y >= 6.71e7:
        return _INV_SQRT_PI / y
    z = 1.0 / (y * y)
    return (_INV_SQRT_PI - z * horner(_ERFC_BIG_P, z) / horner(_ERFC_BIG_Q, z)) / y


@njit(cache=True, inline="always")
def mills_ratio(z: float) -> float:
    """Phi(-z) / phi(z) for z >= 0, without the under/overflow of either factor."""
    return _SQRT_HALF_PI * erfcx_nonneg(z * _INV_SQRT2)


@njit(cache=True)
def greeks_core(
    f: float,
    k: float,
    t: float,
    sqrt_t: float,
    vol: float,
    d1: float,
    pdf1: float,
    rate: float,
    spot: float,
    carry: float,
    is_call: bool,
) -> tuple[float, float, float, float, float, float]:
    """Price and Greeks from ``d1``, ``pdf(d1)`` and the carry ``ln(F/S)/t`` (shared by both paths)."""
    sd = vol * sqrt_t
    d2 = d1 - sd
    df = 1.0 if rate == 0.0 else math.exp(-rate * t)
    # Tails through the Mills ratio reuse pdf(d1) (and pdf(d2) = pdf(d1) F/K) instead of two more exps.
    tail1 = pdf1 * mills_ratio(abs(d1))  # Phi(-|d1|)
    tail2 = pdf1 * (f / k) * mills_ratio(abs(d2))  # Phi(-|d2|)
    n1, m1 = (1.0 - tail1, tail1) if d1 >= 0.0 else (tail1, 1.0 - tail1)  # Phi(d1), Phi(-d1)
    n2, m2 = (1.0 - tail2, tail2) if d2 >= 0.0 else (tail2, 1.0 - tail2)  # Phi(d2), Phi(-d2)
    if is_call:
        price = df * (f * n1 - k * n2)
        fwd_delta = df * n1
    else:
        price = df * (k * m2 - f * m1)
        fwd_delta = -df * m1
    carry_ratio = f / spot
    delta = fwd_delta * carry_ratio
    gamma = df * f * pdf1 / (spot * spot * sd)
    vega = df * f * pdf1 * sqrt_t
    # theta = -dV/dt with F = S exp(b t), df = exp(-r t): r V - b F dV/dF - df F pdf(d1) vol / (2 sqrt t).
    theta = rate * price - carry * f * fwd_delta - df * f * pdf1 * vol / (2.0 * sqrt_t)
    vanna = -df * carry_ratio * pdf1 * d2 / vol
    return price, delta, gamma, vega, theta, vanna


@njit(cache=True, inline="always")
def mills_ratio_any(z: float) -> float:
    """Phi(-z) / phi(z) for any z; for z < 0 it is sqrt(2 pi) e^{z^2/2} - M(-z) (large, keep z > -37)."""
    if z >= 0.0:
        return _SQRT_HALF_PI * erfcx_nonneg(z * _INV_SQRT2)
    return _SQRT_2PI * math.exp(0.5 * z * z) - _SQRT_HALF_PI * erfcx_nonneg(-z * _INV_SQRT2)


@njit(cache=True)
def black_greeks_scalar(
    f: float, k: float, t: float, vol: float, rate: float, spot: float, is_call: bool
) -> tuple[float, float, float, float, float, float]:
    """(price, delta, gamma, vega, theta, vanna) of one contract; NaN Greeks when t or vol <= 0."""
    nan = math.nan
    if not (f > 0.0 and k > 0.0 and spot > 0.0 and math.isfinite(t) and math.isfinite(vol) and math.isfinite(rate)):
        return nan, nan, nan, nan, nan, nan
    if t <= 0.0 or vol <= 0.0:
        # Deterministic limit: the discounted intrinsic value, sensitivities undefined at the kink.
        df = 1.0 if t <= 0.0 else math.exp(-rate * t)
        intrinsic = max(f - k, 0.0) if is_call else max(k - f, 0.0)
        return df * intrinsic, nan, nan, nan, nan, nan
    sqrt_t = math.sqrt(t)
    sd = vol * sqrt_t
    d1 = (math.log(f / k) + 0.5 * sd * sd) / sd
    carry = 0.0 if f == spot else math.log(f / spot) / t
    return greeks_core(f, k, t, sqrt_t, vol, d1, npdf(d1), rate, spot, carry, is_call)


@njit(cache=True)
def _greeks_loop(
    f: FloatArray,
    k: FloatArray,
    t: FloatArray,
    vol: FloatArray,
    rate: FloatArray,
    spot: FloatArray,
    is_call: npt.NDArray[np.bool_],
    out: FloatArray,
) -> None:
    for i in range(f.size):
        p, de, ga, ve, th, va = black_greeks_scalar(f[i], k[i], t[i], vol[i], rate[i], spot[i], is_call[i])
        out[0, i] = p
        out[1, i] = de
        out[2, i] = ga
        out[3, i] = ve
        out[4, i] = th
        out[5, i] = va


@njit(cache=True)
def _price_loop(
    f: FloatArray,
    k: FloatArray,
    t: FloatArray,
    vol: FloatArray,
    rate: FloatArray,
    is_call: npt.NDArray[np.bool_],
    out: FloatArray,
) -> None:
    for i in range(f.size):
        fi, ki, ti, vi = f[i], k[i], t[i], vol[i]
        if not (fi > 0.0 and ki > 0.0 and math.isfinite(ti) and math.isfinite(vi)):
            out[i] = math.nan
            continue
        df = math.exp(-rate[i] * ti) if ti > 0.0 else 1.0
        if ti <= 0.0 or vi <= 0.0:
            out[i] = df * (max(fi - ki, 0.0) if is_call[i] else max(ki - fi, 0.0))
            continue
        sd = vi * math.sqrt(ti)
        d1 = (math.log(fi / ki) + 0.5 * sd * sd) / sd
        d2 = d1 - sd
        if is_call[i]:
            out[i] = df * (fi * ncdf(d1) - ki * ncdf(d2))
        else:
            out[i] = df * (ki * ncdf(-d2) - fi * ncdf(-d1))


# --- public vectorised API -----------------------------------------------------------------------


def broadcast_inputs(*arrays: npt.ArrayLike) -> tuple[tuple[int, ...], list[FloatArray]]:
    """Broadcast to one shape and return flat contiguous float64 arrays plus that shape."""
    parts = [np.asarray(a, dtype=np.float64) for a in arrays]
    shape = np.broadcast_shapes(*(p.shape for p in parts))
    size = math.prod(shape)
    flat = []
    for p in parts:
        if p.shape == shape and p.flags.c_contiguous:
            flat.append(p.reshape(-1))  # already what the kernels want: a view, no copy
        elif p.ndim == 0:
            flat.append(np.full(size, float(p)))
        else:
            flat.append(np.ascontiguousarray(np.broadcast_to(p, shape)).reshape(-1))
    return shape, flat


def call_flags(is_call: npt.ArrayLike, shape: tuple[int, ...]) -> npt.NDArray[np.bool_]:
    """``is_call`` broadcast to ``shape``, flat and contiguous, as the kernels take it."""
    return np.ascontiguousarray(np.broadcast_to(np.asarray(is_call, dtype=np.bool_), shape)).reshape(-1)


def black76_price(
    forward: npt.ArrayLike,
    strike: npt.ArrayLike,
    t: npt.ArrayLike,
    vol: npt.ArrayLike,
    is_call: npt.ArrayLike,
    *,
    rate: npt.ArrayLike = 0.0,
) -> FloatArray:
    """Discounted Black-76 price on the forward (intrinsic value when t or vol <= 0)."""
    shape, (f, k, tt, v, r) = broadcast_inputs(forward, strike, t, vol, rate)
    out = np.empty(f.size)
    _price_loop(f, k, tt, v, r, call_flags(is_call, shape), out)
    return out.reshape(shape)


def black76_greeks(
    forward: npt.ArrayLike,
    strike: npt.ArrayLike,
    t: npt.ArrayLike,
    vol: npt.ArrayLike,
    is_call: npt.ArrayLike,
    *,
    rate: npt.ArrayLike = 0.0,
    spot: npt.ArrayLike | None = None,
) -> Greeks:
    """Price and Greeks on the forward; delta/gamma are w.r.t. ``spot`` when given, else the forward."""
    shape, (f, k, tt, v, r, s) = broadcast_inputs(forward, strike, t, vol, rate, forward if spot is None else spot)
    out = np.empty((6, f.size))
    _greeks_loop(f, k, tt, v, r, s, call_flags(is_call, shape), out)
    return Greeks(*(out[i].reshape(shape) for i in range(6)))


def bsm_price(
    spot: npt.ArrayLike,
    strike: npt.ArrayLike,
    t: npt.ArrayLike,
    vol: npt.ArrayLike,
    is_call: npt.ArrayLike,
    *,
    rate: npt.ArrayLike = 0.0,
    dividend: npt.ArrayLike = 0.0,
) -> FloatArray:
    """Black-Scholes-Merton price with continuous dividend yield ``dividend``."""
    s, r, q, tt = (np.asarray(a, dtype=np.float64) for a in (spot, rate, dividend, t))
    return black76_price(s * np.exp((r - q) * np.maximum(tt, 0.0)), strike, t, vol, is_call, rate=rate)


def bsm_greeks(
    spot: npt.ArrayLike,
    strike: npt.ArrayLike,
    t: npt.ArrayLike,
    vol: npt.ArrayLike,
    is_call: npt.ArrayLike,
    *,
    rate: npt.ArrayLike = 0.0,
    dividend: npt.ArrayLike = 0.0,
) -> Greeks:
    """Black-Scholes-Merton price and spot Greeks with continuous dividend yield ``dividend``."""
    s, r, q, tt = (np.asarray(a, dtype=np.float64) for a in (spot, rate, dividend, t))
    fwd = s * np.exp((r - q) * np.maximum(tt, 0.0))
    return black76_greeks(fwd, strike, t, vol, is_call, rate=rate, spot=s)
