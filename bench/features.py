"""Feature benchmarks: streaming FeatureEngine throughput/latency, TA-Lib batch time, options numbers.

Run ``python bench/features.py`` from the project root. Uses the real QQQ recording
(``$DREAMBOT_DATA_DIR`` or ../shared/data), falling back to the bundled sample session. Targets:
>= 100,000 full-feature bar updates per second per core; chain IV >= 100x the reference IV;
SVI fit <= 5 ms (the last two from ``bench/options.py`` when it exists). Timings are printed,
never asserted.

Baseline (2-core dev VM, Python 3.11, 28,172 QQQ bars): ~290,000 updates/s, median 2.8 us and
p99 4.5 us per update; TA-Lib ATR+ADX+PLUS_DI+MINUS_DI 0.6 ms; batch.py 20 ms.
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from services.core.calendar import default_calendar  # noqa: E402
from services.core.datasets import QQQ_1MIN_UTC, SAMPLE_BARS, real_file  # noqa: E402
from services.core.events import Bar  # noqa: E402
from services.features.batch import batch_features_of_bars  # noqa: E402
from services.features.engine import FeatureEngine  # noqa: E402

TARGET_UPDATES_PER_S = 100_000
TARGET_IV_SPEEDUP = 100.0
TARGET_SVI_MS = 5.0


def load_bars() -> tuple[str, list[Bar]]:
    """(description, bars) of the QQQ recording, or of the bundled SPY sample when it is absent."""
    path = real_file(QQQ_1MIN_UTC)
    if path is not None:
        df = pd.read_csv(path)
        stamps = pd.to_datetime(df["Datetime"]).dt.tz_localize("UTC")
        symbol = "QQQ"
        source = f"{path.name} (real QQQ, naive UTC)"
    else:
        df = pd.read_csv(SAMPLE_BARS)
        stamps = pd.to_datetime(df["Datetime"], utc=True)
        symbol = "SPY"
        source = f"{SAMPLE_BARS.name} (bundled sample; real QQQ recording not found)"
    ts = stamps.dt.as_unit("ns").astype("int64").to_numpy()
    columns = zip(
        ts.tolist(),
        df["Open"].astype(float).tolist(),
        df["High"].astype(float).tolist(),
        df["Low"].astype(float).tolist(),
        df["Close"].astype(float).tolist(),
        df["Volume"].astype(float).tolist(),
        strict=True,
    )
    bars = [
        Bar(ts=t, symbol=symbol, open=o, high=h, low=lo, close=c, volume=v) for t, o, h, lo, c, v in columns
    ]
    return source, bars


def bench_throughput(bars: Sequence[Bar], repeats: int) -> list[float]:
    """Updates per second of full passes (fresh engine each), FeatureVector emission included."""
    rates = []
    for _ in range(repeats):
        engine = FeatureEngine(bars[0].symbol)
        on_bar = engine.on_bar
        start = time.perf_counter_ns()
        for bar in bars:
            on_bar(bar)
        elapsed = time.perf_counter_ns() - start
        rates.append(len(bars) / (elapsed / 1e9))
    return rates


def bench_latency(bars: Sequence[Bar]) -> np.ndarray:
    """Nanoseconds per on_bar call, one fresh pass."""
    engine = FeatureEngine(bars[0].symbol)
    on_bar = engine.on_bar
    clock = time.perf_counter_ns
    out = np.empty(len(bars), dtype=np.int64)
    for i, bar in enumerate(bars):
        start = clock()
        on_bar(bar)
        out[i] = clock() - start
    return out


def best_seconds(fn: Callable[[], object], repeats: int) -> float:
    """Fastest wall time of ``repeats`` calls."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter_ns()
        fn()
        best = min(best, (time.perf_counter_ns() - start) / 1e9)
    return best


def bench_talib(bars: Sequence[Bar], repeats: int) -> float | None:
    """Seconds TA-Lib takes for ATR + ADX + PLUS_DI + MINUS_DI over the bars (None without TA-Lib)."""
    try:
        import talib
    except ImportError:
        return None
    high = np.array([b.high for b in bars])
    low = np.array([b.low for b in bars])
    close = np.array([b.close for b in bars])

    def run() -> None:
        talib.ATR(high, low, close, 14)
        talib.ADX(high, low, close, 14)
        talib.PLUS_DI(high, low, close, 14)
        talib.MINUS_DI(high, low, close, 14)

    return best_seconds(run, repeats)


def load_options_bench() -> ModuleType | None:
    """bench/options.py as a module, or None when it does not exist (yet)."""
    path = Path(__file__).with_name("options.py")
    if not path.is_file():
        return None
    spec = importlib.util.spec_from_file_location("bench_options", path)
    if spec is None or spec.loader is None:
        return None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_RATE_WORDS = ("per_s", "per_sec", "throughput", "ops", "rate")
