"""Readers of the recorded chains: one snapshot per quote date / minute, zero bids kept, bad rows counted."""

from __future__ import annotations

import csv
import datetime as dt
import json
from pathlib import Path

import pytest

from services.core.calendar import NEW_YORK, NS_PER_S
from services.core.datasets import SPXW_CHAINS, SPY_PUTS_1MIN
from services.ingest.chains import read_spxw_eod_chains, read_spy_puts_1min
from tests.realdata import require_real

HEADER = (
    "underlying,underlying_last,exchange,optionroot,type,expiration,quotedate,strike,last,bid,ask,volume,"
    "openinterest,impliedvol,delta,gamma,theta,vega,optionalias"
)


def _ny_ns(day: str, hhmm: str) -> int:
    return int(dt.datetime.fromisoformat(f"{day}T{hhmm}").replace(tzinfo=NEW_YORK).timestamp()) * NS_PER_S


@pytest.mark.realdata
def test_spxw_csv_one_snapshot_per_quote_date_at_the_close() -> None:
    path = require_real(SPXW_CHAINS)
    result = read_spxw_eod_chains(path)
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert result.rows == len(rows) == 7588
    assert result.skipped == {} and result.kept == 7588
    days = sorted({dt.datetime.strptime(r["quotedate"], "%m/%d/%Y").date() for r in rows})
    assert [s.ts for s in result.snapshots] == [_ny_ns(d.isoformat(), "16:00") for d in days]
    first = result.snapshots[0]
    assert first.underlying == "SPX" and first.underlying_price == 2695.79
    roots = {(r["quotedate"], r["optionroot"]) for r in rows}
    for snap in result.snapshots:
        day = dt.datetime.fromtimestamp(snap.ts / NS_PER_S, NEW_YORK).strftime("%m/%d/%Y")
        assert {(day, q.symbol) for q in snap.quotes} <= roots
        assert list(snap.quotes) == sorted(snap.quotes, key=lambda q: (q.expiry, q.strike, q.right))
    zero_bids = sum(q.bid == 0.0 for s in result.snapshots for q in s.quotes)
    assert zero_bids == sum(float(r["bid"]) == 0.0 for r in rows) == 1143


@pytest.mark.realdata
def test_spy_json_one_snapshot_per_minute_in_new_york_time() -> None:
    path = require_real(SPY_PUTS_1MIN)
    result = read_spy_puts_1min(path)
    data = json.loads(Path(path).read_text())
    assert len(result.snapshots) == len(data["bars"]) == 29
    assert result.rows == 29 * 34 and result.skipped == {}
    first = result.snapshots[0]
    assert first.ts == _ny_ns("2024-06-03", "10:00")  # 14:00 UTC: New York is on daylight time in June
    assert first.ts == int(dt.datetime(2024, 6, 3, 14, 0, tzinfo=dt.UTC).timestamp()) * NS_PER_S
    assert first.underlying_price == 527.935 and len(first.quotes) == 34
    q = first.quotes[0]
    expected = ("SPY240607P00510000", 510.0, "P", "2024-06-07", 0.1, 0.12)
    assert (q.symbol, q.strike, q.right, q.expiry, q.bid, q.ask) == expected
    assert [s.ts for s in result.snapshots] == sorted(s.ts for s in result.snapshots)


def test_invalid_rows_are_skipped_and_counted(tmp_path: Path) -> None:
    rows = [
        "SPXW,2700,W,SPXW180131C02700000,call,01/31/2018,01/02/2018,2700,10,30.1,30.9,1,5,0.1,0.5,0,0,0,x",
        "SPXW,2700,W,SPXW180131C03000000,call,01/31/2018,01/02/2018,3000,0,0,0.05,0,5,0.1,0,0,0,0,x",  # zero bid: kept
        "SPXW,2700,W,SPXW180131P02000000,put,01/31/2018,01/02/2018,2000,0,0,0,0,5,0.1,0,0,0,0,x",  # ask 0
        "SPXW,2700,W,SPXW180131P02100000,put,01/31/2018,01/02/2018,2100,0,0.5,0.4,0,5,0.1,0,0,0,0,x",  # crossed
        "SPXW,2700,W,SPXW180131P02200000,put,01/31/2018,01/02/2018,abc,0,0.5,0.6,0,5,0.1,0,0,0,0,x",  # malformed
        "SPXW,2710,W,SPXW180131P02600000,put,01/31/2018,01/03/2018,2600,0,1.0,1.2,0,5,0.1,0,0,0,0,x",
    ]
    csv_path = tmp_path / "chains.csv"
    csv_path.write_text("\n".join([HEADER, *rows]) + "\n")
    result = read_spxw_eod_chains(csv_path)
    assert result.rows == 6 and result.kept == 3
    assert result.skipped == {"ask_zero": 1, "crossed": 1, "malformed": 1}
    assert [len(s.quotes) for s in result.snapshots] == [2, 1]
    assert result.snapshots[0].quotes[1].bid == 0.0

    bars = [
        {
            "ts": "2024-06-03T10:00:00",
            "spot": 528.0,
            "puts": [
                {"strike": 520.0, "bid": 0.6, "ask": 0.7},
                {"strike": 521.0, "bid": 0.0, "ask": 0.0},
                {"strike": 522.0, "bid": 0.9, "ask": 0.8},
                {"strike": 523.0, "bid": 0.0, "ask": 0.05},
            ],
        },
    ]
    json_path = tmp_path / "puts.json"
    payload = {"symbol": "SPY", "expiry": "2024-06-07", "trade_date": "2024-06-03", "bars": bars}
    json_path.write_text(json.dumps(payload))
    spy = read_spy_puts_1min(json_path)
    assert spy.rows == 4 and spy.kept == 2 and spy.skipped == {"ask_zero": 1, "crossed": 1}
    assert [q.strike for q in spy.snapshots[0].quotes] == [520.0, 523.0]
