"""Chain analytics: per-contract IVs and Greeks, per-expiry forward, smile, skew and SVI, term structure.

Conventions:

- **Mid** = (bid + ask)/2 of quotes with ``ask > 0`` and ``0 <= bid <= ask``; others (ask 0,
  crossed) have no mid and status :attr:`IVStatus.NO_QUOTE`.
- **Zero bids are real**: nobody pays anything for the contract and the ask is the only price. Its
  mid (ask/2) is kept and gets an IV and Greeks, but such quotes are flagged ``zero_bid`` and kept
  out of the forward estimate, the ATM/25-delta interpolation and the SVI fit, where half a one-tick
  ask would pose as a market.
- **Time** to the expiry date's session close from the calendar, ACT/365 on ns; expired expiries
  (close <= now) get status :attr:`IVStatus.INVALID_INPUT`.
- **Forward** per expiry from put-call parity ``F = K + (C - P)/df`` at the (up to five) strikes
  nearest spot where both sides have a bid, median; else ``spot * exp(rate t)``. IVs are Black-76
  on that forward, so an unknown dividend or borrow is absorbed in ``F``; Greeks are w.r.t. spot with
  the carry ``ln(F/S)/t`` held fixed.
- **Smile** = one IV per strike from the out-of-the-money side (the other side if that one is not
  usable). **ATM IV** interpolates it linearly in ``k = ln(K/F)`` at ``k = 0``. **25-delta risk
  reversal** = IV at forward call delta ``N(d1) = 0.75`` (the 25-delta put) minus IV at ``N(d1) =
  0.25`` (the 25-delta call), linear in delta; positive for the usual equity skew. **Term slope**
  = (ATM IV of the second live expiry - the first's) / (days between them): vol per calendar day.
- **SVI** per expiry on the smile's total variance where the out-of-the-money delta is at least
  2 % (further out, quotes sit at the tick floor and their IVs measure the tick, not the smile),
  weighted by ``1/max(spread/vega, 0.001)^2``: the inverse variance of the quote's width in vol,
  so a wide in-the-money quote cannot bend the smile the tight ones define.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy.special import ndtr

from services.core.calendar import NS_PER_MIN, MarketCalendar, default_calendar
from services.core.events import ChainSnapshot
from services.options.black_scholes import FloatArray, year_fraction
from services.options.implied_vol import IVStatus, implied_vol_greeks
from services.options.probability import prob_itm, prob_touch
from services.options.svi import SVIFit, fit_svi

PARITY_STRIKES = 5  # strikes nearest spot used for the put-call-parity forward
MIN_SVI_POINTS = 5
SVI_MIN_DELTA = 0.02  # smile points enter the SVI fit when their OTM delta is at least 2 %
_IV_SPREAD_FLOOR = 1e-3
_MAX_PARITY_GAP = 0.2  # a parity forward further than 20 % from spot is bad data: use spot instead


@dataclass(frozen=True, slots=True)
class ExpiryAnalysis:
    """One expiry's forward, ATM IV, 25-delta skew and SVI fit (None where not computable)."""

    expiry: str
    expiry_ns: int
    t: float  # years, ACT/365, to the session close of the expiry date
    days: float
    minutes: float
    forward: float
    forward_from_parity: bool
    discount: float
    contracts: int
    iv_ok: int
    atm_iv: float | None
    iv_put_25d: float | None
    iv_call_25d: float | None
    skew_25d: float | None  # put 25-delta IV minus call 25-delta IV
    svi: SVIFit | None


@dataclass(frozen=True, slots=True)
class ChainAnalysis:
    """Per-contract arrays (one element per quote, snapshot order) and per-expiry results."""

    underlying: str
    ts: int
    spot: float
    rate: float
    symbol: npt.NDArray[np.str_]
    expiry: npt.NDArray[np.str_]
    strike: FloatArray
    right: npt.NDArray[np.str_]
    is_call: npt.NDArray[np.bool_]
    bid: FloatArray
    ask: FloatArray
    mid: FloatArray
    spread: FloatArray
    bid_size: FloatArray
    ask_size: FloatArray
    open_interest: FloatArray
    valid_quote: npt.NDArray[np.bool_]
    zero_bid: npt.NDArray[np.bool_]
    t: FloatArray
    forward: FloatArray
    iv: FloatArray
    status: npt.NDArray[np.int8]
    delta: FloatArray
    gamma: FloatArray
    vega: FloatArray
    theta: FloatArray
    prob_itm: FloatArray
    prob_touch: FloatArray
    expiries: tuple[ExpiryAnalysis, ...]
    term_structure: tuple[tuple[str, float, float], ...]  # (expiry, t, ATM IV) of live expiries
    term_slope: float | None  # ATM IV change per calendar day between the two nearest live expiries

    @property
    def live_expiries(self) -> tuple[ExpiryAnalysis, ...]:
        """Expiries whose close is still ahead, nearest first."""
        return tuple(e for e in self.expiries if e.t > 0.0)


