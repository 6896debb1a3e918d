"""A real S3-protocol server: moto's standalone server (``moto_server``, Apache-2.0) on a free 127.0.0.1 port.

It speaks the S3 REST protocol over HTTP, so boto3 talks to it exactly as to the flat-file endpoint
(``endpoint_url``); it keeps objects in memory and accepts any access key pair.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from tests.harness.ports import free_port, wait_for_port


class MotoServer:
    """Start/stop ``moto_server -H 127.0.0.1 -p PORT``; ``endpoint`` is its http:// address."""

    def __init__(self, startup_timeout_s: float = 60.0) -> None:
        self.port = free_port()
        self.startup_timeout_s = startup_timeout_s
        self.proc: subprocess.Popen[bytes] | None = None
        self.dir = Path(tempfile.mkdtemp(prefix="dreambot-moto-"))
        self.log_path = self.dir / "server.log"

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _executable(self) -> str:
        exe = Path(sys.executable).with_name("moto_server")
        if exe.exists():
            return str(exe)
        found = shutil.which("moto_server")
        if found is None:
            raise RuntimeError("moto_server is not installed: pip install 'moto[server]'")
        return found

    def start(self) -> MotoServer:
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                [self._executable(), "-H", "127.0.0.1", "-p", str(self.port)], stdout=log, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + self.startup_timeout_s
        try:
            wait_for_port(self.port, self.startup_timeout_s)
            while True:  # the port opens before the app answers
                try:
                    with urllib.request.urlopen(f"{self.endpoint}/moto-api/", timeout=2):
                        break
                except (urllib.error.URLError, OSError):
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.1)
        except BaseException:
            tail = self.log_path.read_text(errors="replace")[-2000:]
            self.close()
            raise RuntimeError(f"moto_server did not start on {self.endpoint}:\n{tail}") from None
        return self

    def close(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.proc = None
        shutil.rmtree(self.dir, ignore_errors=True)
