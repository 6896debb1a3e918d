"""A real MLflow tracking server (``mlflow server``, SQLite backend) on a free 127.0.0.1 port.

The server gets its own temporary folder: ``mlflow.db`` (backend store) and ``artifacts/``
(default artifact root, written directly by clients on this machine). It is ready when ``/health``
answers 200; ``startup_s`` records how long that took.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from tests.harness.ports import free_port, wait_for_port


class MlflowServer:
    """Start/stop a private MLflow tracking server; ``uri`` is its http:// address."""

    def __init__(self, port: int | None = None, startup_timeout_s: float = 120.0) -> None:
        self.port = port or free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="dreambot-mlflow-"))
        self.startup_timeout_s = startup_timeout_s
        self.proc: subprocess.Popen[bytes] | None = None
        self.startup_s: float | None = None
        self.log_path = self.dir / "server.log"

    @property
    def uri(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def artifact_root(self) -> Path:
        return self.dir / "artifacts"

    def _executable(self) -> list[str]:
        exe = Path(sys.executable).with_name("mlflow")
        if exe.exists():
            return [str(exe)]
        found = shutil.which("mlflow")
        if found is None:
            raise RuntimeError("mlflow is not installed in this environment: pip install mlflow")
        return [found]

    def start(self) -> MlflowServer:
        self.artifact_root.mkdir(parents=True, exist_ok=True)
        cmd = [
            *self._executable(),
            "server",
            "--backend-store-uri",
            f"sqlite:///{self.dir / 'mlflow.db'}",
            "--default-artifact-root",
            str(self.artifact_root),
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--workers",
            "1",
        ]
        env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
        # Tracking only: no job runner (huey consumers) eating the test machine's cores.
        env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = "false"
        started = time.monotonic()
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=self.dir, start_new_session=True
            )
        try:
            wait_for_port(self.port, self.startup_timeout_s)
            self._wait_healthy(started + self.startup_timeout_s)
        except BaseException:
            tail = self.log_path.read_text(errors="replace")[-2000:] if self.log_path.exists() else ""
            self.stop()
            raise RuntimeError(f"mlflow server did not become healthy on {self.uri}:\n{tail}") from None
        self.startup_s = time.monotonic() - started
        return self

    def _wait_healthy(self, deadline: float) -> None:
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"mlflow server exited with code {self.proc.returncode}")
            try:
                with urllib.request.urlopen(f"{self.uri}/health", timeout=2) as resp:
                    if resp.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.1)
        raise TimeoutError(f"{self.uri}/health did not answer within the timeout")

    def stop(self) -> None:
        """Terminate the server's process group (``mlflow server`` runs the app server as a child)."""
        if self.proc is None:
            return
        group = self.proc.pid  # a session leader's pid is its process group id
        _signal_group(group, signal.SIGTERM)
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            _signal_group(group, signal.SIGKILL)
            self.proc.wait()
        deadline = time.monotonic() + 10
        while _group_alive(group) and time.monotonic() < deadline:
            time.sleep(0.1)
        if _group_alive(group):
            _signal_group(group, signal.SIGKILL)
        self.proc = None

    def close(self) -> None:
        """Stop and remove the folder (database and artifacts)."""
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> MlflowServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


def _signal_group(group: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(group, sig)


def _group_alive(group: int) -> bool:
    try:
        os.killpg(group, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
