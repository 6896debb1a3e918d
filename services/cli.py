"""The `dreambot` command: run (embedded paper session), features, backtest, calibrate, config, services,
kill-switch, flatten."""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from services.cliutil import OneLineParser, fail, parse_speed
from services.core.datasets import SAMPLE_BARS
from services.core.settings import ConfigError

PROG = "dreambot"


def _run(args: argparse.Namespace) -> int:
    if args.live:
        return _run_live(args)
    if args.duration is not None or args.idle_exit is not None:
        fail(PROG, "--duration and --idle-exit bound a live session: add --live")
    from services.app.stages import require_paper, session_market_data
    from services.backtest.embedded import SessionRecord
    from services.backtest.main import config_from_args, flagged_lines, run_backtest, write_outputs
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

    out = args.output_dir
    journal = None if args.no_journal else (args.journal or out / "parquet")
    result = run_backtest(config, data, progress=sys.stderr.isatty(), on_step=on_step, journal=journal)
    write_outputs(result, out / "summary.json", out / "trades.json", out)
    s = result.summary
    oms = result.session.oms
    print(f"done: {s['signals']} signals, {s['orders']} orders ({s['risk_rejections']} refused by risk), "
          f"{s['fills']} fills, {s['trade_count']} trades, net pnl {s['net_pnl']:+.2f} "
          f"(unrealized {oms.positions.unrealized():+.2f}), win rate {s['win_rate']:.1%}, "
          f"max drawdown {s['max_drawdown']:.2f}")
    print(*flagged_lines(s), sep="\n")
    print(f"outputs: {out}/summary.json, trades.json, summary.csv, fill_quality.csv"
          + (f"; journal {journal} (session {config.name})" if journal is not None else ""))
    return 0


def _run_live(args: argparse.Namespace) -> int:
    """``dreambot run --live``: the embedded session (paper broker) on the live Polygon feed, bounded."""
    from services.app.stages import build_live_feed, require_paper
    from services.backtest.embedded import EmbeddedSession, SessionRecord
    from services.backtest.reports import write_json, write_trades
    from services.core.calendar import iso_ny
    from services.core.logs import configure_stage_logging
    from services.core.session_config import load_session_config
    from services.ingest.polygon_live import PolygonFeedError

    if args.duration is None or args.duration <= 0:
        fail(PROG, "--live needs --duration SECONDS (a live session here is always bounded)")
    if args.data is not None or args.synthetic:
        fail(PROG, "--live streams from Polygon (POLYGON_WS_URL, POLYGON_BASE_URL): drop --data/--synthetic")
    cli = {"symbols": list(args.symbol) if args.symbol else None, "config_dir": args.config_dir,
           "calibration": {"path": args.calibration}, "market_data": {"source": "polygon"},
           "learner": {"mode": args.learner, "model": args.learner_model}}
    config = load_session_config(cli, session_file=args.session_file).config
    require_paper(config, "`dreambot run --live`")
    configure_stage_logging("live", config)  # stderr and <storage_dir>/logs/live.jsonl
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one INFO line per chain request otherwise
    session = EmbeddedSession(config)
    recorder = None
    journal = None if args.no_journal else (args.journal or config.storage_dir / "parquet")
    if journal is not None:
        from services.app.journal_recorder import JournalRecorder
        from services.core.journal import JournalWriter

        # A live session appends: a restart the same day continues its journal.
        recorder = JournalRecorder(JournalWriter(journal, config.name), session.calendar)
        recorder.attach(session.bus)
    feed = build_live_feed(config, session.state, session.calendar, duration_s=args.duration,
                           idle_exit_s=args.idle_exit)
    p = config.market_data.polygon
    capture = f", capture {p.snapshot_path}" if p.snapshot_path is not None else ""
    print(f"session: {', '.join(config.symbols)} paper, live from {p.ws_url} (REST {p.rest_url}) for up to "
          f"{args.duration:g} s{capture}", flush=True)
    last_print = [0.0]

    def on_step(rec: SessionRecord) -> None:
        now = time.monotonic()
        if now - last_print[0] >= 5.0:
            last_print[0] = now
            print(f"  {iso_ny(rec.last_ts)[:16]}  bars {rec.bars:5d}  signals {len(rec.intents):3d}  "
                  f"orders {len(rec.orders):3d}  fills {len(rec.fills):3d}  trades {len(rec.outcomes):3d}  "
                  f"realized pnl {rec.realized_pnl:+10.2f}", flush=True)

    try:
        record = session.run(feed, on_step=on_step)
    except PolygonFeedError as exc:
        fail(PROG, str(exc))
    finally:
        feed.close()
        if recorder is not None:
            recorder.close()
    st = feed.assembler.stats
    summary = {
        "symbols": list(config.symbols), "source": p.ws_url, "ended": feed.end_reason,
        "bars": st.bars, "quotes": st.quotes, "trades_md": st.trades, "chains": st.chains,
        "reconnects": st.reconnects, "backfilled_bars": st.backfilled, "heartbeats": st.heartbeats,
        "signals": len(record.intents), "orders": len(record.orders), "risk_rejections": len(record.rejections),
        "fills": len(record.fills), "trade_count": len(record.outcomes), "realized_pnl": round(record.realized_pnl, 2),
    }
    out = args.output_dir
    write_json(summary, out / "live_summary.json")
    write_trades(record.outcomes, out / "trades.json")
    print(f"done ({feed.end_reason}): {st.bars} bars ({st.backfilled} backfilled after {st.reconnects} "
          f"reconnect(s)), {st.quotes} quotes, {st.trades} trades, {st.chains} chains; {len(record.intents)} "
          f"signals, {len(record.orders)} orders ({len(record.rejections)} refused by risk), "
          f"{len(record.fills)} fills, {len(record.outcomes)} trades, realized pnl {record.realized_pnl:+.2f}")
    print(f"outputs: {out}/live_summary.json, trades.json"
          + (f"; journal {journal} (session {config.name})" if journal is not None else ""))
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
    run.add_argument("--journal", type=Path, metavar="DIR",
                     help="parquet journal of the session's features, orders, fills, trades and chain "
                          "(default <output-dir>/parquet; --live: <storage>/parquet); a replay replaces its "
                          "session's earlier journal")
    run.add_argument("--no-journal", action="store_true", help="write no parquet journal")
    run.add_argument("--live", action="store_true", help="stream from Polygon (POLYGON_WS_URL, POLYGON_BASE_URL, "
                     "POLYGON_API_KEY; the local sim too) instead of replaying a file; needs --duration")
    run.add_argument("--duration", type=float, metavar="SECONDS", help="with --live: end the session after this long")
    run.add_argument("--idle-exit", type=float, metavar="SECONDS",
                     help="with --live: end the session once no data has arrived for this long")
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
    "kill-switch": "services.ops_cli",
    "flatten": "services.ops_cli",
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
