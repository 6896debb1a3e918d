"""Free loopback ports for servers the test harness starts (the runtime's own helpers)."""

from __future__ import annotations

from services.localstack import free_port, wait_for_port

__all__ = ["free_port", "wait_for_port"]
