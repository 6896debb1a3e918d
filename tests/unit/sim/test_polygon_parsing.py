"""Polygon wire messages -> events: the documented shapes, and malformed input as typed errors."""

from __future__ import annotations

import json

import pytest

from services.core.dlq import decode_dead_letter, encode_dead_letter
from services.core.events import Bar, OptionQuote, Quote, Trade
from services.ingest.polygon_parsing import (
    PolygonMessageError,
    StatusMessage,
    parse_aggs_page,
    parse_chain_page,
    parse_element,
    parse_frame,
    subscription_params,
    timespan_seconds,
)

# The documented example shapes (massive.com websocket docs; client-python models).
AM = {
    "ev": "AM",
    "sym": "SPY",
    "v": 4110,
    "av": 9470157,
    "op": 620.0,
    "vw": 620.3,
    "o": 620.26,
    "c": 620.35,
    "h": 620.40,
    "l": 620.20,
    "a": 619.9,
    "z": 685,
    "s": 1752067800000,
    "e": 1752067860000,
}
Q = {
    "ev": "Q",
    "sym": "SPY",
    "bx": 12,
    "bp": 620.34,
    "bs": 3,
    "ax": 11,
    "ap": 620.35,
    "as": 5,
    "c": 0,
    "i": [],
    "t": 1752067800123,
    "q": 50385480,
    "z": 2,
}
T = {
    "ev": "T",
    "sym": "SPY",
    "x": 4,
    "i": "52983525029461",
    "z": 2,
    "p": 620.35,
    "s": 100,
    "c": [12, 37],
    "t": 1752067800456,
    "q": 1063,
}


def test_frame_with_every_event_kind_and_a_status() -> None:
    status = {"ev": "status", "status": "success", "message": "subscribed to: AM.SPY"}
    parsed = parse_frame(json.dumps([status, AM, Q, T]))
    assert parsed.statuses == [StatusMessage("status", "success", "subscribed to: AM.SPY")]
    assert parsed.errors == []
    bar, quote, trade = parsed.events
    assert bar == Bar(
        ts=1752067800000 * 10**6,
        symbol="SPY",
        open=620.26,
        high=620.40,
        low=620.20,
        close=620.35,
        volume=4110,
        interval_s=60,
        vwap=620.3,
    )
    assert quote == Quote(ts=1752067800123 * 10**6, symbol="SPY", bid=620.34, ask=620.35, bid_size=300, ask_size=500)
    assert trade == Trade(ts=1752067800456 * 10**6, symbol="SPY", price=620.35, size=100)


def test_option_quote_on_the_options_cluster() -> None:
    msg = {
        "ev": "Q",
        "sym": "O:SPXW250709C06200000",
        "bx": 302,
        "ax": 302,
        "bp": 0,
        "ap": 0.05,
        "bs": 0,
        "as": 14,
        "t": 1752067800000,
        "q": 7,
    }
    (quote,) = parse_frame(json.dumps([msg]), "options").events
    assert quote == OptionQuote(
        ts=1752067800000 * 10**6,
        symbol="SPXW250709C06200000",
        underlying="SPX",
        expiry="2025-07-09",
        strike=6200.0,
        right="C",
        bid=0.0,
        ask=0.05,
        bid_size=0,
        ask_size=14,
    )


@pytest.mark.parametrize(
    ("element", "field"),
    [
        ({**AM, "o": -1}, "$.o"),
        ({**AM, "h": 600.0}, "h"),
        ({k: v for k, v in AM.items() if k != "c"}, "$.c"),
        ({**AM, "e": AM["s"]}, "e"),
        ({**Q, "bp": "620.34"}, "$.bp"),
        ({**Q, "bp": 0}, "bp"),
        ({**T, "p": 0}, "$.p"),
        ({**T, "t": "yesterday"}, "$.t"),
    ],
)
def test_malformed_elements_are_typed_errors_naming_the_field(element: dict[str, object], field: str) -> None:
    raw = json.dumps(element).encode()
    with pytest.raises(PolygonMessageError) as err:
        parse_element(raw)
    assert err.value.field == field
    assert err.value.payload == raw


def test_one_bad_element_does_not_cost_the_others_and_dead_letters() -> None:
    parsed = parse_frame(json.dumps([AM, {**T, "p": -5}, Q]))
    assert [type(e) for e in parsed.events] == [Bar, Quote]
    (error,) = parsed.errors
    letter = error.dead_letter(stage="ingest", topic="polygon:stocks", offset=42)
    again = decode_dead_letter(encode_dead_letter(letter))
    assert again.reason == "decode_error"
    assert again.field == "$.p"
    assert json.loads(again.payload)["p"] == -5
    assert again.offset == 42


