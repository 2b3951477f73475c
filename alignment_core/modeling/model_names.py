"""How a model name reads: written as a path (so it must exist here) or a Hugging Face hub id ('org/name').

One rule for every entry point, the API's create-time checks and the CLI's spec checks alike, so a name one
calls a missing folder the other does not send to the hub.
"""

from __future__ import annotations

# Names written as paths, never hub ids: absolute, home, and relative in POSIX and Windows spelling.
PATH_PREFIXES = ("/", "~", "./", "../", ".\\", "..\\")


def written_as_path(name: str) -> bool:
    """Whether `name` can only be a path: it starts like one, or has more '/' than a hub id's one."""
    return name.startswith(PATH_PREFIXES) or name.count("/") > 1
