"""``alignd-demo:<name>`` data paths: the demo task's files, generated on first use.

A spec may name ``alignd-demo:sft``, ``alignd-demo:preference``, ``alignd-demo:openai_dpo``,
``alignd-demo:prompts`` or ``alignd-demo:eval``; they resolve to files under
``$ALIGND_HOME/demo-data`` (default ``~/.alignd``), written once by ``demo.task.write_demo_data``.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from alignment_core.demo.task import DEMO_FILES, write_demo_data

DEMO_SCHEME = "alignd-demo:"


class UnknownDemoFile(ValueError):
    """An ``alignd-demo:`` path naming a file the demo does not have."""


def demo_data_dir() -> Path:
    home = Path(os.environ.get("ALIGND_HOME", Path.home() / ".alignd")).expanduser()
    return home / "demo-data"


def ensure_demo_data() -> Path:
    """Write the demo files once (into a staging folder renamed at the end, so none is half-written)."""
    directory = demo_data_dir()
    if all((directory / name).exists() for name in DEMO_FILES.values()):
        return directory
    staging = directory.with_name(f".{directory.name}.{os.getpid()}")
    write_demo_data(staging, seed=0)
    directory.parent.mkdir(parents=True, exist_ok=True)
    try:
        staging.rename(directory)
    except OSError:  # another process finished first; its files are identical
        shutil.rmtree(staging, ignore_errors=True)
    return directory


def resolve_data_path(path: str) -> str:
    """Map ``alignd-demo:<name>`` to its generated file; other paths are returned unchanged."""
    if not path.startswith(DEMO_SCHEME):
        return path
    name = path[len(DEMO_SCHEME):]
    if name not in DEMO_FILES:
        raise UnknownDemoFile(f"unknown demo data {path!r}; expected one of "
                              f"{[DEMO_SCHEME + key for key in DEMO_FILES]}")
    return str(ensure_demo_data() / DEMO_FILES[name])
