"""The chart's console with the built helm: it creates the credentials Secret and a NetworkPolicy that
admits only the console port, binds the pod to 0.0.0.0 (for its Service) with the Service names as
allowed hosts, and the Secret's credentials are ones the console accepts (the rendered env, resolved
against the Secret, goes through the console's own settings and sign-in)."""

from __future__ import annotations

import base64
import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from services.dashboard.auth import hash_password
from services.dashboard.main import ADMIN_USER, load_settings, make_access
from tests.harness.control_plane import PROJECT_ROOT, ControlPlane

CHART = str(PROJECT_ROOT / "charts" / "dreambot")


def _render(k8s_bin: Path, *args: str) -> list[dict[str, Any]]:
    out = subprocess.run([str(k8s_bin / "helm"), "template", "dreambot", CHART, "--namespace", "ops", *args],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return [d for d in yaml.safe_load_all(out.stdout) if d]


def _one(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    [doc] = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    return doc


def _console_env(docs: list[dict[str, Any]]) -> dict[str, str]:
    """The console container's env with secretKeyRefs resolved against the rendered Secret."""
    deployment = _one(docs, "Deployment", "dreambot-console")
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    secret = _one(docs, "Secret", "dreambot-console-auth")
    env: dict[str, str] = {}
    for item in container["env"]:
        if "value" in item:
            env[item["name"]] = item["value"]
            continue
        ref = item["valueFrom"]["secretKeyRef"]
        assert ref["name"] == "dreambot-console-auth"
        if ref["key"] in secret["data"]:
            env[item["name"]] = base64.b64decode(secret["data"][ref["key"]]).decode()
        else:
            assert ref.get("optional") is True, ref
    return env


def _access(monkeypatch: pytest.MonkeyPatch, env: dict[str, str]) -> Any:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return make_access(load_settings())


def test_defaults_generate_an_admin_the_console_accepts(k8s_bin: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    docs = _render(k8s_bin)
    env = _console_env(docs)
    assert env["DREAMBOT_DASHBOARD_HOST"] == "0.0.0.0"
    hosts = env["DREAMBOT_CONSOLE_ALLOWED_HOSTS"].split(",")
    assert {"localhost", "127.0.0.1", "dreambot-console", "dreambot-console.ops.svc.cluster.local"} <= set(hosts)
    password = env["DREAMBOT_CONSOLE_ADMIN_PASSWORD"]
    assert len(password) == 24 and len(env["DREAMBOT_CONSOLE_SESSION_KEY"]) == 48
    access = _access(monkeypatch, env)
    admin = access.policy.users.authenticate(ADMIN_USER, password)
    assert admin is not None and admin.role == "operator"
    assert access.policy.users.authenticate(ADMIN_USER, password + "x") is None
    # Two renders (two fresh installs) never share a generated secret.
    again = _console_env(_render(k8s_bin))
    assert again["DREAMBOT_CONSOLE_ADMIN_PASSWORD"] != password
    assert again["DREAMBOT_CONSOLE_SESSION_KEY"] != env["DREAMBOT_CONSOLE_SESSION_KEY"]
    deployment = _one(docs, "Deployment", "dreambot-console")
    assert deployment["spec"]["strategy"] == {"type": "Recreate"} and deployment["spec"]["replicas"] == 1
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    probe = container["readinessProbe"]["httpGet"]
    assert probe["path"] == "/readyz" and {"name": "Host", "value": "localhost"} in probe["httpHeaders"]
    assert "localhost" in hosts  # the probe's Host passes the console's Host check


def test_listed_users_replace_the_generated_admin(k8s_bin: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    users = [{"name": "alice", "role": "operator", "passwordHash": hash_password("alice-password", log2_n=10)},
             {"name": "bob", "role": "viewer", "passwordHash": hash_password("bob-password", log2_n=10)}]
    docs = _render(k8s_bin, "--set-json", f"console.auth.users={json.dumps(users)}",
                   "--set", "console.auth.allowedHosts={console.example.com}")
    secret = _one(docs, "Secret", "dreambot-console-auth")
    assert set(secret["data"]) == {"users", "session-key"}
    env = _console_env(docs)
    assert "DREAMBOT_CONSOLE_ADMIN_PASSWORD" not in env
    assert env["DREAMBOT_CONSOLE_ALLOWED_HOSTS"].endswith(",console.example.com")
    access = _access(monkeypatch, env)
    alice = access.policy.users.authenticate("alice", "alice-password")
    bob = access.policy.users.authenticate("bob", "bob-password")
    assert alice is not None and alice.role == "operator" and bob is not None and bob.role == "viewer"
    assert access.policy.users.get(ADMIN_USER) is None


def test_an_existing_secret_is_used_as_is(k8s_bin: Path) -> None:
    docs = _render(k8s_bin, "--set", "console.auth.existingSecret=my-console-creds")
    assert not [d for d in docs if d["kind"] == "Secret" and "console" in d["metadata"]["name"]]
    [container] = _one(docs, "Deployment", "dreambot-console")["spec"]["template"]["spec"]["containers"]
    refs = {e["valueFrom"]["secretKeyRef"]["name"] for e in container["env"] if "valueFrom" in e}
    assert refs == {"my-console-creds"}


def test_the_network_policy_admits_only_the_console_port(k8s_bin: Path) -> None:
    policy = _one(_render(k8s_bin), "NetworkPolicy", "dreambot-console")
    spec = policy["spec"]
    assert spec["podSelector"]["matchLabels"]["app.kubernetes.io/component"] == "console"
    assert spec["policyTypes"] == ["Ingress"]
    assert spec["ingress"] == [{"ports": [{"protocol": "TCP", "port": "http"}]}]
    peers = [{"namespaceSelector": {"matchLabels": {"name": "ingress-nginx"}}}]
    narrowed = _one(_render(k8s_bin, "--set-json", f"console.networkPolicy.from={json.dumps(peers)}"),
                    "NetworkPolicy", "dreambot-console")
    assert narrowed["spec"]["ingress"] == [{"ports": [{"protocol": "TCP", "port": "http"}], "from": peers}]
    off = _render(k8s_bin, "--set", "console.networkPolicy.enabled=false")
    assert not [d for d in off if d["kind"] == "NetworkPolicy"]


def test_bad_console_values_are_refused(k8s_bin: Path) -> None:
    for bad in (["--set", "console.replicas=2"], ["--set", "console.auth.proxyDefaultRole=admin"],
                ["--set-json", 'console.auth.users=[{"name":"a","role":"root","passwordHash":"-"}]'],
                ["--set-json", 'console.auth.users=[{"name":"a","role":"viewer","passwordHash":"hunter2"}]']):
        out = subprocess.run([str(k8s_bin / "helm"), "template", "x", CHART, *bad], capture_output=True,
                             text=True, timeout=120)
        assert out.returncode != 0 and "console" in out.stderr, (bad, out.stderr)


def test_the_console_objects_pass_a_server_dry_run(control_plane: ControlPlane, namespace: str) -> None:
    rendered = control_plane.helm("template", "dreambot", CHART, "--namespace", namespace).stdout
    out = control_plane.kubectl("apply", "--dry-run=server", "-n", namespace, "-f", "-", input=rendered,
                                check=False)
    assert out.returncode == 0, out.stdout + out.stderr
    for expected in ("secret/dreambot-console-auth", "networkpolicy.networking.k8s.io/dreambot-console",
                     "deployment.apps/dreambot-console"):
        assert expected in out.stdout, out.stdout