def _parity_forward(
    strike: FloatArray, call_mid: FloatArray, put_mid: FloatArray, spot: float, df: float
) -> float | None:
    both = np.isfinite(call_mid) & np.isfinite(put_mid)
    if not both.any():
        return None
    ks, c, p = strike[both], call_mid[both], put_mid[both]
    nearest = np.argsort(np.abs(ks - spot), kind="stable")[:PARITY_STRIKES]
    fwd = float(np.median(ks[nearest] + (c[nearest] - p[nearest]) / df))
    return fwd if fwd > 0.0 and abs(fwd / spot - 1.0) <= _MAX_PARITY_GAP else None


def _smile(
    strike: FloatArray, is_call: npt.NDArray[np.bool_], usable: npt.NDArray[np.bool_], fwd: float
) -> tuple[FloatArray, npt.NDArray[np.int64]]:
    """Strikes of the smile (ascending) and, per strike, the index of the contract whose IV
    represents it: the first out-of-the-money usable contract at that strike, else the first usable."""
    idx = np.flatnonzero(usable)
    k = strike[idx]
    otm = is_call[idx] == (k >= fwd)
    order = np.lexsort((idx, ~otm, k))  # by strike, out-of-the-money first, then quote order
    k_sorted = k[order]
    first = np.ones(order.size, dtype=np.bool_)
    first[1:] = k_sorted[1:] != k_sorted[:-1]
    return k_sorted[first].astype(np.float64), idx[order][first].astype(np.int64)


def _interp_at(x: FloatArray, y: FloatArray, x0: float) -> float | None:
    """Linear interpolation at x0 when x0 lies within the data (x sorted ascending)."""
    if x.size == 0 or not x[0] <= x0 <= x[-1]:
        return None
    return float(np.interp(x0, x, y))


def _analyze_expiry(
    expiry: str,
    expiry_ns: int,
    now_ns: int,
    idx: npt.NDArray[np.int64],
    arrays: dict[str, npt.NDArray[np.generic]],
    fwd: float,
    from_parity: bool,
    df: float,
    t: float,
    fit: bool = True,
) -> ExpiryAnalysis:
    strike = arrays["strike"][idx].astype(np.float64)
    is_call = arrays["is_call"][idx].astype(np.bool_)
    iv = arrays["iv"][idx].astype(np.float64)
    status = arrays["status"][idx]
    usable = (status == IVStatus.OK) & ~arrays["zero_bid"][idx].astype(np.bool_)
    atm = put25 = call25 = skew = None
    svi: SVIFit | None = None
    if t > 0.0 and usable.any():
        ks, pick = _smile(strike, is_call, usable, fwd)
        vols = iv[pick]
        lnk = np.log(ks / fwd)
        atm = _interp_at(lnk, vols, 0.0)
        sd = vols * math.sqrt(t)
        call_delta = ndtr(-lnk / sd + 0.5 * sd)
        order = np.argsort(call_delta, kind="stable")
        put25 = _interp_at(call_delta[order], vols[order], 0.75)
        call25 = _interp_at(call_delta[order], vols[order], 0.25)
        if put25 is not None and call25 is not None:
            skew = put25 - call25
        # Far wings priced at the tick floor carry the tick, not the smile: fit where |delta| >= 2 %.
        core = (call_delta >= SVI_MIN_DELTA) & (call_delta <= 1.0 - SVI_MIN_DELTA)
        if fit and np.count_nonzero(core) >= MIN_SVI_POINTS:
            vega = arrays["vega"][idx].astype(np.float64)[pick][core]
            spread = arrays["spread"][idx].astype(np.float64)[pick][core]
            iv_spread = np.maximum(spread / np.maximum(vega, 1e-300), _IV_SPREAD_FLOOR)
            svi = fit_svi(lnk[core], vols[core] ** 2 * t, 1.0 / (iv_spread * iv_spread), t=t)
    return ExpiryAnalysis(
        expiry=expiry,
        expiry_ns=expiry_ns,
        t=t,
        days=t * 365.0,
        minutes=(expiry_ns - now_ns) / NS_PER_MIN,
        forward=fwd,
        forward_from_parity=from_parity,
        discount=df,
        contracts=int(idx.size),
        iv_ok=int(np.count_nonzero(status == IVStatus.OK)),
        atm_iv=atm,
        iv_put_25d=put25,
        iv_call_25d=call25,
        skew_25d=skew,
        svi=svi,
    )


