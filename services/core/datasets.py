"""Where real data lives: the bundled sample and the shared recordings (env DREAMBOT_DATA_DIR)."""

from __future__ import annotations

import os
from pathlib import Path

from services.core.settings import PROJECT_ROOT

SAMPLE_DIR = PROJECT_ROOT / "data" / "sample"
SAMPLE_BARS = SAMPLE_DIR / "spy_1min_2025-07-09.csv"

SPY_1MIN = "spy_1min_2025-07-08_2025-07-10.csv"
QQQ_1MIN_UTC = "qqq_1min_utc_2025-04-30_2025-06-13.csv"
SPXW_CHAINS = "spxw_eod_chains_2018-01.csv"
SPY_PUTS_1MIN = "spy_puts_1min_2024-06-03.json"


def real_data_dir() -> Path:
    """Folder of the shared real recordings: $DREAMBOT_DATA_DIR or ../shared/data beside the project."""
    env = os.environ.get("DREAMBOT_DATA_DIR")
    return Path(env) if env else PROJECT_ROOT.parent / "shared" / "data"


def real_file(name: str) -> Path | None:
    """Path of a real recording, or None when it is absent on this checkout."""
    path = real_data_dir() / name
    return path if path.is_file() else None
