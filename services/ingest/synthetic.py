"""Deterministic synthetic 1-minute bars on the real market calendar, for demos and tests.

The model, per regular-hours minute ``m`` of a session with ``n`` minutes:

- log return ``r = sigma * season(m) * eps``, ``eps = sqrt(h) * z`` with ``z`` a unit-variance
  Student-t draw and ``h`` a GARCH(1,1) variance (``h = omega + alpha * eps_prev**2 + beta * h_prev``,
  unconditional variance 1), so volatility clusters and carries across sessions;
- ``season`` is a U-shape in minutes from the open and to the close (absolute minutes, so an early
  close at 13:00 gets its own closing burst);
- each session opens with an overnight gap that also shocks the GARCH variance;
- volume follows a U-shaped profile with a closing-auction ramp, lognormal noise and more volume
  on larger moves;
- high/low extend past max/min(open, close) by half-normal wicks scaled to the bar's volatility.

Prices are rounded to cents (monotone, so OHLC stays consistent) and never below one cent.
Same arguments -> identical bars: all randomness comes from one ``numpy.random.Generator(seed)``,
drawn in a fixed order.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass

import numpy as np

from services.core.calendar import NS_PER_MIN, MarketCalendar, Session, default_calendar
from services.core.events import Bar


@dataclass(frozen=True)
class SyntheticParams:
    """Shape of the synthetic market (defaults look like SPY: ~1% daily moves, ~100k shares a minute).

    Attributes:
        minute_vol: base stdev of a one-minute log return at midday.
        garch_alpha: GARCH(1,1) reaction to the last shock.
        garch_beta: GARCH(1,1) persistence; ``alpha + beta < 1``.
        t_dof: degrees of freedom of the Student-t innovations (> 2; fat tails).
        open_vol_boost / open_vol_minutes: extra volatility at the open and its decay (minutes).
        close_vol_boost / close_vol_minutes: extra volatility into the close and its rise (minutes).
        gap_vol: stdev of the overnight log gap.
        base_volume: midday volume per minute.
        open_volume_boost / close_volume_boost: extra volume multiples at the open / into the close.
        volume_noise: stdev of the lognormal volume noise.
        wick: scale of high/low wicks relative to the bar's volatility.
    """

    minute_vol: float = 0.0004
    garch_alpha: float = 0.06
    garch_beta: float = 0.92
    t_dof: float = 5.0
    open_vol_boost: float = 1.6
    open_vol_minutes: float = 20.0
    close_vol_boost: float = 0.7
    close_vol_minutes: float = 12.0
    gap_vol: float = 0.004
    base_volume: float = 100_000.0
    open_volume_boost: float = 4.0
    close_volume_boost: float = 5.0
    volume_noise: float = 0.35
    wick: float = 0.6

    def __post_init__(self) -> None:
        if not (self.garch_alpha >= 0 and self.garch_beta >= 0 and self.garch_alpha + self.garch_beta < 1):
            raise ValueError("GARCH needs alpha >= 0, beta >= 0 and alpha + beta < 1")
        if self.t_dof <= 2:
            raise ValueError("t_dof must be > 2 for a finite variance")
        if self.minute_vol <= 0 or self.gap_vol < 0 or self.base_volume <= 0:
            raise ValueError("minute_vol and base_volume must be > 0, gap_vol >= 0")


def _sessions(cal: MarketCalendar, start: dt.date, count: int) -> list[Session]:
    first = cal.session(start) or cal.next_session(start)
    out = [first]
    while len(out) < count:
        out.append(cal.next_session(out[-1].date))
    return out


def _cents(x: np.ndarray) -> np.ndarray:
    return np.maximum(np.round(x, 2), 0.01)


def synthetic_bars(
    symbol: str,
    start_date: dt.date | str,
    sessions: int,
    seed: int,
    start_price: float,
    *,
    params: SyntheticParams | None = None,
    calendar: MarketCalendar | None = None,
) -> list[Bar]:
    """Regular-hours 1-minute bars for ``sessions`` sessions from the first one on/after ``start_date``."""
    if sessions < 0:
        raise ValueError("sessions must be >= 0")
    if not (math.isfinite(start_price) and start_price > 0):
        raise ValueError("start_price must be a positive number")
    if not symbol:
        raise ValueError("symbol must not be empty")
    if sessions == 0:
        return []
    p = params or SyntheticParams()
    cal = calendar or default_calendar()
    start = dt.date.fromisoformat(start_date) if isinstance(start_date, str) else start_date
    rng = np.random.default_rng(seed)
    t_scale = math.sqrt((p.t_dof - 2) / p.t_dof)
    omega = 1.0 - p.garch_alpha - p.garch_beta

    bars: list[Bar] = []
    log_close = math.log(start_price)
    h, eps_prev = 1.0, 0.0
    for index, session in enumerate(_sessions(cal, start, sessions)):
        n = (session.close_ns - session.open_ns) // NS_PER_MIN
        m = np.arange(n, dtype=np.float64)
        to_close = n - 1 - m
        season = (
            1.0
            + p.open_vol_boost * np.exp(-m / p.open_vol_minutes)
            + p.close_vol_boost * np.exp(-to_close / p.close_vol_minutes)
        )
        volume_shape = (
            1.0 + p.open_volume_boost * np.exp(-m / 15.0) + p.close_volume_boost * np.exp(-to_close / 8.0)
        )
        # Fixed draw order per session keeps the output a pure function of the seed.
        gap_z = float(rng.standard_t(p.t_dof)) * t_scale
        z = rng.standard_t(p.t_dof, size=n) * t_scale
        wick_hi = np.abs(rng.standard_normal(n))
        wick_lo = np.abs(rng.standard_normal(n))
        vol_noise = rng.standard_normal(n)

        if index > 0:
            # The overnight move is news: it moves the price and feeds the variance like a shock.
            log_close += p.gap_vol * gap_z
            h = omega + p.garch_alpha * gap_z**2 + p.garch_beta * h
            eps_prev = 0.0
        eps = np.empty(n)
        cond_sd = np.empty(n)
        for i in range(n):
            h = omega + p.garch_alpha * eps_prev**2 + p.garch_beta * h
            sd = math.sqrt(h)
            cond_sd[i] = sd
            eps_prev = sd * float(z[i])
            eps[i] = eps_prev

        bar_sd = p.minute_vol * season * cond_sd
        log_c = log_close + np.cumsum(p.minute_vol * season * eps)
        log_o = np.concatenate(([log_close], log_c[:-1]))
        log_h = np.maximum(log_o, log_c) + p.wick * bar_sd * wick_hi
        log_l = np.minimum(log_o, log_c) - p.wick * bar_sd * wick_lo
        log_close = float(log_c[-1])

        o, hi, lo, c = (_cents(np.exp(x)) for x in (log_o, log_h, log_l, log_c))
        # Busier minutes trade more: volume rises with the size of the shock (|eps| averages ~0.8).
        activity = 0.6 + 0.5 * np.abs(eps) / 0.8
        noise = np.exp(p.volume_noise * vol_noise - 0.5 * p.volume_noise**2)
        volume = np.round(p.base_volume * volume_shape * activity * noise)
        ts = session.open_ns + np.arange(n, dtype=np.int64) * NS_PER_MIN
        bars.extend(
            Bar(ts=t, symbol=symbol, open=a, high=b, low=d, close=e, volume=v, interval_s=60)
            for t, a, b, d, e, v in zip(
                ts.tolist(), o.tolist(), hi.tolist(), lo.tolist(), c.tolist(), volume.tolist(), strict=True
            )
        )
    return bars
