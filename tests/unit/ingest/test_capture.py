"""The capture file: JSONL lines, rotated by size, read back oldest first."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.ingest.capture import CaptureError, CaptureWriter, capture_files, read_capture


def test_rotation_keeps_every_line_in_order(tmp_path: Path) -> None:
    path = tmp_path / "cap" / "live.jsonl"
    with CaptureWriter(path, rotate_mb=2 / 1024) as writer:  # 2 KiB files
        for i in range(200):
            writer.write({"k": "ws", "c": "stocks", "n": 1, "f": f"[{{\"i\":{i}}}]" + "x" * 40})
    assert writer.rotations >= 5
    files = capture_files(path)
    assert files[-1] == path and files[0].name == f"live.jsonl.{writer.rotations}"
    assert all(f.stat().st_size <= 2048 for f in files)
    got = [r["f"] for r in read_capture(path)]
    assert got == [f"[{{\"i\":{i}}}]" + "x" * 40 for i in range(200)]


def test_a_capture_appends_across_runs(tmp_path: Path) -> None:
    path = tmp_path / "live.jsonl"
    for run in range(2):
        with CaptureWriter(path) as writer:
            writer.write({"k": "meta", "run": run})
    assert [r["run"] for r in read_capture(path)] == [0, 1]


def test_unreadable_captures_are_one_error_naming_the_line(tmp_path: Path) -> None:
    with pytest.raises(CaptureError, match="no capture file"):
        list(read_capture(tmp_path / "missing.jsonl"))
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"k":"tick"}\n{"no_kind":1}\n')
    with pytest.raises(CaptureError, match=r"bad.jsonl:2: not a capture record"):
        list(read_capture(bad))
    bad.write_text('{"k":"tick"}\nnot json\n')
    with pytest.raises(CaptureError, match=r"bad.jsonl:2: not JSON"):
        list(read_capture(bad))
