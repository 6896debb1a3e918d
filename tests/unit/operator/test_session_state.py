"""Parsing of the Redis values the operator reads and writes (no Redis needed)."""

from __future__ import annotations

import json

import pytest
from dreambot_operator.session_state import (
    SessionStateError,
    flatten_request_key,
    kill_switch_key,
    kill_switch_payload,
    parse_book,
    parse_kill_switch,
    positions_key,
)


def test_keys_are_prefixed_by_session() -> None:
    assert kill_switch_key("paper-etf") == "paper-etf:dreambot:kill_switch"
    assert positions_key("paper-etf") == "paper-etf:dreambot:positions"
    assert flatten_request_key("paper-etf") == "paper-etf:dreambot:flatten_request"


def test_kill_switch_payload_round_trips() -> None:
    raw = kill_switch_payload(True, "Manual", 1_700_000_000_000_000_000)
    assert json.loads(raw) == {"engaged": True, "reason": "Manual", "ts": 1_700_000_000_000_000_000,
                               "source": "operator"}
    flag = parse_kill_switch(raw)
    assert flag is not None and flag.engaged and flag.source == "operator"
    assert parse_kill_switch(None) is None
    risk = parse_kill_switch(b'{"engaged": true, "reason": "DailyLossLimit", "ts": 5}')
    assert risk is not None and (risk.reason, risk.source) == ("DailyLossLimit", "")
    with pytest.raises(SessionStateError):
        parse_kill_switch(b"not json")


def test_book_is_flat_only_without_positions_and_working_orders() -> None:
    assert parse_book(None).flat
    assert parse_book(b'{"positions": [], "open_orders": []}').flat
    assert parse_book(b'{"positions": [{"contract": "A", "quantity": 0}]}').flat
    held = parse_book(b'{"positions": [{"contract": "A", "quantity": -2}], "open_orders": []}')
    assert (held.flat, held.open_positions) == (False, 1)
    working = parse_book(b'{"positions": {}, "open_orders": [{"id": "o1"}]}')
    assert (working.flat, working.working_orders) == (False, 1)
    by_contract = parse_book(b'{"positions": {"A": {"quantity": 1}, "B": {"quantity": 0}}}')
    assert by_contract.open_positions == 1
    with pytest.raises(SessionStateError):
        parse_book(b'["not", "a", "snapshot"]')
