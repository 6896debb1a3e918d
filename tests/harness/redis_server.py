"""A real redis-server (Debian package) on a free 127.0.0.1 port with its own data dir.

The server is :class:`services.localstack.RedisServer` (what ``dreambot services up`` runs) in a
temporary folder, without persistence; :meth:`close` removes the folder.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from services.localstack import RedisServer as LocalRedis


class RedisServer(LocalRedis):
    """Start/stop a private redis-server; ``url`` is its redis:// address."""

    def __init__(self, port: int | None = None) -> None:
        super().__init__(Path(tempfile.mkdtemp(prefix="dreambot-redis-")), port=port, persist=False)

    def start(self, timeout_s: float = 15.0) -> RedisServer:
        super().start(timeout_s)
        return self

    def close(self) -> None:
        """Stop and remove the data dir."""
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()
