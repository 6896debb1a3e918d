"""Options analytics benchmarks: chain IV + Greeks vs py_lets_be_rational, and SVI fits.

``python -m bench.options`` prints every number; ``bench/features.py`` imports the functions, each
returning a dict of numbers. Timings are the best of several repeats after a warm-up call (numba
compiles, or loads its cache, on the first call), so they measure steady state, not compilation.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import math
import time
from collections.abc import Callable

import numpy as np

from services.core.calendar import NEW_YORK, default_calendar
from services.ingest.synthetic_chain import DEFAULT_SURFACES, surface_svi, synthetic_chain
from services.options.black_scholes import Greeks, year_fraction
from services.options.chain import analyze_chain
from services.options.implied_vol import IVResult, IVStatus, implied_vol_greeks
from services.options.svi import fit_svi

_NOW = int(dt.datetime(2025, 7, 8, 10, 0, tzinfo=NEW_YORK).timestamp()) * 1_000_000_000
_EXPIRIES = [dt.date(2025, 7, 8), dt.date(2025, 7, 9), dt.date(2025, 7, 11), dt.date(2025, 7, 18), dt.date(2025, 8, 15)]
_SPOT = 6250.0


def _chain_arrays(n: int) -> dict[str, np.ndarray]:
    """Mids, forwards, strikes, times and rights of a synthetic SPX chain with about ``n`` contracts."""
    # Five expiries, two rights: strikes every 5 points, so +-pct of spot gives n contracts.
    pct = (n / (2 * len(_EXPIRIES)) - 1) * 5.0 / (2 * _SPOT)
    snap = synthetic_chain("SPX", _SPOT, _NOW, _EXPIRIES, seed=7, strikes_pct=(-pct, pct))
    cal = default_calendar()
    quotes = snap.quotes[:n]
    t = np.array([year_fraction(_NOW, cal.expiry_close_ns(dt.date.fromisoformat(q.expiry))) for q in quotes])
    return {
        "price": np.array([0.5 * (q.bid + q.ask) for q in quotes]),
        "forward": np.full(len(quotes), _SPOT),
        "strike": np.array([q.strike for q in quotes]),
        "t": t,
        "is_call": np.array([q.right == "C" for q in quotes]),
    }


def _best_seconds(fn: Callable[[], object], repeats: int, number: int) -> float:
    fn()
    best = math.inf
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(number):
            fn()
        best = min(best, (time.perf_counter() - start) / number)
    return best


def _chain_run(a: dict[str, np.ndarray]) -> Callable[[], tuple[IVResult, Greeks]]:
    def run() -> tuple[IVResult, Greeks]:
        return implied_vol_greeks(a["price"], a["forward"], a["strike"], a["t"], a["is_call"], spot=_SPOT)

    return run


def _reference_run(a: dict[str, np.ndarray]) -> Callable[[], None] | None:
    """py_lets_be_rational per contract in a Python loop, or None when it is not installed."""
    try:
        from py_lets_be_rational import implied_volatility_from_a_transformed_rational_guess as lbr_iv
        from py_lets_be_rational.exceptions import AboveMaximumException, BelowIntrinsicException
    except ImportError:
        return None
    rows = list(zip(a["price"].tolist(), a["strike"].tolist(), a["t"].tolist(), a["is_call"].tolist(), strict=True))

    def run() -> None:
        for price, strike, t, call in rows:
            # Below-intrinsic and above-maximum prices are ordinary outcomes on a real chain.
            with contextlib.suppress(BelowIntrinsicException, AboveMaximumException):
                lbr_iv(price, _SPOT, strike, t, 1.0 if call else -1.0)

    return run


def bench_chain_iv(n: int = 2000) -> dict[str, float]:
    """Implied vols + Greeks for an n-contract chain in one vectorised call: rate and latency.

    ``speedup`` (when py_lets_be_rational is installed) pairs the two in alternating rounds, best
    of each round, median over rounds, so a busy machine slows both sides of each ratio alike.
    """
    a = _chain_arrays(n)
    run = _chain_run(a)
    seconds = _best_seconds(run, repeats=15, number=100)
    status = run()[0].status
    out = {
        "contracts": float(a["price"].size),
        "ms_per_chain": seconds * 1e3,
        "contracts_per_s": a["price"].size / seconds,
        "iv_ok_frac": float(np.mean(status == IVStatus.OK)),
    }
    reference = _reference_run(a)
    if reference is not None:
        ratios = []
        for _ in range(7):
            ours = _best_seconds(run, repeats=3, number=20)
            theirs = _best_seconds(reference, repeats=2, number=1)
            ratios.append(theirs / ours)
        out["speedup"] = float(np.median(ratios))
    return out


def bench_reference_iv(n: int = 2000) -> dict[str, float]:
    """py_lets_be_rational's scalar IV called per contract in a Python loop, on the same chain."""
    a = _chain_arrays(n)
    run = _reference_run(a)
    if run is None:
        return {}
    seconds = _best_seconds(run, repeats=6, number=2)
    size = float(a["price"].size)
    return {"contracts": size, "ms_per_chain": seconds * 1e3, "contracts_per_s": size / seconds}


