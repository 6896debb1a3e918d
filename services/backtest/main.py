"""Backtest CLI: an embedded replay with the paper broker, written up as summary and trades JSON.

    python -m services.backtest.main --symbol SPY --data data/backtests/spy_1m.csv \
        --output storage/backtests/spy_summary.json --trades-output storage/backtests/spy_trades.json

No ``--data`` replays deterministic synthetic bars. Also writes ``<reports-dir>/summary.csv`` and
``<reports-dir>/fill_quality.csv`` (default ``backtests/``).
"""

from __future__ import annotations

import argparse
import csv
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from services.cliutil import OneLineParser, fail
from services.core.session_config import SessionConfig, load_session_config
from services.core.settings import ConfigError

# The replay machinery is imported where it runs, so `--help` and argument errors answer at once.
if TYPE_CHECKING:
    from services.app.market_data import MarketData
    from services.backtest.embedded import EmbeddedSession, SessionRecord

SYMBOLS = ("SPY", "QQQ", "SPX", "NDX")


@dataclass
class BacktestResult:
    """A finished replay: its record, summary and where the inputs came from."""

    record: SessionRecord
    summary: dict[str, Any]
    data: MarketData
    session: EmbeddedSession
    open_positions: list[dict[str, Any]]


def run_backtest(
    config: SessionConfig,
    data: MarketData,
    *,
    progress: bool = False,
    on_step: Callable[[SessionRecord], None] | None = None,
    on_start: Callable[[list[str]], None] | None = None,
    journal: Path | None = None,
) -> BacktestResult:
    """Replay ``data`` through every stage with the paper broker and summarise the trades.

    ``on_start`` gets the start-up sizing check's lines (:mod:`services.app.sizing_check`) before the
    replay begins. With ``journal``, the session's rows go to that parquet journal
    (:mod:`services.app.journal_recorder`) under the session's name, replacing an earlier replay's."""
    from services.app.market_data import option_price_disclosure
    from services.app.sizing_check import sizing_check
    from services.app.stages import build_feed, calibration_summary, session_playbooks
    from services.backtest.embedded import EmbeddedSession
    from services.backtest.reports import summarize

    symbols = list(config.symbols)
    session = EmbeddedSession(config)
    sizing = sizing_check(session_playbooks(config), data, session.calendar, config.market_data.replay.seed)
    if on_start is not None:
        on_start(sizing)
    feed = build_feed(config, session.state, session.calendar, data)
    recorder = None
    if journal is not None:
        from services.app.journal_recorder import JournalRecorder
        from services.core.journal import JournalWriter, clear_session

        clear_session(journal, config.name)
        recorder = JournalRecorder(JournalWriter(journal, config.name, flush_rows=5000, flush_seconds=0),
                                   session.calendar)
        recorder.attach(session.bus)
    total = sum(len(b) for b in data.bars.values())
    step = on_step
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=total, unit="bar", file=sys.stderr, leave=False)

        def step(rec: SessionRecord) -> None:
            bar.update(1)
            if on_step is not None:
                on_step(rec)

    try:
        record = session.run(feed, on_step=step)
    finally:
        if recorder is not None:
            recorder.close()
    if progress:
        bar.close()
    open_positions = open_position_records(session)
    summary = summarize(record.outcomes, data.session_dates)
    summary.update(
        symbols=list(symbols),
        data=data.source,
        bars=total,
        signals=len(record.intents),
        orders=len(record.orders),
        risk_rejections=len(record.rejections),
        risk_rejections_by_rule=refusals_by_rule(record),
        entries_expired=len(session.oms.entries_expired),
        flattened_before_close=len(session.oms.flattened_at_close),
        fills=len(record.fills),
        rejected_rows={s: r.to_dict()["counts"] for s, r in data.reports.items()},
        flagged_bars=flagged_bars(session, data),
        sessions=[d.isoformat() for d in data.session_dates],
        bar_interval_s={s: sp.interval_s for s, sp in data.spacing.items()},
        bar_spacing={s: sp.to_dict() for s, sp in data.spacing.items()},
        option_prices=option_price_disclosure(),
        sizing_check=sizing,
        calibration=calibration_summary(session.stages),  # pinned: a file republished mid-run is not read
        open_positions=open_positions,
        unrealized_pnl=round(sum(p["unrealized_pnl"] for p in open_positions), 6),
    )
    summary["net_pnl_with_open"] = round(summary["net_pnl"] + summary["unrealized_pnl"], 6)
    return BacktestResult(record, summary, data, session, open_positions)


