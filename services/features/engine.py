"""FeatureEngine: one per underlying; bars, quotes, trades and chain snapshots in, FeatureVectors out.

Feature names (stable; periods come from :class:`FeatureConfig` and are part of the name, shown
here with the defaults). A key is absent while its feature warms up or does not apply, so every
value is a finite float.

Bar features, as of the last accepted bar (see the modules for the exact definitions):

- ``close``: the bar's close.
- ``vwap``, ``vwap_sigma``, ``vwap_upper_1..3``, ``vwap_lower_1..3``: session VWAP and its
  ±k-sigma volume-weighted bands (:mod:`.vwap`); regular hours only.
- ``atr_14``, ``plus_di_14``, ``minus_di_14``, ``adx_14``: Wilder indicators equal to TA-Lib's
  (:mod:`.wilder`); continuous across sessions and extended hours.
- ``rv_5``, ``rv_15``, ``rv_30``, ``rv_60``: annualized realized volatility of bar log returns
  over that many returns (:mod:`.volatility`).
- ``or_high_15``, ``or_low_15``, ``or_breakout_15``, ``or_high_30``, ``or_low_30``,
  ``or_breakout_30``: opening range of the first N minutes and the close's breakout (+1/-1/0),
  published once the range is complete, regular hours only (:mod:`.opening_range`).
- ``vwap_dist_atr``: ``(close - vwap) / atr_14`` when both exist and the ATR is positive.
- ``minutes_since_open``, ``minutes_to_close``: from the session open / to the session close, as
  of the bar's end (the 09:30 bar of a full day reads 1 and 389); regular hours only.

Microstructure features (:mod:`.microstructure`), as of the vector's ``ts``: ``spread``,
``spread_bps``, ``microprice``, ``ofi``, ``trade_imbalance``, ``quote_intensity``,
``trade_intensity``.

Chain features: whatever ``services.options.chain.chain_features`` returns for the last
chain snapshot (non-finite values dropped), under its own names.

Bad bars (:mod:`.bar_quality`): a zero-volume regular-hours bar or a one-bar spike that came back
within the bar updates no indicator; its vector carries only ``close`` and the clock features (and
the microstructure and chain groups), and ``flagged`` counts it by kind. Outside regular hours the
VWAP, opening-range and clock features are absent; ATR, ADX/DI and realized vol keep running
through extended hours (fed every good bar there) and are present at every hour once warm.

Every vector carries the union of the three groups. A bar's vector has ``ts = bar.ts +
interval_s`` (the instant its values became known), a quote's or a chain's vector the event's
``ts``. Bars with a ``ts`` not later than the last accepted bar are duplicates or out of order:
they change nothing and ``on_bar`` returns ``latest``. Malformed input (wrong symbol, wrong bar
interval, non-finite or non-positive prices, low above high, a date outside the calendar) raises
``ValueError`` before any state changes, so the stage can dead-letter it; an invalid, crossed or
out-of-order quote or trade is ignored (``on_quote`` returns None).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from services.core.calendar import NS_PER_MIN, NS_PER_S, MarketCalendar, default_calendar
from services.core.events import Bar, ChainSnapshot, FeatureVector, Quote, Trade

from .bar_quality import BarFlag, BarQuality, BarQualityConfig
from .microstructure import Microstructure
from .opening_range import OpeningRange
from .volatility import RealizedVolatility
from .vwap import SessionLookup, SessionVwap
from .wilder import AverageTrueRange, DirectionalMovement

_INF = math.inf
DEFAULT_BAR_INTERVAL_S = 60

MICROSTRUCTURE_FEATURES: tuple[str, ...] = (
    "spread",
    "spread_bps",
    "microprice",
    "ofi",
    "trade_imbalance",
    "quote_intensity",
    "trade_intensity",
)


@dataclass(frozen=True, slots=True)
class FeatureConfig:
    """Periods and windows of a FeatureEngine; feature names carry the periods.

    Parameters
    ----------
    atr_period: ATR period in bars (default 14, names ``atr_14``).
    adx_period: period of ADX and +DI/-DI in bars (default 14).
    rv_windows: realized-volatility windows in returns (default 5, 15, 30, 60).
    opening_range_minutes: opening-range lengths in minutes (default 15 and 30).
    vwap_band_sigmas: VWAP band multipliers, integers (default 1, 2, 3).
    bar_interval_s: the bar length the engine accepts; None (default) takes it from the first bar
        (``Bar.interval_s``, read from the data) and then refuses bars of any other length. It
        annualizes realized vol and places a bar's end (``ts + interval``).
    trading_days_per_year: annualization (default 252; with 6.5 h sessions).
    ofi_window_s / ofi_window_events: OFI rolling window by event time and/or count (60 s, no cap).
    trade_window_s / trade_window_events: trade-imbalance window (60 s, no cap).
    intensity_tau_s: time constant of the decayed quote/trade intensities (10 s).
    rate: risk-free rate handed to the chain features (default 0).
    bar_quality: the bad-bar rule (:mod:`.bar_quality`): zero-volume regular-hours bars and one-bar
        spikes update no indicator.
    """

    atr_period: int = 14
    adx_period: int = 14
    rv_windows: tuple[int, ...] = (5, 15, 30, 60)
    opening_range_minutes: tuple[int, ...] = (15, 30)
    vwap_band_sigmas: tuple[int, ...] = (1, 2, 3)
    bar_interval_s: int | None = None
    trading_days_per_year: int = 252
    ofi_window_s: float | None = 60.0
    ofi_window_events: int | None = None
    trade_window_s: float | None = 60.0
    trade_window_events: int | None = None
    intensity_tau_s: float = 10.0
    rate: float = 0.0
    bar_quality: BarQualityConfig = field(default_factory=BarQualityConfig)

    def __post_init__(self) -> None:
        for name in ("atr_period", "adx_period"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 2:
                raise ValueError(f"{name} must be an integer >= 2, got {value!r}")
        if not self.rv_windows or any(not isinstance(w, int) or w < 2 for w in self.rv_windows):
            raise ValueError(f"rv_windows must be integers >= 2, got {self.rv_windows!r}")
        if any(not isinstance(m, int) or m < 1 for m in self.opening_range_minutes):
            raise ValueError(
                f"opening_range_minutes must be integers >= 1, got {self.opening_range_minutes!r}"
            )
        if any(not isinstance(k, int) or k < 1 for k in self.vwap_band_sigmas):
            raise ValueError(f"vwap_band_sigmas must be integers >= 1, got {self.vwap_band_sigmas!r}")
        if self.bar_interval_s is not None and (not isinstance(self.bar_interval_s, int) or self.bar_interval_s < 1):
            raise ValueError(f"bar_interval_s must be an integer >= 1, got {self.bar_interval_s!r}")
        for name in ("rv_windows", "opening_range_minutes", "vwap_band_sigmas"):
            values = getattr(self, name)
            if len(set(values)) != len(values):
                raise ValueError(f"{name} has duplicates: {values!r}")

    def periods_per_year(self, interval_s: int | None = None) -> float:
        """Bars per year used to annualize realized volatility (252 * 390 for 1-minute bars) for bars
        of ``interval_s`` (default: ``bar_interval_s``, else 60 s)."""
        length = interval_s if interval_s is not None else self.bar_interval_s or DEFAULT_BAR_INTERVAL_S
        return self.trading_days_per_year * 23_400 / length


def bar_feature_names(config: FeatureConfig | None = None) -> tuple[str, ...]:
    """Every bar feature name in export order (VWAP block and Wilder block first)."""
    cfg = config or FeatureConfig()
    names = ["close", "vwap"]
    names += [f"vwap_upper_{k}" for k in cfg.vwap_band_sigmas]
    names += [f"vwap_lower_{k}" for k in cfg.vwap_band_sigmas]
    names += [f"atr_{cfg.atr_period}", f"adx_{cfg.adx_period}"]
    names += [f"plus_di_{cfg.adx_period}", f"minus_di_{cfg.adx_period}", "vwap_sigma"]
    names += [f"rv_{w}" for w in cfg.rv_windows]
    for m in cfg.opening_range_minutes:
        names += [f"or_high_{m}", f"or_low_{m}", f"or_breakout_{m}"]
    names += ["vwap_dist_atr", "minutes_since_open", "minutes_to_close"]
    return tuple(names)


def feature_names(config: FeatureConfig | None = None) -> tuple[str, ...]:
    """Bar features then microstructure features (chain features are named by the options package)."""
    return bar_feature_names(config) + MICROSTRUCTURE_FEATURES


class FeatureEngine:
    """Streaming features of one underlying; pure (event time only, no I/O)."""

    __slots__ = (
        "_atr",
        "_atr_key",
        "_band_keys",
        "_bar_values",
        "_calendar",
        "_chain",
        "_dm",
        "_dm_keys",
        "_interval_ns",
        "_interval_s",
        "_last_bar_ts",
        "_lookup",
        "_micro",
        "_or",
        "_or_keys",
        "_quality",
        "_rv",
        "_rv_keys",
        "_vwap",
        "config",
        "flagged",
        "last_flag",
        "latest",
        "symbol",
    )

    def __init__(
        self, symbol: str, config: FeatureConfig | None = None, calendar: MarketCalendar | None = None
    ) -> None:
        cfg = config or FeatureConfig()
        self.symbol = symbol
        self.config = cfg
        self._calendar = calendar if calendar is not None else default_calendar()
        self._lookup = SessionLookup(self._calendar)
        self._vwap = SessionVwap(lookup=self._lookup)
        self._atr = AverageTrueRange(cfg.atr_period)
        self._dm = DirectionalMovement(cfg.adx_period)
        self._rv = RealizedVolatility(cfg.rv_windows, cfg.periods_per_year())
        self._or = tuple(OpeningRange(m, lookup=self._lookup) for m in cfg.opening_range_minutes)
        self._micro = Microstructure(
            cfg.ofi_window_s,
            cfg.ofi_window_events,
            cfg.trade_window_s,
            cfg.trade_window_events,
            cfg.intensity_tau_s,
        )
        self._interval_s = cfg.bar_interval_s  # None until the first bar when read from the bars
        self._interval_ns = (cfg.bar_interval_s or DEFAULT_BAR_INTERVAL_S) * NS_PER_S
        self._atr_key = f"atr_{cfg.atr_period}"
        p = cfg.adx_period
        self._dm_keys = (f"plus_di_{p}", f"minus_di_{p}", f"adx_{p}")
        self._band_keys = tuple(
            (float(k), f"vwap_upper_{k}", f"vwap_lower_{k}") for k in cfg.vwap_band_sigmas
        )
        self._rv_keys = tuple(f"rv_{w}" for w in cfg.rv_windows)
        self._or_keys = tuple(
            (f"or_high_{m}", f"or_low_{m}", f"or_breakout_{m}") for m in cfg.opening_range_minutes
        )
        self._quality = BarQuality(cfg.bar_quality)
        #: Bars kept out of the indicators, by kind; ``last_flag`` is the latest bar's (None: good).
        self.flagged: dict[BarFlag, int] = dict.fromkeys(BarFlag, 0)
        self.last_flag: BarFlag | None = None
        self._last_bar_ts = -1
        self._bar_values: dict[str, float] = {}
        self._chain: dict[str, float] = {}
        self.latest: FeatureVector | None = None

    # --- bars ----------------------------------------------------------------------------------

    def on_bar(self, bar: Bar) -> FeatureVector:
        """Update every bar feature and emit the full vector as of the bar's end."""
        ts = bar.ts
        if ts <= self._last_bar_ts and self.latest is not None:
            return self.latest
        if bar.symbol != self.symbol:
            raise ValueError(f"bar for {bar.symbol!r} sent to the {self.symbol!r} feature engine")
        high = bar.high
        low = bar.low
        close = bar.close
        volume = bar.volume
        if not (0.0 < low <= high < _INF and 0.0 < close < _INF and 0.0 <= volume < _INF):
            raise ValueError(f"malformed bar at {ts}: high={high} low={low} close={close} volume={volume}")
        interval = self._interval_s
        if interval is not None and bar.interval_s != interval:
            raise ValueError(f"bar interval {bar.interval_s}s, engine expects {interval}s")
        session = self._lookup.at(ts)  # before any state changes: raises outside the calendar's range
        if interval is None:
            self._adopt_interval(bar.interval_s)
        self._last_bar_ts = ts
        end = ts + self._interval_ns
        values: dict[str, float] = {"close": close}
        regular = session is not None and session.open_ns <= ts < session.close_ns
        flag = self._quality.classify(bar.open, high, low, close, volume, regular)
        self.last_flag = flag
        if flag is not None:
            # A flagged bar moves no indicator: its vector has its close and the clock features only.
            self.flagged[flag] += 1
            if session is not None and regular:
                values["minutes_since_open"] = (end - session.open_ns) / NS_PER_MIN
                values["minutes_to_close"] = (session.close_ns - end) / NS_PER_MIN
            return self._emit_bar(values, end)

        atr = self._atr
        atr.update(high, low, close)
        if atr.ready:
            values[self._atr_key] = atr.value
        dm = self._dm
        dm.update(high, low, close)
        if dm.di_ready:
            keys = self._dm_keys
            values[keys[0]] = dm.plus_di
            values[keys[1]] = dm.minus_di
            if dm.adx_ready:
                values[keys[2]] = dm.adx
        rv = self._rv
        rv.update(close)
        for key, value in zip(self._rv_keys, rv.values, strict=True):
            if value == value:
                values[key] = value

        if session is not None and regular:
            open_ns = session.open_ns
            vwap = self._vwap
            vwap.update_regular(open_ns, high, low, close, volume)
            if vwap.ready:
                center = vwap.value
                sigma = vwap.sigma
                values["vwap"] = center
                values["vwap_sigma"] = sigma
                for k, upper, lower in self._band_keys:
                    values[upper] = center + k * sigma
                    values[lower] = center - k * sigma
                if atr.ready and atr.value > 0.0:
                    values["vwap_dist_atr"] = (close - center) / atr.value
            for rng, keys in zip(self._or, self._or_keys, strict=True):
                rng.update_regular(open_ns, ts, end, high, low, close)
                if rng.ready:
                    values[keys[0]] = rng.high
                    values[keys[1]] = rng.low
                    values[keys[2]] = float(rng.breakout)
            values["minutes_since_open"] = (end - open_ns) / NS_PER_MIN
            values["minutes_to_close"] = (session.close_ns - end) / NS_PER_MIN
        return self._emit_bar(values, end)

    def _emit_bar(self, values: dict[str, float], end: int) -> FeatureVector:
        self._bar_values = values
        if self._micro.quotes or self._micro.trades or self._chain:
            values = dict(values)
            self._micro.write(values, end)
            values.update(self._chain)
        vector = FeatureVector(ts=end, symbol=self.symbol, values=values)
        self.latest = vector
        return vector

    def _adopt_interval(self, interval_s: int) -> None:
        """Fix the bar length from the first bar: bar ends and the realized-vol annualization follow it."""
        self._interval_s = interval_s
        self._interval_ns = interval_s * NS_PER_S
        cfg = self.config
        self._rv = RealizedVolatility(cfg.rv_windows, cfg.periods_per_year(interval_s))

    @property
    def bar_interval_s(self) -> int | None:
        """The bar length in use (None before the first bar when it is read from the bars)."""
        return self._interval_s

    # --- quotes and trades ---------------------------------------------------------------------

    def on_quote(self, q: Quote) -> FeatureVector | None:
        """Update the book features; the merged vector as of the quote, or None when it was ignored."""
        if q.symbol != self.symbol:
            raise ValueError(f"quote for {q.symbol!r} sent to the {self.symbol!r} feature engine")
        if not self._micro.on_quote(q):
            return None
        return self._emit(q.ts)

    def on_trade(self, t: Trade) -> None:
        """Update the tape features (trade sign imbalance, trade intensity); emits nothing."""
        if t.symbol != self.symbol:
            raise ValueError(f"trade for {t.symbol!r} sent to the {self.symbol!r} feature engine")
        self._micro.on_trade(t)

    # --- option chains -------------------------------------------------------------------------

    def on_chain(self, snapshot: ChainSnapshot) -> FeatureVector:
        """Compute the chain features of ``snapshot`` and merge them into the latest vector."""
        if snapshot.underlying != self.symbol:
            raise ValueError(f"chain for {snapshot.underlying!r} sent to the {self.symbol!r} feature engine")
        # Imported here so the bar/quote features work without the options package.
        from services.options.chain import chain_features

        raw: dict[str, Any] = chain_features(
            snapshot, snapshot.ts, rate=self.config.rate, calendar=self._calendar
        )
        chain: dict[str, float] = {}
        for key, value in raw.items():
            number = float(value)
            if math.isfinite(number):
                chain[key] = number
        self._chain = chain
        return self._emit(snapshot.ts)

    def _emit(self, ts: int) -> FeatureVector:
        values = dict(self._bar_values)
        self._micro.write(values, ts)
        values.update(self._chain)
        vector = FeatureVector(ts=ts, symbol=self.symbol, values=values)
        self.latest = vector
        return vector
