"""Chain analysis on synthetic chains whose surface is known, and on hand-built edge cases."""

from __future__ import annotations

import datetime as dt
import math
from typing import Literal

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.core.calendar import NEW_YORK, NS_PER_S, default_calendar
from services.core.events import ChainSnapshot, OptionQuote, occ_symbol
from services.ingest.synthetic_chain import DEFAULT_SURFACES, surface_svi, synthetic_chain
from services.options.black_scholes import black76_price, time_to_expiry
from services.options.chain import analyze_chain, chain_features
from services.options.implied_vol import IVStatus
from services.options.svi import svi_implied_vol

DAY = dt.date(2025, 7, 8)
EXPIRIES = [dt.date(2025, 7, 8), dt.date(2025, 7, 9), dt.date(2025, 7, 18), dt.date(2025, 8, 15)]
FEATURE_KEYS = {
    "atm_iv",
    "atm_iv_next",
    "skew_25d",
    "term_slope",
    "svi_rmse",
    "svi_arb_free",
    "chain_contracts",
    "chain_iv_ok_frac",
}


def _ny_ns(day: dt.date, hhmm: str) -> int:
    return int(dt.datetime.fromisoformat(f"{day}T{hhmm}").replace(tzinfo=NEW_YORK).timestamp()) * NS_PER_S


def _quote(ts: int, expiry: str, strike: float, right: Literal["C", "P"], bid: float, ask: float) -> OptionQuote:
    return OptionQuote(
        ts=ts,
        symbol=occ_symbol("SPY", expiry, right, strike),
        underlying="SPY",
        expiry=expiry,
        strike=strike,
        right=right,
        bid=bid,
        ask=ask,
    )


@pytest.fixture(scope="module")
def spx() -> tuple[ChainSnapshot, int]:
    now = _ny_ns(DAY, "10:30")
    return synthetic_chain("SPX", 6250.0, now, EXPIRIES, seed=3, strikes_pct=(-0.1, 0.1), rate=0.04), now


def test_per_expiry_results_recover_the_surface(spx: tuple[ChainSnapshot, int]) -> None:
    snap, now = spx
    a = analyze_chain(snap, now, rate=0.04)
    assert [e.expiry for e in a.expiries] == [d.isoformat() for d in EXPIRIES]
    model = DEFAULT_SURFACES["SPX"]
    for e in a.expiries:
        t = time_to_expiry(now, e.expiry)
        assert e.t == pytest.approx(t)
        assert e.minutes == pytest.approx(t * 365 * 24 * 60)
        # Parity forward within a tick or two of the true S e^{rt}.
        assert e.forward_from_parity
        assert e.forward == pytest.approx(6250.0 * math.exp(0.04 * t), abs=0.1)
        truth = surface_svi(model, t)
        atm_true = float(svi_implied_vol(truth, 0.0, t))
        assert e.atm_iv == pytest.approx(atm_true, abs=0.004)
        assert e.skew_25d is not None and e.skew_25d > 0.0  # equity skew: puts richer than calls
        assert e.svi is not None and e.svi.butterfly_arbitrage_free
        assert e.svi.iv_rmse is not None and e.svi.iv_rmse < 0.002
        # The fitted smile is the surface's within half a vol point over +-1 ATM standard deviation
        # and within one over +-2, where the (inverse-variance) weights of wider wing quotes fall.
        sd = atm_true * math.sqrt(t)
        for width, tol in ((1.0, 0.005), (2.0, 0.01)):
            k = np.linspace(-width * sd, width * sd, 21)
            np.testing.assert_allclose(svi_implied_vol(e.svi.params, k, t), svi_implied_vol(truth, k, t), atol=tol)
    # ATM vols rise with maturity on this surface; the slope is per calendar day.
    first, second = a.expiries[0], a.expiries[1]
    assert first.atm_iv is not None and second.atm_iv is not None
    assert a.term_slope == pytest.approx((second.atm_iv - first.atm_iv) / (second.days - first.days))
    assert [row[0] for row in a.term_structure] == [d.isoformat() for d in EXPIRIES]


def test_per_contract_arrays_line_up_with_the_quotes(spx: tuple[ChainSnapshot, int]) -> None:
    snap, now = spx
    a = analyze_chain(snap, now, rate=0.04)
    n = len(snap.quotes)
    for name in (
        "symbol",
        "expiry",
        "strike",
        "mid",
        "iv",
        "status",
        "delta",
        "gamma",
        "vega",
        "theta",
        "prob_itm",
        "prob_touch",
        "spread",
        "bid_size",
        "ask_size",
        "open_interest",
    ):
        assert getattr(a, name).shape == (n,), name
    i = n // 3
    q = snap.quotes[i]
    assert a.symbol[i] == q.symbol and a.strike[i] == q.strike and a.mid[i] == (q.bid + q.ask) / 2
    ok = a.status == IVStatus.OK
    assert ok.mean() > 0.7
    calls = ok & a.is_call
    assert ((a.delta[calls] > 0) & (a.delta[calls] < 1.01)).all()
    assert (a.delta[ok & ~a.is_call] < 0).all()
    # Finishing beyond a strike on the far side of spot means having touched it on the way.
    otm = ok & (a.is_call == (a.strike > a.spot))
    assert (a.prob_touch[otm] >= a.prob_itm[otm] - 1e-12).all()
    assert np.isnan(a.iv[~ok]).all() and np.isnan(a.delta[~ok]).all()


def test_features_are_flat_finite_and_named(spx: tuple[ChainSnapshot, int]) -> None:
    snap, now = spx
    feats = chain_features(snap, now, rate=0.04)
    assert set(feats) == FEATURE_KEYS
    assert all(math.isfinite(v) for v in feats.values())
    assert feats["chain_contracts"] == len(snap.quotes)
    assert feats["svi_arb_free"] == 1.0
    assert 0.7 < feats["chain_iv_ok_frac"] <= 1.0


