"""Incremental reads of the parquet journal (``services.core.journal`` layout) for the live pages.

The journal is ``root/<table>/session=<s>/date=YYYY-MM-DD/*.parquet``; a writer adds a new part file per
flush (written under a temporary name, then renamed), so a part once seen never changes. A
:class:`TableTail` remembers which parts it has read and keeps their rows: each poll reads only the
parts that appeared since, so a page refresh every second costs one directory listing plus the new
rows, never a whole day's re-read. Rows are kept in arrival order and numbered, so a browser that
has the first ``n`` rows asks for rows ``n:`` and patches its figures with them.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq

from services.dashboard.pages.base import PageContext

log = logging.getLogger("dreambot.dashboard")

SESSION_PREFIX = "session="
DATE_PREFIX = "date="


def journal_sessions(root: Path) -> list[str]:
    """Session names present in any table of the journal at ``root`` (sorted)."""
    found: set[str] = set()
    if not root.is_dir():
        return []
    for table in root.iterdir():
        if table.is_dir():
            found.update(p.name[len(SESSION_PREFIX):] for p in table.glob(SESSION_PREFIX + "*") if p.is_dir())
    return sorted(found)


def resolve_session(root: Path | None, wanted: str) -> str:
    """``wanted`` when the journal holds it; else the journal's only session (a backtest's own name);
    else ``wanted`` (the tables stay empty until that session writes)."""
    if root is None:
        return wanted
    names = journal_sessions(root)
    if wanted in names or len(names) != 1:
        return wanted
    return names[0]


def _is_part(path: Path) -> bool:
    # A writer's temporary file is not a part until renamed; skip hidden/underscore names as well.
    return path.suffix == ".parquet" and not path.name.startswith((".", "_")) and ".tmp" not in path.name


@dataclass
class TableTail:
    """The rows of one journal table for one session, read part by part as parts appear."""

    root: Path
    table: str
    session: str
    _seen: set[Path] = field(default_factory=set)
    _frames: list[pd.DataFrame] = field(default_factory=list)
    _frame: pd.DataFrame | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)
    error: str = ""

    def _new_parts(self) -> list[Path]:
        base = self.root / self.table / f"{SESSION_PREFIX}{self.session}"
        if not base.is_dir():
            return []
        parts = [p for p in base.glob(f"{DATE_PREFIX}*/*.parquet") if _is_part(p) and p not in self._seen]
        return sorted(parts, key=lambda p: (p.parent.name, p.stat().st_mtime_ns, p.name))

    def poll(self) -> pd.DataFrame:
        """Read the parts that appeared since the last poll; return every row so far (arrival order)."""
        with self._lock:
            fresh: list[pd.DataFrame] = []
            for part in self._new_parts():
                try:
                    frame = pq.read_table(part).to_pandas()
                except (OSError, ValueError) as exc:  # e.g. a part removed under us: try it next poll
                    self.error = f"{part.name}: {exc}"
                    log.warning("journal part unreadable", extra={"part": str(part), "error": str(exc)})
                    continue
                self._seen.add(part)
                if "ts" in frame.columns:
                    frame = frame.sort_values("ts", kind="stable")
                fresh.append(frame)
            if fresh:
                self._frames.extend(f for f in fresh if len(f))
                self._frame = None
            if self._frame is None:
                self._frame = (pd.concat(self._frames, ignore_index=True) if self._frames else pd.DataFrame())
            return self._frame


@dataclass
class JournalTails:
    """One :class:`TableTail` per table for the console's session (shared by every browser)."""

    root: Path | None
    session: str
    _tails: dict[str, TableTail] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def configured(self) -> bool:
        """Whether a journal folder was given at all."""
        return self.root is not None

    def rows(self, table: str) -> pd.DataFrame:
        """Every row of ``table`` so far (empty when there is no journal)."""
        if self.root is None:
            return pd.DataFrame()
        with self._lock:
            tail = self._tails.get(table)
            if tail is None:
                tail = self._tails[table] = TableTail(self.root, table, resolve_session(self.root, self.session))
        return tail.poll()


def journal_root(journal: Path | None, backtest_dir: Path | None) -> Path | None:
    """The journal to read: the one given, else a backtest/run output's ``parquet/`` folder."""
    if journal is not None:
        return journal
    if backtest_dir is not None:
        return backtest_dir / "parquet"
    return None


_SHARED: dict[tuple[Path | None, str], JournalTails] = {}
_SHARED_LOCK = threading.Lock()


def shared_tails(ctx: PageContext) -> JournalTails:
    """The one :class:`JournalTails` per journal and session, shared by every page and browser."""
    root = journal_root(ctx.journal_root, ctx.backtest_dir)
    with _SHARED_LOCK:
        tails = _SHARED.get((root, ctx.session))
        if tails is None:
            tails = _SHARED[(root, ctx.session)] = JournalTails(root, ctx.session)
        return tails
