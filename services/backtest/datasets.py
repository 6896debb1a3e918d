"""Make the seed commands' input files from the real recordings (synthetic when they are absent).

    python -m services.backtest.datasets

writes ``data/backtests/spy_1m.csv`` (SPY 1-minute bars, New York offsets) and
``data/backtests/spy_1m.duckdb`` (table ``bars_intraday``: SPY and QQQ with a symbol column), read
from ``$DREAMBOT_DATA_DIR`` (default ``../shared/data``). Where a recording is missing, seeded
synthetic bars stand in and the command says so.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from services.app.market_data import START_PRICES, SYNTHETIC_START
from services.cliutil import OneLineParser
from services.core.datasets import QQQ_1MIN_UTC, SPY_1MIN, real_file
from services.core.events import Bar
from services.core.settings import PROJECT_ROOT
from services.ingest.sources import open_bars, write_bars
from services.ingest.synthetic import synthetic_bars

OUT_DIR = PROJECT_ROOT / "data" / "backtests"
REAL = {"SPY": SPY_1MIN, "QQQ": QQQ_1MIN_UTC}


def bars_for(symbol: str, seed: int = 7) -> tuple[list[Bar], str]:
    """Real bars of ``symbol`` when its recording is present, else 20 synthetic sessions."""
    path = real_file(REAL[symbol])
    if path is not None:
        return list(open_bars(path, symbol)), str(path)
    return synthetic_bars(symbol, SYNTHETIC_START, 20, seed, START_PRICES[symbol]), "synthetic (recording absent)"


def make(out_dir: Path = OUT_DIR) -> list[str]:
    """Write both files; returns one line per file saying what it holds."""
    spy, spy_src = bars_for("SPY")
    qqq, qqq_src = bars_for("QQQ", seed=8)
    csv_path = out_dir / "spy_1m.csv"
    db_path = out_dir / "spy_1m.duckdb"
    write_bars(spy, csv_path)
    if db_path.exists():
        db_path.unlink()
    write_bars(sorted(spy + qqq, key=lambda b: (b.ts, b.symbol)), db_path, table="bars_intraday")
    return [f"{csv_path}: {len(spy)} SPY bars from {spy_src}",
            f"{db_path} (bars_intraday): {len(spy)} SPY bars from {spy_src}, {len(qqq)} QQQ bars from {qqq_src}"]


def main(argv: Sequence[str] | None = None) -> int:
    p: argparse.ArgumentParser = OneLineParser(prog="python -m services.backtest.datasets",
                                               description=__doc__.splitlines()[0])
    p.add_argument("--out-dir", type=Path, default=OUT_DIR)
    args = p.parse_args(argv)
    for line in make(args.out_dir):
        print(line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
