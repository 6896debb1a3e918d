"""Risk's approval of an OrderRequest: an HMAC-SHA256 over the request's canonical encoding.

Risk signs every request it approves (:meth:`ApprovalKey.sign`); the OMS executes only requests whose
``approval`` verifies under the same key (:meth:`ApprovalKey.verify`), so a request written to the
``orders`` topic by anyone else — a forged one, or an approved one altered on the way — is refused.

The canonical encoding is msgpack of a domain tag and every field of the request except ``approval``
itself, as ``(name, value)`` pairs in declaration order (floats as IEEE-754 doubles, so the bytes
are exact). A field added to OrderRequest later is covered automatically.

The key is :attr:`SessionConfig.approval_key <services.core.session_config.SessionConfig.approval_key>`
(``DREAMBOT_APPROVAL_KEY``, from the environment or a Kubernetes Secret). Services mode requires it:
risk and the OMS run as separate processes and must share it. An embedded session (one process)
without a configured key uses a random key made once per session name in this process
(:func:`session_approval_key`); nothing outside the process can sign with it.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
from typing import Final

import msgspec
from pydantic import SecretStr

from services.core.events import OrderRequest

DOMAIN: Final = b"dreambot.order_request.approval.v1"
MIN_KEY_CHARS: Final = 32
KEY_HELP: Final = (f"set DREAMBOT_APPROVAL_KEY (at least {MIN_KEY_CHARS} characters, the same for risk and "
                   "the OMS; e.g. python -c 'import secrets; print(secrets.token_hex(32))')")

_encoder = msgspec.msgpack.Encoder()
_process_keys: dict[str, ApprovalKey] = {}
_lock = threading.Lock()


class ApprovalKeyError(ValueError):
    """The approval key is missing (where one is required) or too short."""


def canonical(request: OrderRequest) -> bytes:
    """The bytes an approval covers: every field but ``approval``, in declaration order."""
    fields = [(name, getattr(request, name)) for name in request.__struct_fields__ if name != "approval"]
    return _encoder.encode([DOMAIN, type(request).__name__, fields])


class ApprovalKey:
    """The HMAC key risk signs with and the OMS verifies with."""

    __slots__ = ("_key", "origin")

    def __init__(self, key: bytes, origin: str) -> None:
        if len(key) < MIN_KEY_CHARS:
            raise ApprovalKeyError(f"approval key from {origin} has {len(key)} characters; {KEY_HELP}")
        self._key = key
        self.origin = origin

    def __repr__(self) -> str:
        return f"ApprovalKey(origin={self.origin!r})"

    def digest(self, request: OrderRequest) -> str:
        """Hex HMAC-SHA256 of the request's canonical encoding."""
        return hmac.new(self._key, canonical(request), hashlib.sha256).hexdigest()

    def sign(self, request: OrderRequest) -> OrderRequest:
        """The request carrying this key's approval."""
        return msgspec.structs.replace(request, approval=self.digest(request))

    def verify(self, request: OrderRequest) -> str | None:
        """None when the request carries a valid approval; otherwise why not."""
        if request.approval is None:
            return "carries no risk approval"
        if not hmac.compare_digest(request.approval, self.digest(request)):
            return "approval does not match the request (forged, altered, or signed with another key)"
        return None


def session_approval_key(session: str, configured: SecretStr | None, *, required: bool) -> ApprovalKey:
    """The session's approval key: the configured one, else (only when not ``required``) a random key
    shared by every stage of ``session`` in this process. Raises ApprovalKeyError when a required key
    is missing, or a configured one is too short."""
    value = configured.get_secret_value().strip() if configured is not None else ""
    if value:
        return ApprovalKey(value.encode("utf-8"), "DREAMBOT_APPROVAL_KEY")
    if required:
        raise ApprovalKeyError(f"services mode needs risk's approval key: {KEY_HELP}")
    with _lock:
        key = _process_keys.get(session)
        if key is None:
            key = _process_keys[session] = ApprovalKey(secrets.token_hex(32).encode("ascii"),
                                                       f"a random key of session {session} in this process")
        return key
