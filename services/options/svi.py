"""Raw SVI smiles per expiry: a fast constrained fit and Gatheral's butterfly-arbitrage check.

``w(k) = a + b (rho (k - m) + sqrt((k - m)^2 + sigma^2))`` is total implied variance (vol^2 t) at
log-moneyness ``k = ln(K/F)``. Constraints: ``b >= 0``, ``|rho| <= RHO_MAX < 1``, ``sigma > 0``,
``a + b sigma sqrt(1 - rho^2) >= 0`` (the minimum of ``w`` is not negative) and Lee's moment bound
on the wings ``b (1 + |rho|) <= 2``.

The fit is Zeliade's quasi-explicit method: for fixed ``(m, sigma)`` the model is linear,
``w = a + d y + c sqrt(y^2 + 1)`` with ``y = (k - m)/sigma``, ``c = b sigma``, ``d = rho b sigma``,
and the constraints above carve a convex set out of ``(a, d, c)``. That inner weighted least
squares problem is solved exactly from ten weighted sums over the data: the unconstrained
solution if feasible, else the best of the boundary faces (four linear edges, solved in closed form,
and the curved face ``a = -sqrt(c^2 - d^2)``, a one-dimensional search over rho). A Nelder-Mead
search over ``(m, ln sigma)`` from four starts (sigma near the ATM total vol and near the strike
span) and a polish handles the outer two dimensions; by default it also penalises butterfly
arbitrage of the inner solution (see :func:`fit_svi`). Everything runs in numba: ~0.5 ms a fit.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Final, NamedTuple

import numpy as np
import numpy.typing as npt
from numba import njit

FloatArray = npt.NDArray[np.float64]

RHO_MAX: Final = 0.999
LEE_SLOPE: Final = 2.0  # b (1 + |rho|) <= 2: total variance grows at most 2|k| in the wings
G_TOLERANCE: Final = 1e-10  # g(k) above -G_TOLERANCE counts as free of butterfly arbitrage
_GOLDEN = 0.5 * (math.sqrt(5.0) - 1.0)


class SVIParams(NamedTuple):
    """Raw SVI parameters of one expiry's total-variance smile."""

    a: float
    b: float
    rho: float
    m: float
    sigma: float


@dataclass(frozen=True, slots=True)
class SVIFit:
    """An SVI fit: parameters, errors, and Gatheral's butterfly-arbitrage verdict on a k grid."""

    params: SVIParams
    rmse: float  # unweighted RMSE of total variance
    iv_rmse: float | None  # RMS implied-vol error with the fit's weights (when the expiry's t was given)
    butterfly_arbitrage_free: bool
    min_g: float  # minimum of Gatheral's g(k) on the check grid
    n_points: int
    evaluations: int  # inner least-squares solves used by the outer search


def svi_total_variance(params: SVIParams, k: npt.ArrayLike) -> FloatArray:
    """Total implied variance ``w(k)``."""
    a, b, rho, m, sigma = params
    km = np.asarray(k, dtype=np.float64) - m
    return a + b * (rho * km + np.sqrt(km * km + sigma * sigma))


def svi_implied_vol(params: SVIParams, k: npt.ArrayLike, t: float) -> FloatArray:
    """Implied vol ``sqrt(w(k)/t)`` (NaN where ``w < 0``)."""
    w = svi_total_variance(params, k)
    with np.errstate(invalid="ignore"):
        return np.sqrt(w / t)


def butterfly_g(params: SVIParams, k: npt.ArrayLike) -> FloatArray:
    """Gatheral's g(k) = (1 - k w'/(2w))^2 - w'^2/4 (1/w + 1/4) + w''/2; a density needs g >= 0."""
    a, b, rho, m, sigma = params
    kk = np.asarray(k, dtype=np.float64)
    km = kk - m
    root = np.sqrt(km * km + sigma * sigma)
    w = a + b * (rho * km + root)
    w1 = b * (rho + km / root)
    w2 = b * sigma * sigma / (root * root * root)
    with np.errstate(divide="ignore", invalid="ignore"):
        g = (1.0 - kk * w1 / (2.0 * w)) ** 2 - 0.25 * w1 * w1 * (1.0 / w + 0.25) + 0.5 * w2
    # A non-positive total variance is itself an arbitrage; report it as g = -inf.
    return np.where(w > 0.0, g, -np.inf)