def flagged_bars(session: EmbeddedSession, data: MarketData) -> dict[str, dict[str, int]]:
    """Bad bars per symbol by kind: flagged by the features stage (kept out of every indicator, see
    :mod:`services.features.bar_quality`) and regular-hours bars missing from the data."""
    from services.features.stage import FeatureStage

    stage = next((s for s in session.stages if isinstance(s, FeatureStage)), None)
    out: dict[str, dict[str, int]] = {}
    for sym in sorted(data.bars):
        engine = stage.engines.get(sym) if stage is not None else None
        counts = {flag.value: n for flag, n in sorted(engine.flagged.items())} if engine is not None else {}
        spacing = data.spacing.get(sym)
        counts["missing_regular"] = spacing.missing_regular if spacing is not None else 0
        out[sym] = counts
    return out


def flagged_lines(summary: dict[str, Any]) -> list[str]:
    """One stdout line per symbol: the bad bars by kind and what was done with them."""
    lines = []
    for sym, counts in summary.get("flagged_bars", {}).items():
        kinds = ", ".join(f"{kind} {n}" for kind, n in counts.items() if kind != "missing_regular")
        flagged = sum(n for kind, n in counts.items() if kind != "missing_regular")
        lines.append(f"  {sym} bad bars: {flagged} flagged ({kinds}), kept out of every indicator; "
                     f"{counts.get('missing_regular', 0)} regular-hours bars missing")
    return lines


def refusals_by_rule(record: SessionRecord) -> dict[str, int]:
    """How many intents each risk rule refused (rule names as in RiskRejection.rule)."""
    counts: dict[str, int] = {}
    for r in record.rejections:
        counts[r.rule] = counts.get(r.rule, 0) + 1
    return dict(sorted(counts.items()))


def open_position_records(session: EmbeddedSession) -> list[dict[str, Any]]:
    """Round trips still holding contracts when the data ends, marked to the last quote the OMS saw.

    ``unrealized_pnl`` = (mark - entry price) x open contracts x multiplier x direction, plus what was
    already exited, minus the fees paid so far (the exit's fees are not yet paid, so not counted).
    A position never quoted after its entry is marked at its entry price (unrealized = -fees).
    """
    from services.core.calendar import iso_ny

    book = session.oms.positions
    out: list[dict[str, Any]] = []
    for trade in sorted(book.open_trades(), key=lambda t: (t.entry_ts or 0, t.id)):
        if trade.open_qty == 0:
            continue
        pos = book.positions.get(trade.contract)
        mark = pos.mark if pos is not None and pos.mark is not None else trade.entry_price
        out.append({
            "status": "open",
            "id": trade.id,
            "underlying": trade.underlying,
            "playbook": trade.playbook,
            "reason": trade.reason,
            "contract": trade.contract,
            "side": trade.side,
            "quantity": trade.open_qty,
            "entry_time": iso_ny(trade.entry_ts) if trade.entry_ts else None,
            "entry_price": trade.entry_price,
            "exit_time": None,
            "exit_price": None,
            "exit_reason": None,
            "mark": mark,
            "marked_at": iso_ny(session.record.last_ts) if session.record.last_ts else None,
            "pnl": None,
            "unrealized_pnl": round(trade.running_pnl(mark) - trade.fees, 6),
            "mae": round(trade.mae, 6),
            "mfe": round(trade.mfe, 6),
            "context": dict(sorted(trade.context.items())),
        })
    return out


