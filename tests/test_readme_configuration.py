"""Every ALIGND_* setting the services read is in the README's configuration table."""

from __future__ import annotations

import re
from pathlib import Path

from services.settings import Settings

ROOT = Path(__file__).resolve().parents[1]


def test_every_setting_is_documented() -> None:
    readme = (ROOT / "README.md").read_text()
    table = readme[readme.index("## Configuration"):]
    documented = set(re.findall(r"^\| `(ALIGND_[A-Z_]+)`", table, flags=re.M))
    expected = {f"ALIGND_{name.upper()}" for name in Settings.model_fields}
    assert expected <= documented, f"missing from README: {sorted(expected - documented)}"
