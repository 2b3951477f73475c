"""One embedded alignd per ALIGND_HOME: an exclusive lock on a file in the home, held while the instance runs.

An embedded instance treats every 'running' job of its SQLite database as a dead process's and requeues it at
start, so a second `alignd up` (or an `alignd demo` starting its own instance) on a home another instance is
using would take over that instance's running jobs. The lock is released when the process ends, however it
ends (the kernel drops flock locks), so a kill -9 leaves nothing stale to clean up.
"""

from __future__ import annotations

import fcntl
import json
import os
from pathlib import Path

LOCK_FILE = "embedded.lock"


class HomeInUse(RuntimeError):
    """Another running process holds the embedded instance lock of this home."""

    def __init__(self, home: Path, holder: dict):
        self.home, self.holder = home, holder
        pid, url = holder.get("pid", "?"), holder.get("url")
        where = f" at {url}" if url else ""
        super().__init__(
            f"another alignd (pid {pid}{where}) is running under {home}; stop it or use another ALIGND_HOME"
            + (f" (alignd demo can use it: --url {url} --api-key <its key>)" if url else "")
        )


class HomeLock:
    """`acquire(url)` takes the lock or raises HomeInUse; `release()` gives it back."""

    def __init__(self, home: Path):
        self.path = Path(home) / LOCK_FILE
        self._descriptor: int | None = None

    def acquire(self, url: str) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(descriptor)
            os.close(descriptor)
            raise HomeInUse(self.path.parent, holder) from None
        os.ftruncate(descriptor, 0)
        os.pwrite(descriptor, json.dumps({"pid": os.getpid(), "url": url}).encode(), 0)
        self._descriptor = descriptor

    def release(self) -> None:
        if self._descriptor is not None:
            os.close(self._descriptor)  # closing the descriptor drops the lock
            self._descriptor = None


def _read_holder(descriptor: int) -> dict:
    try:
        return json.loads(os.pread(descriptor, 4096, 0) or b"{}")
    except ValueError:
        return {}
