"""Audit log: JSONL lines, size rotation with a fixed number of backups, credentials never written."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from services.core.events import OrderEvent
from services.core.settings import ConfigError
from services.oms.audit import AuditLog, MemoryAudit, event_record
from services.oms.config import audit_settings


def _record(i: int) -> dict[str, object]:
    return {"kind": "order_event", "seq": f"{i:03d}", "pad": "x" * 40}  # every line the same size


def test_rotation_creates_backups_at_the_size_limit(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    line = len(json.dumps(_record(0), separators=(",", ":"))) + 1  # 84 bytes per record
    log = AuditLog(path, rotate_bytes=3 * line, backups=2)  # three records per file
    for i in range(3):
        log.write(_record(i))
    assert path.stat().st_size == 3 * line and not log.backup_path(1).exists()
    log.write(_record(3))  # the 4th would overflow: rotate first
    assert log.backup_path(1).exists() and path.stat().st_size == line
    for i in range(4, 12):
        log.write(_record(i))
    log.close()
    # 12 records, 3 per file, 2 backups kept: current 9..11, .1 6..8, .2 3..5; 0..2 dropped.
    seqs = {
        p.name: [int(json.loads(x)["seq"]) for x in p.read_text().splitlines()]
        for p in (path, log.backup_path(1), log.backup_path(2))
    }
    assert seqs == {"audit.jsonl": [9, 10, 11], "audit.jsonl.1": [6, 7, 8], "audit.jsonl.2": [3, 4, 5]}
    assert not log.backup_path(3).exists()
    assert all(p.stat().st_size <= 3 * line for p in tmp_path.iterdir())


def test_reopening_appends_and_counts_existing_bytes(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    with AuditLog(path, rotate_bytes=200, backups=1) as log:
        log.write(_record(0))
        log.write(_record(1))
    with AuditLog(path, rotate_bytes=200, backups=1) as log:
        log.write(_record(2))  # 2 x 84 + 84 > 200: rotates although the file was written earlier
    assert len(path.read_text().splitlines()) == 1
    assert len((tmp_path / "audit.jsonl.1").read_text().splitlines()) == 2


def test_credentials_are_never_written(tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl"
    with AuditLog(path) as log:
        log.write({"kind": "x", "access_token": "abc123", "headers": {"Authorization": "Bearer zzz"},
                   "note": "sent with Bearer sk-live-1"})
    text = path.read_text()
    assert "abc123" not in text and "zzz" not in text and "sk-live-1" not in text
    mem = MemoryAudit()
    mem.write({"api_key": "k"})
    assert mem.records == [{"api_key": "***"}]


def test_event_record_carries_the_event_fields() -> None:
    ev = OrderEvent(ts=5, id="e", order_id="o", client_order_id="c", underlying="SPY", contract="X",
                    leg="entry", side="buy", status="accepted", quantity=1)
    rec = event_record("order_event", ev, fill_delay_ns=3)
    assert (rec["kind"], rec["type"], rec["order_id"], rec["fill_delay_ns"]) == ("order_event", "order_event",
                                                                                  "o", 3)


def test_settings_from_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OMS_AUDIT_PATH", str(tmp_path / "x" / "audit.jsonl"))
    monkeypatch.setenv("OMS_AUDIT_ROTATE_MB", "0.001")
    monkeypatch.setenv("OMS_AUDIT_BACKUPS", "3")
    log = AuditLog.from_settings()
    assert (log.path, log.rotate_bytes, log.backups) == (tmp_path / "x" / "audit.jsonl", 1048, 3)
    assert audit_settings().rotate_mb == 0.001
    monkeypatch.setenv("OMS_AUDIT_ROTATE_MB", "-1")
    with pytest.raises(ConfigError, match="OMS_AUDIT_ROTATE_MB"):
        audit_settings()
    monkeypatch.delenv("OMS_AUDIT_ROTATE_MB")
    monkeypatch.delenv("OMS_AUDIT_PATH")
    assert audit_settings().rotate_mb == 50.0