_TIME_UNITS = (("_ns", 1e-9), ("_us", 1e-6), ("_ms", 1e-3), ("ns", 1e-9), ("us", 1e-6), ("ms", 1e-3))


def _numeric(d: dict[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in d.items() if isinstance(v, int | float) and not isinstance(v, bool)}


def _seconds_of(key: str, value: float) -> float | None:
    name = key.lower()
    if any(word in name for word in _RATE_WORDS):
        return None
    for suffix, scale in _TIME_UNITS:
        if name.endswith(suffix) or f"{suffix}_" in name:
            return value * scale
    if name.endswith("_s") or "second" in name or "time" in name or "elapsed" in name:
        return value
    return None


def iv_speedup(chain: dict[str, Any], reference: dict[str, Any]) -> tuple[float, str] | None:
    """Chain IV speed over reference IV, from the first comparable number both dicts report."""
    a, b = _numeric(chain), _numeric(reference)
    if "speedup" in a:
        return a["speedup"], "speedup"
    for key in a.keys() & b.keys():
        if any(word in key.lower() for word in _RATE_WORDS) and b[key] > 0:
            return a[key] / b[key], key
    for key in sorted(a.keys() & b.keys()):
        sa, sb = _seconds_of(key, a[key]), _seconds_of(key, b[key])
        if sa is not None and sb is not None and sa > 0:
            return sb / sa, key
    return None


def svi_ms(result: dict[str, Any]) -> tuple[float, str] | None:
    """SVI fit time in ms from the first time-like number of ``result``."""
    for key, value in _numeric(result).items():
        seconds = _seconds_of(key, value)
        if seconds is not None:
            return seconds * 1e3, key
    return None


def verdict(ok: bool) -> str:
    return "reached" if ok else "NOT reached"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="throughput passes (best and median shown)")
    args = parser.parse_args(argv)

    source, bars = load_bars()
    default_calendar()  # built once (~100 ms), outside every timing
    print(f"data: {source}: {len(bars)} bars")

    rates = bench_throughput(bars, args.repeats)
    best, median = max(rates), statistics.median(rates)
    lat = bench_latency(bars)
    print(
        f"streaming FeatureEngine.on_bar: best {best:,.0f} updates/s, median {median:,.0f} updates/s "
        f"(1 core, FeatureVector emitted per bar, {args.repeats} passes)"
    )
    p50, p99 = np.median(lat) / 1e3, np.percentile(lat, 99) / 1e3
    print(f"  latency per update: median {p50:.2f} us, p99 {p99:.2f} us, max {lat.max() / 1e3:.1f} us")
    print(f"  target >= {TARGET_UPDATES_PER_S:,} updates/s: {verdict(median >= TARGET_UPDATES_PER_S)}")

    talib_s = bench_talib(bars, args.repeats)
    if talib_s is None:
        print("TA-Lib not installed: batch comparison skipped")
    else:
        print(
            f"TA-Lib batch ATR+ADX+PLUS_DI+MINUS_DI over the same bars: {talib_s * 1e3:.2f} ms "
            f"({len(bars) / talib_s:,.0f} bars/s)"
        )
    batch_features_of_bars(bars[:100])  # compile (or load cached) numba kernels outside the timing
    batch_s = best_seconds(lambda: batch_features_of_bars(bars), args.repeats)
    print(f"batch.py (numba) all bar features over the same bars: {batch_s * 1e3:.2f} ms")

    options = load_options_bench()
    if options is None:
        print("options bench not available")
        return 0
    try:
        chain = options.bench_chain_iv(n=2000)
        reference = options.bench_reference_iv(n=2000)
        svi = options.bench_svi()
    except Exception as exc:  # the feature numbers above stay useful when the options bench breaks
        print(f"options bench failed: {type(exc).__name__}: {exc}")
        return 1
    print(f"options chain IV: {chain}")
    print(f"options reference IV: {reference}")
    print(f"options SVI: {svi}")
    speed = iv_speedup(chain, reference)
    if speed is None:
        print(f"  chain IV vs reference: no comparable numbers reported; target >= {TARGET_IV_SPEEDUP:.0f}x")
    else:
        ok = verdict(speed[0] >= TARGET_IV_SPEEDUP)
        print(f"  chain IV {speed[0]:,.1f}x the reference (by {speed[1]!r}); target >= 100x: {ok}")
    fit = svi_ms(svi)
    if fit is None:
        print(f"  SVI: no time in the result; target <= {TARGET_SVI_MS} ms")
    else:
        ok = verdict(fit[0] <= TARGET_SVI_MS)
        print(f"  SVI {fit[0]:.3f} ms (by {fit[1]!r}); target <= {TARGET_SVI_MS} ms: {ok}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
