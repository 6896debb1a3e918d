"""The kill-switch rules every person-facing writer applies (the console and ``dreambot kill-switch``).

- :data:`WHY_MIN`/:data:`WHY_MAX`: an engage or release needs the person's reason, 3-200 characters;
- :func:`release_refusal`: a kill switch engaged for ``DailyLossLimit`` cannot be released before the
  next trading session (the loss limit is per day; risk releases it itself at the new session when
  configured to).

Pure: the caller supplies the flag, the time and the calendar.
"""

from __future__ import annotations

import datetime as dt
from typing import Final

from services.core.calendar import MarketCalendar, ny_date
from services.core.shared_state import KillSwitchState

DAILY_LOSS_LIMIT: Final = "DailyLossLimit"  # risk's reason (services.risk.kill_switch.DAILY_LOSS_LIMIT)
WHY_MIN: Final = 3  # shortest reason a person may give (characters, after collapsing whitespace)
WHY_MAX: Final = 200  # longest


def next_session_date(engaged_ns: int, calendar: MarketCalendar) -> dt.date:
    """The New York date of the first trading session after the one ``engaged_ns`` falls on."""
    return calendar.next_session(ny_date(engaged_ns)).date


def release_refusal(flag: KillSwitchState, now_ns: int, calendar: MarketCalendar,
                    writer: str = "the console") -> str | None:
    """Why ``writer`` may not release ``flag`` now, or None when it may."""
    if not flag.engaged or flag.reason != DAILY_LOSS_LIMIT:
        return None
    if flag.ts <= 0:
        return (f"It was engaged for DailyLossLimit at an unknown time, so {writer} cannot tell whether "
                "the next session has begun: nothing was written.")
    try:
        opens = next_session_date(flag.ts, calendar)
    except ValueError:
        return ("It was engaged for DailyLossLimit at a time outside the market calendar: nothing was "
                "written.")
    if ny_date(now_ns) < opens:
        return (f"It was engaged for DailyLossLimit on {ny_date(flag.ts).isoformat()}; {writer} can "
                f"release it from the next session ({opens.isoformat()}, New York): nothing was written.")
    return None
