"""Look-ahead probes on every real bar recording: cut the file at T, perturb the bars after T, and the
feature vectors, intents, orders, order events and trades stamped before T are the same.

Every ``*1min*.csv`` bar recording in the real-data folder is probed (the SPXW end-of-day chains and the
SPY put quotes are not bar replays, so there is nothing to cut). T is mid-session (12:45 New York) of
the recording's middle session, and for the SPY file also 10:07 of its first full session. The two
runs compared are "the data stops at T" and "the bars from T on are different" (prices 3 % higher,
volume tripled, a bad print): if anything before T depended on a later bar, one of them would show it.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path

import msgspec
import pytest

from services.app.market_data import MarketData, load_market_data
from services.app.stages import build_feed
from services.backtest.embedded import EmbeddedSession
from services.core import topics
from services.core.calendar import NEW_YORK, NS_PER_S, default_calendar, ny_date
from services.core.datasets import real_data_dir
from services.core.events import Bar, Event
from services.core.session_config import SessionConfig

CAL = default_calendar()
RECORDINGS = sorted(real_data_dir().glob("*1min*.csv")) if real_data_dir().is_dir() else []


@dataclass
class Seen:
    """Everything a replay published that the probe compares, in publication order."""

    features: list[Event] = field(default_factory=list)
    trading: list[Event] = field(default_factory=list)


def _replay(symbol: str, bars: list[Bar]) -> Seen:
    config = SessionConfig(symbols=(symbol,), calibration={"path": None})
    session = EmbeddedSession(config)
    seen = Seen()
    session.bus.subscribe(topics.FEATURES, seen.features.append, group="probe-features")
    for topic in (topics.SIGNALS, topics.ORDERS, topics.EXECUTIONS, topics.OUTCOMES, topics.RISK_COMMANDS):
        session.bus.subscribe(topic, seen.trading.append, group=f"probe-{topic}")
    data = MarketData({symbol: bars}, {}, "probe")
    session.run(build_feed(config, session.state, session.calendar, data))
    return seen


def _before(events: list[Event], t: int) -> list[bytes]:
    return [msgspec.json.encode(e) for e in events if e.ts < t]


def _perturbed(b: Bar, t: int) -> Bar:
    if b.ts < t:
        return b
    k = 1.03
    low = b.low * k * (0.9 if b.ts == t + 120 * NS_PER_S else 1.0)  # and one bad print
    return Bar(ts=b.ts, symbol=b.symbol, open=b.open * k, high=b.high * k, low=low, close=b.close * k,
               volume=b.volume * 3, interval_s=b.interval_s)


def _symbol(path: Path) -> str:
    return path.name.split("_")[0].upper()


def _cut_times(path: Path, bars: list[Bar]) -> list[int]:
    days = sorted({ny_date(b.ts) for b in bars if CAL.session(ny_date(b.ts)) is not None})
    middle = days[len(days) // 2]
    times = [(middle, dt.time(12, 45))]
    if _symbol(path) == "SPY":
        times.append((days[0], dt.time(10, 7)))
    return [int(dt.datetime.combine(d, hm, tzinfo=NEW_YORK).timestamp()) * NS_PER_S for d, hm in times]


@pytest.mark.realdata
@pytest.mark.skipif(not RECORDINGS, reason=f"no real bar recordings in {real_data_dir()} (set DREAMBOT_DATA_DIR)")
@pytest.mark.parametrize("path", RECORDINGS, ids=lambda p: p.name)
def test_nothing_before_t_depends_on_bars_after_t(path: Path) -> None:
    symbol = _symbol(path)
    bars = load_market_data([symbol], path).bars[symbol]
    for t in _cut_times(path, bars):
        assert any(b.ts < t for b in bars) and any(b.ts >= t for b in bars)
        cut = _replay(symbol, [b for b in bars if b.ts + b.interval_s * NS_PER_S <= t])
        # Only the bars up to the next session's open are perturbed and replayed: enough future to tempt.
        horizon = t + 36 * 3600 * NS_PER_S
        changed = _replay(symbol, [_perturbed(b, t) for b in bars if b.ts < horizon])
        assert _before(cut.features, t) == _before(changed.features, t)
        assert _before(cut.trading, t) == _before(changed.trading, t)
        # The probe has teeth: there were features and trading before T, and the futures differ.
        assert len(_before(cut.features, t)) > 100 and _before(cut.trading, t)
        assert [e for e in changed.features if e.ts > t][:1] != []
