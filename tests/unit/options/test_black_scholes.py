"""Black-Scholes-Merton / Black-76 prices and Greeks against independent oracles."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from py_lets_be_rational import black as lbr_black

from services.core.calendar import NEW_YORK, NS_PER_S, default_calendar
from services.options.black_scholes import (
    NS_PER_YEAR,
    black76_greeks,
    black76_price,
    bsm_greeks,
    bsm_price,
    expiry_time_ns,
    time_to_expiry,
    year_fraction,
)


def _ny_ns(day: str, hhmm: str) -> int:
    return int(dt.datetime.fromisoformat(f"{day}T{hhmm}").replace(tzinfo=NEW_YORK).timestamp()) * NS_PER_S


def test_hull_textbook_values() -> None:
    # Hull, Options Futures and Other Derivatives, Example 15.6: S=42, K=40, r=10%, vol=20%, T=0.5.
    call = bsm_price(42.0, 40.0, 0.5, 0.2, True, rate=0.1)
    put = bsm_price(42.0, 40.0, 0.5, 0.2, False, rate=0.1)
    assert call == pytest.approx(4.7594, abs=5e-5)
    assert put == pytest.approx(0.8086, abs=5e-5)


def test_black76_matches_lets_be_rational_black() -> None:
    rng = np.random.default_rng(11)
    f = 100.0
    k = f * np.exp(rng.uniform(-0.4, 0.4, 500))
    t = np.exp(rng.uniform(np.log(1e-5), np.log(2.0), 500))
    vol = rng.uniform(0.02, 1.5, 500)
    call = rng.random(500) < 0.5
    ours = black76_price(f, k, t, vol, call)
    ref = np.array([lbr_black(f, kk, v, tt, 1.0 if c else -1.0) for kk, v, tt, c in zip(k, vol, t, call, strict=True)])
    np.testing.assert_allclose(ours, ref, rtol=1e-12, atol=1e-13)


def test_put_call_parity_with_rates_and_dividends() -> None:
    rng = np.random.default_rng(5)
    s, r, q = 250.0, 0.045, 0.013
    k = s * np.exp(rng.uniform(-0.3, 0.3, 200))
    t = rng.uniform(1e-4, 1.5, 200)
    vol = rng.uniform(0.05, 0.9, 200)
    call = bsm_price(s, k, t, vol, True, rate=r, dividend=q)
    put = bsm_price(s, k, t, vol, False, rate=r, dividend=q)
    np.testing.assert_allclose(call - put, s * np.exp(-q * t) - k * np.exp(-r * t), rtol=0, atol=1e-10)


@pytest.mark.parametrize("is_call", [True, False])
def test_greeks_match_central_differences(is_call: bool) -> None:
    rng = np.random.default_rng(17 if is_call else 18)
    n = 300
    s = 100.0
    k = s * np.exp(rng.uniform(-0.25, 0.25, n))
    t = np.exp(rng.uniform(np.log(2e-3), np.log(1.5), n))
    vol = rng.uniform(0.08, 0.8, n)
    r, q = 0.03, 0.01

    def price(spot: float | np.ndarray = s, tt: np.ndarray = t, v: np.ndarray = vol) -> np.ndarray:
        return bsm_price(spot, k, tt, v, is_call, rate=r, dividend=q)

    g = bsm_greeks(s, k, t, vol, is_call, rate=r, dividend=q)
    np.testing.assert_allclose(g.price, price(), rtol=1e-13, atol=1e-13)
    # Spot steps scale with the width of the terminal distribution, s vol sqrt(t).
    width = s * vol * np.sqrt(t)
    hs = 1e-4 * width
    delta_fd = (price(s + hs) - price(s - hs)) / (2 * hs)
    hg = 1e-2 * width
    gamma_fd = (price(s + hg) - 2 * price() + price(s - hg)) / (hg * hg)
    hv = 1e-5
    vega_fd = (price(v=vol + hv) - price(v=vol - hv)) / (2 * hv)
    ht = 1e-4 * t
    theta_fd = -(price(tt=t + ht) - price(tt=t - ht)) / (2 * ht)
    g_up = bsm_greeks(s, k, t, vol + hv, is_call, rate=r, dividend=q)
    g_dn = bsm_greeks(s, k, t, vol - hv, is_call, rate=r, dividend=q)
    vanna_fd = (g_up.delta - g_dn.delta) / (2 * hv)
    np.testing.assert_allclose(g.delta, delta_fd, atol=1e-7)
    np.testing.assert_allclose(g.gamma, gamma_fd, rtol=1e-3, atol=1e-6 * np.max(np.abs(g.gamma)))
    np.testing.assert_allclose(g.vega, vega_fd, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(g.theta, theta_fd, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(g.vanna, vanna_fd, rtol=1e-5, atol=1e-6)


def test_black76_spot_greeks_hold_carry_fixed() -> None:
    # With spot given, delta/gamma are w.r.t. spot at a fixed carry: same as BSM with q = r - ln(F/S)/t.
    s, f, t, r = 5000.0, 5012.0, 0.1, 0.05
    q = r - np.log(f / s) / t
    k = np.array([4800.0, 5000.0, 5150.0])
    g76 = black76_greeks(f, k, t, 0.2, [True, False, True], rate=r, spot=s)
    gbs = bsm_greeks(s, k, t, 0.2, [True, False, True], rate=r, dividend=q)
    for name in g76._fields:
        np.testing.assert_allclose(getattr(g76, name), getattr(gbs, name), rtol=1e-10, atol=1e-10)


def test_expired_or_zero_vol_is_intrinsic_with_nan_greeks() -> None:
    g = black76_greeks(100.0, [90.0, 110.0], 0.0, 0.2, [True, False])
    np.testing.assert_array_equal(g.price, [10.0, 10.0])
    assert np.isnan(g.delta).all() and np.isnan(g.vega).all()
    assert black76_price(100.0, 90.0, 0.5, 0.0, False) == 0.0


def test_year_fraction_is_act365_on_nanoseconds() -> None:
    assert year_fraction(0, NS_PER_YEAR) == 1.0
    assert year_fraction(0, 60 * NS_PER_S) == pytest.approx(1.0 / (365 * 24 * 60), rel=1e-15)


def test_zero_dte_counts_minutes_to_the_calendar_close() -> None:
    cal = default_calendar()
    one_minute = 1.0 / (365 * 24 * 60)
    assert time_to_expiry(_ny_ns("2025-07-08", "15:59"), dt.date(2025, 7, 8), cal) == pytest.approx(one_minute)
    # 2025-07-03 closes early at 13:00 New York: at 12:30 there are 30 minutes left.
    assert time_to_expiry(_ny_ns("2025-07-03", "12:30"), "2025-07-03", cal) == pytest.approx(30 * one_minute)
    assert expiry_time_ns("2025-07-03", cal) == _ny_ns("2025-07-03", "13:00")
    assert time_to_expiry(_ny_ns("2025-07-08", "16:00"), "2025-07-08", cal) == 0.0


@settings(max_examples=200, deadline=None)
@given(
    spot=st.floats(1.0, 20_000.0),
    moneyness=st.floats(-1.0, 1.0),
    t=st.floats(1e-7, 3.0),
    vol=st.floats(0.005, 5.0),
    rate=st.floats(-0.02, 0.15),
    is_call=st.booleans(),
)
def test_valid_inputs_give_finite_outputs(
    spot: float, moneyness: float, t: float, vol: float, rate: float, is_call: bool
) -> None:
    g = bsm_greeks(spot, spot * np.exp(moneyness), t, vol, is_call, rate=rate, dividend=0.01)
    for name in g._fields:
        assert np.isfinite(getattr(g, name)).all(), name
    assert g.price >= 0.0