def analyze_chain(
    snapshot: ChainSnapshot,
    now_ns: int,
    *,
    rate: float = 0.0,
    calendar: MarketCalendar | None = None,
    svi_expiries: int | None = None,
) -> ChainAnalysis:
    """IVs, Greeks and probabilities per contract and the smile per expiry, as of ``now_ns``.

    ``svi_expiries`` limits the SVI fits (the costly part) to that many nearest live expiries
    (``0``: none; default: all); the other expiries get ``svi=None`` and everything else unchanged.
    """
    cal = calendar or default_calendar()
    quotes = snapshot.quotes
    spot = float(snapshot.underlying_price)
    n = len(quotes)
    symbol = np.array([q.symbol for q in quotes], dtype=np.str_)
    expiry = np.array([q.expiry for q in quotes], dtype=np.str_)
    strike = np.array([q.strike for q in quotes], dtype=np.float64)
    right = np.array([q.right for q in quotes], dtype=np.str_)
    is_call = right == "C"
    bid = np.array([q.bid for q in quotes], dtype=np.float64)
    ask = np.array([q.ask for q in quotes], dtype=np.float64)
    bid_size = np.array([q.bid_size for q in quotes], dtype=np.float64)
    ask_size = np.array([q.ask_size for q in quotes], dtype=np.float64)
    open_interest = np.array([q.open_interest for q in quotes], dtype=np.float64)
    with np.errstate(invalid="ignore"):
        valid = np.isfinite(bid) & np.isfinite(ask) & (ask > 0.0) & (bid >= 0.0) & (bid <= ask)
    mid = np.where(valid, 0.5 * (bid + ask), np.nan)
    spread = np.where(valid, ask - bid, np.nan)
    zero_bid = valid & (bid == 0.0)

    t = np.empty(n)
    fwd = np.empty(n)
    groups: list[tuple[str, int, npt.NDArray[np.int64], float, bool, float, float]] = []
    two_sided = valid & ~zero_bid
    for exp in sorted(set(expiry.tolist())):
        idx = np.flatnonzero(expiry == exp)
        expiry_ns = cal.expiry_close_ns(dt.date.fromisoformat(exp))
        tt = year_fraction(now_ns, expiry_ns)
        df = math.exp(-rate * tt) if tt > 0.0 else 1.0
        forward: float | None = None
        if tt > 0.0:
            sub = idx[two_sided[idx]]
            sub_calls, sub_puts = sub[is_call[sub]], sub[~is_call[sub]]
            calls = dict(zip(strike[sub_calls].tolist(), mid[sub_calls].tolist(), strict=True))
            puts = dict(zip(strike[sub_puts].tolist(), mid[sub_puts].tolist(), strict=True))
            common = np.array(sorted(set(calls) & set(puts)), dtype=np.float64)
            if common.size:
                forward = _parity_forward(
                    common,
                    np.array([calls[k] for k in common]),
                    np.array([puts[k] for k in common]),
                    spot,
                    df,
                )
        from_parity = forward is not None
        f_exp = forward if forward is not None else spot * math.exp(rate * max(tt, 0.0))
        t[idx] = tt
        fwd[idx] = f_exp
        groups.append((exp, expiry_ns, idx, f_exp, from_parity, df, tt))

    (iv, status), greeks = implied_vol_greeks(mid, fwd, strike, t, is_call, rate=rate, spot=spot)
    status = status.copy()
    status[~valid] = IVStatus.NO_QUOTE
    live = t > 0.0
    with np.errstate(divide="ignore", invalid="ignore"):
        carry = np.where(live, np.log(fwd / spot) / np.where(live, t, 1.0), 0.0)
    p_itm = prob_itm(fwd, strike, t, iv, is_call)
    p_touch = prob_touch(spot, strike, t, iv, drift=carry)
    # Probabilities need an IV; keep them NaN wherever the IV is.
    no_iv = ~np.isfinite(iv)
    p_itm[no_iv] = np.nan
    p_touch[no_iv] = np.nan

    arrays: dict[str, npt.NDArray[np.generic]] = {
        "strike": strike,
        "is_call": is_call,
        "iv": iv,
        "status": status,
        "zero_bid": zero_bid,
        "vega": greeks.vega,
        "spread": spread,
    }
    fits_left = len(groups) if svi_expiries is None else svi_expiries
    analyses = []
    for exp, expiry_ns, idx, f_exp, from_parity, df, tt in groups:
        fit = tt > 0.0 and fits_left > 0
        fits_left -= 1 if fit else 0
        analyses.append(_analyze_expiry(exp, expiry_ns, now_ns, idx, arrays, f_exp, from_parity, df, tt, fit))
    expiries = tuple(analyses)
    live_exp = [e for e in expiries if e.t > 0.0]
    term = tuple((e.expiry, e.t, e.atm_iv) for e in live_exp if e.atm_iv is not None)
    slope = None
    if len(live_exp) >= 2 and live_exp[0].atm_iv is not None and live_exp[1].atm_iv is not None:
        gap = live_exp[1].days - live_exp[0].days
        if gap > 0.0:
            slope = (live_exp[1].atm_iv - live_exp[0].atm_iv) / gap
    return ChainAnalysis(
        underlying=snapshot.underlying,
        ts=now_ns,
        spot=spot,
        rate=rate,
        symbol=symbol,
        expiry=expiry,
        strike=strike,
        right=right,
        is_call=is_call,
        bid=bid,
        ask=ask,
        mid=mid,
        spread=spread,
        bid_size=bid_size,
        ask_size=ask_size,
        open_interest=open_interest,
        valid_quote=valid,
        zero_bid=zero_bid,
        t=t,
        forward=fwd,
        iv=iv,
        status=status,
        delta=greeks.delta,
        gamma=greeks.gamma,
        vega=greeks.vega,
        theta=greeks.theta,
        prob_itm=p_itm,
        prob_touch=p_touch,
        expiries=expiries,
        term_structure=term,
        term_slope=slope,
    )