def default_check_grid(k: npt.ArrayLike, n: int = 401) -> FloatArray:
    """The data's k range widened by half its span on each side (at least +-0.01), n points."""
    kk = np.asarray(k, dtype=np.float64)
    lo, hi = float(kk.min()), float(kk.max())
    pad = max(0.5 * (hi - lo), 0.01)
    return np.linspace(lo - pad, hi + pad, n)


def is_butterfly_arbitrage_free(params: SVIParams, k_grid: npt.ArrayLike) -> bool:
    """True when g(k) >= -G_TOLERANCE (and w(k) > 0) at every grid point."""
    return bool(np.min(butterfly_g(params, k_grid)) >= -G_TOLERANCE)


# --- the inner problem: exact constrained weighted least squares for fixed (m, sigma) ----------------


@njit(cache=True)
def _moments(k: FloatArray, w: FloatArray, wt: FloatArray, m: float, sig: float) -> FloatArray:
    """Weighted sums of 1, y, z, yy, zz, yz, w, wy, wz, ww with y = (k-m)/sigma, z = sqrt(y^2+1)."""
    out = np.zeros(10)
    for i in range(k.size):
        y = (k[i] - m) / sig
        z = math.sqrt(y * y + 1.0)
        q = wt[i]
        wi = w[i]
        out[0] += q
        out[1] += q * y
        out[2] += q * z
        out[3] += q * y * y
        out[4] += q * z * z
        out[5] += q * y * z
        out[6] += q * wi
        out[7] += q * wi * y
        out[8] += q * wi * z
        out[9] += q * wi * wi
    return out


@njit(cache=True)
def _sse(mo: FloatArray, a: float, d: float, c: float) -> float:
    """Weighted squared error of a + d y + c z from the moments (a quadratic form, O(1))."""
    s1, sy, sz, syy, szz, syz, sw, swy, swz, sww = mo[0], mo[1], mo[2], mo[3], mo[4], mo[5], mo[6], mo[7], mo[8], mo[9]
    quad = a * a * s1 + d * d * syy + c * c * szz + 2.0 * (a * d * sy + a * c * sz + d * c * syz)
    lin = a * sw + d * swy + c * swz
    return float(max(quad - 2.0 * lin + sww, 0.0))


@njit(cache=True)
def _sse_exact(
    k: FloatArray, w: FloatArray, wt: FloatArray, m: float, sig: float, a: float, d: float, c: float
) -> float:
    """The same error summed point by point: the quadratic form cancels to noise near a perfect fit."""
    total = 0.0
    for i in range(k.size):
        y = (k[i] - m) / sig
        r = a + d * y + c * math.sqrt(y * y + 1.0) - w[i]
        total += wt[i] * r * r
    return total


@njit(cache=True)
def _refined_sse(
    mo: FloatArray, k: FloatArray, w: FloatArray, wt: FloatArray, m: float, sig: float, a: float, d: float, c: float
) -> float:
    """The quadratic form, or the point-by-point sum once the fit is so close that the form is noise."""
    sse = _sse(mo, a, d, c)
    return sse if sse > 1e-8 * mo[9] else _sse_exact(k, w, wt, m, sig, a, d, c)


@njit(cache=True)
def _feasible(a: float, d: float, c: float, sig: float) -> bool:
    tol = 1e-12 * (1.0 + abs(a) + c)
    if c < -tol or abs(d) > RHO_MAX * c + tol or c + abs(d) > LEE_SLOPE * sig + tol:
        return False
    return a + math.sqrt(max(c * c - d * d, 0.0)) >= -tol


