"""Implied volatility for whole chains: robust from one minute to years, deep ITM to deep OTM.

Reference and accuracy: the solver inverts the discounted Black-76 price on the forward (see
:mod:`.black_scholes`), so ``implied_vol(price, F, K, t, is_call, rate=r)`` equals
``py_lets_be_rational.implied_volatility_from_a_transformed_rational_guess(price * exp(r t), F, K, t,
+1 | -1)`` (Jäckel, "Let's Be Rational", 2015) to 1e-8 absolute wherever the normalised vega
``vega / sqrt(F K)`` (per 1.00 of vol, undiscounted) is at least :data:`VEGA_FLOOR`. Below the floor
a quoted price cannot pin the vol down to 1e-8 (one rounding of the price moves it more), so those
contracts get NaN with status :attr:`IVStatus.NO_TIME_VALUE`.

Method, per contract: normalise to ``x = ln(F/K)`` and ``beta = (price - intrinsic) / sqrt(F K)``
and map to the out-of-the-money call (put-call symmetry), as Jäckel does. ``s = vol sqrt(t)`` is
then found by third-order Householder steps, bracketed with a bisection fallback, on an objective
transformed to be nearly linear: ``ln b(s) - ln beta`` for prices up to half their bound (prices
exponentially small in ``1/s^2`` included) and ``ln(b_max - b(s)) - ln(b_max - beta)`` above
(prices near the bound, where ``b_max - b`` is a sum of positive terms, so nothing cancels). Both
are written with Mills ratios so a step costs one log and two rational functions. Below the
inflection point ``s_c = sqrt(2|x|)`` (most quoted OTM options) the start inverts the Bachelier
approximation ``b ~ |x| G(|x|/s)``, accurate to ~1e-4 there, so one step usually lands within
1e-15; a step smaller than 1e-3 relative is accepted (the quartic error left is ~0.07 ds^4).
A chain is solved in lockstep, one step for every unfinished contract per pass, so the CPU
overlaps the contracts' latency chains.
"""

from __future__ import annotations

import math
from enum import IntEnum
from typing import Final, NamedTuple

import numpy as np
import numpy.typing as npt
from numba import njit

from services.options.black_scholes import (
    FloatArray,
    Greeks,
    broadcast_inputs,
    call_flags,
    greeks_core,
    horner,
    mills_ratio,
    mills_ratio_any,
)


class IVStatus(IntEnum):
    """Why a contract has (or lacks) an implied volatility."""

    OK = 0
    BELOW_INTRINSIC = 1  # price below the discounted intrinsic value
    ABOVE_MAX = 2  # price at or above the upper bound: df*F for calls, df*K for puts
    NO_TIME_VALUE = 3  # price equals intrinsic, or vega below VEGA_FLOOR
    INVALID_INPUT = 4  # non-finite input, price < 0, forward/strike <= 0, or t <= 0 (expired)
    NO_QUOTE = 5  # set by chain analysis: no usable two-sided quote (ask <= 0 or crossed)


VEGA_FLOOR: Final = 1e-6
"""Minimum normalised vega ``vega / sqrt(F K)`` (undiscounted, per 1.00 of vol) for an OK status."""

_MAX_ITER = 40
_REL_TOL = 1e-3  # accept s + ds once |ds| <= 1e-3 s: the error left is ~C ds^4, C < 0.1 (quartic method)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)
_SQRT_2PI = math.sqrt(2.0 * math.pi)
_LN_SQRT_2PI = 0.5 * math.log(2.0 * math.pi)
_OK, _BELOW, _ABOVE, _NO_TV, _INVALID = 0, 1, 2, 3, 4


class IVResult(NamedTuple):
    """Implied vols (NaN unless status is OK) and an :class:`IVStatus` code per contract."""

    iv: FloatArray
    status: npt.NDArray[np.int8]


