"""Fixtures for tests against a real Kubernetes API server (tests/harness/control_plane.py).

One control plane per test session with the CRDs applied once; a random namespace per test; the
operator as a real ``python -m dreambot_operator`` process watching that namespace; a real Redis.
"""

from __future__ import annotations

import copy
import json
import secrets
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Generator, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
import yaml

from tests.harness.control_plane import (
    PROJECT_ROOT,
    ControlPlane,
    bin_dir,
    build_binaries,
    missing_binaries,
)
from tests.harness.ports import free_port
from tests.harness.redis_server import RedisServer

T = TypeVar("T")

CRD_NAME = "tradingsessions.dreambot.io"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if Path(str(item.fspath)).is_relative_to(here):
            item.add_marker(pytest.mark.k8s)


def wait_for(fn: Callable[[], T | None], timeout_s: float = 30.0, interval_s: float = 0.25,
             what: str = "condition") -> T:
    """Poll ``fn`` until it returns something truthy; its last exception or a TimeoutError."""
    deadline = time.monotonic() + timeout_s
    last: BaseException | None = None
    while time.monotonic() < deadline:
        try:
            value = fn()
            if value:
                return value
            last = None
        except (AssertionError, subprocess.CalledProcessError, KeyError) as exc:
            last = exc
        time.sleep(interval_s)
    raise TimeoutError(f"timed out after {timeout_s}s waiting for {what}" + (f": {last}" if last else ""))


@pytest.fixture(scope="session")
def k8s_bin() -> Path:
    directory = bin_dir()
    if missing_binaries(directory):
        if shutil.which("go") is None:
            pytest.skip(f"Kubernetes binaries missing in {directory} ({', '.join(missing_binaries(directory))}) "
                        "and no Go toolchain to build them: run scripts/build-k8s.sh")
        directory = build_binaries()
    return directory


@pytest.fixture(scope="session")
def control_plane(k8s_bin: Path) -> Iterator[ControlPlane]:
    cp = ControlPlane(k8s_bin)
    try:
        cp.start()
        cp.kubectl("apply", "-f", str(PROJECT_ROOT / "crds"))
        cp.kubectl("wait", "--for=condition=Established", f"crd/{CRD_NAME}", "--timeout=60s")
        yield cp
    finally:
        cp.close()


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    with RedisServer() as server:
        yield server


@pytest.fixture
def namespace(control_plane: ControlPlane) -> Iterator[str]:
    ns = f"t-{secrets.token_hex(4)}"
    control_plane.kubectl("create", "namespace", ns)
    yield ns
    control_plane.kubectl("delete", "namespace", ns, "--wait=false", check=False)


class OperatorProcess:
    """``python -m dreambot_operator --standalone --namespace NS`` as a child process."""

    def __init__(self, cp: ControlPlane, namespace: str, kubeconfig: Path | None = None) -> None:
        self.log = cp.dir / f"operator-{namespace}.log"
        self.health_port = free_port()
        env = cp.env()
        if kubeconfig is not None:
            env["KUBECONFIG"] = str(kubeconfig)
        env.update({
            "DREAMBOT_OPERATOR_STATUS_INTERVAL": "1",
            "DREAMBOT_OPERATOR_FLAT_POLL": "1",
            "DREAMBOT_IMAGE": "dreambot:test",
            "PYTHONUNBUFFERED": "1",
        })
        self._fh = self.log.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "dreambot_operator", "--standalone", "--namespace", namespace,
             f"--liveness=http://127.0.0.1:{self.health_port}/healthz"],
            env=env, stdout=self._fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            cwd=str(PROJECT_ROOT),
        )

    def wait_ready(self, timeout_s: float = 60.0) -> None:
        url = f"http://127.0.0.1:{self.health_port}/healthz"

        def healthy() -> bool:
            if self.proc.poll() is not None:
                raise RuntimeError(f"operator exited with {self.proc.returncode}:\n{self.output()}")
            try:
                with urllib.request.urlopen(url, timeout=1) as resp:
                    return bool(resp.status == 200)
            except OSError:
                return False

        wait_for(healthy, timeout_s, what="operator liveness endpoint")

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._fh.close()


@pytest.fixture
def operator(control_plane: ControlPlane, namespace: str,
             request: pytest.FixtureRequest) -> Iterator[OperatorProcess]:
    proc = OperatorProcess(control_plane, namespace)
    try:
        proc.wait_ready()
        yield proc
    finally:
        proc.stop()
        report = getattr(request.node, "rep_call", None)
        if report is not None and report.failed:
            sys.stderr.write(f"\n--- operator log ({namespace}) ---\n{proc.output()[-8000:]}\n")


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report


# --- helpers the tests share -------------------------------------------------------------------------

def load_example(name: str) -> dict[str, Any]:
    """An example TradingSession from manifests/."""
    with (PROJECT_ROOT / "manifests" / name).open() as fh:
        return dict(yaml.safe_load(fh))


@pytest.fixture
def paper_session(redis_server: RedisServer) -> dict[str, Any]:
    """manifests/tradingsession-paper.yaml pointed at the test Redis."""
    body = copy.deepcopy(load_example("tradingsession-paper.yaml"))
    body["spec"]["redis"]["url"] = redis_server.url
    return body


class Cluster:
    """kubectl-backed reads and writes in one namespace, returning parsed JSON."""

    def __init__(self, cp: ControlPlane, namespace: str) -> None:
        self.cp = cp
        self.ns = namespace

    def apply(self, body: dict[str, Any]) -> None:
        self.cp.kubectl("apply", "-n", self.ns, "-f", "-", input=json.dumps(body))

    def get(self, kind: str, name: str) -> dict[str, Any] | None:
        out = self.cp.kubectl("get", "-n", self.ns, kind, name, "-o", "json", check=False)
        if out.returncode != 0:
            if "NotFound" in out.stderr:
                return None
            raise subprocess.CalledProcessError(out.returncode, out.args, out.stdout, out.stderr)
        return dict(json.loads(out.stdout))

    def names(self, kind: str, selector: str | None = None) -> set[str]:
        args = ["get", "-n", self.ns, kind, "-o", "json"]
        if selector:
            args += ["-l", selector]
        items = json.loads(self.cp.kubectl(*args).stdout)["items"]
        return {i["metadata"]["name"] for i in items}

    def patch(self, kind: str, name: str, patch: dict[str, Any], *, subresource: str | None = None) -> None:
        args = ["patch", "-n", self.ns, kind, name, "--type=merge", "-p", json.dumps(patch)]
        if subresource:
            args.append(f"--subresource={subresource}")
        self.cp.kubectl(*args)

    def delete(self, kind: str, name: str, *, wait: bool = False) -> None:
        self.cp.kubectl("delete", "-n", self.ns, kind, name, f"--wait={str(wait).lower()}")


@pytest.fixture
def cluster(control_plane: ControlPlane, namespace: str) -> Cluster:
    return Cluster(control_plane, namespace)


def condition(body: dict[str, Any] | None, type_: str) -> dict[str, Any] | None:
    for cond in ((body or {}).get("status") or {}).get("conditions") or []:
        if cond.get("type") == type_:
            return dict(cond)
    return None


def env_of(deployment: dict[str, Any]) -> dict[str, Any]:
    """name -> value (or valueFrom) of the first container's env."""
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container.get("env", [])}

