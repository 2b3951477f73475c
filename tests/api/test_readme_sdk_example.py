"""The README's openai SDK example, run as written against the real server: a user's first call must work."""

from __future__ import annotations

import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def readme_python_example() -> str:
    blocks = re.findall(r"```python\n(.+?)\n```", (ROOT / "README.md").read_text(), flags=re.S)
    examples = [block for block in blocks if "fine_tuning.jobs.create" in block]
    assert examples, "README has no openai SDK example"
    return examples[0]


def test_the_readme_sdk_example_creates_a_job(server, project_key, tmp_path, monkeypatch, capsys):
    code = readme_python_example()
    assert 'base_url="http://127.0.0.1:8000/v1"' in code and 'api_key="sk-alignd-..."' in code
    code = code.replace("http://127.0.0.1:8000", server.base_url).replace("sk-alignd-...", project_key)
    (tmp_path / "sft.jsonl").write_text("".join(json.dumps({"messages": [
        {"role": "user", "content": f"sort {word}"}, {"role": "assistant", "content": "".join(sorted(word))}]}) + "\n"
        for word in ("cab", "fed", "hgi")))
    monkeypatch.chdir(tmp_path)  # the example opens "sft.jsonl" from the working directory
    exec(compile(code, "README.md", "exec"), {})
    printed = capsys.readouterr().out.splitlines()
    assert printed[0] == "queued" and any(line.startswith("Created fine-tuning job") for line in printed)
