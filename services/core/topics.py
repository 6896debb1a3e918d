"""Topic names: the one place they are spelled (Kafka topics are ``<session>.<name>``)."""

from __future__ import annotations

from typing import Final

MD_BARS: Final = "md.bars"
MD_QUOTES: Final = "md.quotes"
MD_TRADES: Final = "md.trades"
MD_CHAIN: Final = "md.chain"
FEATURES: Final = "features"
SIGNALS: Final = "signals"
ORDERS: Final = "orders"
RISK_COMMANDS: Final = "risk_commands"
EXECUTIONS: Final = "executions"
OUTCOMES: Final = "outcomes"
LEARNER: Final = "learner"
DLQ: Final = "dlq"

ALL_TOPICS: Final = (
    MD_BARS, MD_QUOTES, MD_TRADES, MD_CHAIN, FEATURES, SIGNALS, ORDERS,
    RISK_COMMANDS, EXECUTIONS, OUTCOMES, LEARNER, DLQ,
)


def qualified(session: str, topic: str) -> str:
    """Kafka topic name for ``topic`` in ``session``."""
    if topic not in ALL_TOPICS:
        raise ValueError(f"unknown topic {topic!r}; known: {', '.join(ALL_TOPICS)}")
    return f"{session}.{topic}"
