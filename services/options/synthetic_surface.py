"""The synthetic chains' volatility surface and tick rule, shared by the chain source
(:mod:`services.ingest.synthetic_chain`, whose docstring states the model) and the OMS's intrabar
repricing (:mod:`services.oms.intrabar`), so both price on the same surface.

Moved here from the chain module unchanged (it re-exports every name): stage packages may share
``services.options`` but not each other.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from dataclasses import dataclass
from typing import Final

from services.options.svi import SVIParams

PENNY_NAMES: Final = frozenset({"SPY", "QQQ", "IWM"})
TICK_THRESHOLD: Final = 3.0  # option price from which the wider tick applies
TICK_TABLE: Final = {True: (0.01, 0.05), False: (0.05, 0.10)}  # penny name? -> (tick below, from the threshold)


@dataclass(frozen=True, slots=True)
class SurfaceModel:
    """SSVI surface: ATM vol from ``short_vol`` (t -> 0) rising to ``long_vol`` over ``tau`` years."""

    short_vol: float = 0.12
    long_vol: float = 0.18
    tau: float = 0.25
    rho: float = -0.7
    eta: float = 1.0
    gamma: float = 0.5

    def atm_vol(self, t: float) -> float:
        """At-the-money implied vol at maturity ``t`` (years)."""
        return self.long_vol + (self.short_vol - self.long_vol) * math.exp(-t / self.tau)


TRADING_SECONDS_PER_YEAR: Final = 252 * 23_400


@dataclass(frozen=True, slots=True)
class TrailingVolRule:
    """How the synthetic surface's ATM vol follows trailing realised vol (see the module docstring)."""

    vrp: float = 0.10
    window_s: float = 3600.0
    min_returns: int = 15
    min_vol: float = 0.05
    max_vol: float = 1.50

    def __post_init__(self) -> None:
        if not (self.vrp > -1.0 and self.window_s > 0 and self.min_returns >= 2 and 0 < self.min_vol <= self.max_vol):
            raise ValueError(f"invalid trailing vol rule {self!r}")

    def describe(self) -> str:
        return (f"ATM short vol = trailing realised vol x (1 + vrp {self.vrp:g}), realised over the last "
                f"{self.window_s / 60:g} min of the session in elapsed time, clamped to [{self.min_vol:g}, "
                f"{self.max_vol:g}]; the model's fixed level until {self.min_returns} returns are in the window")


class TrailingRealizedVol:
    """Spots of one underlying over the trailing window; realised vol in real elapsed time."""

    __slots__ = ("_day_open", "_points", "rule")

    def __init__(self, rule: TrailingVolRule) -> None:
        self.rule = rule
        self._points: list[tuple[int, float]] = []
        self._day_open = -1

    def update(self, ts_ns: int, spot: float, session_open_ns: int) -> float | None:
        """Add the spot seen at ``ts_ns``; the annualised realised vol, or None while warming up."""
        if session_open_ns != self._day_open:
            self._points = []  # the window never reaches back over a close
            self._day_open = session_open_ns
        pts = self._points
        if pts and ts_ns <= pts[-1][0]:
            return self.value()
        pts.append((ts_ns, spot))
        start = ts_ns - round(self.rule.window_s * 1e9)
        drop = 0
        while drop < len(pts) - 1 and pts[drop][0] < start:
            drop += 1
        if drop:
            del pts[:drop]
        return self.value()

    def value(self) -> float | None:
        pts = self._points
        if len(pts) - 1 < self.rule.min_returns:
            return None
        elapsed = (pts[-1][0] - pts[0][0]) / 1e9 / TRADING_SECONDS_PER_YEAR
        total = 0.0
        for (_, a), (_, b) in itertools.pairwise(pts):
            r = math.log(b / a)
            total += r * r
        return math.sqrt(total / elapsed) if elapsed > 0 else None

    def surface(self, base: SurfaceModel) -> SurfaceModel:
        """``base`` with its short vol set by the rule (``base`` itself while warming up)."""
        rv = self.value()
        if rv is None:
            return base
        rule = self.rule
        short = min(max(rv * (1.0 + rule.vrp), rule.min_vol), rule.max_vol)
        return dataclasses.replace(base, short_vol=short)


DEFAULT_SURFACES: Final = {
    "SPX": SurfaceModel(),
    "SPY": SurfaceModel(),
    "NDX": SurfaceModel(short_vol=0.16, long_vol=0.23),
    "QQQ": SurfaceModel(short_vol=0.16, long_vol=0.23),
}


def surface_svi(model: SurfaceModel, t: float) -> SVIParams:
    """The raw SVI parameters of the SSVI slice at maturity ``t`` (years > 0)."""
    theta = model.atm_vol(t) ** 2 * t
    phi = model.eta / (theta**model.gamma * (1.0 + theta) ** (1.0 - model.gamma))
    rho = model.rho
    return SVIParams(
        a=0.5 * theta * (1.0 - rho * rho),
        b=0.5 * theta * phi,
        rho=rho,
        m=-rho / phi,
        sigma=math.sqrt(1.0 - rho * rho) / phi,
    )


def tick_size(underlying: str, price: float) -> float:
    """Minimum price increment: penny names 0.01 under $3 (0.05 above); others 0.05 / 0.10."""
    below, above = TICK_TABLE[underlying in PENNY_NAMES]
    return below if price < TICK_THRESHOLD else above
