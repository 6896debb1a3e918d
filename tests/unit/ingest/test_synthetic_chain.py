"""Synthetic chains: deterministic, listed-like, and priced from the surface they claim."""

from __future__ import annotations

import datetime as dt
import math

import numpy as np
import pytest

from services.core.calendar import NEW_YORK, NS_PER_S, default_calendar
from services.core.events import occ_symbol
from services.ingest.synthetic_chain import (
    DEFAULT_SURFACES,
    _draws,
    _quote_prices,
    surface_svi,
    synthetic_chain,
    tick_size,
)
from services.options.black_scholes import black76_greeks, time_to_expiry
from services.options.implied_vol import IVStatus, implied_vol
from services.options.svi import butterfly_g, svi_implied_vol, svi_total_variance

DAY = dt.date(2025, 7, 8)
EXPIRIES = [dt.date(2025, 7, 8), dt.date(2025, 7, 9), dt.date(2025, 7, 18), dt.date(2025, 9, 19)]


def _ny_ns(day: dt.date, hhmm: str) -> int:
    return int(dt.datetime.fromisoformat(f"{day}T{hhmm}").replace(tzinfo=NEW_YORK).timestamp()) * NS_PER_S


@pytest.mark.parametrize(
    ("underlying", "spot", "rate"), [("SPX", 6250.0, 0.0), ("SPY", 624.3, 0.045), ("NDX", 22800.0, 0.03)]
)
def test_ivs_from_mids_match_the_surface(underlying: str, spot: float, rate: float) -> None:
    now = _ny_ns(DAY, "11:15")
    snap = synthetic_chain(underlying, spot, now, EXPIRIES, seed=11, strikes_pct=(-0.06, 0.06), rate=rate)
    checked = 0
    for expiry in EXPIRIES:
        t = time_to_expiry(now, expiry)
        fwd = spot * math.exp(rate * t)
        params = surface_svi(DEFAULT_SURFACES[underlying], t)
        quotes = [q for q in snap.quotes if q.expiry == expiry.isoformat() and q.bid > 0]
        k = np.array([q.strike for q in quotes])
        call = np.array([q.right == "C" for q in quotes])
        mid = np.array([(q.bid + q.ask) / 2 for q in quotes])
        res = implied_vol(mid, fwd, k, t, call, rate=rate)
        truth = svi_implied_vol(params, np.log(k / fwd), t)
        ok = res.status == IVStatus.OK
        # The mid sits within one tick of the model value: its IV within one tick of vega.
        vega = black76_greeks(fwd, k, t, truth, call, rate=rate).vega
        ticks = np.array([tick_size(underlying, max(q.bid, q.ask)) for q in quotes])
        bound = ticks / vega + 1e-9
        assert (np.abs(res.iv - truth)[ok] <= bound[ok]).all()
        # And where a tick is small in vol, that is a tight match.
        tight = ok & (bound < 0.002)
        assert np.abs(res.iv - truth)[tight].max() < 0.002
        checked += int(tight.sum())
    assert checked > 100


def test_same_inputs_same_chain_and_the_seed_only_moves_sizes_and_widths() -> None:
    now = _ny_ns(DAY, "10:00")
    a = synthetic_chain("SPY", 620.0, now, EXPIRIES[:2], seed=1)
    assert a == synthetic_chain("SPY", 620.0, now, EXPIRIES[:2], seed=1)
    b = synthetic_chain("SPY", 620.0, now, EXPIRIES[:2], seed=2)
    assert [q.symbol for q in a.quotes] == [q.symbol for q in b.quotes]
    assert [q.bid_size for q in a.quotes] != [q.bid_size for q in b.quotes]


def test_listing_conventions() -> None:
    now = _ny_ns(DAY, "10:00")
    spx = synthetic_chain("SPX", 6251.3, now, [DAY], seed=0)
    spy = synthetic_chain("SPY", 624.37, now, [DAY], seed=0)
    ndx = synthetic_chain("NDX", 22801.0, now, [DAY], seed=0)
    assert {q.strike % 5 for q in spx.quotes} == {0.0} and {q.strike % 5 for q in ndx.quotes} == {0.0}
    assert {q.strike % 1 for q in spy.quotes} == {0.0}
    assert all(q.symbol.startswith("SPXW250708") for q in spx.quotes)
    assert all(q.symbol.startswith("NDXP250708") for q in ndx.quotes)
    q = spy.quotes[0]
    assert q.symbol == occ_symbol("SPY", "2025-07-08", q.right, q.strike)
    for snap, name in ((spx, "SPX"), (spy, "SPY")):
        assert snap.underlying == name
        strikes = sorted({q.strike for q in snap.quotes})
        assert strikes[0] >= snap.underlying_price * 0.95 and strikes[-1] <= snap.underlying_price * 1.05
        for q in snap.quotes:
            assert 0.0 <= q.bid < q.ask
            for price in (q.bid, q.ask):
                tick = tick_size(name, price) if price >= 3.0 else tick_size(name, 0.0)
                assert abs(price / tick - round(price / tick)) < 1e-6, (name, price)
    # Penny names quote 0.01 under $3, indices 0.05; far out of the money the bid is zero.
    assert tick_size("SPY", 2.0) == 0.01 and tick_size("SPY", 5.0) == 0.05
    assert tick_size("SPX", 2.0) == 0.05 and tick_size("SPX", 5.0) == 0.10
    far = [q for q in spx.quotes if (q.strike / 6251.3 - 1) * (1 if q.right == "C" else -1) > 0.04]
    assert far and all(q.bid == 0.0 and q.ask == 0.05 and q.bid_size == 0.0 for q in far)