# Wichura's AS241 (PPND16) rational approximations of the normal quantile, lowest degree first.
_AS241_A = (
    3.387132872796366608, 133.14166789178437745, 1971.5909503065514427, 13731.693765509461125,
    45921.953931549871457, 67265.770927008700853, 33430.575583588128105, 2509.0809287301226727,
)  # fmt: skip
_AS241_B = (
    1.0, 42.313330701600911252, 687.1870074920579083, 5394.1960214247511077,
    21213.794301586595867, 39307.89580009271061, 28729.085735721942674, 5226.495278852545561,
)  # fmt: skip
_AS241_C = (
    1.42343711074968357734, 4.6303378461565452959, 5.7694972214606914055, 3.64784832476320460504,
    1.27045825245236838258, 0.24178072517745061177, 0.0227238449892691845833, 7.7454501427834140764e-4,
)  # fmt: skip
_AS241_D = (
    1.0, 2.05319162663775882187, 1.6763848301838038494, 0.68976733498510000455,
    0.14810397642748007459, 0.0151986665636164571966, 5.475938084995344946e-4, 1.05075007164441684324e-9,
)  # fmt: skip
_AS241_E = (
    6.6579046435011037772, 5.4637849111641143699, 1.7848265399172913358, 0.29656057182850489123,
    0.026532189526576123093, 0.0012426609473880784386, 2.71155556874348757815e-5, 2.01033439929228813265e-7,
)  # fmt: skip
_AS241_F = (
    1.0, 0.59983220655588793769, 0.13692988092273580531, 0.0148753612908506148525,
    7.868691311456132591e-4, 1.8463183175100546818e-5, 1.4215117583164458887e-7, 2.04426310338993978564e-15,
)  # fmt: skip


@njit(cache=True)
def inverse_ncdf(p: float) -> float:
    """Inverse standard normal CDF (Wichura's AS241, relative accuracy ~1e-16)."""
    if not (0.0 < p < 1.0):
        if p == 0.0:
            return -math.inf
        if p == 1.0:
            return math.inf
        return math.nan
    q = p - 0.5
    if abs(q) <= 0.425:
        r = 0.180625 - q * q
        return q * horner(_AS241_A, r) / horner(_AS241_B, r)
    r = math.sqrt(-math.log(p if q < 0.0 else 1.0 - p))
    if r <= 5.0:
        z = horner(_AS241_C, r - 1.6) / horner(_AS241_D, r - 1.6)
    else:
        z = horner(_AS241_E, r - 5.0) / horner(_AS241_F, r - 5.0)
    return -z if q < 0.0 else z


# Inverse of the Bachelier function G(v) = (phi(v) - v Phi(-v))/v, the normalised OTM price per unit
# moneyness while s << s_c (b ~ s psi(|x|/s) = |x| G(|x|/s)). Least-squares Chebyshev fits (4000
# points each), stored as power series in t in [-1, 1] for Estrin evaluation: ln v against ln G for
# 0.02 <= v <= 1.5 (max relative error 1.6e-5) and v/sqrt(2L), L = -ln G, against 1/sqrt(L + 1) for
# 1.5 <= v <= 40 (1.0e-5). Tests check them against G itself.
_GINV_LOW_DOMAIN = (-3.9354010289138754, 2.9679037939003687)
_GINV_HIGH_DOMAIN = (0.03507180193550309, 0.45013084766836803)


@njit(cache=True, inline="always")
def _ginv_low(t: float) -> float:
    t2 = t * t
    t4 = t2 * t2
    q0 = (-0.9590689183007944 - 2.19995560093 * t) + (-1.0211279150419073 + 0.02279392472638702 * t) * t2
    q1 = (0.35431170662458794 + 0.055095504895315076 * t) + (-0.1963489248310539 - 0.06559638868111488 * t) * t2
    q2 = (0.09010451968205435 + 0.03834987420031071 * t) + (-0.021165667135858365 - 0.009431191100851024 * t) * t2
    return q0 + (q1 + q2 * t4) * t4


@njit(cache=True, inline="always")
def _ginv_high(t: float) -> float:
    t2 = t * t
    t4 = t2 * t2
    q0 = (0.8062526353078844 - 0.26161131703840723 * t) + (-0.04668474689475405 + 0.030749519975381407 * t) * t2
    q1 = (0.006081822495545268 + 0.0016726504879629846 * t) + (-0.0015032538952332898 + 0.00022113641744935992 * t) * t2
    return q0 + (q1 - 0.0005189319443439412 * t4) * t4


@njit(cache=True)
def bachelier_g_inverse(ln_g: float) -> float:
    """v > 0 with ln G(v) = ln_g, G(v) = (phi(v) - v Phi(-v))/v (relative accuracy ~2e-5)."""
    lo, hi = _GINV_LOW_DOMAIN
    if ln_g > hi:
        # v < 0.02: G = phi(0)/v - 1/2 + phi(0) v/2 + O(v^3), inverted to second order.
        gp = math.exp(ln_g) + 0.5
        return _INV_SQRT_2PI / gp * (1.0 + 0.5 / (2.0 * math.pi * gp * gp))
    if ln_g >= lo:
        return math.exp(_ginv_low((2.0 * ln_g - lo - hi) / (hi - lo)))
    big_l = -ln_g
    z = 1.0 / math.sqrt(big_l + 1.0)
    zlo, zhi = _GINV_HIGH_DOMAIN
    t = max((2.0 * z - zlo - zhi) / (zhi - zlo), -1.0)  # v > 40 only for prices below 1e-300
    return _ginv_high(t) * math.sqrt(2.0 * big_l)


