"""Risk's approval key in a cluster: one Secret per session, read by risk and the OMS only."""

from __future__ import annotations

from typing import Any

from dreambot_operator.render import (
    APPROVAL_KEY_ENV,
    approval_secret_name,
    render_approval_secret,
    render_children,
)
from pydantic import SecretStr

from services.core.approval import session_approval_key
from tests.unit.operator.test_render import CTX, REF, by_kind_name, env, example_spec


def _children() -> dict[tuple[str, str], dict[str, Any]]:
    return by_kind_name(render_children(REF, example_spec("tradingsession-paper.yaml"), CTX))


def test_risk_and_the_oms_read_the_key_from_the_sessions_secret_and_no_one_else_does() -> None:
    children = _children()
    ref = {"secretKeyRef": {"name": "paper-etf-approval", "key": APPROVAL_KEY_ENV}}
    for stage in ("risk", "oms"):
        assert env(children[("Deployment", f"paper-etf-{stage}")])[APPROVAL_KEY_ENV] == ref
    for (kind, name), child in children.items():
        if kind in ("Deployment", "CronJob") and not name.endswith(("-risk", "-oms")):
            assert APPROVAL_KEY_ENV not in env(child), name


def test_the_secret_is_owned_by_the_session_and_holds_a_key_the_stages_accept() -> None:
    secret = render_approval_secret(REF, "k" * 64)
    assert secret["kind"] == "Secret" and secret["metadata"]["name"] == approval_secret_name(REF.name)
    assert secret["metadata"]["ownerReferences"][0]["uid"] == REF.uid
    assert secret["stringData"] == {APPROVAL_KEY_ENV: "k" * 64}
    session_approval_key(REF.name, SecretStr(secret["stringData"][APPROVAL_KEY_ENV]), required=True)


def test_the_secret_is_not_a_rendered_child() -> None:
    # Rendered children are applied on every reconcile; the key must be made once, so the handler
    # creates it only while it does not exist (handlers.ensure_approval_secret).
    assert not any(kind == "Secret" for kind, _ in _children())
