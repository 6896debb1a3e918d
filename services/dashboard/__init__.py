"""The Dash ops console: one session's kill switch, heartbeat, book, PnL and pipeline health.

``python -m services.dashboard.main`` serves it; :func:`build_app` builds it from injected sources
behind an :class:`~services.dashboard.access.AccessGuard` (sign-in, roles, Host/Origin and CSRF
checks: :mod:`services.dashboard.auth`). ``python -m services.dashboard.auth hash-password`` makes a
user entry.
"""

from services.dashboard.app import Console, ConsoleConfig, build_app
from services.dashboard.sources import PrometheusSource, SessionSource, Unavailable

__all__ = ["Console", "ConsoleConfig", "PrometheusSource", "SessionSource", "Unavailable", "build_app"]