@njit(cache=True)
def _edge(mo: FloatArray, p: float, q: float, e: float, cmin: float, cmax: float) -> tuple[float, float, float]:
    """Best (a, c, offset) on the model a + c (p y + q z) + e y with c clipped to [cmin, cmax]."""
    s1, sy, sz, syy, szz, syz, sw, swy, swz = mo[0], mo[1], mo[2], mo[3], mo[4], mo[5], mo[6], mo[7], mo[8]
    su = p * sy + q * sz
    suu = p * p * syy + 2.0 * p * q * syz + q * q * szz
    sr = sw - e * sy  # residual target r = w - e y
    sur = (p * swy + q * swz) - e * (p * syy + q * syz)
    det = s1 * suu - su * su
    c = (s1 * sur - su * sr) / det if det > 1e-300 else cmin
    c = min(max(c, cmin), cmax)
    a = (sr - c * su) / s1
    return a, c, e


@njit(cache=True)
def _surface_at(mo: FloatArray, sig: float, rho: float) -> tuple[float, float]:
    """(sse, c) on the curved face at a given rho: the model is c g(y) with g = rho y + z - sqrt(1-rho^2)."""
    s1, sy, sz, syy, szz, syz, sw, swy, swz, sww = mo[0], mo[1], mo[2], mo[3], mo[4], mo[5], mo[6], mo[7], mo[8], mo[9]
    q = math.sqrt(1.0 - rho * rho)
    sgg = rho * rho * syy + szz + q * q * s1 + 2.0 * rho * syz - 2.0 * rho * q * sy - 2.0 * q * sz
    sgw = rho * swy + swz - q * sw
    c = sgw / sgg if sgg > 1e-300 else 0.0
    c = min(max(c, 0.0), LEE_SLOPE * sig / (1.0 + abs(rho)))
    return max(sww - 2.0 * c * sgw + c * c * sgg, 0.0), c


@njit(cache=True)
def _surface(mo: FloatArray, sig: float) -> tuple[float, float, float, float]:
    """Best (sse, a, d, c) on the curved face a = -sqrt(c^2 - d^2): golden search over rho."""
    lo, hi = -RHO_MAX, RHO_MAX
    x1 = hi - _GOLDEN * (hi - lo)
    x2 = lo + _GOLDEN * (hi - lo)
    f1, c1 = _surface_at(mo, sig, x1)
    f2, c2 = _surface_at(mo, sig, x2)
    while hi - lo > 1e-9:
        if f1 <= f2:
            hi, x2, f2, c2 = x2, x1, f1, c1
            x1 = hi - _GOLDEN * (hi - lo)
            f1, c1 = _surface_at(mo, sig, x1)
        else:
            lo, x1, f1, c1 = x1, x2, f2, c2
            x2 = lo + _GOLDEN * (hi - lo)
            f2, c2 = _surface_at(mo, sig, x2)
    rho, sse, c = (x1, f1, c1) if f1 <= f2 else (x2, f2, c2)
    # The ends rho = +-RHO_MAX are candidates too (the search only approaches them).
    for end in (-RHO_MAX, RHO_MAX):
        fe, ce = _surface_at(mo, sig, end)
        if fe < sse:
            rho, sse, c = end, fe, ce
    d = rho * c
    return sse, -math.sqrt(max(c * c - d * d, 0.0)), d, c


