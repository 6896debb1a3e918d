"""Economic-event halts: no new entries around FOMC statements, CPI and NFP releases.

``config/events.yaml`` lists events by New York local date and time; each becomes a half-open
window ``[event - minutes_before, event + minutes_after)`` in UTC ns. The local -> UTC conversion
goes through ``zoneinfo`` America/New_York, so 08:30 is 12:30 UTC under EDT and 13:30 UTC under
EST, whichever side of a DST change the date falls on. :meth:`EventCalendar.halt_active` answers
in O(log n) with a bisect over window starts and a prefix maximum of window ends, so overlapping
windows (CPI and NFP on one morning) are handled.
"""

from __future__ import annotations

import bisect
import datetime as dt
import re
from collections.abc import Iterable
from pathlib import Path
from typing import NamedTuple

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from services.core.calendar import NEW_YORK, NS_PER_MIN
from services.core.settings import PROJECT_ROOT, ConfigError, load_model
from services.risk.config import IMPACT_RANK, Impact, RiskConfig, resolve

_HHMM = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)$")
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def _parse_hhmm(value: object) -> str:
    # YAML 1.1 reads an unquoted 14:00 as the sexagesimal integer 840: insist on quoted strings.
    if not isinstance(value, str) or not _HHMM.match(value):
        raise ValueError(f"time must be a quoted 24h 'HH:MM' string in New York time, got {value!r}")
    return value


class EventKind(BaseModel):
    """Defaults shared by every event of one kind (FOMC, CPI, NFP, ...)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    time: str = Field(description="New York local release time, 'HH:MM'.")
    minutes_before: float = Field(ge=0, description="Halt starts this many minutes before the release.")
    minutes_after: float = Field(ge=0, description="Halt ends this many minutes after the release.")
    impact: Impact = Field(default="high", description="low | medium | high.")
    description: str = Field(default="", description="What the event is.")

    @field_validator("time", mode="before")
    @classmethod
    def _time(cls, v: object) -> str:
        return _parse_hhmm(v)


class EconomicEvent(BaseModel):
    """One scheduled release; unset fields come from its kind."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: str = Field(min_length=1, description="A key of ``kinds``.")
    date: dt.date = Field(description="New York local date, YYYY-MM-DD.")
    time: str | None = Field(default=None, description="Overrides the kind's time.")
    minutes_before: float | None = Field(default=None, ge=0)
    minutes_after: float | None = Field(default=None, ge=0)
    impact: Impact | None = None
    note: str = ""

    @field_validator("time", mode="before")
    @classmethod
    def _time(cls, v: object) -> str | None:
        return None if v is None else _parse_hhmm(v)


class EventsConfig(BaseModel):
    """The whole ``config/events.yaml``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kinds: dict[str, EventKind]
    events: list[EconomicEvent] = Field(default_factory=list)

    @model_validator(mode="after")
    def _known_kinds(self) -> EventsConfig:
        for i, ev in enumerate(self.events):
            if ev.kind not in self.kinds:
                known = ", ".join(sorted(self.kinds))
                raise ValueError(f"events.{i}: unknown kind {ev.kind!r} (known: {known})")
        return self


class EventWindow(NamedTuple):
    """A halt window in UTC ns (``start_ns`` inclusive, ``end_ns`` exclusive)."""

    kind: str
    date: dt.date
    local_time: str
    impact: str
    event_ns: int
    start_ns: int
    end_ns: int
    note: str = ""

    def describe(self) -> str:
        mins_before = (self.event_ns - self.start_ns) // NS_PER_MIN
        mins_after = (self.end_ns - self.event_ns) // NS_PER_MIN
        return (
            f"{self.kind} {self.date.isoformat()} {self.local_time} New York ({self.impact} impact): "
            f"no entries from {mins_before} min before to {mins_after} min after"
        )


def ny_local_to_utc_ns(day: dt.date, hhmm: str) -> int:
    """UTC ns of New York wall-clock ``hhmm`` on ``day`` (DST-aware; refuses times a DST jump skips)."""
    hour, minute = int(hhmm[:2]), int(hhmm[3:])
    local = dt.datetime(day.year, day.month, day.day, hour, minute, tzinfo=NEW_YORK)
    utc = local.astimezone(dt.UTC)
    if utc.astimezone(NEW_YORK).replace(tzinfo=None) != local.replace(tzinfo=None):
        raise ValueError(f"{day} {hhmm} does not exist in New York (skipped by the DST change)")
    return (utc - _EPOCH) // dt.timedelta(microseconds=1) * 1000


class EventCalendar:
    """Halt windows sorted by start, queried by timestamp in O(log n)."""

    def __init__(self, windows: Iterable[EventWindow] = ()) -> None:
        self._windows = sorted(windows, key=lambda w: (w.start_ns, w.end_ns))
        self._starts = [w.start_ns for w in self._windows]
        # _reach[i] = index of the window with the latest end among windows[0..i].
        self._reach: list[int] = []
        best = -1
        for i, w in enumerate(self._windows):
            if best < 0 or w.end_ns > self._windows[best].end_ns:
                best = i
            self._reach.append(best)

    @classmethod
    def from_config(cls, config: EventsConfig, min_impact: Impact = "low") -> EventCalendar:
        floor = IMPACT_RANK[min_impact]
        windows: list[EventWindow] = []
        for ev in config.events:
            kind = config.kinds[ev.kind]
            impact = ev.impact or kind.impact
            if IMPACT_RANK[impact] < floor:
                continue
            local_time = ev.time or kind.time
            before = kind.minutes_before if ev.minutes_before is None else ev.minutes_before
            after = kind.minutes_after if ev.minutes_after is None else ev.minutes_after
            event_ns = ny_local_to_utc_ns(ev.date, local_time)
            windows.append(
                EventWindow(
                    kind=ev.kind,
                    date=ev.date,
                    local_time=local_time,
                    impact=impact,
                    event_ns=event_ns,
                    start_ns=event_ns - round(before * NS_PER_MIN),
                    end_ns=event_ns + round(after * NS_PER_MIN),
                    note=ev.note,
                )
            )
        return cls(windows)

    @property
    def windows(self) -> tuple[EventWindow, ...]:
        return tuple(self._windows)

    def __len__(self) -> int:
        return len(self._windows)

    def halt_active(self, ts_ns: int) -> EventWindow | None:
        """The window covering ``ts_ns`` (the one reaching furthest if several do), else None."""
        i = bisect.bisect_right(self._starts, ts_ns) - 1
        if i < 0:
            return None
        w = self._windows[self._reach[i]]
        return w if ts_ns < w.end_ns else None


def load_event_calendar(path: Path, min_impact: Impact = "low") -> EventCalendar:
    """Read an events YAML into an EventCalendar; problems are one ConfigError line."""
    config = load_model(path, EventsConfig)
    try:
        return EventCalendar.from_config(config, min_impact)
    except ValueError as exc:
        raise ConfigError(f"{path}: {exc}") from None


def load_event_halts(config: RiskConfig, base_dir: Path = PROJECT_ROOT) -> EventCalendar:
    """The halt calendar ``config.event_halts`` names (empty when its path is null)."""
    halts = config.event_halts
    if halts.path is None:
        return EventCalendar()
    return load_event_calendar(resolve(halts.path, base_dir), halts.min_impact)
