"""Rolling realized volatility of bar log returns over several windows, O(1) per bar.

``rv_w`` is the sample standard deviation (ddof=1, as pandas ``rolling(w).std()``) of the last
``w`` log returns ``log(close_t / close_{t-1})`` between consecutive accepted bars, annualized with
``sqrt(periods_per_year)`` (``252 * 390`` for 1-minute bars). Returns run across sessions and
extended hours like the Wilder indicators; the first value appears once ``w`` returns exist.

All windows share one ring buffer of returns. Each window keeps a sliding Welford mean and sum of
squared deviations (add the new return, remove the one leaving). Rounding cannot pile up: every
``RECOMPUTE_EVERY`` returns, and whenever a window's sum of squares falls below ``DROP_RECOMPUTE``
times its peak since the last exact pass (removing a large return from a now quiet window cancels
digits), the window is recomputed exactly from the buffer (two-pass, O(w), rare); a window of
identical returns (flat prices) has exactly zero variance, as pandas reports it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

RECOMPUTE_EVERY = 1024
DROP_RECOMPUTE = 1e-3
MINUTES_PER_YEAR = 252 * 390


class RealizedVolatility:
    """Annualized rolling realized volatility for each window in ``windows`` (NaN while warming up)."""

    __slots__ = (
        "_buf",
        "_count",
        "_last",
        "_m2",
        "_mean",
        "_peak",
        "_prev",
        "_run",
        "_scale",
        "_size",
        "values",
        "windows",
    )

    def __init__(
        self, windows: Sequence[int] = (5, 15, 30, 60), periods_per_year: float = MINUTES_PER_YEAR
    ) -> None:
        ws = tuple(windows)
        if not ws or any(not isinstance(w, int) or w < 2 for w in ws):
            raise ValueError(f"windows must be integers >= 2, got {windows!r}")
        if not periods_per_year > 0.0:
            raise ValueError(f"periods_per_year must be > 0, got {periods_per_year!r}")
        self.windows = ws
        self._size = max(ws) + 1  # the newest return and the one leaving the widest window
        self._buf = [0.0] * self._size
        self._count = 0
        self._prev = math.nan
        self._last = math.nan
        self._run = 0
        self._mean = [0.0] * len(ws)
        self._m2 = [0.0] * len(ws)
        self._peak = [0.0] * len(ws)
        self._scale = math.sqrt(periods_per_year)
        self.values = [math.nan] * len(ws)

    def update(self, close: float) -> None:
        """Feed one bar's close."""
        prev = self._prev
        self._prev = close
        if prev != prev:  # first bar: no return yet
            return
        r = math.log(close / prev)
        k = self._count  # index of this return
        self._count = k + 1
        size = self._size
        buf = self._buf
        buf[k % size] = r
        run = self._run + 1 if r == self._last else 1
        self._run = run
        self._last = r
        periodic = (k + 1) % RECOMPUTE_EVERY == 0
        means = self._mean
        m2s = self._m2
        peaks = self._peak
        values = self.values
        for i, w in enumerate(self.windows):
            if run >= w:
                mean = r
                m2 = peak = 0.0
            elif periodic:
                mean, m2 = self._exact(k, w)
                peak = m2
            elif k >= w:
                mean = means[i]
                old = buf[(k - w) % size]
                delta = r - old
                new_mean = mean + delta / w
                m2 = m2s[i] + delta * (r - new_mean + old - mean)
                mean = new_mean
                peak = peaks[i]
                if m2 > peak:
                    peak = m2
                elif m2 < peak * DROP_RECOMPUTE:
                    mean, m2 = self._exact(k, w)
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
                values[i] = math.sqrt(m2 / (w - 1)) * self._scale if m2 > 0.0 else 0.0

    def _exact(self, k: int, w: int) -> tuple[float, float]:
        """Two-pass mean and sum of squared deviations of the window ending at return ``k``."""
        size = self._size
        buf = self._buf
        n = w if k + 1 >= w else k + 1
        total = 0.0
        for j in range(k + 1 - n, k + 1):
            total += buf[j % size]
        mean = total / n
        m2 = 0.0
        for j in range(k + 1 - n, k + 1):
            d = buf[j % size] - mean
            m2 += d * d
        return mean, m2
