"""The OMS's live book (positions, PnL) from the session's Redis, for pages that show it next to the journal."""

from __future__ import annotations

import time

from services.dashboard.pages.base import PageContext
from services.dashboard.sources import BookView, SessionSource, SourceError, Unavailable, safe_reason


def live_book(ctx: PageContext) -> BookView | Unavailable | None:
    """The OMS snapshot in Redis; None without Redis or before the OMS wrote one; Unavailable on errors."""
    if ctx.store is None:
        return None
    try:
        return SessionSource(ctx.store, clock_ns=time.time_ns).book()
    except SourceError as exc:
        return Unavailable(safe_reason(str(exc)))
