"""SVI: exact recovery from noiseless smiles, constraints, and Gatheral's butterfly check."""

from __future__ import annotations

import math

import numpy as np
import pytest

from services.options.black_scholes import black76_price
from services.options.svi import (
    LEE_SLOPE,
    SVIParams,
    butterfly_g,
    fit_svi,
    is_butterfly_arbitrage_free,
    svi_implied_vol,
    svi_total_variance,
)

# Axel Vogt's raw SVI slice (Gatheral & Jacquier, "Arbitrage-free SVI volatility surfaces", 2014, sec. 5.1):
# a well-known parametrisation with butterfly arbitrage near k = 0.9.
VOGT = SVIParams(a=-0.0410, b=0.1331, rho=0.3060, m=0.3586, sigma=0.4153)


@pytest.mark.parametrize(
    "true",
    [
        SVIParams(a=0.02, b=0.15, rho=-0.6, m=0.03, sigma=0.12),  # a one-year equity smile
        SVIParams(a=-0.004, b=0.08, rho=-0.3, m=0.01, sigma=0.2),  # negative a, positive minimum
        SVIParams(a=2e-5, b=0.004, rho=-0.7, m=0.001, sigma=0.006),  # a 0DTE-sized smile
    ],
)
def test_recovers_known_parameters_from_noiseless_data(true: SVIParams) -> None:
    atm_sd = math.sqrt(svi_total_variance(true, 0.0))
    k = np.linspace(-5 * atm_sd, 3 * atm_sd, 41) + true.m
    fit = fit_svi(k, svi_total_variance(true, k))
    np.testing.assert_allclose(fit.params, true, rtol=1e-6, atol=1e-9)
    assert fit.rmse < 1e-10
    assert fit.butterfly_arbitrage_free


def test_noisy_fit_respects_every_constraint() -> None:
    rng = np.random.default_rng(8)
    true = SVIParams(a=0.001, b=0.05, rho=-0.8, m=0.02, sigma=0.05)
    for _ in range(20):
        k = np.sort(rng.uniform(-0.3, 0.2, 30))
        w = svi_total_variance(true, k) * (1 + 0.05 * rng.standard_normal(k.size))
        a, b, rho, _, sigma = fit_svi(k, w, rng.uniform(0.5, 2.0, k.size), t=0.25).params
        assert b >= 0.0 and abs(rho) < 1.0 and sigma > 0.0
        assert a + b * sigma * math.sqrt(1 - rho * rho) >= -1e-12
        assert b * (1 + abs(rho)) <= LEE_SLOPE + 1e-12


def test_weights_pull_the_fit_toward_trusted_points() -> None:
    true = SVIParams(a=0.01, b=0.1, rho=-0.5, m=0.0, sigma=0.1)
    k = np.linspace(-0.4, 0.4, 21)
    w = svi_total_variance(true, k)
    w[5] *= 1.5  # one bad quote
    weights = np.ones_like(k)
    weights[5] = 1e-6
    trusted = fit_svi(k, w, weights)
    equal = fit_svi(k, w)
    keep = np.arange(k.size) != 5
    err_trusted = np.abs(svi_total_variance(trusted.params, k) - svi_total_variance(true, k))[keep].max()
    err_equal = np.abs(svi_total_variance(equal.params, k) - svi_total_variance(true, k))[keep].max()
    assert err_trusted < 0.01 * err_equal


def test_vogt_parametrisation_has_butterfly_arbitrage_by_g_and_by_prices() -> None:
    grid = np.linspace(-1.5, 1.5, 601)
    assert not is_butterfly_arbitrage_free(VOGT, grid)
    g = butterfly_g(VOGT, grid)
    assert 0.6 < grid[np.argmin(g)] < 1.2
    # Independent check: the call-price density d2C/dK2 (finite differences, t = 1) turns negative there.
    strikes = np.exp(np.linspace(0.5, 1.3, 801))
    vol = svi_implied_vol(VOGT, np.log(strikes), 1.0)
    calls = black76_price(1.0, strikes, 1.0, vol, True)
    density = np.diff(calls, 2) / np.diff(strikes)[:-1] ** 2
    assert density.min() < 0.0


def test_g_matches_finite_differences_of_w() -> None:
    p = SVIParams(a=0.01, b=0.12, rho=-0.4, m=0.05, sigma=0.15)
    k = np.linspace(-0.8, 0.8, 81)
    h = 1e-4
    w = svi_total_variance(p, k)
    w1 = (svi_total_variance(p, k + h) - svi_total_variance(p, k - h)) / (2 * h)
    w2 = (svi_total_variance(p, k + h) - 2 * w + svi_total_variance(p, k - h)) / (h * h)
    g_fd = (1 - k * w1 / (2 * w)) ** 2 - w1 * w1 / 4 * (1 / w + 0.25) + w2 / 2
    np.testing.assert_allclose(butterfly_g(p, k), g_fd, atol=1e-6)
    assert is_butterfly_arbitrage_free(p, k)


def test_needs_five_usable_points() -> None:
    with pytest.raises(ValueError, match="at least 5"):
        fit_svi([0.0, 0.1, 0.2, 0.3, np.nan], [0.01, 0.02, 0.03, 0.04, 0.05])
    with pytest.raises(ValueError, match="at least 5"):
        fit_svi(np.linspace(-0.1, 0.1, 6), np.full(6, 0.01), [1, 1, 1, 1, 0, 0])


def test_iv_rmse_is_in_vol_units() -> None:
    true = SVIParams(a=0.002, b=0.03, rho=-0.6, m=0.0, sigma=0.05)
    k = np.linspace(-0.2, 0.1, 25)
    t = 0.1
    iv = svi_implied_vol(true, k, t) + 0.01 * np.where(np.arange(k.size) % 2 == 0, 1.0, -1.0)
    fit = fit_svi(k, iv * iv * t, t=t)
    assert fit.iv_rmse is not None and 0.005 < fit.iv_rmse < 0.0105
