"""Shared fixtures for the console's browser tests: headless Chromium (Debian ``chromium`` +
``chromium-driver``) driven by selenium, the console served by ``python -m services.dashboard.main`` as
a subprocess (:class:`Console`), and ``replayed_session``: a real embedded session (``dreambot run``
over the real SPY recording of 2025-07-09) with its outputs (summary.json, trades.json, the parquet
journal) in a temporary folder, next to the real redis-server of ``tests/integration/conftest.py``.

Helpers (:func:`sign_in`, :func:`wait_text`, :func:`figure_data`, :func:`screenshot`) are plain functions
the test modules import from here.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from services.core.settings import PROJECT_ROOT
from services.dashboard.auth import hash_password
from tests.harness.ports import free_port, wait_for_port
from tests.harness.redis_server import RedisServer

webdriver = pytest.importorskip("selenium.webdriver")
from selenium.common.exceptions import WebDriverException  # noqa: E402
from selenium.webdriver.chrome.options import Options  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
WAIT_S = 25.0
OPERATOR_PASSWORD = "operator-password-1"
VIEWER_PASSWORD = "viewer-password-1"
ADMIN_PASSWORD = "admin-password-from-a-secret"
SESSION_KEY = "session-key-from-a-secret-0123456789abcdef"
USERS = (f"alice:operator:{hash_password(OPERATOR_PASSWORD, log2_n=12)}\n"
         f"bob:viewer:{hash_password(VIEWER_PASSWORD, log2_n=12)}")
ACCESS_ENV = {"DREAMBOT_CONSOLE_USERS": USERS, "DREAMBOT_CONSOLE_ADMIN_PASSWORD": ADMIN_PASSWORD,
              "DREAMBOT_CONSOLE_SESSION_KEY": SESSION_KEY}
SCREENSHOTS = PROJECT_ROOT / "storage" / "screenshots"
# The real recording the replayed session trades (a regular NYSE day, 04:00-19:59 New York).
SESSION_DATA = PROJECT_ROOT / "data" / "sample" / "spy_1min_2025-07-09.csv"
SESSION_DAY = "2025-07-09"


class Console:
    """``python -m services.dashboard.main [args]`` on a free port; its output goes to a log file."""

    def __init__(self, env: Mapping[str, str], args: Sequence[str] = (), refresh_s: float = 1.0) -> None:
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="dreambot-console-"))
        self.log_path = self.dir / "console.log"
        full = {k: v for k, v in os.environ.items() if not k.startswith("DREAMBOT_")}
        full.update(ACCESS_ENV)
        full.update(env)
        full.update({"DREAMBOT_DASHBOARD_PORT": str(self.port), "DREAMBOT_DASHBOARD_HOST": "127.0.0.1",
                     "DREAMBOT_DASHBOARD_REFRESH_S": f"{refresh_s:g}"})
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen([sys.executable, "-m", "services.dashboard.main", *args],
                                         cwd=PROJECT_ROOT, env=full, stdout=log, stderr=subprocess.STDOUT)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def wait(self) -> Console:
        try:
            wait_for_port(self.port, 30)
        except TimeoutError:
            raise RuntimeError(f"console did not listen:\n{self.log()}") from None
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-3000:]

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Headless Chromium (skips without Debian's chromium and chromium-driver)."""
    if not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)):
        pytest.skip("needs Debian chromium and chromium-driver")
    profile = tempfile.mkdtemp(prefix="dreambot-chromium-")
    options = Options()
    options.binary_location = CHROMIUM
    for arg in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--disable-dev-shm-usage", f"--user-data-dir={profile}", "--window-size=1400,2200"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture
def console_launcher() -> Iterator[Callable[..., Console]]:
    """Start consoles (``launch(env, args)``, already listening); each is stopped after the test."""
    started: list[Console] = []

    def launch(env: Mapping[str, str], args: Sequence[str] = (), refresh_s: float = 1.0) -> Console:
        console = Console(env, args, refresh_s)
        started.append(console)
        return console.wait()

    yield launch
    for console in started:
        console.close()


