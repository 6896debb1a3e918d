"""The `dreambot` command: run (embedded paper session), features, backtest, calibrate, config, services."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from services.cliutil import OneLineParser, fail, parse_speed
from services.core.datasets import SAMPLE_BARS
from services.core.settings import ConfigError

PROG = "dreambot"


def _run(args: argparse.Namespace) -> int:
    from services.app.stages import require_paper, session_market_data
    from services.backtest.embedded import SessionRecord
    from services.backtest.main import config_from_args, run_backtest, write_outputs
    from services.core.calendar import iso_ny

    args.data = args.data if not args.synthetic else None
    config = config_from_args(args, args.symbol, synthetic=args.synthetic, default_data=SAMPLE_BARS,
                              default_sessions=1)
    require_paper(config, "`dreambot run`")
    symbols = list(config.symbols)
    data = session_market_data(config)
    for report in data.reports.values():
        print(f"data: {report.summary()}")
    total = sum(len(b) for b in data.bars.values())
    if total == 0:
        fail(PROG, f"no bars for {', '.join(symbols)} in {data.source}")
    print(f"session: {', '.join(symbols)} paper, {total} bars from {data.source}")

    every = max(1, total // 12)
    t0 = time.monotonic()
    first_ts: list[int] = []
    steps = [0]

    def on_step(rec: SessionRecord) -> None:
        if args.speed > 0:  # pacing: event time runs `speed` times faster than the wall clock
            if not first_ts:
                first_ts.append(rec.last_ts)
            delay = (rec.last_ts - first_ts[0]) / 1e9 / args.speed - (time.monotonic() - t0)
            if delay > 0:
                time.sleep(delay)
        steps[0] += 1
        if steps[0] % every == 0:
            print(f"  {iso_ny(rec.last_ts)[:16]}  bars {rec.bars:5d}  signals {len(rec.intents):3d}  "
                  f"orders {len(rec.orders):3d}  fills {len(rec.fills):3d}  trades {len(rec.outcomes):3d}  "
                  f"realized pnl {rec.realized_pnl:+10.2f}", flush=True)

    result = run_backtest(config, data, progress=sys.stderr.isatty(), on_step=on_step)
    out = args.output_dir
    write_outputs(result, out / "summary.json", out / "trades.json", out)
    s = result.summary
    oms = result.session.oms
    print(f"done: {s['signals']} signals, {s['orders']} orders ({s['risk_rejections']} refused by risk), "
          f"{s['fills']} fills, {s['trade_count']} trades, net pnl {s['net_pnl']:+.2f} "
          f"(unrealized {oms.positions.unrealized():+.2f}), win rate {s['win_rate']:.1%}, "
          f"max drawdown {s['max_drawdown']:.2f}")
    print(f"outputs: {out}/summary.json, trades.json, summary.csv, fill_quality.csv")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from services.backtest.main import add_data_args

    p = OneLineParser(prog=PROG, description="DreamBot: options day trading, paper by default.")
    sub = p.add_subparsers(dest="command", required=True, parser_class=OneLineParser)

    run = sub.add_parser("run", help="embedded paper session (bundled real SPY day by default)")
    add_data_args(run)
    run.add_argument("--synthetic", action="store_true", help="replay the deterministic synthetic session")
    run.add_argument("--symbol", nargs="+", type=str.upper, help="underlyings (default SPY)")
    run.add_argument("--speed", type=parse_speed, default=0.0, help="pace the replay, e.g. 60x (default unpaced)")
    run.add_argument("--output-dir", type=Path, default=Path("storage/run"))
    run.set_defaults(func=_run)

    feats = sub.add_parser("features", help="export bar features of a data file to CSV or Parquet")
    feats.add_argument("--data", type=Path, required=True)
    feats.add_argument("--symbol", required=True, type=str.upper)
    feats.add_argument("--output", type=Path, required=True)
    feats.add_argument("--table")
    feats.add_argument("--tz")
    feats.set_defaults(func=_features)

    for name, target in PASSTHROUGH.items():
        sub.add_parser(name, help=f"same as python -m {target} (run `dreambot {name} --help`)", add_help=False)

    cfg = sub.add_parser("config", help="print the effective session configuration and where each value comes from")
    cfg.add_argument("--session-file", type=Path, help="session YAML (SessionConfig fields)")
    cfg.add_argument("--env-file", type=Path, help=".env file to read (default .env when present)")
    cfg.add_argument("--json", action="store_true", help="print the configuration as JSON (credentials left out)")
    cfg.set_defaults(func=_config)
    return p


#: Subcommands that are another module's CLI, flags and all.
PASSTHROUGH = {
    "backtest": "services.backtest.main",
    "calibrate": "services.backtest.calibrate",
    "services": "services.launcher",
}


def _config(args: argparse.Namespace) -> int:
    import json

    from services.core.session_config import describe, load_session_config

    loaded = load_session_config(session_file=args.session_file, env_file=args.env_file)
    if args.json:
        print(json.dumps(loaded.config.session_file_dict(), indent=2, sort_keys=True))
    else:
        print("\n".join(describe(loaded)))
    return 0


def _features(args: argparse.Namespace) -> int:
    from services.features.export import export_features
    from services.ingest.sources import open_bars

    if args.output.suffix.lower() not in (".csv", ".parquet"):
        fail(PROG, f"--output must end in .csv or .parquet, got {args.output.name!r}")
    replay = open_bars(args.data, args.symbol, table=args.table, tz=args.tz)
    rows = export_features(replay, args.output)
    print(f"{replay.report.summary()}; wrote {rows} rows to {args.output}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in PASSTHROUGH:
        import importlib

        module = importlib.import_module(PASSTHROUGH[argv[0]])
        return int(module.main(argv[1:], prog=f"{PROG} {argv[0]}"))
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except ConfigError as exc:
        fail(PROG, str(exc))
    except Exception as exc:  # a data problem reported by a reader is one line, not a traceback
        from services.ingest.sources import DataSourceError

        if isinstance(exc, DataSourceError):
            fail(PROG, str(exc))
        raise


if __name__ == "__main__":
    raise SystemExit(main())
