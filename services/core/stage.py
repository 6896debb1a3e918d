"""A stage: the pure, transport-free unit every runner drives (embedded bus or Kafka).

A stage names the topics it consumes and turns each input event into output events with their
topics and keys. Both the embedded runner and the services-mode Kafka loop call the same
``handle``; that is what makes a replay through either produce the same orders.
"""

from __future__ import annotations

from typing import NamedTuple, Protocol

from services.core.events import Event


class Output(NamedTuple):
    """An event to publish on ``topic`` keyed by ``key`` (the underlying)."""

    topic: str
    key: str
    event: Event


class Stage(Protocol):
    """Transport-free stage logic."""

    name: str
    inputs: tuple[str, ...]

    def handle(self, topic: str, event: Event) -> list[Output]:
        """Process one input event; return what to publish, in order."""

    def finish(self, now_ns: int) -> list[Output]:
        """End of input (replay over or graceful stop): flush anything pending."""
