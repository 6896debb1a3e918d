"""Bad-bar classification: which accepted bars are kept out of indicator updates, and why.

A bar that passed validation (:mod:`services.ingest.validation`: finite, positive, ordered) can still
be unfit to move an indicator. Two kinds are flagged, causally (a bar's verdict uses only that bar and
the good bars before it, never a later one):

- ``zero_volume``: a regular-hours bar (``open <= ts < close`` of its session) with volume 0 -- a
  minute with no trade, whose prices are a stale carry-over. Extended-hours bars with volume 0 are
  not flagged: some vendors (the SPY recording among them) report no pre-market volume at all.
- ``spike``: a single-bar excursion that came back within the bar (a bad print's wick). With ``m``
  the median close of the last ``spike_window`` (20) good bars and ``a`` the Wilder
  ATR(``atr_period``, 14) of the good bars so far, the threshold is
  ``T = max(spike_k * a, spike_floor_bps * 1e-4 * m)`` (10 ATRs, and at least 50 bps of the price so
  a quiet pre-market's tiny ATR does not turn every busy minute into a spike). A bar is a spike when
  one of its wicks reaches more than ``T`` beyond both its own body (``max/min(open, close)``) and
  ``m``: ``high - max(open, close) > T and high - m > T``, or the mirror on the low. A bar whose
  body moved too is a real move (a gap, news) and is kept: telling a one-bar bad print that also
  closed away from a real move would need the next bar, which a live engine does not have. No spike
  is flagged until the window is full and the ATR is ready.

What a flagged bar does (the same in the streaming engine and the batch kernels): it updates no
indicator (ATR, ADX, +DI/-DI, realized vol, session VWAP and bands, opening range), and its vector
carries only its ``close`` and, in regular hours, ``minutes_since_open``/``minutes_to_close``. VWAP
weighting would ignore a zero-volume bar anyway (weight 0); a spike's typical price would not be
ignored, which is why it is kept out. The backtest counts flagged bars by kind (``flagged_bars`` in
``summary.json``, ``summary.csv`` and stdout).
"""

from __future__ import annotations

import statistics
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum

import numpy as np
import numpy.typing as npt

from .wilder import AverageTrueRange


class BarFlag(StrEnum):
    """Why a bar was kept out of the indicators; the values are stable strings (report keys)."""

    ZERO_VOLUME = "zero_volume"
    SPIKE = "spike"


#: Codes of :func:`classify_bars`' output (0: a good bar).
FLAG_CODES: Mapping[int, BarFlag] = {1: BarFlag.ZERO_VOLUME, 2: BarFlag.SPIKE}
_CODE_OF = {flag: code for code, flag in FLAG_CODES.items()}


@dataclass(frozen=True, slots=True)
class BarQualityConfig:
    """Parameters of the bad-bar rule (see the module docstring); ``enabled=False`` flags nothing."""

    spike_k: float = 10.0
    spike_window: int = 20
    spike_floor_bps: float = 50.0
    atr_period: int = 14
    enabled: bool = True

    def __post_init__(self) -> None:
        if not self.spike_k > 0:
            raise ValueError(f"spike_k must be > 0, got {self.spike_k!r}")
        if not isinstance(self.spike_window, int) or self.spike_window < 3:
            raise ValueError(f"spike_window must be an integer >= 3, got {self.spike_window!r}")
        if not self.spike_floor_bps >= 0:
            raise ValueError(f"spike_floor_bps must be >= 0, got {self.spike_floor_bps!r}")
        if not isinstance(self.atr_period, int) or self.atr_period < 2:
            raise ValueError(f"atr_period must be an integer >= 2, got {self.atr_period!r}")


class BarQuality:
    """Streaming classifier of one symbol's bars; state is the good bars' closes and ATR."""

    __slots__ = ("_atr", "_closes", "config")

    def __init__(self, config: BarQualityConfig | None = None) -> None:
        self.config = config or BarQualityConfig()
        self._closes: deque[float] = deque(maxlen=self.config.spike_window)
        self._atr = AverageTrueRange(self.config.atr_period)

    def classify(
        self, open_: float, high: float, low: float, close: float, volume: float, regular: bool
    ) -> BarFlag | None:
        """The bar's flag, or None for a good bar (which then joins the classifier's state)."""
        cfg = self.config
        if cfg.enabled:
            if regular and volume == 0.0:
                return BarFlag.ZERO_VOLUME
            closes = self._closes
            atr = self._atr
            if len(closes) == cfg.spike_window and atr.ready:
                m = statistics.median(closes)
                threshold = max(cfg.spike_k * atr.value, cfg.spike_floor_bps * 1e-4 * m)
                body_hi = max(open_, close)
                body_lo = min(open_, close)
                up = high - body_hi > threshold and high - m > threshold
                down = body_lo - low > threshold and m - low > threshold
                if up or down:
                    return BarFlag.SPIKE
        self._closes.append(close)
        self._atr.update(high, low, close)
        return None


def classify_bars(
    open_: npt.NDArray[np.float64],
    high: npt.NDArray[np.float64],
    low: npt.NDArray[np.float64],
    close: npt.NDArray[np.float64],
    volume: npt.NDArray[np.float64],
    regular: npt.NDArray[np.bool_],
    config: BarQualityConfig | None = None,
) -> npt.NDArray[np.int8]:
    """Flag code per bar (0 good, else a key of :data:`FLAG_CODES`), by :class:`BarQuality` in order."""
    quality = BarQuality(config)
    out = np.zeros(high.shape[0], dtype=np.int8)
    columns = (open_.tolist(), high.tolist(), low.tolist(), close.tolist(), volume.tolist(), regular.tolist())
    for i, (o, h, lo, c, v, r) in enumerate(zip(*columns, strict=True)):
        flag = quality.classify(o, h, lo, c, v, r)
        if flag is not None:
            out[i] = _CODE_OF[flag]
    return out


def flag_counts(codes: npt.NDArray[np.int8]) -> dict[str, int]:
    """Counts by kind (every kind present, zeros included) of :func:`classify_bars` codes."""
    return {FLAG_CODES[c].value: int(np.sum(codes == c)) for c in sorted(FLAG_CODES)}
