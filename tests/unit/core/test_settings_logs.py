"""Settings errors are one readable line; logs are JSON with secrets redacted."""

from __future__ import annotations

import io
import json
import logging
from pathlib import Path

import pytest
from pydantic import BaseModel, Field

from services.core.logs import configure_logging
from services.core.settings import ConfigError, load_model


class _Limits(BaseModel):
    max_loss: float = Field(gt=0)
    symbols: list[str]


def test_yaml_model_error_is_one_line(tmp_path: Path) -> None:
    p = tmp_path / "risk.yaml"
    p.write_text("max_loss: -5\nsymbols: [SPY]\n")
    with pytest.raises(ConfigError) as info:
        load_model(p, _Limits)
    msg = str(info.value)
    assert "\n" not in msg and "max_loss" in msg and str(p) in msg


def test_yaml_syntax_error_names_line(tmp_path: Path) -> None:
    p = tmp_path / "bad.yaml"
    p.write_text("a: 1\nb: [1, 2\n")
    with pytest.raises(ConfigError, match="line"):
        load_model(p, _Limits)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_model(tmp_path / "nope.yaml", _Limits)


def test_json_logs_redact_tokens() -> None:
    buf = io.StringIO()
    configure_logging("INFO", buf)
    log = logging.getLogger("t")
    log.info("calling with Bearer abc.def-123", extra={"access_token": "s3cret", "symbol": "SPY"})
    line = json.loads(buf.getvalue().strip())
    assert line["msg"] == "calling with Bearer ***"
    assert line["access_token"] == "***" and line["symbol"] == "SPY"
    assert "s3cret" not in buf.getvalue() and "abc.def-123" not in buf.getvalue()
