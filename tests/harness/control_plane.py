"""A real Kubernetes control plane for tests (the envtest model): etcd, kube-apiserver and
kube-controller-manager built by scripts/build-k8s.sh, on free 127.0.0.1 ports with temp dirs.

No kubelet and no scheduler: Pods never run. The controller manager runs only the garbage
collector, the namespace controller and the service-account controller, so owner-reference
cascades and namespace deletion work while Deployment and CronJob status stay as the test sets them.
"""

from __future__ import annotations

import os
import secrets
import shutil
import ssl
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from tests.harness.ports import free_port, wait_for_port

PROJECT_ROOT = Path(__file__).resolve().parents[2]
BUILD_SCRIPT = PROJECT_ROOT / "scripts" / "build-k8s.sh"
BINARIES = ("etcd", "kube-apiserver", "kube-controller-manager", "kubectl", "helm")
CONTROLLERS = "garbage-collector-controller,namespace-controller,serviceaccount-controller"


def bin_dir() -> Path:
    """Where scripts/build-k8s.sh puts the binaries (``DREAMBOT_K8S_BIN`` overrides)."""
    override = os.environ.get("DREAMBOT_K8S_BIN")
    if override:
        return Path(override)
    out = subprocess.run(["bash", str(BUILD_SCRIPT), "--print-bin"], check=True,
                         capture_output=True, text=True)
    return Path(out.stdout.strip())


def missing_binaries(directory: Path) -> list[str]:
    return [b for b in BINARIES if not os.access(directory / b, os.X_OK)]


def build_binaries() -> Path:
    """Run scripts/build-k8s.sh (a no-op when everything is built) and return the bin dir."""
    out = subprocess.run(["bash", str(BUILD_SCRIPT)], check=True, stdout=subprocess.PIPE, text=True)
    return Path(out.stdout.strip().splitlines()[-1])


class ControlPlaneError(RuntimeError):
    """A control-plane process failed to start; the message holds the tail of its log."""


class _Process:
    def __init__(self, name: str, argv: list[str], log: Path) -> None:
        self.name = name
        self.log = log
        self._fh = log.open("wb")
        self.proc = subprocess.Popen(argv, stdout=self._fh, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL)

    def check_alive(self) -> None:
        if self.proc.poll() is not None:
            raise ControlPlaneError(f"{self.name} exited with {self.proc.returncode}:\n{self.tail()}")

    def tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self, timeout_s: float = 15.0) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._fh.close()


