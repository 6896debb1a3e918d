"""Index tickers: ``SPX`` is ``I:SPX`` at Polygon, and index bars carry no volume."""

from __future__ import annotations

import json

from services.ingest.polygon_parsing import our_symbol, parse_aggs_page, polygon_ticker


def test_indices_get_the_i_prefix_and_lose_it_on_the_way_back() -> None:
    assert [polygon_ticker(s) for s in ("SPX", "ndx", "SPY", "QQQ")] == ["I:SPX", "I:NDX", "SPY", "QQQ"]
    assert [our_symbol(t) for t in ("I:SPX", "I:NDX", "SPY", "O:SPY250709C00620000")] == [
        "SPX", "NDX", "SPY", "O:SPY250709C00620000"]


def test_an_index_bar_without_volume_reads_as_volume_zero() -> None:
    page = {"ticker": "I:SPX", "status": "OK", "adjusted": True, "queryCount": 1, "resultsCount": 1,
            "results": [{"o": 6000.5, "h": 6001.0, "l": 5999.0, "c": 6000.0, "t": 1_752_068_000_000}]}
    bars, next_url = parse_aggs_page(json.dumps(page).encode(), "I:SPX", 60)
    assert next_url is None
    assert [(b.volume, b.vwap, b.trades, b.close, b.ts) for b in bars] == [(0.0, None, None, 6000.0,
                                                                            1_752_068_000_000_000_000)]
