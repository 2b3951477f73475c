"""Data pipeline: format conversion, errors naming file / line / field, loss masks, truncation,
packing, filters and the seeded split."""

from __future__ import annotations

import json

import pytest

from alignment_core.data.conversion import to_preference_row, to_sft_row
from alignment_core.data.formats import DataFormatError
from alignment_core.data.packing import pack_examples
from alignment_core.data.tokenization import (
    IGNORE_INDEX,
    NoUsableExamples,
    assistant_loss_mask,
    tokenize_preference_row,
    tokenize_rows,
)
from alignment_core.data.training_data import load_training_rows, split_rows
from alignment_core.specs import DataSpec, FilterSpec

USER = {"role": "user", "content": "Sort the letters: c a b"}


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir)


def write_jsonl(path, records):
    path.write_text("".join(json.dumps(record) + "\n" for record in records))
    return str(path)


def test_supervised_formats_become_messages():
    assert to_sft_row({"instruction": "Sort", "input": "c a", "output": "a c"}, "instruction") == {"messages": [
        {"role": "user", "content": "Sort\n\nc a"}, {"role": "assistant", "content": "a c"}]}
    assert to_sft_row({"prompt": "Sort: b a", "completion": "a b"}, "prompt_completion")["messages"][1] == {
        "role": "assistant", "content": "a b"}
    messages = [USER, {"role": "assistant", "content": "a b c", "weight": 0}]
    assert to_sft_row({"messages": messages}, "messages") == {"messages": messages}


def test_preference_formats_become_conversational_pairs():
    ours = to_preference_row({"prompt": "Sort: b a", "chosen": "a b", "rejected": "b a", "margin": 2}, "preference")
    assert ours == {"prompt": [{"role": "user", "content": "Sort: b a"}],
                    "chosen": [{"role": "assistant", "content": "a b"}],
                    "rejected": [{"role": "assistant", "content": "b a"}], "margin": 2.0}
    old_names = {"input": {"messages": [{"role": "user", "content": "Sort: b a"}]},
                 "preferred_completion": "a b", "non_preferred_completion": "b a"}
    openai = to_preference_row(old_names, "openai_preference")
    assert openai["chosen"] == ours["chosen"] and openai["prompt"] == ours["prompt"]


def test_errors_name_file_line_and_field(tmp_path):
    path = write_jsonl(tmp_path / "bad.jsonl", [
        {"prompt": "p", "chosen": "a", "rejected": "b"},
        {"prompt": "p", "chosen": "a"},
    ])
    with pytest.raises(DataFormatError) as error:
        load_training_rows(DataSpec(train_files=[path]), "dpo", seed=0)
    assert error.value.line == 2 and error.value.field == "rejected" and "bad.jsonl" in str(error.value)
    sft = write_jsonl(tmp_path / "sft.jsonl", [{"messages": [USER, {"role": "assistant", "content": "a"}]}])
    with pytest.raises(DataFormatError, match="method 'dpo' needs data"):
        load_training_rows(DataSpec(train_files=[sft]), "dpo", seed=0)


def test_filters_split_and_cap(tmp_path):
    records = [{"prompt": f"p{i % 10}", "completion": "x", "score": i} for i in range(40)]
    path = write_jsonl(tmp_path / "d.jsonl", records)
    spec = DataSpec(train_files=[path], filters=FilterSpec(min_score=10, deduplicate=True), eval_split=0.2)
    rows = load_training_rows(spec, "supervised", seed=1)
    assert rows.dropped["min_score"] == 10 and rows.dropped["duplicate"] == 20
    assert len(rows.train) == 8 and len(rows.eval) == 2
    again = load_training_rows(spec, "supervised", seed=1)
    assert again.eval == rows.eval  # seeded
    capped = load_training_rows(DataSpec(train_files=[path], max_examples=5), "supervised", seed=0)
    assert len(capped.train) == 5 and capped.dropped["max_examples"] == 35
    train, held = split_rows(list(range(100)), 0.1, seed=0)
    assert len(held) == 10 and not set(train) & set(held)


def test_assistant_mask_honours_weight_zero(tokenizer):
    messages = [USER, {"role": "assistant", "content": "c a b", "weight": 0},
                {"role": "user", "content": "again"}, {"role": "assistant", "content": "a b c"}]
    input_ids, mask = assistant_loss_mask(tokenizer, messages)
    trained = tokenizer.decode([token for token, bit in zip(input_ids, mask) if bit])
    assert trained == "a b c" + tokenizer.eos_token


