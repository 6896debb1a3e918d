"""Bounded fuzz: arbitrary bytes through the event decoder, the bar reader and the config loaders end
in their one typed error (EventDecodeError, DataSourceError, ConfigError), never another exception.

100 examples per target keep this in the unit tier (about 6 s for all five); DREAMBOT_FUZZ_EXAMPLES
raises the count for a longer run (e.g. 2000).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

import msgspec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.app.stages import apply_risk_overrides
from services.core.events import EventDecodeError, OrderRequest, decode_json, decode_msgpack, encode_msgpack
from services.core.session_config import RiskOverrides, load_session_config
from services.core.settings import ConfigError, load_yaml
from services.ingest.sources import DataSourceError, open_bars

FUZZ = settings(max_examples=int(os.environ.get("DREAMBOT_FUZZ_EXAMPLES", "100")), deadline=None,
                suppress_health_check=[HealthCheck.too_slow])
ORDER = encode_msgpack(OrderRequest(ts=1, id="r", intent_id="i", underlying="SPY", contract="SPY250709C00620000",
                                    side="buy", quantity=1, limit_price=1.0, take_profit=2.0, stop_loss=0.5))

# Structured junk: msgpack/JSON values of the right shape with wrong contents find more paths than noise.
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=6),
    max_leaves=20,
)
event_like = st.fixed_dictionaries(
    {"type": st.sampled_from(["bar", "order_request", "features", "chain", "risk_command", "nope"])},
    optional={k: json_values for k in ("ts", "symbol", "open", "quantity", "approval", "values", "quotes", "schema")},
)


@FUZZ
@given(st.binary(max_size=300) | event_like.map(msgspec.msgpack.encode)
       | st.binary(max_size=40).map(lambda b: ORDER[: len(ORDER) // 2] + b))
def test_the_msgpack_decoder_raises_only_its_error(payload: bytes) -> None:
    with contextlib.suppress(EventDecodeError):
        decode_msgpack(payload)


@FUZZ
@given(st.binary(max_size=300) | event_like.map(msgspec.json.encode))
def test_the_json_decoder_raises_only_its_error(payload: bytes) -> None:
    with contextlib.suppress(EventDecodeError):
        decode_json(payload)


csv_cells = st.sampled_from(["2025-07-09 09:30:00-04:00", "2099-01-01", "1e12", "-1", "nan", "", "x", "620.5",
                             "1752068000000000000", "\x00", "é", '"'])
csv_text = st.lists(st.lists(csv_cells, min_size=1, max_size=7).map(",".join), max_size=6).map(
    lambda rows: "\n".join(["Datetime,Open,High,Low,Close,Volume", *rows]))


@FUZZ
@given(st.binary(max_size=300) | csv_text.map(str.encode), st.sampled_from(["bars.csv", "spy.csv.gz", "b.parquet"]))
def test_the_bar_reader_raises_only_its_error(content: bytes, name: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / name
        path.write_bytes(content)
        with contextlib.suppress(DataSourceError):
            list(open_bars(path, "SPY"))


yaml_text = st.lists(
    st.tuples(st.sampled_from(["max_daily_loss_usd", "max_open_positions", "throttle", "sizing_mode", "risk",
                               "symbols", "mode", "x"]),
              st.sampled_from([".inf", "true", "1e300", "-3", "[1, 2]", "{a: 1}", "'10'", "null", "~", "&a x",
                               "*b", "!!python/object:os.system x", "\t", "10"])),
    max_size=5).map(lambda kv: "\n".join(f"{k}: {v}" for k, v in kv))


@FUZZ
@given(st.binary(max_size=200) | yaml_text.map(str.encode))
def test_risk_yaml_raises_only_config_error(content: bytes) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "risk.yaml"
        path.write_bytes(content)
        with contextlib.suppress(ConfigError):
            apply_risk_overrides(load_yaml(path), RiskOverrides(), str(path))


@FUZZ
@given(st.binary(max_size=200) | yaml_text.map(str.encode))
def test_a_session_file_raises_only_config_error(content: bytes) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "session.yaml"
        path.write_bytes(content)
        with contextlib.suppress(ConfigError):
            load_session_config(session_file=path, environ={}, use_env_file=False)
