"""Start-up sizing check: can the playbooks size one index contract at all with the configured budget?

An SPX or NDX contract risks 10-40x what an ETF contract does, so a budget that sizes SPY trades may
size no index trade ever, and a session would then trade nothing without a word. Before a replay the
check prices the first session of the data 30 minutes after the open (the first bar ending then,
its close as spot) with the replay's own synthetic chain source, and runs each enabled playbook's
real contract selection, limit, bracket and sizing (the symbol's budget and spread overrides
included) on that chain, with calibration multiplier 1. An ATR bracket uses the mean true range of
the last 14 bars up to then as ``atr_14``. The verdict is one line per index symbol.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import pairwise

from services.app.market_data import MarketData, synthetic_chain_source
from services.core.calendar import NS_PER_MIN, NS_PER_S, MarketCalendar, iso_ny, ny_date
from services.core.events import Bar
from services.signals.contracts import chain_records, select_contract
from services.signals.playbooks import PlaybooksConfig, fmt
from services.signals.sizing import bracket_prices, limit_price, size_position

MINUTES_AFTER_OPEN = 30
ATR_BARS = 14


def mean_true_range(bars: Sequence[Bar]) -> float | None:
    """Mean true range of the last :data:`ATR_BARS` bars (None with fewer than two bars)."""
    if len(bars) < 2:
        return None
    window = bars[-(ATR_BARS + 1):]
    ranges = [max(b.high, prev.close) - min(b.low, prev.close) for prev, b in pairwise(window)]
    return sum(ranges) / len(ranges)


def sizing_check(playbooks: PlaybooksConfig, data: MarketData, calendar: MarketCalendar, seed: int = 7) -> list[str]:
    """One line per index symbol of ``data``: how many of its playbooks size at least one contract."""
    lines: list[str] = []
    for symbol in sorted(data.bars):
        sym_cfg = playbooks.symbols.get(symbol)
        books = playbooks.for_symbol(symbol)
        if sym_cfg is None or sym_cfg.kind != "index" or not books:
            continue
        regular = [b for b in data.bars[symbol] if calendar.is_open(b.ts)]
        if not regular:
            continue
        day = ny_date(regular[0].ts)
        session = calendar.session(day)
        assert session is not None  # is_open found a bar in it
        at = session.open_ns + MINUTES_AFTER_OPEN * NS_PER_MIN
        upto = [b for b in regular if ny_date(b.ts) == day and b.ts + b.interval_s * NS_PER_S <= at] or regular[:1]
        spot_bar = upto[-1]
        now = spot_bar.ts + spot_bar.interval_s * NS_PER_S
        chain = synthetic_chain_source(seed, calendar)(symbol, spot_bar.close, now)
        if chain is None:
            continue
        records = chain_records(chain, now, calendar=calendar)
        atr = mean_true_range(upto)
        sized: list[str] = []
        refused: list[tuple[float, str]] = []
        for pb in books:
            dte = sym_cfg.dte if pb.contract.dte is None else pb.contract.dte
            selection = select_contract(records, right=pb.right, root=sym_cfg.root, today=day, dte=dte,
                                        max_dte=max(sym_cfg.max_dte, dte), rules=sym_cfg.contract_for(pb),
                                        calendar=calendar)
            contract = selection.contract
            if contract is None:
                refused.append((float("inf"), f"{pb.name}: no eligible contract"))
                continue
            entry, _ = limit_price(contract, pb.limit, sym_cfg.tick)
            bracket = bracket_prices(entry, pb.bracket, sym_cfg.tick, delta=contract.delta, atr=atr)
            if isinstance(bracket, str):
                refused.append((float("inf"), f"{pb.name}: {bracket}"))
                continue
            risk = round((entry - bracket.stop_loss) * 100, 2)
            size = size_position(entry, bracket.stop_loss, sym_cfg.sizing_for(pb))
            if size.quantity >= 1:
                sized.append(f"{pb.name} {size.quantity} @ {fmt(entry)}")
            else:
                refused.append((risk, f"{pb.name} risks ${fmt(risk)} per contract @ {fmt(entry)}"))
        budget = sorted({fmt(sym_cfg.sizing_for(pb).risk_per_trade_usd) for pb in books})
        head = (f"{symbol} sizing check at {iso_ny(now)} (spot {spot_bar.close:.2f}, synthetic chain, budget "
                f"${'/'.join(budget)} per trade)")
        if sized:
            lines.append(f"{head}: {len(sized)} of {len(books)} playbooks size a contract ({', '.join(sized)})")
        else:
            cheapest = min(refused)[1] if refused else "no playbook"
            lines.append(f"{head}: NO playbook can size one contract, so {symbol} will trade nothing; cheapest: "
                         f"{cheapest}. Raise symbols.{symbol}.risk_per_trade_usd in playbooks.yaml")
    return lines