@njit(cache=True)
def _normalise(
    price: float, f: float, k: float, t: float, rate: float, is_call: bool
) -> tuple[int, float, float, float]:
    """(status, x, beta, e^{x/2}): check the bounds, map to the OTM call ``b(x, s) = beta``, x <= 0."""
    if not (
        math.isfinite(price) and math.isfinite(f) and math.isfinite(k) and math.isfinite(t) and math.isfinite(rate)
    ):
        return _INVALID, 0.0, 0.0, 1.0
    if price < 0.0 or f <= 0.0 or k <= 0.0 or t <= 0.0:
        return _INVALID, 0.0, 0.0, 1.0
    p = price if rate == 0.0 else price * math.exp(rate * t)
    intrinsic = max(f - k, 0.0) if is_call else max(k - f, 0.0)
    if p < intrinsic:
        return _BELOW, 0.0, 0.0, 1.0
    if p >= (f if is_call else k):
        return _ABOVE, 0.0, 0.0, 1.0
    # Subtract intrinsic in price space as py_lets_be_rational does, so both round the same way.
    tv = p - intrinsic
    if tv <= 0.0:
        return _NO_TV, 0.0, 0.0, 1.0
    # ITM -> OTM by put-call parity, puts -> calls by x -> -x: what is left is an OTM call.
    x = -abs(math.log(f / k))
    beta = tv / (math.sqrt(f) * math.sqrt(k))
    ex = math.exp(0.5 * x)
    if beta >= ex:
        return _ABOVE, 0.0, 0.0, 1.0
    return _OK, x, beta, ex


@njit(cache=True)
def _start(beta: float, x: float, ex: float) -> tuple[float, float, float, float, float]:
    """Initial guess, bracket and objective of the OTM call problem: (s, lo, hi, target, sign).

    ``sign`` +1 selects the objective ln b(s) - ln beta (prices up to half their bound), -1 the
    objective ln(b_max - b(s)) - ln(b_max - beta) (prices near the bound, where b carries no digits).
    """
    sc = math.sqrt(-2.0 * x)
    # At s_c, h + t = 0 and b'(s_c) = e^{x/2}/sqrt(2 pi), so b(s_c) = e^{x/2} (1/2 - M(s_c)/sqrt(2 pi)).
    bc = ex * (0.5 - mills_ratio(sc) * _INV_SQRT_2PI)
    if x < 0.0 and beta < bc:
        # While s << s_c the price is Bachelier's: b ~ |x| G(|x|/s) to O(s^2), so invert G (error ~1e-4).
        ln_beta = math.log(beta)
        s = -x / bachelier_g_inverse(ln_beta - math.log(-x))
        return (s if 0.0 < s < sc else 0.5 * sc), 0.0, sc, ln_beta, 1.0
    ut = ex - beta  # b_max - beta, the distance to the upper bound
    # At the money b_max - b = 2 Phi(-s/2); the cosh factor spreads it over both terms for x != 0.
    s = -2.0 * inverse_ncdf(ut / (ex + 1.0 / ex))
    # b is concave above s_c, so the tangent there reaches beta no later than b does.
    s = max(s, sc + (beta - bc) * _SQRT_2PI / ex)
    if beta <= 0.5 * ex:
        return s, sc, math.inf, math.log(beta), 1.0
    return s, sc, math.inf, math.log(ut), -1.0


