"""Vectorised bar features over a whole array of bars, for research; same numbers as the engine.

The recurrences (Wilder smoothing, session VWAP sums, sliding Welford, opening range) run as numba
kernels that perform the streaming modules' floating-point operations in the same order, so the
results match :class:`~services.features.engine.FeatureEngine` to rounding (tested to 1e-12
relative on real data); session lookups and the closed-form columns are numpy. Missing values
(warm-up, outside regular hours, flagged bad bars) are NaN here where the streaming vector omits the
key; flagged bars (:mod:`.bar_quality`) are classified by the same streaming rule first and the
kernels then run over the good bars only.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import numba
import numpy as np
import numpy.typing as npt
import pandas as pd

from services.core.calendar import NEW_YORK, NS_PER_MIN, NS_PER_S, MarketCalendar, default_calendar, ny_date
from services.core.events import Bar

from .bar_quality import classify_bars
from .engine import DEFAULT_BAR_INTERVAL_S, FeatureConfig, bar_feature_names
from .volatility import DROP_RECOMPUTE, RECOMPUTE_EVERY

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
_NS_PER_HOUR = 3600 * NS_PER_S


@numba.njit(cache=True)
def _wilder_kernel(
    high: FloatArray, low: FloatArray, close: FloatArray, atr_n: int, adx_n: int
) -> tuple[FloatArray, FloatArray, FloatArray, FloatArray]:
    size = high.shape[0]
    atr = np.full(size, np.nan)
    plus = np.full(size, np.nan)
    minus = np.full(size, np.nan)
    adx = np.full(size, np.nan)
    atr_sum = 0.0
    atr_value = 0.0
    plus_dm = 0.0
    minus_dm = 0.0
    tr_s = 0.0
    dx_sum = 0.0
    adx_value = 0.0
    plus_di = 0.0
    minus_di = 0.0
    n = adx_n
    for k in range(1, size):
        h = high[k]
        lo = low[k]
        pc = close[k - 1]
        tr = h - lo
        x = abs(pc - h)
        if x > tr:
            tr = x
        x = abs(lo - pc)
        if x > tr:
            tr = x
        if k > atr_n:
            a = atr_value * (atr_n - 1)
            a += tr
            atr_value = a / atr_n
            atr[k] = atr_value
        else:
            atr_sum += tr
            if k == atr_n:
                atr_value = atr_sum / atr_n
                atr[k] = atr_value
        diff_p = h - high[k - 1]
        diff_m = low[k - 1] - lo
        if k < n:
            if diff_m > 0.0 and diff_p < diff_m:
                minus_dm += diff_m
            elif diff_p > 0.0 and diff_p > diff_m:
                plus_dm += diff_p
            tr_s += tr
            continue
        if diff_m > 0.0 and diff_p < diff_m:
            minus_dm = minus_dm - minus_dm / n + diff_m
            plus_dm = plus_dm - plus_dm / n
        elif diff_p > 0.0 and diff_p > diff_m:
            plus_dm = plus_dm - plus_dm / n + diff_p
            minus_dm = minus_dm - minus_dm / n
        else:
            plus_dm = plus_dm - plus_dm / n
            minus_dm = minus_dm - minus_dm / n
        tr_s = tr_s - tr_s / n + tr
        if tr_s != 0.0:
            plus_di = 100.0 * (plus_dm / tr_s)
            minus_di = 100.0 * (minus_dm / tr_s)
        plus[k] = plus_di
        minus[k] = minus_di
        total = minus_di + plus_di
        has_dx = not (-1e-14 < total < 1e-14)
        if k > 2 * n - 1:
            if has_dx:
                adx_value = (adx_value * (n - 1) + 100.0 * (abs(minus_di - plus_di) / total)) / n
            adx[k] = adx_value
        else:
            if has_dx:
                dx_sum += 100.0 * (abs(minus_di - plus_di) / total)
            if k == 2 * n - 1:
                adx_value = dx_sum / n
                adx[k] = adx_value
    return atr, plus, minus, adx


@numba.njit(cache=True)
def _vwap_kernel(
    session_open: IntArray,
    regular: npt.NDArray[np.bool_],
    high: FloatArray,
    low: FloatArray,
    close: FloatArray,
    volume: FloatArray,
) -> tuple[FloatArray, FloatArray]:
    size = high.shape[0]
    vwap = np.full(size, np.nan)
    sigma = np.full(size, np.nan)
    current = -1
    p0 = 0.0
    vol = 0.0
    s1 = 0.0
    s2 = 0.0
    for k in range(size):
        if not regular[k]:
            continue
        p = (high[k] + low[k] + close[k]) / 3.0
        if session_open[k] != current:
            current = session_open[k]
            p0 = p
            vol = 0.0
            s1 = 0.0
            s2 = 0.0
        v = volume[k]
        if v > 0.0:
            d = p - p0
            vd = v * d
            vol += v
            s1 += vd
            s2 += vd * d
        if vol > 0.0:
            mean = s1 / vol
            var = s2 / vol - mean * mean
            vwap[k] = p0 + mean
            sigma[k] = math.sqrt(var) if var > 0.0 else 0.0
    return vwap, sigma


@numba.njit(cache=True)
def _exact_window(buf: FloatArray, k: int, w: int) -> tuple[float, float]:
    ring = buf.shape[0]
    n = w if k + 1 >= w else k + 1
    total = 0.0
    for j in range(k + 1 - n, k + 1):
        total += buf[j % ring]
    mean = total / n
    m2 = 0.0
    for j in range(k + 1 - n, k + 1):
        d = buf[j % ring] - mean
        m2 += d * d
    return mean, m2


@numba.njit(cache=True)
def _realized_vol_kernel(
    close: FloatArray, windows: IntArray, scale: float, recompute: int, drop: float
) -> FloatArray:
    size = close.shape[0]
    nw = windows.shape[0]
    out = np.full((size, nw), np.nan)
    ring = 0
    for i in range(nw):
        if windows[i] > ring:
            ring = windows[i]
    ring += 1
    buf = np.zeros(ring)
    means = np.zeros(nw)
    m2s = np.zeros(nw)
    peaks = np.zeros(nw)
    last = np.nan
    run = 0
    for t in range(1, size):
        r = math.log(close[t] / close[t - 1])
        k = t - 1
        buf[k % ring] = r
        run = run + 1 if r == last else 1
        last = r
        periodic = (k + 1) % recompute == 0
        for i in range(nw):
            w = windows[i]
            if run >= w:
                mean = r
                m2 = 0.0
                peak = 0.0
            elif periodic:
                mean, m2 = _exact_window(buf, k, w)
                peak = m2
            elif k >= w:
                mean = means[i]
                old = buf[(k - w) % ring]
                delta = r - old
                new_mean = mean + delta / w
                m2 = m2s[i] + delta * (r - new_mean + old - mean)
                mean = new_mean
                peak = peaks[i]
                if m2 > peak:
                    peak = m2
                elif m2 < peak * drop:
                    mean, m2 = _exact_window(buf, k, w)
                    peak = m2
            else:
                mean = means[i]
                d = r - mean
                mean += d / (k + 1)
                m2 = m2s[i] + d * (r - mean)
                peak = peaks[i]
                if m2 > peak:
                    peak = m2
            means[i] = mean
            m2s[i] = m2
            peaks[i] = peak
            if k + 1 >= w:
                out[t, i] = math.sqrt(m2 / (w - 1)) * scale if m2 > 0.0 else 0.0
    return out


@numba.njit(cache=True)
def _opening_range_kernel(
    session_open: IntArray,
    regular: npt.NDArray[np.bool_],
    ts: IntArray,
    end: IntArray,
    high: FloatArray,
    low: FloatArray,
    close: FloatArray,
    window_ns: int,
) -> tuple[FloatArray, FloatArray, FloatArray]:
    size = high.shape[0]
    hi_out = np.full(size, np.nan)
    lo_out = np.full(size, np.nan)
    brk_out = np.full(size, np.nan)
    current = -1
    hi = -np.inf
    lo = np.inf
    for k in range(size):
        if not regular[k]:
            continue
        if session_open[k] != current:
            current = session_open[k]
            hi = -np.inf
            lo = np.inf
        range_end = current + window_ns
        if ts[k] < range_end:
            if high[k] > hi:
                hi = high[k]
            if low[k] < lo:
                lo = low[k]
        if end[k] >= range_end and hi >= lo:
            hi_out[k] = hi
            lo_out[k] = lo
            c = close[k]
            brk_out[k] = 1.0 if c > hi else (-1.0 if c < lo else 0.0)
    return hi_out, lo_out, brk_out


def session_bounds(ts: IntArray, calendar: MarketCalendar | None = None) -> tuple[IntArray, IntArray]:
    """Open and close (ns) of each timestamp's New York session day; -1 where the day has no session."""
    cal = calendar if calendar is not None else default_calendar()
    hours, inverse = np.unique(np.asarray(ts, dtype=np.int64) // _NS_PER_HOUR, return_inverse=True)
    opens = np.full(hours.shape[0], -1, dtype=np.int64)
    closes = np.full(hours.shape[0], -1, dtype=np.int64)
    for i, hour in enumerate(hours.tolist()):
        s = cal.session(ny_date(hour * _NS_PER_HOUR))
        if s is not None:
            opens[i] = s.open_ns
            closes[i] = s.close_ns
    return opens[inverse], closes[inverse]


def batch_bar_features(
    ts: npt.ArrayLike,
    high: npt.ArrayLike,
    low: npt.ArrayLike,
    close: npt.ArrayLike,
    volume: npt.ArrayLike,
    *,
    open_: npt.ArrayLike | None = None,
    interval_s: int | None = None,
    config: FeatureConfig | None = None,
    calendar: MarketCalendar | None = None,
) -> pd.DataFrame:
    """Every bar feature for bars with strictly increasing ``ts`` (ns, bar start); NaN where absent.

    Columns follow :func:`~services.features.engine.bar_feature_names`; the index is the bar start
    in New York time. ``open_`` feeds the spike rule (a wick is measured from the bar's body); without
    it the body is the close alone, so pass it to get the engine's verdicts on every bar.
    """
    cfg = config or FeatureConfig()
    t = np.ascontiguousarray(ts, dtype=np.int64)
    h = np.ascontiguousarray(high, dtype=np.float64)
    lo = np.ascontiguousarray(low, dtype=np.float64)
    c = np.ascontiguousarray(close, dtype=np.float64)
    v = np.ascontiguousarray(volume, dtype=np.float64)
    o = c if open_ is None else np.ascontiguousarray(open_, dtype=np.float64)
    if not (t.shape == h.shape == lo.shape == c.shape == v.shape == o.shape) or t.ndim != 1:
        raise ValueError("ts, open, high, low, close and volume must be 1-d arrays of one length")
    if t.size > 1 and not bool(np.all(np.diff(t) > 0)):
        raise ValueError("ts must be strictly increasing")
    if not (
        np.all(np.isfinite(h))
        and np.all(np.isfinite(lo))
        and np.all(np.isfinite(c))
        and np.all(np.isfinite(v))
        and np.all(np.isfinite(o))
    ):
        raise ValueError("prices and volumes must be finite")
    if not (np.all(lo > 0.0) and np.all(lo <= h) and np.all(c > 0.0) and np.all(v >= 0.0)):
        raise ValueError("prices must be positive with low <= high, volumes non-negative")
    interval = interval_s if interval_s is not None else cfg.bar_interval_s or DEFAULT_BAR_INTERVAL_S
    interval_ns = interval * NS_PER_S
    end_all = t + interval_ns
    opens_all, closes_all = session_bounds(t, calendar)
    regular_all = (opens_all >= 0) & (t >= opens_all) & (t < closes_all)
    # Flagged bars (zero-volume regular-hours bars, one-bar spikes) feed no indicator: the kernels run
    # over the good bars only and the flagged rows keep just close and the clock columns.
    good = classify_bars(o, h, lo, c, v, regular_all, cfg.bar_quality) == 0
    subset = _indicators(t[good], h[good], lo[good], c[good], v[good], end_all[good], opens_all[good],
                         regular_all[good], interval, cfg)
    out: dict[str, FloatArray] = {}
    for name, column in subset.items():
        full = np.full(t.shape[0], np.nan)
        full[good] = column
        out[name] = full
    out["close"] = c.copy()
    out["minutes_since_open"] = np.where(regular_all, (end_all - opens_all) / NS_PER_MIN, np.nan)
    out["minutes_to_close"] = np.where(regular_all, (closes_all - end_all) / NS_PER_MIN, np.nan)

    index = pd.DatetimeIndex(pd.to_datetime(t, utc=True).tz_convert(NEW_YORK), name="ts")
    frame = pd.DataFrame(out, index=index)
    return frame[list(bar_feature_names(cfg))]


def _indicators(
    t: IntArray,
    h: FloatArray,
    lo: FloatArray,
    c: FloatArray,
    v: FloatArray,
    end: IntArray,
    opens: IntArray,
    regular: npt.NDArray[np.bool_],
    interval: int,
    cfg: FeatureConfig,
) -> dict[str, FloatArray]:
    """Every indicator column over a run of good bars (the clock columns are the caller's)."""
    out: dict[str, FloatArray] = {}
    vwap, sigma = _vwap_kernel(opens, regular, h, lo, c, v)
    out["vwap"] = vwap
    for k in cfg.vwap_band_sigmas:
        out[f"vwap_upper_{k}"] = vwap + float(k) * sigma
    for k in cfg.vwap_band_sigmas:
        out[f"vwap_lower_{k}"] = vwap - float(k) * sigma
    atr, plus, minus, adx_a = _wilder_kernel(h, lo, c, cfg.atr_period, cfg.adx_period)
    out[f"atr_{cfg.atr_period}"] = atr
    out[f"adx_{cfg.adx_period}"] = adx_a
    out[f"plus_di_{cfg.adx_period}"] = plus
    out[f"minus_di_{cfg.adx_period}"] = minus
    out["vwap_sigma"] = sigma
    rv = _realized_vol_kernel(
        c,
        np.asarray(cfg.rv_windows, dtype=np.int64),
        math.sqrt(cfg.periods_per_year(interval)),
        RECOMPUTE_EVERY,
        DROP_RECOMPUTE,
    )
    for i, w in enumerate(cfg.rv_windows):
        out[f"rv_{w}"] = rv[:, i]
    for m in cfg.opening_range_minutes:
        hi, low_or, brk = _opening_range_kernel(opens, regular, t, end, h, lo, c, m * NS_PER_MIN)
        out[f"or_high_{m}"] = hi
        out[f"or_low_{m}"] = low_or
        out[f"or_breakout_{m}"] = brk
    with np.errstate(invalid="ignore", divide="ignore"):
        dist = (c - vwap) / atr
    out["vwap_dist_atr"] = np.where(~np.isnan(vwap) & (atr > 0.0), dist, np.nan)
    return out


def bars_to_frame(bars: Iterable[Bar]) -> pd.DataFrame:
    """Columns ts (int ns), open, high, low, close, volume of a bar sequence."""
    rows = [(b.ts, b.open, b.high, b.low, b.close, b.volume) for b in bars]
    frame = pd.DataFrame(rows, columns=["ts", "open", "high", "low", "close", "volume"])
    return frame.astype(
        {
            "ts": "int64",
            "open": "float64",
            "high": "float64",
            "low": "float64",
            "close": "float64",
            "volume": "float64",
        }
    )


def batch_features_of_bars(
    bars: Iterable[Bar], *, config: FeatureConfig | None = None, calendar: MarketCalendar | None = None
) -> pd.DataFrame:
    """:func:`batch_bar_features` of Bar events (one symbol, one interval, increasing ts)."""
    items = list(bars)
    intervals = {b.interval_s for b in items}
    if len(intervals) > 1:
        raise ValueError(f"bars of several intervals: {sorted(intervals)}")
    frame = bars_to_frame(items)
    interval = intervals.pop() if intervals else None
    return batch_bar_features(
        frame["ts"].to_numpy(),
        frame["high"].to_numpy(),
        frame["low"].to_numpy(),
        frame["close"].to_numpy(),
        frame["volume"].to_numpy(),
        open_=frame["open"].to_numpy(),
        interval_s=interval,
        config=config,
        calendar=calendar,
    )
