"""PPO takes its prompts from any data format users upload; each record's prompt is what the policy sees."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from alignment_core.data.formats import DataFormatError
from alignment_core.ppo.prompts import load_prompts

USER = {"role": "user", "content": "Sort 3 1 2"}
RECORDS_AND_PROMPTS = [
    ({"prompt": "Sort 3 1 2"}, "Sort 3 1 2"),
    ({"prompt": "Sort 3 1 2", "completion": "1 2 3"}, "Sort 3 1 2"),
    ({"instruction": "Sort", "input": "3 1 2", "output": "1 2 3"}, "Sort\n\n3 1 2"),
    ({"messages": [USER, {"role": "assistant", "content": "1 2 3"}]}, [USER]),
    ({"prompt": [USER], "chosen": [{"role": "assistant", "content": "1 2 3"}],
      "rejected": [{"role": "assistant", "content": "3 2 1"}]}, [USER]),
    # TRL's implicit prompt: no "prompt" field, the turns chosen and rejected share are the prompt.
    ({"chosen": [USER, {"role": "assistant", "content": "1 2 3"}],
      "rejected": [USER, {"role": "assistant", "content": "3 2 1"}]}, [USER]),
    ({"input": {"messages": [USER]}, "preferred_output": [{"role": "assistant", "content": "1 2 3"}],
      "non_preferred_output": [{"role": "assistant", "content": "3 2 1"}]}, [USER]),
]


@pytest.mark.parametrize(("record", "prompt"), RECORDS_AND_PROMPTS)
def test_every_accepted_format_gives_its_prompt(tmp_path: Path, record: dict, prompt: object) -> None:
    path = tmp_path / "data.jsonl"
    path.write_text(json.dumps(record) + "\n")
    assert load_prompts([str(path)]) == [prompt]


def test_a_conversation_without_a_user_turn_names_its_line(tmp_path: Path) -> None:
    path = tmp_path / "data.jsonl"
    no_user = [{"role": "system", "content": "s"}, {"role": "assistant", "content": "a"}]
    lines = [{"prompt": "ok"}, {"messages": no_user}]
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    with pytest.raises(DataFormatError) as error:
        load_prompts([str(path)], fmt="auto")
    assert error.value.line == 2