@njit(cache=True)
def _step(x: float, s: float, lo: float, hi: float, target: float, sign: float) -> tuple[float, float, float, bool]:
    """One bracketed Householder(3) step on the log objective: (s, lo, hi, converged).

    With h = x/s, t = s/2, M the Mills ratio and b' = exp(-(h^2 + t^2)/2)/sqrt(2 pi), sign +1 has
    b = b' (M(-h-t) - M(t-h)) and sign -1 has b_max - b = b' (M(h+t) + M(t-h)): the log objective
    costs one log and two rational functions (plus an exp for M of a negative argument, s > s_c)
    and never underflows, since b' itself is never formed.
    """
    inv_s = 1.0 / s
    h = x * inv_s
    t = 0.5 * s
    if sign > 0.0:
        val = mills_ratio_any(-h - t) - mills_ratio(t - h)
    else:
        val = mills_ratio(h + t) + mills_ratio(t - h)
    if not val > 0.0:
        # Round-off ate the difference, which only happens far left of the root: bisect rightward.
        lo = s
        s_new = 0.5 * (lo + hi)
        return s_new, lo, hi, hi - lo <= 4e-16 * s_new
    g = math.log(val) - 0.5 * (h * h + t * t) - _LN_SQRT_2PI - target
    # The objective increases with s in the lower branch and decreases in the upper one.
    if g * sign > 0.0:
        hi = s
    else:
        lo = s
    # g' = sign/val; with r2 = b''/b' and r3 = b'''/b', g''/g' = r2 - g' and g'''/g' = r3 - 3 g' g''/g' - g'^2.
    g1 = sign / val
    x2s3 = x * x * inv_s * inv_s * inv_s
    r2 = x2s3 - 0.25 * s
    r3 = r2 * r2 - 3.0 * x2s3 * inv_s - 0.25
    newton = -g * sign * val
    halley = r2 - g1
    hh3 = r3 - 3.0 * g1 * halley - g1 * g1
    ds = newton * (1.0 + 0.5 * halley * newton) / (1.0 + newton * (halley + hh3 * newton / 6.0))
    if abs(ds) <= _REL_TOL * s:
        # Converged; no bracket test because round-off may leave s on its edge.
        return s + ds, lo, hi, True
    s_new = s + ds
    if not (lo < s_new < hi) or not math.isfinite(s_new):
        s_new = 0.5 * (lo + hi) if hi < math.inf else 2.0 * max(s, lo)
    return s_new, lo, hi, hi - lo <= 4e-16 * s_new


@njit(cache=True)
def _finish(x: float, s: float, t: float) -> tuple[float, int, float]:
    """(vol, status, b'(s)): NaN with NO_TIME_VALUE when the normalised vega is below the floor."""
    sqrt_t = math.sqrt(t)
    if not (math.isfinite(s) and s > 0.0):
        return math.nan, _NO_TV, 0.0
    h = x / s
    bp = _INV_SQRT_2PI * math.exp(-0.5 * (h * h + 0.25 * s * s))
    if not sqrt_t * bp >= VEGA_FLOOR:
        return math.nan, _NO_TV, bp
    return s / sqrt_t, _OK, bp


@njit(cache=True)
def implied_vol_kernel(price: float, f: float, k: float, t: float, rate: float, is_call: bool) -> tuple[float, int]:
    """(iv, status) of one discounted price; see :class:`IVStatus`."""
    st, x, beta, ex = _normalise(price, f, k, t, rate, is_call)
    if st != _OK:
        return math.nan, st
    s, lo, hi, target, sign = _start(beta, x, ex)
    for _ in range(_MAX_ITER):
        s, lo, hi, done = _step(x, s, lo, hi, target, sign)
        if done:
            break
    vol, status, _ = _finish(x, s, t)
    return vol, status


