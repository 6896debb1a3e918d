"""The Bus: publish events by topic and key, subscribe handlers; the in-process implementation.

Delivery order is FIFO over the whole bus, so per-key (per-underlying) order always holds. Handlers
that publish while being called have their events queued, never delivered re-entrantly: a replay
through the in-process bus therefore produces the same sequence as one through Kafka, where every
stage sees its input topic in order.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Protocol

from services.core.events import Event

Handler = Callable[[Event], None]


class Bus(Protocol):
    """What every stage needs from a transport."""

    def publish(self, topic: str, key: str, event: Event) -> None:
        """Send ``event`` on ``topic``; events with the same ``key`` keep their order."""

    def subscribe(self, topic: str, handler: Handler, group: str) -> None:
        """Call ``handler`` for every event on ``topic``; one delivery per ``group``."""


class InProcessBus:
    """Synchronous, deterministic bus for the embedded runner, backtests and tests."""

    def __init__(self) -> None:
        self._subscribers: dict[str, list[tuple[str, Handler]]] = {}
        self._queue: deque[tuple[str, str, Event]] = deque()
        self._draining = False
        self.published: dict[str, int] = {}

    def subscribe(self, topic: str, handler: Handler, group: str) -> None:
        if any(g == group for g, _ in self._subscribers.get(topic, ())):
            raise ValueError(f"group {group!r} already subscribed to {topic!r}")
        self._subscribers.setdefault(topic, []).append((group, handler))

    def publish(self, topic: str, key: str, event: Event) -> None:
        self.published[topic] = self.published.get(topic, 0) + 1
        self._queue.append((topic, key, event))
        if not self._draining:
            self.drain()

    def drain(self) -> None:
        """Deliver everything queued, including what handlers publish meanwhile."""
        self._draining = True
        try:
            queue, subscribers = self._queue, self._subscribers
            while queue:
                topic, _key, event = queue.popleft()
                for _group, handler in subscribers.get(topic, ()):
                    handler(event)
        finally:
            self._draining = False
