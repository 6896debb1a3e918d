"""Wilder-smoothed trend indicators (ATR, +DI, -DI, ADX), streaming and O(1) per bar.

Values follow TA-Lib's ATR, PLUS_DI, MINUS_DI and ADX (C library 0.8, unstable period 0) exactly,
including its seeding; counting accepted bars from 0:

- true range TR starts at bar 1 (it needs the previous close);
- ATR(n): first value at bar n, the mean of TR[1..n]; then ``atr = (atr * (n - 1) + tr) / n``;
- +DM/-DM/TR sums for DI(n) and ADX(n) start as plain sums over bars 1..n-1, then Wilder steps
  ``s = s - s / n + x`` from bar n on, so +DI/-DI (``100 * DM / TR``) first appear at bar n;
  while the smoothed TR is exactly 0 (flat prices since the start) DI repeats its previous value
  (0 before any movement), as TA-Lib does;
- DX = ``100 * |-DI - +DI| / (-DI + +DI)``, skipped when the DI sum is within 1e-14 of zero;
  ADX(n) first appears at bar 2n-1 as the sum of the DX of bars n..2n-1 divided by n, then
  ``adx = (adx * (n - 1) + dx) / n`` (held when DX is skipped).

The state is a handful of floats; the indicators never reset (they run across sessions and
through extended hours, fed every accepted bar).
"""

from __future__ import annotations

import math

_DX_EPSILON = 1e-14  # TA-Lib's TA_EPSILON: a DI sum inside this band yields no DX


def _check_period(period: int) -> int:
    if not isinstance(period, int) or period < 2:
        raise ValueError(f"period must be an integer >= 2, got {period!r}")
    return period


class AverageTrueRange:
    """Wilder's average true range; ``value`` is NaN until ``ready``."""

    __slots__ = ("_count", "_prev_close", "_sum", "period", "ready", "value")

    def __init__(self, period: int = 14) -> None:
        self.period = _check_period(period)
        self._count = 0
        self._prev_close = 0.0
        self._sum = 0.0
        self.ready = False
        self.value = math.nan

    def update(self, high: float, low: float, close: float) -> None:
        """Feed one bar."""
        count = self._count
        self._count = count + 1
        prev_close = self._prev_close
        self._prev_close = close
        if count == 0:
            return
        tr = high - low
        x = abs(prev_close - high)
        if x > tr:
            tr = x
        x = abs(low - prev_close)
        if x > tr:
            tr = x
        n = self.period
        if self.ready:
            atr = self.value * (n - 1)
            atr += tr
            self.value = atr / n
        else:
            self._sum += tr
            if count == n:
                self.value = self._sum / n
                self.ready = True


class DirectionalMovement:
    """Wilder's +DI, -DI (from bar ``period``) and ADX (from bar ``2 * period - 1``); NaN until ready."""

    __slots__ = (
        "_count",
        "_dx_sum",
        "_minus_dm",
        "_plus_dm",
        "_prev_close",
        "_prev_high",
        "_prev_low",
        "_tr",
        "adx",
        "adx_ready",
        "di_ready",
        "minus_di",
        "period",
        "plus_di",
    )

    def __init__(self, period: int = 14) -> None:
        self.period = _check_period(period)
        self._count = 0
        self._prev_high = 0.0
        self._prev_low = 0.0
        self._prev_close = 0.0
        self._plus_dm = 0.0
        self._minus_dm = 0.0
        self._tr = 0.0
        self._dx_sum = 0.0
        self.di_ready = False
        self.adx_ready = False
        self.plus_di = math.nan
        self.minus_di = math.nan
        self.adx = math.nan

    def update(self, high: float, low: float, close: float) -> None:
        """Feed one bar."""
        count = self._count
        self._count = count + 1
        prev_high = self._prev_high
        prev_low = self._prev_low
        prev_close = self._prev_close
        self._prev_high = high
        self._prev_low = low
        self._prev_close = close
        if count == 0:
            return
        tr = high - low
        x = abs(prev_close - high)
        if x > tr:
            tr = x
        x = abs(low - prev_close)
        if x > tr:
            tr = x
        diff_p = high - prev_high
        diff_m = prev_low - low
        n = self.period
        if count < n:
            # Seed: plain sums over bars 1..n-1.
            if diff_m > 0.0 and diff_p < diff_m:
                self._minus_dm += diff_m
            elif diff_p > 0.0 and diff_p > diff_m:
                self._plus_dm += diff_p
            self._tr += tr
            return
        plus_dm = self._plus_dm
        minus_dm = self._minus_dm
        if diff_m > 0.0 and diff_p < diff_m:
            minus_dm = minus_dm - minus_dm / n + diff_m
            plus_dm = plus_dm - plus_dm / n
        elif diff_p > 0.0 and diff_p > diff_m:
            plus_dm = plus_dm - plus_dm / n + diff_p
            minus_dm = minus_dm - minus_dm / n
        else:
            plus_dm = plus_dm - plus_dm / n
            minus_dm = minus_dm - minus_dm / n
        tr_s = self._tr
        tr_s = tr_s - tr_s / n + tr
        self._plus_dm = plus_dm
        self._minus_dm = minus_dm
        self._tr = tr_s
        if tr_s != 0.0:
            plus_di = 100.0 * (plus_dm / tr_s)
            minus_di = 100.0 * (minus_dm / tr_s)
        elif self.di_ready:
            plus_di = self.plus_di
            minus_di = self.minus_di
        else:
            plus_di = minus_di = 0.0
        self.plus_di = plus_di
        self.minus_di = minus_di
        self.di_ready = True
        total = minus_di + plus_di
        has_dx = not (-_DX_EPSILON < total < _DX_EPSILON)
        if self.adx_ready:
            if has_dx:
                self.adx = (self.adx * (n - 1) + 100.0 * (abs(minus_di - plus_di) / total)) / n
        else:
            if has_dx:
                self._dx_sum += 100.0 * (abs(minus_di - plus_di) / total)
            if count == 2 * n - 1:
                self.adx = self._dx_sum / n
                self.adx_ready = True
