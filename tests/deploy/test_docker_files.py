"""The Dockerfile against the repository (no Docker engine here, so no build): it copies every package
pyproject ships, its ignore file lets them through, and the commands the image and chart run exist."""

from __future__ import annotations

import fnmatch
import re
from pathlib import Path

from typer.main import get_command

from services.cli.main import app

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = (REPO / "docker" / "Dockerfile").read_text()
IGNORE = (REPO / "docker" / "Dockerfile.dockerignore").read_text()


def _copied_sources() -> set[str]:
    """Sources of COPY lines from the build context (not from another stage)."""
    return {src.rstrip("/") for line in DOCKERFILE.splitlines()
            if line.startswith("COPY ") and "--from" not in line for src in line.split()[1:-1]}


def _ignored(path: str) -> bool:
    """Docker's rule: the last matching pattern wins; '!' re-includes."""
    ignored = False
    for raw in IGNORE.splitlines():
        pattern = raw.strip()
        if not pattern or pattern.startswith("#"):
            continue
        negate = pattern.startswith("!")
        pattern = pattern.lstrip("!").rstrip("/")
        if fnmatch.fnmatch(path, pattern) or fnmatch.fnmatch(path.split("/")[0], pattern):
            ignored = not negate
    return ignored


def test_every_shipped_package_is_copied_and_not_ignored() -> None:
    # [tool.setuptools.packages.find] include = ["alignment_core*", ...] (tomllib is 3.11+; we support 3.10)
    include = re.search(r"\[tool\.setuptools\.packages\.find\]\s*include\s*=\s*\[([^\]]*)\]",
                        (REPO / "pyproject.toml").read_text())
    assert include is not None
    packages = {p.strip().strip('"').rstrip("*") for p in include.group(1).split(",") if p.strip()}
    assert packages
    copied = _copied_sources()
    for needed in packages | {"pyproject.toml", "README.md"}:
        assert needed in copied, f"docker/Dockerfile does not COPY {needed}"
        assert (REPO / needed).exists()
        assert not _ignored(needed), f"docker/Dockerfile.dockerignore excludes {needed}"
    assert _ignored(".venv") and _ignored(".git") and _ignored("tests")


def test_torch_is_installed_before_the_package_from_a_chosen_index() -> None:
    torch_at = DOCKERFILE.index('pip install "torch==${TORCH_VERSION}"')
    package_at = DOCKERFILE.index('pip install "/src[s3]"')
    assert torch_at < package_at
    assert "download.pytorch.org/whl/${TORCH_INDEX}" in DOCKERFILE


def test_image_runs_as_a_non_root_user_with_the_cli_as_entrypoint() -> None:
    assert re.search(r"^USER 10001", DOCKERFILE, re.MULTILINE)
    assert 'ENTRYPOINT ["tini", "--", "alignd"]' in DOCKERFILE


def test_commands_used_by_the_image_and_chart_exist() -> None:
    commands = get_command(app).commands
    for name in ("serve", "worker", "migrate"):
        assert name in commands, f"`alignd {name}` is used by docker/ and deploy/helm/ but not registered"
    serve_options = {opt for param in commands["serve"].params for opt in param.opts}
    assert {"--host", "--port", "--workers"} <= serve_options