class ControlPlane:
    """etcd + kube-apiserver (+ kube-controller-manager) with an admin kubeconfig.

    >>> with ControlPlane(bin_dir()) as cp:
    ...     cp.kubectl("get", "namespaces")
    """

    def __init__(self, binaries: Path, *, controller_manager: bool = True) -> None:
        self.bin = Path(binaries)
        missing = missing_binaries(self.bin)
        if missing:
            raise ControlPlaneError(f"missing {', '.join(missing)} in {self.bin}: run scripts/build-k8s.sh")
        self.with_controller_manager = controller_manager
        self.dir = Path(tempfile.mkdtemp(prefix="dreambot-k8s-"))
        self.token = secrets.token_hex(16)
        self.etcd_port = free_port()
        self.api_port = free_port()
        self.kubeconfig = self.dir / "kubeconfig"
        self._procs: list[_Process] = []

    @property
    def server(self) -> str:
        return f"https://127.0.0.1:{self.api_port}"

    @property
    def ca_file(self) -> Path:
        return self.dir / "certs" / "apiserver.crt"

    # -- lifecycle ---------------------------------------------------------------------------------
    def start(self) -> ControlPlane:
        try:
            self._start_etcd()
            self._start_apiserver()
            self._write_kubeconfig()
            if self.with_controller_manager:
                self._start_controller_manager()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        for proc in reversed(self._procs):
            proc.stop()
        self._procs.clear()

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> ControlPlane:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def logs(self) -> str:
        """The tail of every process log, for a failing test's report."""
        return "\n".join(f"--- {p.name} ---\n{p.tail()}" for p in self._procs)

    # -- processes ---------------------------------------------------------------------------------
    def _spawn(self, name: str, argv: list[str]) -> _Process:
        proc = _Process(name, argv, self.dir / f"{name}.log")
        self._procs.append(proc)
        return proc

    def _start_etcd(self) -> None:
        data = self.dir / "etcd"
        data.mkdir()
        url = f"http://127.0.0.1:{self.etcd_port}"
        proc = self._spawn("etcd", [
            str(self.bin / "etcd"),
            "--data-dir", str(data),
            "--listen-client-urls", url,
            "--advertise-client-urls", url,
            "--listen-peer-urls", f"http://127.0.0.1:{free_port()}",
            "--unsafe-no-fsync",
            "--log-level", "warn",
        ])
        self._wait(proc, lambda: _http_ok(f"{url}/health"), 30, "etcd /health")

    def _start_apiserver(self) -> None:
        certs = self.dir / "certs"
        certs.mkdir()
        sa_key, sa_pub = self.dir / "sa.key", self.dir / "sa.pub"
        subprocess.run(["openssl", "genrsa", "-out", str(sa_key), "2048"], check=True, capture_output=True)
        subprocess.run(["openssl", "rsa", "-in", str(sa_key), "-pubout", "-out", str(sa_pub)],
                       check=True, capture_output=True)
        tokens = self.dir / "tokens.csv"
        tokens.write_text(f'{self.token},admin,admin-uid,"system:masters"\n')
        proc = self._spawn("kube-apiserver", [
            str(self.bin / "kube-apiserver"),
            f"--etcd-servers=http://127.0.0.1:{self.etcd_port}",
            f"--cert-dir={certs}",
            f"--secure-port={self.api_port}",
            "--bind-address=127.0.0.1",
            "--advertise-address=127.0.0.1",
            "--endpoint-reconciler-type=none",
            "--service-cluster-ip-range=10.96.0.0/24",
            "--authorization-mode=RBAC",
            f"--token-auth-file={tokens}",
            f"--service-account-key-file={sa_pub}",
            f"--service-account-signing-key-file={sa_key}",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            "--allow-privileged=true",
            "--v=1",
        ])
        self._wait(proc, lambda: _port_open(self.api_port), 60, "kube-apiserver port")
        self._wait(proc, lambda: self._api_ok("/readyz"), 90, "kube-apiserver /readyz")

    def _start_controller_manager(self) -> None:
        proc = self._spawn("kube-controller-manager", [
            str(self.bin / "kube-controller-manager"),
            f"--kubeconfig={self.kubeconfig}",
            f"--authentication-kubeconfig={self.kubeconfig}",
            f"--authorization-kubeconfig={self.kubeconfig}",
            f"--controllers={CONTROLLERS}",
            "--leader-elect=false",
            "--bind-address=127.0.0.1",
            f"--secure-port={free_port()}",
            f"--service-account-private-key-file={self.dir / 'sa.key'}",
            "--concurrent-gc-syncs=5",
            "--v=1",
        ])
        # The garbage collector builds its graph from discovery before it acts; give it a moment and
        # make sure the process did not exit on a bad flag.
        time.sleep(1.0)
        proc.check_alive()

    def _wait(self, proc: _Process, ok: object, timeout_s: float, what: str) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            proc.check_alive()
            try:
                if callable(ok) and ok():
                    return
            except (OSError, TimeoutError):
                pass
            time.sleep(0.2)
        raise ControlPlaneError(f"timed out waiting for {what} after {timeout_s}s:\n{proc.tail()}")

    def _api_ok(self, path: str) -> bool:
        ctx = ssl.create_default_context(cafile=str(self.ca_file))
        req = urllib.request.Request(self.server + path, headers={"Authorization": f"Bearer {self.token}"})
        try:
            with urllib.request.urlopen(req, context=ctx, timeout=2) as resp:
                return bool(resp.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def _write_kubeconfig(self) -> None:
        self.kubeconfig.write_text(
            "apiVersion: v1\n"
            "kind: Config\n"
            "clusters:\n"
            "- name: dreambot-test\n"
            "  cluster:\n"
            f"    server: {self.server}\n"
            f"    certificate-authority: {self.ca_file}\n"
            "users:\n"
            "- name: admin\n"
            "  user:\n"
            f"    token: {self.token}\n"
            "contexts:\n"
            "- name: dreambot-test\n"
            "  context:\n"
            "    cluster: dreambot-test\n"
            "    user: admin\n"
            "current-context: dreambot-test\n"
        )

    # -- clients -----------------------------------------------------------------------------------
    def env(self) -> dict[str, str]:
        """os.environ with KUBECONFIG pointing at this control plane."""
        return {**os.environ, "KUBECONFIG": str(self.kubeconfig)}

    def kubectl(self, *args: str, input: str | None = None, check: bool = True,
                timeout_s: float = 60) -> subprocess.CompletedProcess[str]:
        """Run the built kubectl against this control plane."""
        return self._run(self.bin / "kubectl", args, input, check, timeout_s)

    def helm(self, *args: str, check: bool = True,
             timeout_s: float = 120) -> subprocess.CompletedProcess[str]:
        """Run the built helm against this control plane (its caches under the temp dir)."""
        return self._run(self.bin / "helm", args, None, check, timeout_s)

    def _run(self, exe: Path, args: tuple[str, ...], input: str | None, check: bool,
             timeout_s: float) -> subprocess.CompletedProcess[str]:
        env = self.env()
        home = self.dir / "home"
        env.update({"HELM_CACHE_HOME": str(home / "cache"), "HELM_CONFIG_HOME": str(home / "config"),
                    "HELM_DATA_HOME": str(home / "data")})
        out = subprocess.run([str(exe), *args], input=input, capture_output=True, text=True,
                             env=env, timeout=timeout_s)
        if check and out.returncode != 0:
            raise subprocess.CalledProcessError(out.returncode, out.args, out.stdout, out.stderr)
        return out


def _port_open(port: int) -> bool:
    try:
        wait_for_port(port, 0.2)
    except TimeoutError:
        return False
    return True


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return bool(resp.status == 200)
    except (urllib.error.URLError, OSError):
        return False
