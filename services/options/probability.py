"""Risk-neutral probabilities: finishing in the money, and touching a strike before expiry.

Finishing ITM: under Black-76 on the forward, ``P(S_T > K) = N(d2)`` with
``d2 = (ln(F/K) - vol^2 t/2) / (vol sqrt t)`` (calls; puts ``N(-d2)``).

Touch: the underlying is geometric Brownian motion ``S_t = S exp(nu t + vol W_t)`` with log drift
``nu = mu - vol^2/2`` (``mu`` is the asset's drift: ``r - q``, or the chain's carry ``ln(F/S)/t``).
For a barrier ``K`` at log distance ``b = ln(K/S)`` the reflection principle with a Girsanov change
of measure gives the exact first-passage probability (e.g. Shreve, Stochastic Calculus II, 7.2):

with ``sd = vol sqrt t``:

- ``b > 0`` (strike above): ``P(max X >= b) = N((nu t - b)/sd) + exp(2 nu b/vol^2) N((-b - nu t)/sd)``
- ``b < 0`` (strike below): ``P(min X <= b) = N((b - nu t)/sd) + exp(2 nu b/vol^2) N((b + nu t)/sd)``

With ``nu = 0`` both reduce to ``2 P(X_t beyond b)``, the textbook "touch is twice finish" rule,
which only holds for a driftless *log* price. A strike at spot has been touched (1.0); with no time
left the answer is 1.0 at the strike and 0.0 elsewhere. The second term is evaluated in log space
(``exp(2 nu b/vol^2 + ln N(.))``) so it neither overflows nor turns 0 * inf into NaN.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt
from numba import njit

from services.options.black_scholes import FloatArray, broadcast_inputs, ncdf

_LN_SQRT_2PI = 0.5 * math.log(2.0 * math.pi)


@njit(cache=True)
def log_ncdf(z: float) -> float:
    """ln N(z), accurate where N(z) underflows (asymptotic Mills series below z = -30)."""
    if z > -30.0:
        return math.log(ncdf(z))
    iz2 = 1.0 / (z * z)
    return -0.5 * z * z - math.log(-z) - _LN_SQRT_2PI + math.log1p(-iz2 * (1.0 - iz2 * (3.0 - 15.0 * iz2)))


@njit(cache=True)
def touch_scalar(spot: float, strike: float, t: float, vol: float, drift: float) -> float:
    """Probability that GBM started at ``spot`` reaches ``strike`` within ``t`` years."""
    if not (spot > 0.0 and strike > 0.0 and math.isfinite(t) and math.isfinite(vol) and math.isfinite(drift)):
        return math.nan
    b = math.log(strike / spot)
    if b == 0.0:
        return 1.0
    if t <= 0.0:
        return 0.0
    if not vol > 0.0:
        return math.nan
    sd = vol * math.sqrt(t)
    nu = drift - 0.5 * vol * vol
    if b > 0.0:
        first = ncdf((nu * t - b) / sd)
        second_log = 2.0 * nu * b / (vol * vol) + log_ncdf((-b - nu * t) / sd)
    else:
        first = ncdf((b - nu * t) / sd)
        second_log = 2.0 * nu * b / (vol * vol) + log_ncdf((b + nu * t) / sd)
    p = first + math.exp(second_log)
    return min(max(p, 0.0), 1.0)


@njit(cache=True)
def _touch_loop(s: FloatArray, k: FloatArray, t: FloatArray, v: FloatArray, mu: FloatArray, out: FloatArray) -> None:
    for i in range(s.size):
        out[i] = touch_scalar(s[i], k[i], t[i], v[i], mu[i])


@njit(cache=True)
def _itm_loop(f: FloatArray, k: FloatArray, t: FloatArray, v: FloatArray, call: FloatArray, out: FloatArray) -> None:
    for i in range(f.size):
        fi, ki, ti, vi = f[i], k[i], t[i], v[i]
        if not (fi > 0.0 and ki > 0.0 and math.isfinite(ti) and math.isfinite(vi)):
            out[i] = math.nan
        elif ti <= 0.0 or vi <= 0.0:
            # No randomness left: ITM or not by the forward (at the strike counts as not ITM).
            itm = fi > ki if call[i] > 0.0 else fi < ki
            out[i] = 1.0 if itm else 0.0
        else:
            sd = vi * math.sqrt(ti)
            d2 = math.log(fi / ki) / sd - 0.5 * sd
            out[i] = ncdf(d2) if call[i] > 0.0 else ncdf(-d2)


def prob_itm(
    forward: npt.ArrayLike, strike: npt.ArrayLike, t: npt.ArrayLike, vol: npt.ArrayLike, is_call: npt.ArrayLike
) -> FloatArray:
    """Risk-neutral probability of finishing in the money: N(d2) for calls, N(-d2) for puts."""
    shape, (f, k, tt, v, c) = broadcast_inputs(forward, strike, t, vol, np.asarray(is_call, dtype=np.float64))
    out = np.empty(f.size)
    _itm_loop(f, k, tt, v, c, out)
    return out.reshape(shape)


def prob_touch(
    spot: npt.ArrayLike, strike: npt.ArrayLike, t: npt.ArrayLike, vol: npt.ArrayLike, *, drift: npt.ArrayLike = 0.0
) -> FloatArray:
    """Probability of touching ``strike`` before ``t`` for GBM with asset drift ``drift`` (risk neutral: r - q)."""
    shape, (s, k, tt, v, mu) = broadcast_inputs(spot, strike, t, vol, drift)
    out = np.empty(s.size)
    _touch_loop(s, k, tt, v, mu, out)
    return out.reshape(shape)
