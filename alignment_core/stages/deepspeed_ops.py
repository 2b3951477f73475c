"""Refuse to start DeepSpeed behind a torch-extensions build lock that a killed build left behind.

DeepSpeed compiles its CPU communication op (deepspeed_shm_comm) with torch's extension builder when it
initialises. The builder takes `<build folder>/lock` with O_CREAT | O_EXCL, holds the file open while it
compiles, then closes and deletes it; every other process polls until the file is gone. A build that was
killed never deletes it, and every later DeepSpeed job on the machine waits forever (docs/development.md).

How a live build is told from a stale lock: the builder holds the lock open, so a process on this machine
that has it among its open files (/proc/<pid>/fd) is a live build, and we wait for it however long it takes
(a build is never interrupted). With no holder we also need the folder to have stopped changing for
STALE_AFTER_S: a build in another container or on another host sharing the folder is invisible in /proc but
still writes its object files. A lock that passes both is reported with the fix, not removed: a killed
compiler can leave truncated objects beside it that the next build would link, and a holder we cannot see is
not proven absent, so deleting the folder stays the operator's call.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

logger = logging.getLogger(__name__)

# A build writes an object file per source and then links; on 2 loaded cores the shm op's whole build took
# about 70 s, so three minutes without a write and without a holder is no build.
STALE_AFTER_S = 180.0
POLL_S = 1.0


class StaleOpBuildLock(RuntimeError):
    """A torch-extensions build lock that no process holds and that has not changed for STALE_AFTER_S."""

    def __init__(self, lock: Path, idle_s: float):
        folder = lock.parent
        super().__init__(
            f"DeepSpeed cannot build its '{folder.name}' op: {lock} was left by a build that was killed (no "
            f"process holds it, nothing in {folder} changed for {idle_s:.0f} s), and DeepSpeed would wait for it "
            f"forever. No build is running, so remove the folder: rm -rf {folder} "
            "(the next DeepSpeed job rebuilds it, about a minute on 2 cores)"
        )
        self.lock = lock


def check_deepspeed_op_builds(stale_after_s: float = STALE_AFTER_S) -> None:
    """Before DeepSpeed initialises: wait for a live build of an op it will compile, or raise StaleOpBuildLock."""
    for folder in _ops_deepspeed_will_build():
        wait_for_op_build(folder, stale_after_s)


def wait_for_op_build(folder: Path, stale_after_s: float = STALE_AFTER_S, poll_s: float = POLL_S) -> None:
    """Return once `folder` has no build lock; raise StaleOpBuildLock if its lock is left from a dead build."""
    lock = folder / "lock"
    announced = False
    while True:
        try:
            lock_stat = lock.stat()
        except FileNotFoundError:
            return
        holders = processes_holding(lock_stat)
        if holders:
            if not announced:
                logger.info("waiting for process %s, which is building %s", holders[0], folder)
                announced = True
        else:
            idle_s = time.time() - _newest_change(folder)
            if idle_s >= stale_after_s and _same_file(lock, lock_stat):
                raise StaleOpBuildLock(lock, idle_s)
        time.sleep(poll_s)


def processes_holding(target: os.stat_result) -> list[int]:
    """Ids of the processes here with `target` open (empty without /proc, e.g. macOS: no holder is seen)."""
    proc = Path("/proc")
    holders = []
    for entry in proc.iterdir() if proc.is_dir() else ():
        if not entry.name.isdigit():
            continue
        try:
            descriptors = list((entry / "fd").iterdir())
        except OSError:  # gone, or another user's: not a builder of our cache folder
            continue
        for descriptor in descriptors:
            try:
                opened = descriptor.stat()
            except OSError:
                continue
            if (opened.st_dev, opened.st_ino) == (target.st_dev, target.st_ino):
                holders.append(int(entry.name))
                break
    return holders


def _newest_change(folder: Path) -> float:
    """The latest modification time of the folder or anything in it."""
    newest = folder.stat().st_mtime
    for path in folder.rglob("*"):
        try:
            newest = max(newest, path.stat().st_mtime)
        except OSError:  # removed while we looked: that is progress too
            return time.time()
    return newest


def _same_file(path: Path, seen: os.stat_result) -> bool:
    """Whether `path` is still the file first seen (not released and taken again by a new build meanwhile)."""
    try:
        now = path.stat()
    except FileNotFoundError:
        return False
    return (now.st_dev, now.st_ino) == (seen.st_dev, seen.st_ino)


def _ops_deepspeed_will_build() -> list[Path]:
    """Build folders of the ops DeepSpeed compiles on initialisation here: the shared-memory communication op,
    decided as deepspeed.comm.torch.build_shm_op decides (our configs use the trainer's torch optimizer, so no
    fused_adam / cpu_adam is compiled)."""
    import deepspeed.ops
    from deepspeed.accelerator import get_accelerator
    from deepspeed.git_version_info import installed_ops

    builder = get_accelerator().create_op_builder("ShareMemCommBuilder")
    if builder is None or not deepspeed.ops.__compatible_ops__.get(builder.NAME, False):
        return []
    if installed_ops.get(builder.NAME, False):
        return []  # compiled into the wheel: nothing is built at run time
    return [_build_folder(builder.NAME)]


def _build_folder(name: str) -> Path:
    """Where torch's extension builder compiles `name` (TORCH_EXTENSIONS_DIR, else the per-user cache)."""
    from torch.utils.cpp_extension import _get_build_directory

    return Path(_get_build_directory(name, verbose=False))
