"""Small building blocks the learner, health and backtest pages share: tables, cells, times, blanks.

Pure functions from values to Dash components; no reads. A refreshed page body is only sent to the
browser when its data changed (:func:`fingerprint`), so a quiet page costs the browser nothing.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping, Sequence
from typing import Any

from dash import html

from services.core.calendar import iso_ny

Column = tuple[str, str]  # (header, row key)


def cell(value: Any) -> str:
    """A table cell's text: floats to 4 significant decimals, None and NaN as a dash."""
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if not math.isfinite(value):
            return "–"
        return f"{value:g}" if abs(value) >= 1e15 else f"{value:.4f}".rstrip("0").rstrip(".")
    return str(value)


def table(columns: Sequence[Column], rows: Sequence[Mapping[str, Any]], table_id: str) -> html.Table:
    """A plain HTML table of ``rows``; every cell's class names its column (``col-<key>``)."""
    head = html.Thead(html.Tr([html.Th(h) for h, _ in columns]))
    body = html.Tbody([html.Tr([html.Td(cell(row.get(k)), className=f"col-{k}") for _, k in columns]) for row in rows])
    return html.Table([head, body], id=table_id, className="ops-table")


def no_data(what: str, component_id: str) -> html.Div:
    """The blank a panel shows when its source has nothing (``what`` says which)."""
    return html.Div(f"no data: {what}", id=component_id, className="no-data")


def when(ts_ns: int) -> str:
    """Event time as New York ISO 8601 to the second; 0 (unknown) as a dash."""
    return iso_ny(ts_ns - ts_ns % 1_000_000_000)[:19].replace("T", " ") if ts_ns > 0 else "–"


def fingerprint(*parts: object) -> str:
    """A short digest of what a page body was built from (unchanged digest: the browser keeps its copy)."""
    digest = hashlib.blake2b(digest_size=12)
    for part in parts:
        digest.update(repr(part).encode())
        digest.update(b"\x00")
    return digest.hexdigest()
