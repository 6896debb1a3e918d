"""A real SPY put tape (2024-06-03, 1-minute bid/ask, no sizes) through the OMS and paper broker.

The expected fills are read off the recording by hand (the 525 put's quotes are in the comments).
"""

from __future__ import annotations

import datetime as dt
import json
from zoneinfo import ZoneInfo

import pytest

from services.core.events import OptionQuote, TradeOutcome, occ_symbol
from tests.realdata import require_real

from .support import Harness, make_request

NEW_YORK = ZoneInfo("America/New_York")
PUT_525 = occ_symbol("SPY", "2024-06-07", "P", 525.0)


def _tape() -> list[tuple[int, OptionQuote]]:
    data = json.loads(require_real("spy_puts_1min_2024-06-03.json").read_text())
    out: list[tuple[int, OptionQuote]] = []
    for bar in data["bars"]:
        local = dt.datetime.fromisoformat(bar["ts"]).replace(tzinfo=NEW_YORK)
        ts = int(local.timestamp()) * 1_000_000_000
        row = next(p for p in bar["puts"] if p["strike"] == 525.0)
        out.append((ts, OptionQuote(ts=ts, symbol=PUT_525, underlying="SPY", expiry=data["expiry"],
                                    strike=525.0, right="P", bid=row["bid"], ask=row["ask"],
                                    underlying_price=bar["spot"])))
    return out


@pytest.mark.realdata
def test_real_put_tape_take_profit_then_stop_loss() -> None:
    tape = _tape()
    h = Harness()
    outcomes: list[TradeOutcome] = []
    for ts, quote in tape:
        h.clock.advance_to(ts)
        out = h.oms.on_option_quote(quote)
        h.events.extend(out)
        outcomes.extend(e for e in out if isinstance(e, TradeOutcome))
        hhmm = dt.datetime.fromtimestamp(ts / 1e9, NEW_YORK).strftime("%H:%M")
        if hhmm == "10:00":
            # 10:00 bid 1.61 / ask 1.69: a buy of 2 at 1.50 rests (tp 1.75, stop 1.40).
            h.events.extend(h.oms.on_order_request(make_request("r1", PUT_525, 2, 1.50, 1.75, 1.40, ts=ts)))
        if hhmm == "10:10":
            # 10:10 bid 1.76 / ask 1.78: buy 1 at limit 1.80 is marketable -> 1.78 (tp 2.00, stop 1.55).
            h.events.extend(h.oms.on_order_request(make_request("r2", PUT_525, 1, 1.80, 2.00, 1.55, ts=ts)))
    first, second = outcomes
    # r1: 10:01 ask 1.47 <= 1.50 -> 2 @ 1.50. Bids 10:02-10:09 stay in 1.51..1.68 (no stop <= 1.40,
    # no tp >= 1.75); 10:10 bid 1.76 >= 1.75 -> 2 @ 1.75.
    # pnl = (1.75 - 1.50) * 2 * 100 - 2 x 0.55 - 2 x 0.56 = 50 - 2.22 = 47.78
    # MAE at 10:01's mid 1.46: (1.46 - 1.50) * 200 = -8.00; MFE at 10:10's mid 1.77: 0.27 * 200 = 54.00
    assert (first.id, first.exit_reason) == ("r1", "take_profit")
    assert first.pnl == pytest.approx(47.78)
    assert (first.mae, first.mfe) == (pytest.approx(-8.0), pytest.approx(54.0))
    # r2: bought 1 @ 1.78; bids 1.69, 1.67, 1.73, 1.58 then 10:15 bid 1.54 <= stop 1.55 -> sold @ 1.54.
    # pnl = (1.54 - 1.78) * 100 - 0.55 - 0.56 = -24 - 1.11 = -25.11
    assert (second.id, second.exit_reason) == ("r2", "stop_loss")
    assert second.pnl == pytest.approx(-25.11)
    assert dt.datetime.fromtimestamp(second.exit_ts / 1e9, NEW_YORK).strftime("%H:%M") == "10:15"
    assert h.oms.is_flat()
    assert h.oms.positions.realized() == pytest.approx(47.78 - 25.11)
