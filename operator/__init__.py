"""DreamBot's Kubernetes operator (kopf): TradingSession -> stages, services, jobs and status.

Run it with ``python -m dreambot_operator`` (the same as ``kopf run -m dreambot_operator``).
Importing the package registers the handlers; the pure parts are in :mod:`.render` and :mod:`.status`.
"""

from dreambot_operator import handlers as handlers
from dreambot_operator.render import (
    API_VERSION,
    GROUP,
    KIND,
    PLURAL,
    STAGES,
    VERSION,
    RenderContext,
    SessionRef,
    render_children,
)
from dreambot_operator.status import compute_status, set_condition

__all__ = [
    "API_VERSION",
    "GROUP",
    "KIND",
    "PLURAL",
    "STAGES",
    "VERSION",
    "RenderContext",
    "SessionRef",
    "compute_status",
    "handlers",
    "render_children",
    "set_condition",
]
