"""Calibration CLI: replay history, measure each playbook, derive the sizing and POT settings.

    python -m services.backtest.calibrate --symbols SPY QQQ --data data/backtests/spy_1m.duckdb \
        --table bars_intraday --output backtests/calibration.json

The rule (documented here and in the output's ``rule`` field):

- ``kelly`` = W - (1 - W) / R over every trade, with W the win rate and R = average win / |average
  loss| (W itself when there are no losses; 0 without trades);
- ``risk_multiplier`` = clip(0.5 + 2 x kelly x n / (n + 50), 0.25, 1.5): half size with no evidence,
  shrinking towards 0.25 as the measured edge turns negative, growing with a positive edge only as
  the trade count n makes it credible (risk still caps it at its own ``risk_multiplier_max``);
- ``pot_threshold`` = the median probability of touch at entry (``pot_nearest_otm``) of winning
  probability-of-touch trades when there are at least 10 of them, clipped to [0.5, 0.95]; otherwise
  the playbooks' configured default.

Signals and risk read the file at start-up (``calibration`` in config/playbooks.yaml and the
``--calibration`` option).
"""

from __future__ import annotations

import argparse
import statistics
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from services.backtest.main import SYMBOLS, add_data_args, config_from_args, run_backtest
from services.cliutil import OneLineParser, fail
from services.core.settings import ConfigError

if TYPE_CHECKING:  # the replay machinery is imported where it runs: `--help` answers at once
    from services.core.events import TradeOutcome

RULE = (
    "risk_multiplier = clip(0.5 + 2*kelly*n/(n+50), 0.25, 1.5), kelly = W - (1-W)/R; "
    "pot_threshold = median pot_nearest_otm of >= 10 winning POT trades, clipped to [0.5, 0.95], else default"
)
MIN_POT_TRADES = 10


def kelly_fraction(stats: dict[str, Any]) -> float:
    """W - (1 - W) / R from a summary block (see the module docstring)."""
    if not stats["trade_count"]:
        return 0.0
    w = stats["win_rate"]
    if stats["average_loss"] == 0:
        return float(w)
    if stats["average_win"] == 0:
        return -1.0
    r = stats["average_win"] / abs(stats["average_loss"])
    return float(w - (1 - w) / r)


def derive(outcomes: Sequence[TradeOutcome], default_pot: float) -> dict[str, Any]:
    """risk_multiplier and pot_threshold from a replay's trades."""
    from services.backtest.reports import summarize

    stats = summarize(outcomes)
    n = stats["trade_count"]
    kelly = kelly_fraction(stats)
    multiplier = min(1.5, max(0.25, 0.5 + 2 * kelly * n / (n + 50)))
    pot_wins = [t.context["pot_nearest_otm"] for t in outcomes if t.pnl > 0 and "pot_nearest_otm" in t.context]
    if len(pot_wins) >= MIN_POT_TRADES:
        pot = min(0.95, max(0.5, statistics.median(pot_wins)))
    else:
        pot = default_pot
    return {"kelly": round(kelly, 6), "risk_multiplier": round(multiplier, 6), "pot_threshold": round(pot, 6),
            "pot_trades_used": len(pot_wins)}


def parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog="python -m services.backtest.calibrate", description=__doc__.splitlines()[0])
    p.add_argument("--symbols", nargs="+", required=True, type=str.upper, choices=SYMBOLS)
    add_data_args(p, calibration=False)
    p.add_argument("--output", type=Path, default=Path("backtests/calibration.json"))
    return p


def main(argv: Sequence[str] | None = None, prog: str = "python -m services.backtest.calibrate") -> int:
    p = parser()
    p.prog = prog
    args = p.parse_args(argv)
    if args.sessions is not None and args.sessions < 1:
        fail(prog, "--sessions must be >= 1")
    from services.app.stages import session_market_data
    from services.backtest.reports import summarize, write_json
    from services.ingest.sources import DataSourceError
    from services.signals.playbooks import load_playbooks

    # Calibrate from the uncalibrated strategy: the replay must not read the file it is writing.
    args.calibration = "none"
    try:
        config = config_from_args(args, args.symbols)
        playbooks = load_playbooks(config.config_dir / "playbooks.yaml")
        data = session_market_data(config)
        result = run_backtest(config, data, progress=sys.stderr.isatty())
    except (DataSourceError, ConfigError) as exc:
        fail(prog, str(exc))
    outcomes = result.record.outcomes
    summary = summarize(outcomes, data.session_dates)
    derived = derive(outcomes, playbooks.calibration.pot_threshold)
    per_symbol = {s: summarize([t for t in outcomes if t.underlying == s]) for s in args.symbols}
    doc = {
        "risk_multiplier": derived["risk_multiplier"],
        "pot_threshold": derived["pot_threshold"],
        "rule": RULE,
        "derivation": derived,
        "global": {k: v for k, v in summary.items() if k != "playbooks"},
        "playbooks": summary["playbooks"],
        "symbols": {s: {k: v for k, v in st.items() if k != "playbooks"} for s, st in per_symbol.items()},
        "data": data.source,
        "sessions": [d.isoformat() for d in data.session_dates],
        "bars": sum(len(b) for b in data.bars.values()),
    }
    write_json(doc, args.output)
    g = doc["global"]
    print(f"calibration: {g['trade_count']} trades, expectancy {g['expectancy']:.2f}, win rate "
          f"{g['win_rate']:.1%} -> risk_multiplier {doc['risk_multiplier']}, pot_threshold "
          f"{doc['pot_threshold']} -> {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