def test_truncation_cuts_prompt_from_the_left_and_drops_empty_responses(tokenizer):
    long_prompt = "Sort the letters: " + " ".join("abcdefgh" * 6)
    row = {"prompt": [{"role": "user", "content": long_prompt}],
           "chosen": [{"role": "assistant", "content": "a b"}], "rejected": [{"role": "assistant", "content": "b"}]}
    data = DataSpec(train_files=["x"], max_length=24, max_prompt_length=16)
    tokenized = tokenize_preference_row(tokenizer, row, data)
    assert len(tokenized["prompt_ids"]) == 16
    assert tokenizer.decode(tokenized["chosen_ids"]) == "a b" + tokenizer.eos_token
    assert tokenizer.decode(tokenized["prompt_ids"]).endswith("<|assistant|>")  # the end of the prompt is kept

    sft_rows = [{"messages": [{"role": "user", "content": long_prompt}, {"role": "assistant", "content": "a b"}]}]
    kept, report = tokenize_rows(tokenizer, sft_rows, data, "sft")
    assert len(kept[0]["input_ids"]) <= 24 and [t for t in kept[0]["labels"] if t != IGNORE_INDEX]

    squeezed = DataSpec(train_files=["x"], max_length=9, max_prompt_length=8)
    long_answer = {"messages": [{"role": "user", "content": long_prompt},
                                {"role": "assistant", "content": "a b"}]}
    ok = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "a"}]}
    kept, report = tokenize_rows(tokenizer, [long_answer, ok], squeezed, "sft")
    assert report.kept == 2  # the long prompt is cut, the answer survives
    with pytest.raises(NoUsableExamples, match="every train example was dropped"):
        tokenize_rows(tokenizer, [row], DataSpec(train_files=["x"], max_length=8, max_prompt_length=7,
                                                 filters=FilterSpec(max_length=5)), "preference")


def test_packing_keeps_every_token_and_boundaries():
    examples = [{"input_ids": [index] * size, "labels": [index] * size} for index, size in enumerate([5, 3, 4, 2, 6])]
    packed = pack_examples(examples, max_length=8)
    assert all(len(row["input_ids"]) <= 8 and sum(row["seq_lengths"]) == len(row["input_ids"]) for row in packed)
    assert sorted(token for row in packed for token in row["input_ids"]) == sorted(
        token for example in examples for token in example["input_ids"])
    assert len(packed) == 3  # 20 tokens in bins of 8
    with pytest.raises(ValueError, match="more than max_length"):
        pack_examples([{"input_ids": [1] * 9, "labels": [1] * 9}], max_length=8)


def test_demo_paths_resolve_to_generated_files(alignd_home):
    from alignment_core.data.demo_sources import UnknownDemoFile, resolve_data_path

    path = resolve_data_path("alignd-demo:preference")
    assert path.startswith(str(alignd_home)) and path.endswith("preference.jsonl")
    with pytest.raises(UnknownDemoFile):
        resolve_data_path("alignd-demo:nope")


def test_stale_demo_data_is_rebuilt(tmp_path, monkeypatch):
    from alignment_core.data.demo_sources import VERSION_FILE, demo_data_version, ensure_demo_data

    monkeypatch.setenv("ALIGND_HOME", str(tmp_path))
    directory = ensure_demo_data()
    assert (directory / VERSION_FILE).read_text().strip() == demo_data_version()
    fresh = (directory / "preference.jsonl").read_text()
    # A current folder is left alone.
    (directory / "sft.jsonl").write_text("kept\n")
    assert (ensure_demo_data() / "sft.jsonl").read_text() == "kept\n"
    # Built by another generator version, or before folders carried a version: rebuilt, nothing left over.
    for marker in ("0123456789abcdef\n", None):
        (directory / "preference.jsonl").write_text('{"prompt": "old", "chosen": "a", "rejected": "b"}\n')
        if marker is None:
            (directory / VERSION_FILE).unlink()
        else:
            (directory / VERSION_FILE).write_text(marker)
        assert ensure_demo_data() == directory
        assert (directory / "preference.jsonl").read_text() == fresh
        assert (directory / VERSION_FILE).read_text().strip() == demo_data_version()
    assert sorted(path.name for path in tmp_path.iterdir()) == ["demo-data"]


def test_prompt_budget_follows_a_smaller_max_length_unless_set():
    # Setting only max_length must not make the default prompt budget (256) an error.
    assert DataSpec(train_files=["a.jsonl"], max_length=128).max_prompt_length == 64
    assert DataSpec(train_files=["a.jsonl"]).max_prompt_length == 256
    with pytest.raises(ValueError, match=r"max_prompt_length \(200\) must be smaller than data.max_length \(128\)"):
        DataSpec(train_files=["a.jsonl"], max_length=128, max_prompt_length=200)
