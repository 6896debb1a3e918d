"""Risk's approval of an OrderRequest: what it covers, what breaks it, where its key comes from."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest

from services.core.approval import MIN_KEY_CHARS, ApprovalKey, ApprovalKeyError, canonical, session_approval_key
from services.core.events import OrderRequest, decode_msgpack, encode_msgpack
from services.core.session_config import SessionConfig, load_session_config
from services.core.settings import ConfigError

KEY = ApprovalKey(b"k" * MIN_KEY_CHARS, "test")
REQUEST = OrderRequest(ts=1_752_069_600_000_000_000, id="r1", intent_id="i1", underlying="SPY",
                       contract="SPY250709C00620000", side="buy", quantity=2, limit_price=1.5,
                       take_profit=2.0, stop_loss=1.0, playbook="vwap_reversion")

# Every field of the request, and a different value for it.
CHANGES: dict[str, object] = {
    "ts": REQUEST.ts + 1, "id": "r2", "intent_id": "i2", "underlying": "QQQ", "contract": "SPY250709C00621000",
    "side": "sell", "quantity": 500, "limit_price": 1.51, "take_profit": 2.01, "stop_loss": 0.99,
    "playbook": "other", "underlying_stop": 600.0, "schema": 0,
}


def test_a_signed_request_verifies_and_survives_the_wire() -> None:
    signed = KEY.sign(REQUEST)
    assert signed.approval is not None and len(signed.approval) == 64
    assert KEY.verify(signed) is None
    assert KEY.verify(decode_msgpack(encode_msgpack(signed))) is None  # type: ignore[arg-type]


def _changed(name: str) -> object:
    """A different value of field ``name``: from CHANGES, or for an optional timestamp-like field, 1."""
    if name in CHANGES:
        return CHANGES[name]
    current = getattr(REQUEST, name)
    assert current is None or isinstance(current, int), f"add a changed value of OrderRequest.{name} to CHANGES"
    return (current or 0) + 1


def test_every_field_is_covered() -> None:
    signed = KEY.sign(REQUEST)
    for name in OrderRequest.__struct_fields__:
        if name == "approval":
            continue
        altered = msgspec.structs.replace(signed, **{name: _changed(name)})
        assert KEY.verify(altered) == ("approval does not match the request (forged, altered, or signed with "
                                       "another key)"), name


def test_unsigned_foreign_and_garbage_approvals_are_refused() -> None:
    assert KEY.verify(REQUEST) == "carries no risk approval"
    other = ApprovalKey(b"o" * MIN_KEY_CHARS, "other")
    assert KEY.verify(other.sign(REQUEST)) is not None
    assert KEY.verify(msgspec.structs.replace(REQUEST, approval="0" * 64)) is not None


def test_the_approval_field_is_checked_on_decode() -> None:
    raw = msgspec.msgpack.encode({**msgspec.to_builtins(REQUEST), "approval": "not hex"})
    with pytest.raises(ValueError, match=r"approval"):
        decode_msgpack(raw)


def test_canonical_bytes_leave_the_approval_out() -> None:
    assert canonical(REQUEST) == canonical(KEY.sign(REQUEST))


def test_keys_short_missing_and_in_process() -> None:
    with pytest.raises(ApprovalKeyError, match="at least 32 characters"):
        ApprovalKey(b"short", "test")
    with pytest.raises(ApprovalKeyError, match="services mode needs risk's approval key: set DREAMBOT_APPROVAL_KEY"):
        session_approval_key("s", None, required=True)
    a, b = session_approval_key("s", None, required=False), session_approval_key("s", None, required=False)
    assert a is b, "risk and the OMS of one embedded session share the random key"
    assert session_approval_key("t", None, required=False).verify(a.sign(REQUEST)) is not None


def test_the_key_is_a_secret_of_the_environment_only() -> None:
    secret = "s3cr3t-" + "x" * 40
    config = load_session_config(environ={"DREAMBOT_APPROVAL_KEY": secret}, use_env_file=False).config
    assert config.approval_key is not None and config.approval_key.get_secret_value() == secret
    assert secret not in repr(config) and "approval_key" not in config.session_file_dict()
    assert SessionConfig().approval_key is None


def test_a_session_file_holding_the_key_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "session.yaml"
    path.write_text("approval_key: abc\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="approval_key: credentials are read from the environment"):
        load_session_config(session_file=path, environ={}, use_env_file=False)
