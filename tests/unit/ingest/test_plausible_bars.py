"""A bar with an implausible price or volume (1e12) is refused with its reason and line, and the
good rows after it are kept: it never becomes the last accepted row."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from services.ingest.sources import open_bars
from services.ingest.validation import BarValidator, RejectReason

HEADER = "Datetime,Open,High,Low,Close,Volume"
ROWS = [
    "2025-07-09 09:30:00-04:00,620.0,620.5,619.5,620.2,1000",
    "2025-07-09 09:31:00-04:00,620.2,620.6,620.0,620.4,1200",
    "2025-07-09 09:32:00-04:00,1e12,1e12,1e12,1e12,900",
    "2025-07-09 09:33:00-04:00,620.4,620.9,620.3,620.8,1100",
    "2025-07-09 09:34:00-04:00,620.8,621.0,620.5,620.6,5e13",
    "2025-07-09 09:35:00-04:00,620.6,620.7,620.1,620.3,1300",
]


def test_a_1e12_price_row_is_refused_and_the_rows_after_it_are_kept(tmp_path: Path) -> None:
    path = tmp_path / "spy.csv"
    path.write_text("\n".join([HEADER, *ROWS]) + "\n", encoding="utf-8")
    replay = open_bars(path, "SPY")
    bars = list(replay)
    assert (replay.accepted, replay.rejected) == (4, 2)
    assert [b.close for b in bars] == [620.2, 620.4, 620.8, 620.3]
    price, volume = replay.report.examples
    assert (price.reason, price.row) == (RejectReason.IMPLAUSIBLE, 4)
    assert price.detail == "price 1000000000000.0 above the 1e+06 bound"
    assert (volume.reason, volume.row) == (RejectReason.IMPLAUSIBLE, 6)
    assert "implausible 2" in replay.report.summary()


def test_the_bounds_are_configurable_and_batch_agrees_with_row_by_row() -> None:
    ts = np.array([1, 2, 3], dtype=np.int64) * 60_000_000_000 + 1_752_068_000_000_000_000
    o = np.array([600.0, 750.0, 601.0])
    v = np.array([10.0, 10.0, 10.0])
    batch = BarValidator("b", max_price=700.0).check_batch("SPY", ts, o, o, o, o, v)
    assert batch.tolist() == [True, False, True]
    one = BarValidator("r", max_price=700.0)
    verdicts = [one.check("SPY", int(t), float(p), float(p), float(p), float(p), 10.0)
                for t, p in zip(ts, o, strict=True)]
    assert [r is None for r in verdicts] == [True, False, True]
    assert verdicts[1] is not None and verdicts[1].reason == RejectReason.IMPLAUSIBLE


def test_a_row_from_the_future_is_refused_and_the_rows_after_it_are_kept(tmp_path: Path) -> None:
    rows = list(ROWS)
    rows[2] = "2099-07-09 09:32:00-04:00,620.3,620.5,620.2,620.4,900"  # dated decades ahead
    path = tmp_path / "spy.csv"
    path.write_text("\n".join([HEADER, *rows]) + "\n", encoding="utf-8")
    replay = open_bars(path, "SPY")
    closes = [b.close for b in replay]
    assert closes == [620.2, 620.4, 620.8, 620.3], "the good rows after the future one are kept"
    future = replay.report.examples[0]
    assert (future.reason, future.row) == (RejectReason.FUTURE, 4)
    assert future.detail.endswith(": a bar from the future")
    assert replay.report.counts == {RejectReason.FUTURE: 1, RejectReason.IMPLAUSIBLE: 1}