def bench_svi() -> dict[str, float]:
    """One SVI fit per expiry on the synthetic SPX surface (40 strikes, noisy): ms per fit."""
    rng = np.random.default_rng(3)
    fits = []
    for expiry in _EXPIRIES:
        t = year_fraction(_NOW, default_calendar().expiry_close_ns(expiry))
        params = surface_svi(DEFAULT_SURFACES["SPX"], t)
        atm_sd = math.sqrt(params.a + params.b * params.sigma * math.sqrt(1 - params.rho**2))
        k = np.linspace(-4.0 * atm_sd, 2.5 * atm_sd, 40)
        km = k - params.m
        w = params.a + params.b * (params.rho * km + np.sqrt(km * km + params.sigma**2))
        fits.append((k, w * (1.0 + 0.01 * rng.standard_normal(k.size)), t))

    def run() -> None:
        for k, w, t in fits:
            fit_svi(k, w, t=t)

    seconds = _best_seconds(run, repeats=5, number=20)
    return {"expiries": float(len(fits)), "ms_per_fit": seconds * 1e3 / len(fits)}


def bench_analyze_chain(n: int = 2000) -> dict[str, float]:
    """The whole :func:`analyze_chain` (events in, per-expiry SVI out) on an n-contract snapshot."""
    pct = (n / (2 * len(_EXPIRIES)) - 1) * 5.0 / (2 * _SPOT)
    snap = synthetic_chain("SPX", _SPOT, _NOW, _EXPIRIES, seed=7, strikes_pct=(-pct, pct))
    seconds = _best_seconds(lambda: analyze_chain(snap, _NOW), repeats=5, number=10)
    return {"contracts": float(len(snap.quotes)), "ms_per_chain": seconds * 1e3}


def main() -> None:
    chain = bench_chain_iv()
    ref = bench_reference_iv()
    svi = bench_svi()
    full = bench_analyze_chain()
    print(
        f"chain IV+Greeks : {chain['contracts']:.0f} contracts, {chain['ms_per_chain']:.3f} ms/chain, "
        f"{chain['contracts_per_s']:,.0f} contracts/s (IV ok {chain['iv_ok_frac']:.0%})"
    )
    print(f"reference IV    : {ref['contracts_per_s']:,.0f} contracts/s (py_lets_be_rational, Python loop)")
    print(
        f"ratio           : {chain['contracts_per_s'] / ref['contracts_per_s']:.0f}x separately, "
        f"{chain.get('speedup', float('nan')):.0f}x in alternating rounds"
    )
    print(f"SVI fit         : {svi['ms_per_fit']:.3f} ms per expiry")
    print(f"analyze_chain   : {full['ms_per_chain']:.2f} ms per {full['contracts']:.0f}-contract snapshot")


if __name__ == "__main__":
    main()
