"""Probability of finishing ITM and of touching: identities, limits, and a Monte Carlo check."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.options.black_scholes import black76_price
from services.options.probability import log_ncdf, prob_itm, prob_touch


def test_prob_itm_is_the_digital_slope_of_the_call() -> None:
    # Risk-neutral P(S_T > K) = -dC/dK / df, an identity independent of the N(d2) formula.
    f, t, vol, r = 100.0, 0.3, 0.35, 0.02
    k = np.linspace(70.0, 140.0, 29)
    h = 1e-4
    slope = (black76_price(f, k + h, t, vol, True, rate=r) - black76_price(f, k - h, t, vol, True, rate=r)) / (2 * h)
    np.testing.assert_allclose(prob_itm(f, k, t, vol, True), -slope / math.exp(-r * t), atol=1e-8)
    np.testing.assert_allclose(prob_itm(f, k, t, vol, False), 1.0 + slope / math.exp(-r * t), atol=1e-8)


def test_touch_is_twice_finishing_beyond_for_a_driftless_log_price() -> None:
    # With asset drift mu = vol^2/2 the log price has no drift; the reflection principle then gives
    # P(touch K) = 2 P(S_T beyond K), and P(S_T beyond K) is prob_itm on the forward S e^{mu t}.
    s, t, vol = 100.0, 0.2, 0.3
    mu = 0.5 * vol * vol
    k_up = np.array([101.0, 105.0, 120.0, 160.0])
    k_dn = np.array([99.0, 95.0, 80.0, 60.0])
    fwd = s * math.exp(mu * t)
    up, down = prob_touch(s, k_up, t, vol, drift=mu), prob_touch(s, k_dn, t, vol, drift=mu)
    np.testing.assert_allclose(up, 2 * prob_itm(fwd, k_up, t, vol, True), rtol=1e-13)
    np.testing.assert_allclose(down, 2 * prob_itm(fwd, k_dn, t, vol, False), rtol=1e-13)


def _monte_carlo_touch(
    s: float, k: float, t: float, vol: float, mu: float, paths: int, steps: int
) -> tuple[float, float]:
    """P(touch) by simulation with the exact Brownian-bridge crossing probability between steps."""
    rng = np.random.default_rng(20240603)
    dt = t / steps
    nu = mu - 0.5 * vol * vol
    b = math.log(k / s)
    sign = 1.0 if b > 0 else -1.0  # reflect a down barrier into an up barrier
    x = np.zeros(paths)
    survive = np.ones(paths)
    for _ in range(steps):
        nxt = x + sign * nu * dt + vol * math.sqrt(dt) * rng.standard_normal(paths)
        gap0, gap1 = abs(b) - x, abs(b) - nxt
        crossed = (gap0 <= 0) | (gap1 <= 0)
        bridge = np.exp(-2.0 * np.clip(gap0, 0, None) * np.clip(gap1, 0, None) / (vol * vol * dt))
        survive *= np.where(crossed, 0.0, 1.0 - bridge)
        x = nxt
    p = 1.0 - survive
    return float(p.mean()), float(p.std() / math.sqrt(paths))


@pytest.mark.parametrize(("k", "mu"), [(110.0, 0.08), (92.0, 0.08), (106.0, -0.15), (95.0, 0.30)])
def test_touch_matches_monte_carlo_with_drift(k: float, mu: float) -> None:
    s, t, vol = 100.0, 0.25, 0.3
    mc, se = _monte_carlo_touch(s, k, t, vol, mu, paths=40_000, steps=50)
    exact = float(prob_touch(s, k, t, vol, drift=mu))
    assert abs(exact - mc) < 4.0 * se + 1e-4, (exact, mc, se)


def test_touch_limits() -> None:
    assert prob_touch(100.0, 100.0, 0.5, 0.2) == 1.0
    assert prob_touch(100.0, 100.0, 0.0, 0.2) == 1.0
    assert prob_touch(100.0, 101.0, 0.0, 0.2) == 0.0
    near = prob_touch(100.0, [100.0001, 99.9999], 0.1, 0.2)
    assert (near > 0.999).all()
    far = prob_touch(100.0, [200.0, 50.0], 1 / 365, 0.1)
    assert (far < 1e-12).all()
    # Touching is at least as likely as finishing beyond, and more likely for a nearer strike.
    ks = np.array([101.0, 103.0, 106.0, 110.0])
    touch = prob_touch(100.0, ks, 0.1, 0.25, drift=0.03)
    assert (np.diff(touch) < 0).all()
    assert (touch >= prob_itm(100.0 * math.exp(0.003), ks, 0.1, 0.25, True)).all()
    assert math.isnan(float(prob_touch(100.0, 105.0, 0.1, 0.0)))


def test_log_ncdf_tail() -> None:
    for z in (-5.0, -29.0, -31.0, -40.0, -1000.0):
        if z > -37.0:
            assert log_ncdf(z) == pytest.approx(math.log(0.5 * math.erfc(-z / math.sqrt(2.0))), rel=1e-12)
        # Mills-ratio bounds z/(z^2+1) phi(z) < Phi(z) < phi(z)/|z| hold in log space.
        lo = math.log(-z / (z * z + 1.0)) - 0.5 * z * z - 0.5 * math.log(2 * math.pi)
        hi = -math.log(-z) - 0.5 * z * z - 0.5 * math.log(2 * math.pi)
        assert lo <= log_ncdf(z) <= hi


@settings(max_examples=300, deadline=None)
@given(
    spot=st.floats(1.0, 10_000.0),
    moneyness=st.floats(-1.0, 1.0),
    t=st.floats(1e-8, 3.0),
    vol=st.floats(1e-3, 5.0),
    drift=st.floats(-1.0, 1.0),
)
def test_touch_and_itm_are_probabilities(spot: float, moneyness: float, t: float, vol: float, drift: float) -> None:
    k = spot * math.exp(moneyness)
    p = float(prob_touch(spot, k, t, vol, drift=drift))
    assert 0.0 <= p <= 1.0
    q = prob_itm(spot * math.exp(drift * t), k, t, vol, [True, False])
    assert np.isfinite(q).all() and (q >= 0).all() and (q <= 1).all()
