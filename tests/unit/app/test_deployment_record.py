"""The launcher's deployment.json holds no secret and only its owner may read it."""

from __future__ import annotations

import json
import stat
from pathlib import Path

from services.launcher import Deployment


def test_the_record_is_0600_without_the_redis_password_or_the_approval_key(tmp_path: Path) -> None:
    path = tmp_path / "s" / "deployment.json"
    path.parent.mkdir()
    path.write_text("{}", encoding="utf-8")
    path.chmod(0o644)  # an older record, world-readable
    env = {"DREAMBOT_REDIS_URL": "redis://:hunter2-redis@127.0.0.1:6379/0", "DREAMBOT_APPROVAL_KEY": "k" * 64,
           "DREAMBOT_KAFKA_BOOTSTRAP": "127.0.0.1:9092", "OMS_AUDIT_PATH": str(tmp_path / "a.jsonl"), "HOME": "/x"}
    Deployment("s", tmp_path / "s", env).save()
    text = path.read_text(encoding="utf-8")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert "hunter2-redis" not in text and "k" * 64 not in text
    saved = json.loads(text)["env"]
    assert saved["DREAMBOT_REDIS_URL"] == "redis://:***@127.0.0.1:6379/0"
    assert saved["DREAMBOT_KAFKA_BOOTSTRAP"] == "127.0.0.1:9092" and "HOME" not in saved
    loaded = Deployment.load("s", tmp_path)
    assert loaded.bootstrap == "127.0.0.1:9092"
