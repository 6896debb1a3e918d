"""Backtest benchmark: the full options pipeline's bars per second next to backtrader and backtesting.py.

Run ``python bench/backtest.py`` (or ``python -m bench.backtest``) from the project root;
``--sessions N`` shrinks the default 60 sessions. In one run, on the same deterministic synthetic
1-minute bars (``services.ingest.synthetic.synthetic_bars`` via ``load_market_data``, seed 7) of
SPY, QQQ, SPX and NDX:

- **DreamBot**: ``run_backtest`` over all four symbols at once, i.e. the embedded session with the
  synthetic option chain at every bar: features, chain analytics, playbooks, contract selection,
  risk, the OMS and paper fills. Bars per second = bars / wall time of ``run_backtest``.
- **backtrader** and **backtesting.py**: the comparable VWAP-reversion strategy of
  ``bench/strategies.py``, one run per symbol, timed from handing the engine a DataFrame to its
  result. They trade the underlying, not options (they have no options model), so the ratio
  compares engine overhead per bar, with DreamBot doing far more work per bar.

Every engine is warmed up on a short slice first (imports, numba's compiled-code cache). Targets:
>= 50,000 bars/s for the full options pipeline and >= 10x backtrader. Timings are printed, never
asserted.

Baseline (2-core dev VM shared with other jobs, Python 3.11, 60 sessions x 4 symbols = 92,880 bars,
88 trades): DreamBot ~625 bars/s (~166 before the synthetic-chain, chain-analysis, contract-selection
and OMS speedups), backtrader ~14,000 bars/s, backtesting.py ~140,000 bars/s; neither target reached.
Per bar, the synthetic chain (~680 quotes on average over the four symbols: OptionQuote structs built,
then walked by the OMS) costs most; without chains the same pipeline runs ~15,000 bars/s.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

# backtesting.py draws a tqdm progress bar per run; tqdm reads this when it is first imported.
os.environ.setdefault("TQDM_DISABLE", "1")
ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.strategies import EngineRun, bars_frame, run_backtesting, run_backtrader  # noqa: E402
from services.app.market_data import MarketData, load_market_data  # noqa: E402
from services.backtest.main import run_backtest  # noqa: E402
from services.core.session_config import SessionConfig  # noqa: E402

SYMBOLS = ("SPY", "QQQ", "SPX", "NDX")
TARGET_BARS_PER_S = 50_000
TARGET_VS_BACKTRADER = 10.0
WARMUP_BARS = 120


def _slice(data: MarketData, bars: int) -> MarketData:
    return MarketData({s: b[:bars] for s, b in data.bars.items()}, {}, f"{data.source} (first {bars} bars)")


def bench_pipeline(data: MarketData) -> tuple[float, dict[str, object]]:
    """Wall seconds of ``run_backtest`` over ``data`` and its summary."""
    start = time.perf_counter()
    result = run_backtest(SessionConfig(symbols=tuple(data.bars)), data)
    return time.perf_counter() - start, result.summary


def bench_engines(data: MarketData) -> dict[str, list[EngineRun]]:
    """backtrader and backtesting.py over each symbol's bars."""
    runs: dict[str, list[EngineRun]] = {"backtrader": [], "backtesting.py": []}
    for symbol, bars in data.bars.items():
        frame = bars_frame(bars)
        runs["backtrader"].append(run_backtrader(symbol, frame))
        runs["backtesting.py"].append(run_backtesting(symbol, frame))
    return runs


def _reached(ok: bool) -> str:
    return "reached" if ok else "NOT reached"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=60, help="synthetic sessions per symbol (default 60)")
    parser.add_argument("--seed", type=int, default=7, help="seed of the synthetic bars and chains (default 7)")
    args = parser.parse_args(argv)
    if args.sessions < 1:
        parser.error("--sessions must be >= 1")

    start = time.perf_counter()
    data = load_market_data(SYMBOLS, None, sessions=args.sessions, seed=args.seed)
    total = sum(len(b) for b in data.bars.values())
    print(
        f"data: {args.sessions} sessions x {len(SYMBOLS)} symbols ({', '.join(SYMBOLS)}) = {total:,} "
        f"1-minute bars, {data.source}; generated in {time.perf_counter() - start:.1f} s"
    )

    warm = _slice(data, WARMUP_BARS)
    bench_pipeline(warm)
    bench_engines(warm)

    seconds, summary = bench_pipeline(data)
    ours = total / seconds
    print(
        "\nDreamBot full options pipeline (features, chain analytics, playbooks, contract selection, "
        "risk, OMS, paper fills; synthetic chain every bar):"
    )
    print(
        f"  {total:,} bars in {seconds:.2f} s = {ours:,.0f} bars/s; {summary['signals']} signals, "
        f"{summary['orders']} orders, {summary['fills']} fills, {summary['trade_count']} trades"
    )

    runs = bench_engines(data)
    print("\nVWAP reversion on the underlying (bench/strategies.py; no options model in these engines):")
    rates: dict[str, float] = {}
    for engine, per_symbol in runs.items():
        bars = sum(r.bars for r in per_symbol)
        secs = sum(r.seconds for r in per_symbol)
        rates[engine] = bars / secs
        detail = ", ".join(f"{r.symbol} {r.bars / r.seconds:,.0f}/s {r.trades} trades" for r in per_symbol)
        print(f"  {engine:15s} {bars:,} bars in {secs:.2f} s = {rates[engine]:,.0f} bars/s ({detail})")

    vs_bt = ours / rates["backtrader"]
    vs_bp = ours / rates["backtesting.py"]
    print(f"\nDreamBot vs backtrader: {vs_bt:.3g}x; vs backtesting.py: {vs_bp:.3g}x")
    print("targets:")
    print(
        f"  full options pipeline >= {TARGET_BARS_PER_S:,} bars/s: {ours:,.0f} bars/s "
        f"-> {_reached(ours >= TARGET_BARS_PER_S)}"
    )
    print(f"  >= {TARGET_VS_BACKTRADER:g}x backtrader: {vs_bt:.3g}x -> {_reached(vs_bt >= TARGET_VS_BACKTRADER)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