@njit(cache=True)
def _iv_batch(
    price: FloatArray,
    f: FloatArray,
    k: FloatArray,
    t: FloatArray,
    rate: FloatArray,
    spot: FloatArray,
    is_call: npt.NDArray[np.bool_],
    iv: FloatArray,
    status: npt.NDArray[np.int8],
    greeks: FloatArray,
    with_greeks: bool,
) -> None:
    """The scalar kernel run in lockstep over a chain, then Greeks at the solved vols.

    Each pass over the still-active contracts does one step for each; those steps are independent,
    so the CPU overlaps their long division/log latency chains, which a contract-at-a-time loop
    cannot. The arithmetic, and so every vol, is the same as :func:`implied_vol_kernel`'s.
    """
    n = price.size
    xs = np.empty(n)
    ss = np.empty(n)
    los = np.empty(n)
    his = np.empty(n)
    targets = np.empty(n)
    signs = np.empty(n)
    active = np.empty(n, dtype=np.int64)
    m = 0
    for i in range(n):
        st, x, beta, ex = _normalise(price[i], f[i], k[i], t[i], rate[i], is_call[i])
        status[i] = st
        iv[i] = math.nan
        if st == _OK:
            xs[i] = x
            ss[i], los[i], his[i], targets[i], signs[i] = _start(beta, x, ex)
            active[m] = i
            m += 1
    for _ in range(_MAX_ITER):
        if m == 0:
            break
        still = 0
        for j in range(m):
            i = active[j]
            ss[i], los[i], his[i], done = _step(xs[i], ss[i], los[i], his[i], targets[i], signs[i])
            if not done:
                active[still] = i
                still += 1
        m = still
    nan = math.nan
    carry, carry_key = 0.0, (nan, nan, nan)
    for i in range(n):
        g = (nan, nan, nan, nan, nan, nan)
        if status[i] == _OK:
            vol, st, bp = _finish(xs[i], ss[i], t[i])
            iv[i] = vol
            status[i] = st
            if with_greeks and st == _OK:
                # Reuse the solve: ln(F/K) = -+x, d1 = ln(F/K)/s + s/2, pdf(d1) = b'(s) sqrt(K/F).
                fi, ki, ti, s = f[i], k[i], t[i], ss[i]
                if (fi, spot[i], ti) != carry_key:
                    # A chain repeats (F, S, t) within an expiry: one log per expiry, not per contract.
                    carry, carry_key = (0.0 if fi == spot[i] else math.log(fi / spot[i]) / ti), (fi, spot[i], ti)
                d1 = (-xs[i] if fi >= ki else xs[i]) / s + 0.5 * s
                g = greeks_core(
                    fi, ki, ti, math.sqrt(ti), vol, d1, bp * math.sqrt(ki / fi), rate[i], spot[i], carry, is_call[i]
                )
        if with_greeks:
            for j in range(6):
                greeks[j, i] = g[j]


def implied_vol(
    price: npt.ArrayLike,
    forward: npt.ArrayLike,
    strike: npt.ArrayLike,
    t: npt.ArrayLike,
    is_call: npt.ArrayLike,
    *,
    rate: npt.ArrayLike = 0.0,
) -> IVResult:
    """Implied vols of discounted Black-76 prices on the forward; never raises, never returns inf."""
    shape, (p, f, k, tt, r) = broadcast_inputs(price, forward, strike, t, rate)
    iv = np.empty(p.size)
    status = np.empty(p.size, dtype=np.int8)
    _iv_batch(p, f, k, tt, r, f, call_flags(is_call, shape), iv, status, np.empty((6, 0)), False)
    return IVResult(iv.reshape(shape), status.reshape(shape))


def implied_vol_greeks(
    price: npt.ArrayLike,
    forward: npt.ArrayLike,
    strike: npt.ArrayLike,
    t: npt.ArrayLike,
    is_call: npt.ArrayLike,
    *,
    rate: npt.ArrayLike = 0.0,
    spot: npt.ArrayLike | None = None,
) -> tuple[IVResult, Greeks]:
    """Implied vols and the Greeks at them in one pass (NaN Greeks where the status is not OK)."""
    shape, (p, f, k, tt, r, s) = broadcast_inputs(price, forward, strike, t, rate, forward if spot is None else spot)
    iv = np.empty(p.size)
    status = np.empty(p.size, dtype=np.int8)
    out = np.empty((6, p.size))
    _iv_batch(p, f, k, tt, r, s, call_flags(is_call, shape), iv, status, out, True)
    return IVResult(iv.reshape(shape), status.reshape(shape)), Greeks(*(out[i].reshape(shape) for i in range(6)))


def implied_vol_bsm(
    price: npt.ArrayLike,
    spot: npt.ArrayLike,
    strike: npt.ArrayLike,
    t: npt.ArrayLike,
    is_call: npt.ArrayLike,
    *,
    rate: npt.ArrayLike = 0.0,
    dividend: npt.ArrayLike = 0.0,
) -> IVResult:
    """Implied vols of Black-Scholes-Merton prices (spot, rate, continuous dividend yield)."""
    s, r, q, tt = (np.asarray(a, dtype=np.float64) for a in (spot, rate, dividend, t))
    return implied_vol(price, s * np.exp((r - q) * np.maximum(tt, 0.0)), strike, t, is_call, rate=rate)


def implied_vol_scalar(
    price: float, forward: float, strike: float, t: float, is_call: bool, *, rate: float = 0.0
) -> tuple[float, IVStatus]:
    """One contract's implied vol and status, on the same kernel as :func:`implied_vol`."""
    v, st = implied_vol_kernel(float(price), float(forward), float(strike), float(t), float(rate), bool(is_call))
    return float(v), IVStatus(int(st))