def test_zero_bids_count_but_stay_out_of_the_smile_and_bad_quotes_are_no_quote() -> None:
    now = _ny_ns(DAY, "11:00")
    exp = "2025-07-18"
    t = time_to_expiry(now, exp)
    f = 600.0
    quotes = []
    for strike in np.arange(570.0, 631.0, 2.0):
        for right in ("C", "P"):
            theo = float(black76_price(f, strike, t, 0.2 - 0.5 * math.log(strike / f), right == "C"))
            bid, ask = round(max(theo - 0.02, 0.0), 2), round(theo + 0.02, 2)
            quotes.append(_quote(now, exp, float(strike), right, bid, ask))
    quotes.append(_quote(now, exp, 700.0, "C", 0.0, 0.01))  # a real zero bid
    quotes.append(_quote(now, exp, 701.0, "C", 0.0, 0.0))  # no market at all
    quotes.append(_quote(now, exp, 702.0, "C", 0.05, 0.03))  # crossed
    snap = ChainSnapshot(ts=now, underlying="SPY", underlying_price=f, quotes=tuple(quotes))
    a = analyze_chain(snap, now)
    assert a.zero_bid[-3] and a.valid_quote[-3] and a.mid[-3] == 0.005
    assert not a.valid_quote[-2] and not a.valid_quote[-1]
    assert a.status[-2] == IVStatus.NO_QUOTE and a.status[-1] == IVStatus.NO_QUOTE
    e = a.expiries[0]
    assert e.forward == pytest.approx(f, abs=0.02)
    assert e.atm_iv == pytest.approx(0.2, abs=0.003)


def test_expired_expiries_and_missing_pieces_are_omitted_not_nan() -> None:
    now = _ny_ns(DAY, "16:05")  # after the close: today's expiry is gone
    snap = synthetic_chain("SPY", 620.0, _ny_ns(DAY, "15:00"), [DAY], seed=1)
    late = ChainSnapshot(ts=now, underlying="SPY", underlying_price=620.0, quotes=snap.quotes)
    a = analyze_chain(late, now)
    assert (a.status == IVStatus.INVALID_INPUT).all()
    assert a.expiries[0].t < 0 and a.live_expiries == ()
    assert chain_features(late, now) == {"chain_contracts": float(len(snap.quotes)), "chain_iv_ok_frac": 0.0}
    # One live expiry: no next-expiry IV and no term slope.
    one = synthetic_chain("SPY", 620.0, _ny_ns(DAY, "10:00"), [dt.date(2025, 7, 9)], seed=1)
    feats = chain_features(one, _ny_ns(DAY, "10:00"))
    assert "atm_iv" in feats and "atm_iv_next" not in feats and "term_slope" not in feats
    empty = ChainSnapshot(ts=now, underlying="SPY", underlying_price=620.0, quotes=())
    assert chain_features(empty, now) == {"chain_contracts": 0.0}


def test_puts_only_chain_uses_spot_forward_and_still_has_a_smile() -> None:
    now = _ny_ns(DAY, "10:00")
    snap = synthetic_chain("QQQ", 550.0, now, [dt.date(2025, 7, 11)], seed=5)
    puts = ChainSnapshot(
        ts=now, underlying="QQQ", underlying_price=550.0, quotes=tuple(q for q in snap.quotes if q.right == "P")
    )
    a = analyze_chain(puts, now)
    e = a.expiries[0]
    assert not e.forward_from_parity and e.forward == 550.0
    assert e.atm_iv is not None and e.svi is not None


@settings(max_examples=25, deadline=None)
@given(
    underlying=st.sampled_from(["SPX", "SPY", "QQQ", "NDX"]),
    spot_scale=st.floats(0.5, 2.0),
    minute=st.integers(0, 389),
    seed=st.integers(0, 2**16),
    rate=st.floats(0.0, 0.08),
)
def test_features_never_nan_on_random_synthetic_chains(
    underlying: str, spot_scale: float, minute: int, seed: int, rate: float
) -> None:
    base = {"SPX": 6000.0, "SPY": 600.0, "QQQ": 520.0, "NDX": 21000.0}[underlying] * spot_scale
    session = default_calendar().session(DAY)
    assert session is not None
    now = session.open_ns + minute * 60 * NS_PER_S
    snap = synthetic_chain(underlying, base, now, [DAY, dt.date(2025, 7, 9)], seed=seed, rate=rate)
    feats = chain_features(snap, now, rate=rate)
    assert set(feats) <= FEATURE_KEYS
    assert all(math.isfinite(v) for v in feats.values())


def test_svi_expiries_limits_the_fits_and_nothing_else(spx: tuple[ChainSnapshot, int]) -> None:
    snap, now = spx
    full = analyze_chain(snap, now)
    assert all(e.svi is not None for e in full.live_expiries)
    for limit in (0, 1, 2):
        part = analyze_chain(snap, now, svi_expiries=limit)
        for name in part.__slots__:
            got, want = getattr(part, name), getattr(full, name)
            if isinstance(got, np.ndarray):
                assert got.tobytes() == want.tobytes(), name
            elif name != "expiries":
                assert repr(got) == repr(want), name
        for i, (got, want) in enumerate(zip(part.expiries, full.expiries, strict=True)):
            assert repr(got.svi) == repr(want.svi if i < limit else None)
            assert repr(got.atm_iv) == repr(want.atm_iv) and repr(got.skew_25d) == repr(want.skew_25d)
