"""The Dash ops console: one session's kill switch, heartbeat, book, PnL and pipeline health.

``python -m services.dashboard.main`` serves it; :func:`build_app` builds it from injected sources.
"""

from services.dashboard.app import Console, ConsoleConfig, build_app
from services.dashboard.sources import PrometheusSource, SessionSource, Unavailable

__all__ = ["Console", "ConsoleConfig", "PrometheusSource", "SessionSource", "Unavailable", "build_app"]