@njit(cache=True)
def _inner(k: FloatArray, w: FloatArray, wt: FloatArray, m: float, sig: float) -> tuple[float, float, float, float]:
    """(sse, a, d, c) of the constrained linear fit for fixed (m, sigma)."""
    mo = _moments(k, w, wt, m, sig)
    s1, sy, sz, syy, szz, syz, sw, swy, swz = mo[0], mo[1], mo[2], mo[3], mo[4], mo[5], mo[6], mo[7], mo[8]
    # Unconstrained 3x3 normal equations by Cramer's rule (symmetric, tiny).
    m00, m01, m02, m11, m12, m22 = s1, sy, sz, syy, syz, szz
    c00 = m11 * m22 - m12 * m12
    c01 = m02 * m12 - m01 * m22
    c02 = m01 * m12 - m02 * m11
    det = m00 * c00 + m01 * c01 + m02 * c02
    if abs(det) > 1e-300:
        c11 = m00 * m22 - m02 * m02
        c12 = m01 * m02 - m00 * m12
        c22 = m00 * m11 - m01 * m01
        a = (c00 * sw + c01 * swy + c02 * swz) / det
        d = (c01 * sw + c11 * swy + c12 * swz) / det
        c = (c02 * sw + c12 * swy + c22 * swz) / det
        if _feasible(a, d, c, sig):
            return _refined_sse(mo, k, w, wt, m, sig, a, d, c), a, d, c
    best, ba, bd, bc = math.inf, 0.0, 0.0, 0.0
    c1 = LEE_SLOPE * sig / (1.0 + RHO_MAX)  # where the rho = +-RHO_MAX edges meet Lee's bound
    for edge in range(4):
        if edge == 0:  # d = +RHO_MAX c
            a, c, _ = _edge(mo, RHO_MAX, 1.0, 0.0, 0.0, c1)
            d = RHO_MAX * c
        elif edge == 1:  # d = -RHO_MAX c
            a, c, _ = _edge(mo, -RHO_MAX, 1.0, 0.0, 0.0, c1)
            d = -RHO_MAX * c
        elif edge == 2:  # c + d = 2 sigma: a + 2 sigma y + c (z - y)
            a, c, _ = _edge(mo, -1.0, 1.0, LEE_SLOPE * sig, c1, LEE_SLOPE * sig)
            d = LEE_SLOPE * sig - c
        else:  # c - d = 2 sigma: a - 2 sigma y + c (y + z)
            a, c, _ = _edge(mo, 1.0, 1.0, -LEE_SLOPE * sig, c1, LEE_SLOPE * sig)
            d = c - LEE_SLOPE * sig
        if _feasible(a, d, c, sig):
            sse = _sse(mo, a, d, c)
            if sse < best:
                best, ba, bd, bc = sse, a, d, c
    sse, a, d, c = _surface(mo, sig)
    if sse < best:
        best, ba, bd, bc = sse, a, d, c
    return _refined_sse(mo, k, w, wt, m, sig, ba, bd, bc), ba, bd, bc


@njit(cache=True)
def _arbitrage(grid: FloatArray, a: float, b: float, rho: float, m: float, sig: float) -> float:
    """Mean of max(-g(k), 0) over the grid (1 where w(k) <= 0): zero for an arbitrage-free slice."""
    total = 0.0
    for i in range(grid.size):
        kk = grid[i]
        km = kk - m
        root = math.sqrt(km * km + sig * sig)
        w = a + b * (rho * km + root)
        if w <= 0.0:
            total += 1.0
            continue
        w1 = b * (rho + km / root)
        w2 = b * sig * sig / (root * root * root)
        u = 1.0 - kk * w1 / (2.0 * w)
        g = u * u - 0.25 * w1 * w1 * (1.0 / w + 0.25) + 0.5 * w2
        if g < 0.0:
            total -= g
    return total / grid.size


@njit(cache=True)
def _objective(
    k: FloatArray,
    w: FloatArray,
    wt: FloatArray,
    m: float,
    log_sig: float,
    bounds: FloatArray,
    grid: FloatArray,
    penalty: float,
) -> float:
    # Points outside the box are clipped onto it, which keeps the outer search continuous.
    m = min(max(m, bounds[0]), bounds[1])
    log_sig = min(max(log_sig, bounds[2]), bounds[3])
    sig = math.exp(log_sig)
    sse, a, d, c = _inner(k, w, wt, m, sig)
    if penalty > 0.0 and c > 0.0:
        sse += penalty * _arbitrage(grid, a, c / sig, d / c, m, sig)
    return sse


