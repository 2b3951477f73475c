"""``alignd-demo:<name>`` data paths: the demo task's files, generated on first use.

A spec may name ``alignd-demo:sft``, ``alignd-demo:preference``, ``alignd-demo:openai_dpo``,
``alignd-demo:prompts`` or ``alignd-demo:eval``; they resolve to files under
``$ALIGND_HOME/demo-data`` (default ``~/.alignd``), written by ``demo.task.write_demo_data`` and rewritten
when the generator changes (the folder's VERSION file holds a hash of its source).
"""

from __future__ import annotations

import hashlib
import os
import shutil
from functools import lru_cache
from pathlib import Path

from alignment_core.demo import task
from alignment_core.demo.task import DEMO_FILES, write_demo_data

DEMO_SCHEME = "alignd-demo:"
VERSION_FILE = "VERSION"


class UnknownDemoFile(ValueError):
    """An ``alignd-demo:`` path naming a file the demo does not have."""


def demo_data_dir() -> Path:
    home = Path(os.environ.get("ALIGND_HOME", Path.home() / ".alignd")).expanduser()
    return home / "demo-data"


@lru_cache(maxsize=1)
def demo_data_version() -> str:
    """A hash of the generator's source, so any change to it (new rejected answers, say) rebuilds the files."""
    # Hashing the source rather than a hand-bumped constant: nobody has to remember to bump it.
    return hashlib.sha256(Path(task.__file__).read_bytes()).hexdigest()[:16]


def is_current(directory: Path) -> bool:
    """True when `directory` holds every demo file, written by this version of the generator."""
    marker = directory / VERSION_FILE
    if not marker.is_file() or marker.read_text().strip() != demo_data_version():
        return False
    return all((directory / name).exists() for name in DEMO_FILES.values())


def ensure_demo_data() -> Path:
    """Write the demo files if missing or stale (into a staging folder renamed at the end, so none is
    half-written)."""
    directory = demo_data_dir()
    if is_current(directory):
        return directory
    staging = directory.with_name(f".{directory.name}.{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)  # left by a crashed process of the same id
    write_demo_data(staging, seed=0)
    (staging / VERSION_FILE).write_text(demo_data_version() + "\n")
    directory.parent.mkdir(parents=True, exist_ok=True)
    stale = directory.with_name(f".{directory.name}.stale.{os.getpid()}")
    try:
        if directory.exists():
            directory.rename(stale)  # a stale folder: out of the way first, rename() won't replace it
    except OSError:  # another process moved it first
        pass
    try:
        staging.rename(directory)
    except OSError:  # another process put its files in place first; they are identical
        shutil.rmtree(staging, ignore_errors=True)
    shutil.rmtree(stale, ignore_errors=True)
    return directory


def resolve_data_path(path: str) -> str:
    """Map ``alignd-demo:<name>`` to its generated file; other paths are returned unchanged."""
    if not path.startswith(DEMO_SCHEME):
        return path
    name = path[len(DEMO_SCHEME) :]
    if name not in DEMO_FILES:
        raise UnknownDemoFile(
            f"unknown demo data {path!r}; expected one of {[DEMO_SCHEME + key for key in DEMO_FILES]}"
        )
    return str(ensure_demo_data() / DEMO_FILES[name])