def write_fill_quality(result: BacktestResult, path: Path) -> None:
    """One row per execution: slippage against the mid and delay from order to fill."""
    from services.core.calendar import iso_ny

    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["fill_time", "order_id", "leg", "contract", "side", "quantity", "price", "bid", "ask",
                    "slippage_vs_mid", "fill_delay_s", "fees", "option_price_source"])
        source = result.summary["option_prices"]["source"]
        for f in result.session.oms.fill_reports:
            w.writerow([iso_ny(f.fill_ts), f.order_id, f.leg, f.contract, f.side, f.quantity, f.price,
                        f.bid, f.ask, f.slippage_vs_mid, f.delay_ns / 1e9, f.fees, source])


def write_outputs(result: BacktestResult, output: Path, trades_output: Path, reports_dir: Path) -> None:
    """Summary JSON, trades JSON, summary.csv and fill_quality.csv."""
    from services.backtest.reports import write_json, write_summary_csv, write_trades

    write_json(result.summary, output)
    write_trades(result.record.outcomes, trades_output, option_price_source=result.summary["option_prices"]["source"],
                 open_positions=result.open_positions)
    write_summary_csv(result.summary, reports_dir / "summary.csv")
    write_fill_quality(result, reports_dir / "fill_quality.csv")


def add_data_args(p: argparse.ArgumentParser, *, calibration: bool = True) -> None:
    """--data/--table/--tz/--sessions/--seed/--config-dir/--calibration/--session-file, shared by every
    replaying command. Unset flags leave the value to the environment, .env, the session file or the default."""
    p.add_argument("--data", type=Path, help="bars file (.csv, .parquet, .duckdb) or flat-file folder; "
                   "omitted: deterministic synthetic bars")
    p.add_argument("--table", help="DuckDB table (e.g. bars_intraday)")
    p.add_argument("--tz", help="time zone of naive timestamps (default: UTC if the file name says utc, "
                   "else America/New_York)")
    p.add_argument("--interval", type=int, metavar="SECONDS", help="bar length in seconds (default: read from "
                   "the data: the most common spacing of consecutive bars)")
    p.add_argument("--sessions", type=int, help="synthetic sessions when no --data (default 5)")
    p.add_argument("--seed", type=int, help="seed of synthetic bars and option chains (default 7)")
    p.add_argument("--config-dir", type=Path, help="folder of the YAML configs (default config/)")
    if calibration:
        p.add_argument("--calibration", help="calibration JSON read by signals and risk when it exists; none: off "
                       "(default backtests/calibration.json)")
    p.add_argument("--learner", choices=("off", "frozen", "walk-forward"),
                   help="off (default): the playbooks as written; frozen: apply the policy in --learner-model "
                   "(bandit, meta-label gate, regimes); walk-forward: retrain it every session on the trades "
                   "closed before that session only")
    p.add_argument("--learner-model", type=Path, metavar="POLICY_JSON",
                   help="learner policy (python -m mlops.train --policy-output); required with --learner frozen")
    p.add_argument("--session-file", type=Path, help="session YAML (SessionConfig fields)")


def config_from_args(args: argparse.Namespace, symbols: Sequence[str] | None, *, synthetic: bool = False,
                     default_data: Path | None = None, default_sessions: int = 5) -> SessionConfig:
    """The SessionConfig of a replaying command: its flags over the other sources.

    Without ``--data`` the replay is whatever the other sources name, else ``default_data`` (None:
    synthetic bars); ``--synthetic`` forces synthetic bars.
    """
    replay: dict[str, object] = {"table": args.table, "tz": args.tz, "seed": args.seed,
                                 "interval_s": getattr(args, "interval", None),
                                 "sessions": args.sessions if args.sessions is not None else default_sessions}
    market: dict[str, object] = {"replay": replay}
    if synthetic:
        market["source"] = "synthetic"
    elif args.data is not None:
        market["source"], replay["path"] = "replay", args.data
    cli: dict[str, object] = {"symbols": list(symbols) if symbols else None, "config_dir": args.config_dir,
                              "calibration": {"path": args.calibration}, "market_data": market,
                              "learner": {"mode": getattr(args, "learner", None),
                                          "model": getattr(args, "learner_model", None)}}
    loaded = load_session_config(cli, session_file=args.session_file)
    unset = loaded.origin(("market_data", "source")) == "default" and loaded.origin(
        ("market_data", "replay", "path")) == "default"
    if default_data is not None and not synthetic and unset:
        market["source"], replay["path"] = "replay", default_data
        loaded = load_session_config(cli, session_file=args.session_file)
    return loaded.config


def parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog="python -m services.backtest.main", description=__doc__.splitlines()[0])
    p.add_argument("--symbol", required=True, choices=SYMBOLS, type=str.upper)
    add_data_args(p)
    p.add_argument("--output", type=Path, default=Path("storage/backtests/summary.json"))
    p.add_argument("--trades-output", type=Path, default=Path("storage/backtests/trades.json"))
    p.add_argument("--reports-dir", type=Path, default=Path("backtests"))
    return p


def main(argv: Sequence[str] | None = None, prog: str = "python -m services.backtest.main") -> int:
    p = parser()
    p.prog = prog
    args = p.parse_args(argv)
    if args.sessions is not None and args.sessions < 1:
        fail(prog, "--sessions must be >= 1")
    if args.interval is not None and args.interval < 1:
        fail(prog, "--interval must be >= 1 (seconds)")
    from services.app.stages import session_market_data
    from services.ingest.sources import DataSourceError

    try:
        config = config_from_args(args, [args.symbol])
        data = session_market_data(config)
        result = run_backtest(config, data, progress=sys.stderr.isatty(),
                              on_start=lambda lines: print(*lines, sep="\n", flush=True) if lines else None)
    except (DataSourceError, ConfigError) as exc:
        fail(prog, str(exc))
    write_outputs(result, args.output, args.trades_output, args.reports_dir)
    s = result.summary
    print(f"{args.symbol}: {s['bars']} bars, {s['signals']} signals, {s['orders']} orders, "
          f"{s['trade_count']} trades, net pnl {s['net_pnl']:.2f}, win rate {s['win_rate']:.1%}, "
          f"max drawdown {s['max_drawdown']:.2f} -> {args.output}, {args.trades_output}")
    for line in report_lines(result):
        print(line)
    return 0


def report_lines(result: BacktestResult) -> list[str]:
    """What the replay assumed and found, one line per fact (printed under the headline)."""
    data = result.data
    s = result.summary
    prices = s["option_prices"]
    lines = [f"  open at the end of the data: {len(result.open_positions)} position(s), unrealized pnl "
             f"{s['unrealized_pnl']:.2f} (net pnl with open positions {s['net_pnl_with_open']:.2f})"]
    refused = ", ".join(f"{rule} {n}" for rule, n in s["risk_rejections_by_rule"].items()) or "none"
    lines.append(f"  risk refused {s['risk_rejections']} intent(s): {refused}")
    lines.append(f"  session rules: {s['entries_expired']} entr(y/ies) expired unfilled at the playbook's TTL, "
                 f"{s['flattened_before_close']} bracket(s) flattened before the close")
    lines += [f"    {p['contract']} x{p['quantity']} {p['playbook']} entered {p['entry_time']} at "
              f"{p['entry_price']:.2f}, mark {p['mark']:.2f}" for p in result.open_positions]
    lines += [f"  option prices: {prices['source']} ({prices['detail']}); {prices['vol_rule']}",
             f"  option spreads: {prices['spread_model']}"]
    for sym in sorted(data.bars):
        rep = data.reports.get(sym)
        rejected = rep.summary() if rep is not None else f"{sym}: {len(data.bars[sym])} synthetic bars"
        lines.append(f"  {sym} rows: {rejected}")
        spacing = data.spacing.get(sym)
        if spacing is not None:
            lines.append(f"  {sym} bars: {spacing.summary()}; timestamps are bar starts")
    lines += flagged_lines(s)
    return lines


if __name__ == "__main__":
    raise SystemExit(main())
