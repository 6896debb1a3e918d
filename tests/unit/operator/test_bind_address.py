"""Stage endpoints bind loopback unless configured; the operator configures 0.0.0.0 for pods."""

from __future__ import annotations

from dreambot_operator.render import render_children

from services.core.session_config import SessionConfig, load_session_config
from tests.unit.operator.test_render import CTX, REF, by_kind_name, env, example_spec


def test_a_stage_binds_loopback_by_default() -> None:
    assert SessionConfig().http.host == "127.0.0.1"
    assert load_session_config(environ={}, use_env_file=False).config.http.host == "127.0.0.1"


def test_every_pod_binds_every_interface_explicitly() -> None:
    children = by_kind_name(render_children(REF, example_spec("tradingsession-paper.yaml"), CTX))
    deployments = [c for (kind, _), c in children.items() if kind == "Deployment"]
    assert deployments
    for child in deployments:
        assert env(child)["DREAMBOT_HTTP_HOST"] == "0.0.0.0", child["metadata"]["name"]
