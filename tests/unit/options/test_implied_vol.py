"""Implied vols against py_lets_be_rational (Jäckel), no-arbitrage bounds, and round trips."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from py_lets_be_rational import black as lbr_black
from py_lets_be_rational import implied_volatility_from_a_transformed_rational_guess as lbr_iv
from py_lets_be_rational.exceptions import AboveMaximumException, BelowIntrinsicException
from scipy.special import erfcx, ndtri

from services.options.black_scholes import black76_greeks, black76_price, erfcx_nonneg
from services.options.implied_vol import (
    VEGA_FLOOR,
    IVStatus,
    bachelier_g_inverse,
    implied_vol,
    implied_vol_bsm,
    implied_vol_greeks,
    implied_vol_scalar,
    inverse_ncdf,
)

MINUTE = 1.0 / (365 * 24 * 60)
TOLERANCE = 1e-8


def _reference(price: float, f: float, k: float, t: float, is_call: bool, rate: float = 0.0) -> float:
    """py_lets_be_rational on the undiscounted price; NaN where it refuses (bounds)."""
    try:
        return float(lbr_iv(price * math.exp(rate * t), f, k, t, 1.0 if is_call else -1.0))
    except (BelowIntrinsicException, AboveMaximumException):
        return math.nan


def _grid() -> tuple[np.ndarray, ...]:
    """Moneyness +-30 %, expiries 1 minute .. 1 year, vols 3 % .. 400 %, calls and puts."""
    f = 100.0
    ks = f * np.exp(np.linspace(math.log(0.7), math.log(1.3), 41))
    ts = np.array([MINUTE, 5 * MINUTE, 30 * MINUTE, 3.25 / 24 / 365, 1 / 365, 7 / 365, 30 / 365, 0.25, 1.0])
    vols = np.array([0.03, 0.08, 0.15, 0.3, 0.6, 1.2, 4.0])
    k, t, v, c = (a.ravel() for a in np.meshgrid(ks, ts, vols, [True, False], indexing="ij"))
    price = np.array([lbr_black(f, kk, vv, tt, 1.0 if cc else -1.0) for kk, vv, tt, cc in zip(k, v, t, c, strict=True)])
    return np.full(k.size, f), k, t, v, c, price


@pytest.mark.parametrize("rate", [0.0, 0.05])
def test_matches_lets_be_rational_where_vega_is_above_the_floor(rate: float) -> None:
    f, k, t, vol, call, undiscounted = _grid()
    price = undiscounted * np.exp(-rate * t)
    res = implied_vol(price, f, k, t, call, rate=rate)
    ok = res.status == IVStatus.OK
    ref = np.array(
        [_reference(p, ff, kk, tt, cc, rate) for p, ff, kk, tt, cc in zip(price, f, k, t, call, strict=True)]
    )
    err = np.abs(res.iv - ref)[ok]
    print(f"\nrate {rate}: {ok.sum()} of {ok.size} contracts OK, max |iv - lets_be_rational| = {err.max():.2e}")
    assert err.max() <= TOLERANCE
    # Coverage: every contract whose normalised vega clears the floor with margin is solved.
    norm_vega = black76_greeks(f, k, t, vol, call).vega / np.sqrt(f * k)
    assert ok[norm_vega >= 1.5 * VEGA_FLOOR].all()
    assert (norm_vega[ok] >= 0.5 * VEGA_FLOOR).all()
    assert ok.sum() > 0.4 * ok.size
    # The well-conditioned ones also return the vol they were priced with.
    np.testing.assert_allclose(res.iv[ok], vol[ok], atol=1e-9)


def test_random_inputs_match_lets_be_rational() -> None:
    rng = np.random.default_rng(2024)
    n = 4000
    f = 5000.0
    k = f * np.exp(rng.uniform(-0.3, 0.3, n))
    t = np.exp(rng.uniform(math.log(MINUTE), 0.0, n))
    vol = np.exp(rng.uniform(math.log(0.02), math.log(3.0), n))
    call = rng.random(n) < 0.5
    price = black76_price(f, k, t, vol, call)
    res = implied_vol(price, f, k, t, call)
    ok = np.flatnonzero(res.status == IVStatus.OK)
    ref = np.array([_reference(price[i], f, k[i], t[i], bool(call[i])) for i in ok])
    assert np.max(np.abs(res.iv[ok] - ref)) <= TOLERANCE
    assert ok.size > 0.3 * n  # log-uniform down to 1 minute: many far strikes have no vega left


def test_one_minute_to_the_close() -> None:
    # A 0DTE SPX chain a minute before the close: near strikes solve, far ones have no vega left.
    f, t = 6000.0, MINUTE
    k = np.array([5990.0, 5995.0, 6000.0, 6005.0, 6010.0])
    price = black76_price(f, k, t, 0.25, k >= f)
    res = implied_vol(price, f, k, t, k >= f)
    np.testing.assert_allclose(res.iv[res.status == IVStatus.OK], 0.25, atol=1e-9)
    assert (res.status[1:4] == IVStatus.OK).all()


def test_bounds_give_nan_and_a_status() -> None:
    f, k, t, r = 100.0, 90.0, 0.5, 0.04
    df = math.exp(-r * t)
    cases = [
        # (price, is_call, rate, status); the exact-bound cases use rate 0 so no rounding blurs them.
        (df * 10.0 - 1e-6, True, r, IVStatus.BELOW_INTRINSIC),
        (df * 100.0 * (1 + 1e-9), True, r, IVStatus.ABOVE_MAX),
        (df * 90.0 * (1 + 1e-9), False, r, IVStatus.ABOVE_MAX),
        (10.0, True, 0.0, IVStatus.NO_TIME_VALUE),
        (100.0, True, 0.0, IVStatus.ABOVE_MAX),
        (90.0, False, 0.0, IVStatus.ABOVE_MAX),
        (0.0, False, r, IVStatus.NO_TIME_VALUE),
        (-0.01, False, r, IVStatus.INVALID_INPUT),
        (math.nan, False, r, IVStatus.INVALID_INPUT),
        (math.inf, True, r, IVStatus.INVALID_INPUT),
    ]
    for price, is_call, rate, status in cases:
        iv, st_ = implied_vol_scalar(price, f, k, t, is_call, rate=rate)
        assert st_ == status, (price, is_call)
        assert math.isnan(iv)
    assert implied_vol_scalar(1.0, f, k, 0.0, True)[1] == IVStatus.INVALID_INPUT
    assert implied_vol_scalar(1.0, f, -k, 0.5, True)[1] == IVStatus.INVALID_INPUT
    # Prices within the bounds that lets_be_rational also refuses are refused the same way.
    with pytest.raises(BelowIntrinsicException):
        lbr_iv(10.0 - 1e-6, f, k, t, 1.0)
    with pytest.raises(AboveMaximumException):
        lbr_iv(100.0, f, k, t, 1.0)


def test_deep_itm_and_otm_with_vega_below_floor_are_flagged_not_guessed() -> None:
    # 1 minute, 20 % away: the price is intrinsic (+ nothing representable) -> no time value.
    price = black76_price(100.0, [80.0, 120.0], MINUTE, 0.2, [True, True])
    res = implied_vol(price, 100.0, [80.0, 120.0], MINUTE, [True, True])
    assert (res.status == IVStatus.NO_TIME_VALUE).all()
    assert np.isnan(res.iv).all()


def test_scalar_equals_vector_and_bsm_wrapper() -> None:
    rng = np.random.default_rng(4)
    s, r, q = 400.0, 0.05, 0.015
    k = s * np.exp(rng.uniform(-0.2, 0.2, 50))
    t = rng.uniform(0.001, 1.0, 50)
    price = black76_price(s * np.exp((r - q) * t), k, t, 0.3, False, rate=r)
    vec = implied_vol_bsm(price, s, k, t, False, rate=r, dividend=q)
    for i in range(50):
        iv, st_ = implied_vol_scalar(price[i], s * math.exp((r - q) * t[i]), k[i], t[i], False, rate=r)
        assert st_ == vec.status[i]
        assert iv == vec.iv[i] or (math.isnan(iv) and math.isnan(vec.iv[i]))
    np.testing.assert_allclose(vec.iv[vec.status == IVStatus.OK], 0.3, atol=1e-9)


def test_greeks_from_the_fused_pass_equal_the_plain_greeks() -> None:
    rng = np.random.default_rng(9)
    n = 2000
    f, s, r = 100.0, 99.2, 0.03
    k = f * np.exp(rng.uniform(-0.3, 0.3, n))
    t = np.exp(rng.uniform(math.log(1e-5), 0.0, n))
    call = rng.random(n) < 0.5
    price = black76_price(f, k, t, rng.uniform(0.05, 1.0, n), call, rate=r)
    res, greeks = implied_vol_greeks(price, f, k, t, call, rate=r, spot=s)
    ok = res.status == IVStatus.OK
    plain = black76_greeks(f, k, t, res.iv, call, rate=r, spot=s)
    for name in greeks._fields:
        np.testing.assert_allclose(getattr(greeks, name)[ok], getattr(plain, name)[ok], rtol=1e-11, atol=1e-12)
        assert np.isnan(getattr(greeks, name)[~ok]).all()


@settings(max_examples=300, deadline=None)
@given(
    f=st.floats(0.5, 50_000.0),
    moneyness=st.floats(-2.0, 2.0),
    t=st.floats(1e-8, 5.0),
    fraction=st.floats(0.0, 1.0),
    rate=st.floats(-0.02, 0.2),
    is_call=st.booleans(),
)
def test_valid_inputs_never_raise_or_return_inf(
    f: float, moneyness: float, t: float, fraction: float, rate: float, is_call: bool
) -> None:
    k = f * math.exp(moneyness)
    df = math.exp(-rate * t)
    intrinsic = df * max(f - k, 0.0) if is_call else df * max(k - f, 0.0)
    upper = df * (f if is_call else k)
    price = intrinsic + fraction * (upper - intrinsic)
    iv, status = implied_vol_scalar(price, f, k, t, is_call, rate=rate)
    assert not math.isinf(iv)
    assert (status == IVStatus.OK) == math.isfinite(iv)
    if status == IVStatus.OK:
        assert iv > 0.0
        # Repricing at the solved vol returns the price to within what one vega-floor of vol moves.
        repriced = float(black76_price(f, k, t, iv, is_call, rate=rate))
        assert abs(repriced - price) <= 1e-9 * max(upper, 1e-300) + 1e-12


def test_helper_functions_against_scipy() -> None:
    p = np.concatenate([np.linspace(1e-6, 1 - 1e-6, 2001), np.exp(-np.linspace(1.0, 700.0, 200))])
    ours = np.array([inverse_ncdf(x) for x in p])
    np.testing.assert_allclose(ours, ndtri(p), rtol=2e-15, atol=2e-15)
    y = np.concatenate([np.linspace(0.0, 10.0, 2001), np.exp(np.linspace(np.log(10.0), np.log(1e9), 200))])
    np.testing.assert_allclose([erfcx_nonneg(v) for v in y], erfcx(y), rtol=2e-15)


def test_bachelier_inverse_inverts_bachelier() -> None:
    # G(v) = (phi(v) - v Phi(-v))/v = phi(v) (1/v - M(v)), M(v) = sqrt(pi/2) erfcx(v/sqrt 2).
    v = np.exp(np.linspace(math.log(1e-4), math.log(30.0), 5000))
    mills = math.sqrt(math.pi / 2) * erfcx(v / math.sqrt(2))
    ln_g = -0.5 * v * v - 0.5 * math.log(2 * math.pi) + np.log(1.0 / v - mills)
    back = np.array([bachelier_g_inverse(x) for x in ln_g])
    assert np.max(np.abs(back / v - 1.0)) < 2e-5