@dataclass(frozen=True, slots=True)
class ReplayedSession:
    """A finished embedded session: its output folder, journal and trades, and the Redis next to it."""

    output_dir: Path
    journal: Path
    data: Path
    day: str
    redis: RedisServer
    stdout: str

    @property
    def trades_file(self) -> Path:
        return self.output_dir / "trades.json"

    def trades(self) -> list[dict[str, Any]]:
        """trades.json as written by the run (parsed here, independently of the console)."""
        return list(json.loads(self.trades_file.read_text()))


@pytest.fixture(scope="session")
def replayed_session(redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory) -> ReplayedSession:
    """``dreambot run`` over the real SPY day (every minute bar, several trades) into a temporary
    folder: summary.json, trades.json and the journal under ``<output>/parquet``."""
    out = tmp_path_factory.mktemp("replayed-session")
    journal = out / "parquet"
    env = {k: v for k, v in os.environ.items() if not k.startswith("DREAMBOT_")}
    cmd = [sys.executable, "-m", "services.cli", "run", "--data", str(SESSION_DATA), "--output-dir", str(out),
           "--journal", str(journal)]
    done = subprocess.run(cmd, cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"dreambot run failed:\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"
    session = ReplayedSession(out, journal, SESSION_DATA, SESSION_DAY, redis_server, done.stdout)
    assert len(session.trades()) > 0, f"the replayed session made no trades:\n{done.stdout[-2000:]}"
    assert (journal / "features").is_dir(), f"no journal under {journal}:\n{done.stdout[-2000:]}"
    return session


# --- helpers -----------------------------------------------------------------------------------------


def text_of(driver: Any, element_id: str) -> str:
    """The element's visible text ('' when it is not on the page)."""
    try:
        return str(driver.find_element(By.ID, element_id).text)
    except WebDriverException:
        return ""


def wait_text(driver: Any, element_id: str, *needles: str, console: Console | None = None) -> str:
    """Wait until the element's visible text contains every needle; return that text."""
    try:
        WebDriverWait(driver, WAIT_S, poll_frequency=0.2).until(
            lambda d: all(n in text_of(d, element_id) for n in needles))
    except Exception:
        raise AssertionError(f"#{element_id} never showed {needles}; it shows {text_of(driver, element_id)!r}"
                             + (f"\nconsole log:\n{console.log()}" if console else "")) from None
    return text_of(driver, element_id)


def sign_in(driver: Any, console: Console, user: str, password: str, path: str = "") -> None:
    """Open the console (at ``path``) signed out, sign in on the form, wait for the page."""
    driver.delete_all_cookies()
    driver.get(console.url + path.lstrip("/"))
    WebDriverWait(driver, WAIT_S).until(lambda d: "/login" in d.current_url)
    driver.find_element(By.ID, "login-user").send_keys(user)
    driver.find_element(By.ID, "login-password").send_keys(password)
    driver.find_element(By.ID, "login-submit").click()
    wait_text(driver, "who", f"signed in as {user}", console=console)


def until(check: Callable[[], bool], what: str, timeout_s: float = WAIT_S) -> None:
    """Poll ``check`` until true, else fail naming ``what``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


# Plotly keeps the drawn figure on the graph's div: its traces (with typed arrays turned into lists).
_FIGURE_JS = """
const el = document.querySelector('#' + arguments[0] + ' .js-plotly-plot');
if (!el || !el.data) { return null; }
const plain = v => (ArrayBuffer.isView(v) ? Array.from(v) : v);
return el.data.map(t => {
  const out = {};
  for (const k of Object.keys(t)) {
    const v = t[k];
    if (Array.isArray(v) || ArrayBuffer.isView(v)) { out[k] = Array.from(v, plain); }
    else if (typeof v !== 'object' || v === null) { out[k] = v; }
  }
  return out;
});
"""


def figure_data(driver: Any, graph_id: str) -> list[dict[str, Any]] | None:
    """The traces plotly has drawn in the dcc.Graph ``graph_id`` (None before the first draw)."""
    data = driver.execute_script(_FIGURE_JS, graph_id)
    return None if data is None else list(data)


def screenshot(driver: Any, page: str) -> Path:
    """Write ``storage/screenshots/<page>.png`` (git-ignored) and check it is a real PNG."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{page}.png"
    assert driver.save_screenshot(str(path)), path
    data = path.read_bytes()
    assert len(data) > 10_000 and data.startswith(b"\x89PNG\r\n\x1a\n"), path
    return path