def test_a_frame_that_is_not_a_json_array_is_one_error() -> None:
    parsed = parse_frame(b'{"ev":"AM"}')
    assert parsed.events == [] and len(parsed.errors) == 1 and parsed.errors[0].field == "$"
    assert parse_frame(b"not json").errors[0].reason.startswith("frame is not a JSON array")


def test_unconsumed_event_types_are_skipped() -> None:
    assert parse_element(b'{"ev":"LULD","T":"SPY","h":1,"l":1}') is None


def test_rest_pages() -> None:
    page = {
        "ticker": "SPY",
        "queryCount": 1,
        "resultsCount": 1,
        "adjusted": True,
        "status": "OK",
        "request_id": "x",
        "results": [{"v": 10, "vw": 620.1, "o": 620, "c": 620.2, "h": 620.3, "l": 619.9, "t": 1752067800000, "n": 3}],
        "next_url": "https://api.polygon.io/v2/aggs/ticker/SPY/range/1/minute/a/b?cursor=c",
    }
    bars, next_url = parse_aggs_page(json.dumps(page).encode(), "SPY", 60)
    assert bars[0].trades == 3 and bars[0].vwap == 620.1 and bars[0].ts == 1752067800000 * 10**6
    assert next_url is not None and next_url.endswith("cursor=c")
    empty = {"ticker": "SPY", "queryCount": 0, "resultsCount": 0, "adjusted": True, "status": "OK", "request_id": "y"}
    assert parse_aggs_page(json.dumps(empty).encode(), "SPY", 60) == ([], None)
    with pytest.raises(PolygonMessageError):
        parse_aggs_page(json.dumps({**page, "results": [{"o": 1}]}).encode(), "SPY", 60)


def test_chain_page_from_the_official_client_mock() -> None:
    # test_rest/mocks/v3/snapshot/options/AAPL.json of github.com/polygon-io/client-python
    mock = {
        "request_id": "104d9b901d0c9e81d284cb8b41c5cdd3",
        "status": "OK",
        "results": [
            {
                "break_even_price": 179.075,
                "day": {
                    "change": -2.4,
                    "close": 29,
                    "high": 32.25,
                    "last_updated": 1651204800000000000,
                    "low": 29,
                    "open": 29.99,
                    "previous_close": 31.4,
                    "volume": 8,
                    "vwap": 30.7738,
                },
                "details": {
                    "contract_type": "call",
                    "exercise_style": "american",
                    "expiration_date": "2023-06-16",
                    "shares_per_contract": 100,
                    "strike_price": 150,
                    "ticker": "O:AAPL230616C00150000",
                },
                "greeks": {"delta": 0.64, "gamma": 0.0062, "theta": -0.028, "vega": 0.638},
                "implied_volatility": 0.357,
                "last_quote": {
                    "ask": 29.25,
                    "ask_size": 209,
                    "bid": 28.9,
                    "bid_size": 294,
                    "last_updated": 1651254260800059648,
                    "midpoint": 29.075,
                    "timeframe": "REAL-TIME",
                },
                "open_interest": 8133,
                "underlying_asset": {
                    "change_to_break_even": 19.11,
                    "last_updated": 1651254263172073152,
                    "price": 159.9606,
                    "ticker": "AAPL",
                    "timeframe": "REAL-TIME",
                },
            }
        ],
    }
    rows = parse_chain_page(json.dumps(mock).encode(), "AAPL")
    assert rows.next_url is None and rows.underlying_price == 159.9606
    assert rows.quotes == [
        OptionQuote(
            ts=1651254260800059648,
            symbol="AAPL230616C00150000",
            underlying="AAPL",
            expiry="2023-06-16",
            strike=150.0,
            right="C",
            bid=28.9,
            ask=29.25,
            bid_size=294,
            ask_size=209,
            open_interest=8133,
            underlying_price=159.9606,
        )
    ]


def test_helpers() -> None:
    assert subscription_params(["AM", "Q"], ["SPY", "QQQ"]) == "AM.SPY,AM.QQQ,Q.SPY,Q.QQQ"
    assert timespan_seconds(5, "minute") == 300
    with pytest.raises(ValueError, match="no fixed length"):
        timespan_seconds(1, "month")
