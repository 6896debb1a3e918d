"""Locating the real recordings (skip with a reason when absent)."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.core.datasets import real_data_dir, real_file


def require_real(name: str) -> Path:
    """Path of a real recording, or skip the test saying where it was looked for."""
    path = real_file(name)
    if path is None:
        pytest.skip(f"real recording {name} not found in {real_data_dir()} (set DREAMBOT_DATA_DIR)")
    return path