@njit(cache=True)
def _nelder_mead(
    k: FloatArray,
    w: FloatArray,
    wt: FloatArray,
    x0: float,
    y0: float,
    step_x: float,
    step_y: float,
    bounds: FloatArray,
    max_iter: int,
    grid: FloatArray,
    penalty: float,
) -> tuple[float, float, float, int]:
    """2-D Nelder-Mead over (m, ln sigma): (best m, best ln sigma, best sse, evaluations)."""
    px = np.array([x0, x0 + step_x, x0])
    py = np.array([y0, y0, y0 + step_y])
    fv = np.empty(3)
    for i in range(3):
        fv[i] = _objective(k, w, wt, px[i], py[i], bounds, grid, penalty)
    evals = 3
    for _ in range(max_iter):
        order = np.argsort(fv)
        px, py, fv = px[order], py[order], fv[order]
        size = max(abs(px[1] - px[0]), abs(px[2] - px[0]), abs(py[1] - py[0]), abs(py[2] - py[0]))
        # Done when the simplex is tiny, or flat to 1e-10 while already small (noisy data cannot
        # do better, and a perfect fit keeps shrinking until the size test ends it).
        if size < 1e-8 or (fv[2] - fv[0] <= 1e-10 * fv[0] and size < 1e-4):
            break
        cx = 0.5 * (px[0] + px[1])
        cy = 0.5 * (py[0] + py[1])
        rx, ry = cx + (cx - px[2]), cy + (cy - py[2])
        fr = _objective(k, w, wt, rx, ry, bounds, grid, penalty)
        evals += 1
        if fr < fv[0]:
            ex, ey = cx + 2.0 * (cx - px[2]), cy + 2.0 * (cy - py[2])
            fe = _objective(k, w, wt, ex, ey, bounds, grid, penalty)
            evals += 1
            if fe < fr:
                px[2], py[2], fv[2] = ex, ey, fe
            else:
                px[2], py[2], fv[2] = rx, ry, fr
        elif fr < fv[1]:
            px[2], py[2], fv[2] = rx, ry, fr
        else:
            if fr < fv[2]:
                qx, qy = cx + 0.5 * (rx - cx), cy + 0.5 * (ry - cy)
            else:
                qx, qy = cx + 0.5 * (px[2] - cx), cy + 0.5 * (py[2] - cy)
            fq = _objective(k, w, wt, qx, qy, bounds, grid, penalty)
            evals += 1
            if fq < min(fr, fv[2]):
                px[2], py[2], fv[2] = qx, qy, fq
            else:
                for i in (1, 2):
                    px[i] = px[0] + 0.5 * (px[i] - px[0])
                    py[i] = py[0] + 0.5 * (py[i] - py[0])
                    fv[i] = _objective(k, w, wt, px[i], py[i], bounds, grid, penalty)
                evals += 2
    i = int(np.argmin(fv))
    return min(max(px[i], bounds[0]), bounds[1]), min(max(py[i], bounds[2]), bounds[3]), fv[i], evals


@njit(cache=True)
def _fit(
    k: FloatArray, w: FloatArray, wt: FloatArray, grid: FloatArray, penalty: float
) -> tuple[float, float, float, float, float, int]:
    """(a, b, rho, m, sigma, evaluations) of the best of four Nelder-Mead starts, then a polish."""
    kmin, kmax = k.min(), k.max()
    span = max(kmax - kmin, 1e-4)
    # sigma lives on the smile's own scale: about the ATM total vol sqrt(w) (tiny for a 0DTE), which
    # can be far below the strike span, so the starts and the box cover both scales.
    atm_sd = math.sqrt(max(w.min(), 1e-12))
    sig_lo, sig_hi = min(1e-3 * span, 0.05 * atm_sd), 10.0 * max(span, 0.1)
    bounds = np.array([kmin - span, kmax + span, math.log(sig_lo), math.log(sig_hi)])
    m0 = k[np.argmin(w)]
    best_f, best_m, best_ls, evals = math.inf, m0, math.log(0.2 * span), 0
    for sig0 in (0.5 * atm_sd, 2.0 * atm_sd, 0.1 * span, 0.5 * span):
        ls0 = min(max(math.log(sig0), bounds[2]), bounds[3])
        mm, ls, f, e = _nelder_mead(k, w, wt, m0, ls0, 0.1 * span, 0.7, bounds, 400, grid, penalty)
        evals += e
        if f < best_f:
            best_f, best_m, best_ls = f, mm, ls
    # Polish from the winner: a fresh simplex escapes a collapsed one.
    mm, ls, f, e = _nelder_mead(k, w, wt, best_m, best_ls, 0.01 * span, 0.05, bounds, 400, grid, penalty)
    evals += e
    if f < best_f:
        best_m, best_ls = mm, ls
    sig = math.exp(best_ls)
    _, a, d, c = _inner(k, w, wt, best_m, sig)
    b = c / sig
    rho = d / c if c > 0.0 else 0.0
    return a, b, rho, best_m, sig, evals