def summarize(analysis: ChainAnalysis) -> dict[str, float]:
    """The flat FeatureEngine summary of an analysis (see :func:`chain_features`)."""
    out: dict[str, float] = {}

    def put(name: str, value: float | None) -> None:
        if value is not None and math.isfinite(value):
            out[name] = float(value)

    live = analysis.live_expiries
    if live:
        near = live[0]
        put("atm_iv", near.atm_iv)
        put("skew_25d", near.skew_25d)
        if near.svi is not None:
            put("svi_rmse", near.svi.iv_rmse)
            put("svi_arb_free", 1.0 if near.svi.butterfly_arbitrage_free else 0.0)
    if len(live) >= 2:
        put("atm_iv_next", live[1].atm_iv)
    put("term_slope", analysis.term_slope)
    n = int(analysis.status.size)
    put("chain_contracts", float(n))
    if n:
        put("chain_iv_ok_frac", float(np.count_nonzero(analysis.status == IVStatus.OK)) / n)
    return out


def chain_features(
    snapshot: ChainSnapshot, now_ns: int, *, rate: float = 0.0, calendar: MarketCalendar | None = None
) -> dict[str, float]:
    """Flat, NaN-free chain summary for the FeatureEngine; keys that cannot be computed are omitted.

    ``atm_iv``, ``skew_25d``, ``svi_rmse`` (the fit-weighted RMS IV error, vol units) and
    ``svi_arb_free`` (1.0/0.0) describe the nearest live expiry, ``atm_iv_next`` the one after;
    ``term_slope`` is vol per calendar day between them; ``chain_contracts`` counts quotes and
    ``chain_iv_ok_frac`` the share with an OK IV.
    """
    # summarize() reads the SVI fit of the nearest live expiry only.
    return summarize(analyze_chain(snapshot, now_ns, rate=rate, calendar=calendar, svi_expiries=1))
