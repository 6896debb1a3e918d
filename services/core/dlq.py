"""Dead letters: what a stage could not process, why, and the original bytes to replay or inspect.

A dead letter is transport-neutral JSON (the Kafka adapter writes it to ``<session>.dlq`` and repeats
the routing facts as ``dlq.*`` headers so tools can filter without parsing the body). Nothing here
imports a client library, so the dashboard or a replay tool can read dead letters anywhere.
"""

from __future__ import annotations

import base64
from typing import Final, Literal

import msgspec

DEAD_LETTER_VERSION: Final = 1

Reason = Literal["decode_error", "empty_payload", "handler_error", "refused"]


class InputRefusedError(ValueError):
    """A stage refuses an event it could decode (e.g. an order without risk's approval).

    The transport dead-letters the message with reason ``refused`` and this ``detail`` (``rule`` names
    the check, also the letter's ``field``) and the stage carries on: a refusal is not a failure.
    """

    def __init__(self, rule: str, detail: str) -> None:
        super().__init__(detail)
        self.rule = rule
        self.detail = detail


class DeadLetter(msgspec.Struct, frozen=True, kw_only=True):
    """One message a stage gave up on.

    ``reason`` is the category, ``detail`` the readable cause (e.g. the decoder's message naming the
    field), ``stage`` the consumer group that gave up, ``topic``/``partition``/``offset`` where the
    message sits, and ``payload_b64`` the original value, base64 (empty for a missing value).
    """

    reason: Reason
    detail: str
    stage: str
    topic: str
    partition: int
    offset: int
    payload_b64: str
    field: str | None = None
    key: str | None = None
    timestamp_ms: int | None = None
    headers: dict[str, str] = {}
    version: int = DEAD_LETTER_VERSION

    @property
    def payload(self) -> bytes:
        """The original message value."""
        return base64.b64decode(self.payload_b64)


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(DeadLetter)


def dead_letter(
    *,
    reason: Reason,
    detail: str,
    stage: str,
    topic: str,
    partition: int,
    offset: int,
    payload: bytes | None,
    field: str | None = None,
    key: bytes | None = None,
    timestamp_ms: int | None = None,
    headers: list[tuple[str, bytes | None]] | None = None,
) -> DeadLetter:
    """Build a dead letter from a raw message's parts (bytes are kept losslessly)."""
    return DeadLetter(
        reason=reason,
        detail=detail,
        stage=stage,
        topic=topic,
        partition=partition,
        offset=offset,
        payload_b64=base64.b64encode(payload or b"").decode("ascii"),
        field=field,
        key=key.decode("utf-8", errors="backslashreplace") if key is not None else None,
        timestamp_ms=timestamp_ms,
        headers={k: (v or b"").decode("utf-8", errors="backslashreplace") for k, v in headers or ()},
    )


def encode_dead_letter(letter: DeadLetter) -> bytes:
    """JSON body of a dead letter."""
    return _encoder.encode(letter)


def decode_dead_letter(payload: bytes) -> DeadLetter:
    """Parse a dead letter body; raises ``msgspec.ValidationError``/``DecodeError`` if it is not one."""
    return _decoder.decode(payload)


def dead_letter_headers(letter: DeadLetter) -> list[tuple[str, bytes]]:
    """Routing facts repeated as message headers (``dlq.reason``, ``dlq.topic`` …)."""
    return [
        ("dlq.reason", letter.reason.encode()),
        ("dlq.detail", letter.detail[:1000].encode("utf-8", errors="replace")),
        ("dlq.stage", letter.stage.encode()),
        ("dlq.topic", letter.topic.encode()),
        ("dlq.partition", str(letter.partition).encode()),
        ("dlq.offset", str(letter.offset).encode()),
    ]