def fit_svi(
    k: npt.ArrayLike,
    w: npt.ArrayLike,
    weights: npt.ArrayLike | None = None,
    *,
    t: float | None = None,
    check_grid: npt.ArrayLike | None = None,
    avoid_arbitrage: bool = True,
) -> SVIFit:
    """Fit raw SVI to total variances ``w`` at log-moneyness ``k`` (>= 5 finite points, weights >= 0).

    ``weights`` default to equal; pass e.g. vega/spread to trust tight quotes more. ``t`` (years)
    adds the weighted implied-vol RMSE. The butterfly check runs on ``check_grid`` (default: the data's range
    widened by half its span on each side). With ``avoid_arbitrage`` the outer search adds a penalty
    (the mean square of the data's total variance times the mean of max(-g, 0) on a 64-point grid),
    so where an arbitrage-free smile fits nearly as well it wins over a kinked one that fits noise;
    the verdict is still computed, never assumed.
    """
    kk = np.asarray(k, dtype=np.float64).ravel()
    ww = np.asarray(w, dtype=np.float64).ravel()
    wt = np.ones_like(kk) if weights is None else np.asarray(weights, dtype=np.float64).ravel()
    keep = np.isfinite(kk) & np.isfinite(ww) & np.isfinite(wt) & (wt > 0.0)
    kk, ww, wt = kk[keep], ww[keep], wt[keep]
    if kk.size < 5:
        raise ValueError(f"an SVI fit needs at least 5 finite points with positive weight, got {kk.size}")
    wt = np.ascontiguousarray(wt / wt.sum())
    kk, ww = np.ascontiguousarray(kk), np.ascontiguousarray(ww)
    grid = default_check_grid(kk) if check_grid is None else np.asarray(check_grid, dtype=np.float64)
    coarse = np.ascontiguousarray(np.linspace(grid.min(), grid.max(), 64))
    penalty = float(np.sum(wt * ww * ww)) if avoid_arbitrage else 0.0
    a, b, rho, m, sigma, evals = _fit(kk, ww, wt, coarse, penalty)
    params = SVIParams(float(a), float(b), float(rho), float(m), float(sigma))
    fitted = svi_total_variance(params, kk)
    rmse = float(np.sqrt(np.mean((fitted - ww) ** 2)))
    iv_rmse = None
    if t is not None and t > 0.0:
        # Weighted like the fit, so a far wing of one-tick quotes does not drown the smile's error.
        iv_err = np.sqrt(np.maximum(fitted, 0.0) / t) - np.sqrt(np.maximum(ww, 0.0) / t)
        iv_rmse = float(np.sqrt(np.sum(wt * iv_err * iv_err)))
    min_g = float(np.min(butterfly_g(params, grid)))
    return SVIFit(
        params=params,
        rmse=rmse,
        iv_rmse=iv_rmse,
        butterfly_arbitrage_free=min_g >= -G_TOLERANCE,
        min_g=min_g,
        n_points=int(kk.size),
        evaluations=int(evals),
    )