def test_spreads_widen_in_vol_away_from_the_money_and_in_dollars_with_price() -> None:
    now = _ny_ns(DAY, "10:00")
    expiry = dt.date(2025, 7, 18)
    snap = synthetic_chain("SPX", 6250.0, now, [expiry], seed=4, strikes_pct=(-0.05, 0.05))
    t = time_to_expiry(now, expiry)
    calls = [q for q in snap.quotes if q.right == "C" and q.strike >= 6250.0 and q.bid > 0]
    k = np.array([q.strike for q in calls])
    spread = np.array([q.ask - q.bid for q in calls])
    mid = np.array([(q.ask + q.bid) / 2 for q in calls])
    vol = svi_implied_vol(surface_svi(DEFAULT_SURFACES["SPX"], t), np.log(k / 6250.0), t)
    vol_spread = spread / black76_greeks(6250.0, k, t, vol, True).vega
    near, far = np.abs(k - 6250.0) < 50, np.abs(k - 6250.0) > 200
    assert vol_spread[far].mean() > 2 * vol_spread[near].mean()
    assert spread[mid > 20].mean() > spread[mid < 3].mean()
    sizes = np.array([q.ask_size for q in calls])
    oi = np.array([q.open_interest for q in calls])
    assert sizes[near].mean() > sizes[far].mean() and oi[near].mean() > oi[far].mean()


def test_the_surface_is_free_of_static_arbitrage() -> None:
    model = DEFAULT_SURFACES["SPX"]
    k = np.linspace(-1.0, 1.0, 801)
    ts = np.array([1 / 365 / 24, 1 / 365, 7 / 365, 30 / 365, 0.5, 2.0])
    previous = np.zeros_like(k)
    for t in ts:
        params = surface_svi(model, t)
        assert butterfly_g(params, k).min() >= 0.0
        w = svi_total_variance(params, k)
        assert (w > previous).all()  # no calendar arbitrage: total variance grows with maturity
        previous = w
        assert params.rho == model.rho
        assert float(svi_implied_vol(params, 0.0, t)) == pytest.approx(model.atm_vol(t), rel=1e-12)


def test_expired_expiries_are_not_listed() -> None:
    cal = default_calendar()
    session = cal.session(DAY)
    assert session is not None
    snap = synthetic_chain("SPY", 620.0, session.close_ns, [DAY, dt.date(2025, 7, 9)], seed=0, calendar=cal)
    assert {q.expiry for q in snap.quotes} == {"2025-07-09"}
    with pytest.raises(ValueError):
        synthetic_chain("SPY", -1.0, session.close_ns, [DAY], seed=0)


def _per_contract_quote(underlying: str, price: float, spread: float) -> tuple[float, float]:
    """The quoting rule one contract at a time: the definition ``_quote_prices`` vectorizes."""
    tick = tick_size(underlying, price)
    half = 0.5 * max(spread, tick)
    if price < 0.5 * tick:
        bid, ask = 0.0, tick
    else:
        bid_raw = max(price - half, 0.0)
        bid_tick = tick_size(underlying, bid_raw)
        bid = math.floor(bid_raw / bid_tick + 1e-9) * bid_tick
        ask_tick = tick_size(underlying, price + half)
        ask = max(math.ceil((price + half) / ask_tick - 1e-9) * ask_tick, ask_tick)
    return round(bid, 2), round(ask, 2)


@pytest.mark.parametrize("underlying", ["SPY", "SPX"])
def test_vectorized_quotes_equal_the_per_contract_rule_bit_for_bit(underlying: str) -> None:
    rng = np.random.default_rng(5)
    edges = [0.0, 0.004, 0.005, 0.0251, 0.05, 2.97, 2.99, 3.0, 3.01, 3.04, 50_000.0]
    theo = np.concatenate(
        [rng.uniform(0.0, 0.2, 3000), rng.uniform(2.5, 3.5, 3000), rng.lognormal(1.0, 2.0, 3000), edges]
    )
    spread = np.concatenate([rng.uniform(0.0, 0.3, theo.size - 9), [0.0, 0.02, 0.08, 0.5, 3.0, 40.0, 0.0, 0.0, 0.0]])
    bid, ask = _quote_prices(underlying, theo, spread)
    pairs = zip(theo.tolist(), spread.tolist(), strict=True)
    expected = np.array([_per_contract_quote(underlying, p, w) for p, w in pairs])
    assert bid.tobytes() == np.ascontiguousarray(expected[:, 0]).tobytes()
    assert ask.tobytes() == np.ascontiguousarray(expected[:, 1]).tobytes()


def test_cached_draws_are_the_draws_of_a_fresh_generator() -> None:
    rng = np.random.default_rng(9)
    fresh = [
        (rng.uniform(0.8, 1.25, 7), rng.integers(1, 40, 7), rng.integers(1, 40, 7), rng.lognormal(6.0, 1.0, 7))
        for _ in range(4)
    ]
    for index in (0, 1):
        for got, want in zip(_draws(9, 7, index), fresh[2 * index : 2 * index + 2], strict=True):
            for g, w in zip(got, want, strict=True):
                assert np.array_equal(g, w) and g.dtype == w.dtype and not g.flags.writeable
