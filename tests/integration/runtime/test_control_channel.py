"""The lockstep control log against a real broker: a replaced reader resumes where the old one stopped,
and records survive a broker restart between send and read."""

from __future__ import annotations

import time
import uuid

import pytest

from services.runtime.lockstep import ControlChannel, Done
from tests.harness.kafka_broker import KafkaBroker

pytestmark = pytest.mark.integration


def _done(n: int) -> Done:
    return Done(round=n, stage="ingest", produced=(), clock=n, wall_ns=n, injected=True)


def _read(channel: ControlChannel, want: int, timeout_s: float = 60.0) -> list[int]:
    got: list[int] = []
    deadline = time.monotonic() + timeout_s
    while len(got) < want and time.monotonic() < deadline:
        got.extend(d.round for d in channel.poll(0.5))
    return got


def test_a_replaced_reader_resumes_after_the_last_record_read(kafka: KafkaBroker) -> None:
    prefix = f"cc-{uuid.uuid4().hex[:8]}"
    writer = ControlChannel(kafka.bootstrap, prefix, "writer")
    reader = ControlChannel(kafka.bootstrap, prefix, "reader")
    try:
        writer.ensure()
        for n in range(5):
            writer.send(_done(n))
        assert [d.round for d in reader.read_existing()] == [0, 1, 2, 3, 4]
        writer.send(_done(5))
        assert _read(reader, 1) == [5]
        reader.reconnect_reader()
        for n in (6, 7):
            writer.send(_done(n))
        # The new client neither skips records nor starts the log over.
        assert _read(reader, 2) == [6, 7]
    finally:
        writer.close()
        reader.close()


def test_records_sent_across_a_broker_restart_are_all_read(kafka: KafkaBroker) -> None:
    prefix = f"cc-{uuid.uuid4().hex[:8]}"
    writer = ControlChannel(kafka.bootstrap, prefix, "writer")
    reader = ControlChannel(kafka.bootstrap, prefix, "reader")
    try:
        writer.ensure()
        writer.send(_done(0))
        assert [d.round for d in reader.read_existing()] == [0]
        kafka.restart()
        writer.send(_done(1))
        reader.reconnect_reader()
        writer.send(_done(2))
        assert _read(reader, 2, timeout_s=120) == [1, 2]
    finally:
        writer.close()
        reader.close()
