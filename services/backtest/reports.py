"""Backtest reports: trade records, summary statistics and fill quality (pure functions).

Definitions (net of fees throughout):
- a win is a trade with pnl > 0, a loss pnl < 0; a scratch (exactly 0) counts in the trade count and
  win rate's denominator only;
- expectancy = mean pnl per trade; profit factor = gross wins / |gross losses| (None without losses);
- max drawdown = largest peak-to-trough fall of cumulative pnl in exit order, starting from 0;
- Sharpe = mean / sample std of daily pnl (New York exit date; sessions given without trades count
  as 0) x sqrt(252); None with fewer than two days or zero dispersion.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import msgspec
import orjson

from services.core.calendar import iso_ny, ny_date
from services.core.events import TradeOutcome

TRADE_KEYS = (
    "entry_time", "exit_time", "entry_price", "exit_price", "contract", "quantity", "pnl",
    "mae", "mfe", "exit_reason", "playbook", "reason",
)


def trade_record(t: TradeOutcome, option_price_source: str | None = None) -> dict[str, Any]:
    """One trade as the trades JSON object (times ISO 8601 with the New York offset); a closed
    round trip (``status`` closed) with the source of its option prices when given."""
    record: dict[str, Any] = {
        "entry_time": iso_ny(t.entry_ts),
        "exit_time": iso_ny(t.exit_ts),
        "entry_price": t.entry_price,
        "exit_price": t.exit_price,
        "contract": t.contract,
        "quantity": t.quantity,
        "pnl": round(t.pnl, 6),
        "mae": round(t.mae, 6),
        "mfe": round(t.mfe, 6),
        "exit_reason": t.exit_reason,
        "playbook": t.playbook,
        "reason": t.reason,
        "underlying": t.underlying,
        "id": t.id,
        "context": dict(sorted(t.context.items())),
        "status": "closed",
    }
    if option_price_source is not None:
        record["option_price_source"] = option_price_source
    return record


def _stats(pnls: Sequence[float]) -> dict[str, Any]:
    n = len(pnls)
    wins = [p for p in pnls if p > 0]
    losses = [p for p in pnls if p < 0]
    peak = equity = max_dd = 0.0
    for p in pnls:
        equity += p
        peak = max(peak, equity)
        max_dd = max(max_dd, peak - equity)
    gross_loss = -sum(losses)
    return {
        "trade_count": n,
        "net_pnl": round(sum(pnls), 6),
        "expectancy": round(sum(pnls) / n, 6) if n else 0.0,
        "win_rate": round(len(wins) / n, 6) if n else 0.0,
        "average_win": round(sum(wins) / len(wins), 6) if wins else 0.0,
        "average_loss": round(sum(losses) / len(losses), 6) if losses else 0.0,
        "profit_factor": round(sum(wins) / gross_loss, 6) if gross_loss > 0 else None,
        "max_drawdown": round(max_dd, 6),
    }


def daily_sharpe(trades: Sequence[TradeOutcome], session_dates: Iterable[Any] = ()) -> float | None:
    """Annualised Sharpe ratio of daily net pnl (see module docstring)."""
    daily: dict[Any, float] = {d: 0.0 for d in session_dates}
    for t in trades:
        d = ny_date(t.exit_ts)
        daily[d] = daily.get(d, 0.0) + t.pnl
    values = list(daily.values())
    if len(values) < 2:
        return None
    mean = sum(values) / len(values)
    var = sum((v - mean) ** 2 for v in values) / (len(values) - 1)
    if var <= 0:
        return None
    return round(mean / math.sqrt(var) * math.sqrt(252), 6)


def summarize(trades: Sequence[TradeOutcome], session_dates: Iterable[Any] = ()) -> dict[str, Any]:
    """Summary JSON: global statistics, Sharpe and a per-playbook breakdown."""
    ordered = sorted(trades, key=lambda t: (t.exit_ts, t.id))
    dates = list(session_dates)
    summary = _stats([t.pnl for t in ordered])
    summary["sharpe"] = daily_sharpe(ordered, dates)
    by_playbook: dict[str, list[float]] = {}
    for t in ordered:
        by_playbook.setdefault(t.playbook, []).append(t.pnl)
    summary["playbooks"] = {name: _stats(p) for name, p in sorted(by_playbook.items())}
    return summary


def write_json(doc: Any, path: Path) -> None:
    """Write JSON deterministically (sorted keys, 2-space indent, trailing newline)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(orjson.dumps(doc, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS) + b"\n")


def write_trades(trades: Sequence[TradeOutcome], path: Path, *, option_price_source: str | None = None,
                 open_positions: Sequence[dict[str, Any]] = ()) -> None:
    """Trades JSON: one object per closed trade, in exit order, then the positions still open at the
    end of the data (``status`` open, see :func:`open_position_records`)."""
    ordered = sorted(trades, key=lambda t: (t.exit_ts, t.id))
    records = [trade_record(t, option_price_source) for t in ordered]
    for p in open_positions:
        records.append({**p, "option_price_source": option_price_source} if option_price_source else dict(p))
    write_json(records, path)


def write_summary_csv(summary: dict[str, Any], path: Path) -> None:
    """One row per playbook plus an 'ALL' row, the summary's scalar statistics as columns; the ALL row
    also counts the bad bars of every symbol by kind (``bad_bars_<kind>``, from ``flagged_bars``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    cols = ["playbook", "trade_count", "net_pnl", "expectancy", "win_rate", "average_win",
            "average_loss", "profit_factor", "max_drawdown"]
    source = summary.get("option_prices", {}).get("source")
    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        flagged = summary.get("flagged_bars", {})
        kinds = sorted({k for counts in flagged.values() for k in counts})
        w.writerow([*cols, "open_positions", "unrealized_pnl", "option_price_source",
                    *(f"bad_bars_{k}" for k in kinds)])
        totals = [sum(counts.get(k, 0) for counts in flagged.values()) for k in kinds]
        w.writerow(["ALL", *[summary.get(c) for c in cols[1:]], len(summary.get("open_positions", ())),
                    summary.get("unrealized_pnl"), source, *totals])
        for name, s in summary.get("playbooks", {}).items():
            w.writerow([name, *[s.get(c) for c in cols[1:]], "", "", source, *([""] * len(kinds))])


def to_builtins(event: msgspec.Struct) -> dict[str, Any]:
    """Plain dict of an event (for JSONL outputs)."""
    return msgspec.to_builtins(event)  # type: ignore[no-any-return]
