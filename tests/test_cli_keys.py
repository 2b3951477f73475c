"""`alignd keys` as a user types it: create prints the key last, list shows a header row and a prefix ending in
'…', and revoke takes that prefix as listed (with the '…' copied along) or the key id."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def keys(*args: str, home: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "ALIGND_HOME": str(home)}
    env.pop("ALIGND_DATABASE_URL", None)
    return subprocess.run([sys.executable, "-m", "services.cli.main", "keys", *args], capture_output=True,
                          text=True, cwd=ROOT, env=env, timeout=120)


def test_revoke_takes_the_prefix_as_listed(tmp_path: Path) -> None:
    created = keys("create", "--project", "team-a", home=tmp_path)
    assert created.returncode == 0, created.stderr
    key = created.stdout.strip().splitlines()[-1]
    listed = keys("list", "--project", "team-a", home=tmp_path)
    header, row = listed.stdout.splitlines()
    assert header.split() == ["ID", "PREFIX", "PROJECT", "CREATED", "REVOKED", "NAME"]
    key_id, shown, _, _, revoked_at, _ = row.split()
    assert revoked_at == "-" and row.index(shown) == header.index("PREFIX")  # columns under their names
    assert shown.endswith("…") and key.startswith(shown.removesuffix("…"))
    revoked = keys("revoke", shown, home=tmp_path)
    assert revoked.returncode == 0 and f"revoked {key_id}" in revoked.stdout, revoked.stderr
    assert keys("list", home=tmp_path).stdout.splitlines()[1].split()[4] != "-"
    nothing = keys("list", "--project", "team-b", home=tmp_path)
    assert nothing.stdout == "" and "error: no project 'team-b'" in nothing.stderr
    missing = keys("revoke", "ak-nothing…", home=tmp_path)
    assert missing.returncode == 1 and "error: no API key 'ak-nothing'" in missing.stderr
