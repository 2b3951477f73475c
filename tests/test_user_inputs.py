"""Files the way users bring them: a BOM, CRLF, a JSON document instead of JSONL, UTF-16, OpenAI's tool and
function-calling chats, text-part content, TRL's preference pairs without a prompt. Each goes through the
real validation (what the upload endpoint runs), conversion and tokenization with the tiny model's tokenizer.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from alignment_core.data.formats import DataFormatError, validate_file
from alignment_core.data.tokenization import tokenize_rows
from alignment_core.data.training_data import load_training_rows
from alignment_core.specs import DataSpec

CHAT = {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Héllo 世界 🙂"},
                     {"role": "assistant", "content": "Hi 👋"}]}
TOOL_CHAT = {
    "messages": [
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_1", "type": "function",
             "function": {"name": "get_weather", "arguments": "{\"city\": \"Paris\"}"}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "{\"temp\": 20}"},
        {"role": "assistant", "content": "It is 20 C."},
    ],
    "tools": [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}],
    "parallel_tool_calls": False,
}
FUNCTION_CHAT = {
    "messages": [
        {"role": "user", "content": "Weather?"},
        {"role": "assistant", "function_call": {"name": "get_weather", "arguments": "{}"}},
        {"role": "function", "name": "get_weather", "content": "20"},
        {"role": "assistant", "content": "20 C"},
    ],
    "functions": [{"name": "get_weather", "parameters": {"type": "object", "properties": {}}}],
}


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir)


def write_lines(path: Path, records: list, prefix: bytes = b"", newline: str = "\n") -> str:
    path.write_bytes(prefix + "".join(json.dumps(r, ensure_ascii=False) + newline for r in records).encode())
    return str(path)


def rejection(path: str) -> DataFormatError:
    with pytest.raises(DataFormatError) as error:
        validate_file(path)
    return error.value


def test_a_utf8_bom_and_crlf_line_endings_are_accepted(tmp_path, tokenizer):
    path = write_lines(tmp_path / "bom.jsonl", [CHAT, CHAT], prefix=b"\xef\xbb\xbf", newline="\r\n")
    assert validate_file(path).num_examples == 2
    rows = load_training_rows(DataSpec(train_files=[path]), "supervised", seed=0)
    assert rows.train[0]["messages"][1]["content"] == "Héllo 世界 🙂"  # no BOM or \r left in the text


def test_json_documents_and_other_encodings_are_refused_with_the_fix(tmp_path):
    array = tmp_path / "array.json"
    array.write_text(json.dumps([CHAT, CHAT]))
    assert "JSON array" in str(rejection(str(array))) and rejection(str(array)).line == 1
    assert "jq -c '.[]' data.json > data.jsonl" in str(rejection(str(array)))  # the fix the README names
    pretty_array = tmp_path / "pretty.json"
    pretty_array.write_text(json.dumps([CHAT], indent=2))
    assert "JSON array" in str(rejection(str(pretty_array)))
    pretty_object = tmp_path / "object.json"
    pretty_object.write_text(json.dumps(CHAT, indent=2))
    assert "each record on one line" in str(rejection(str(pretty_object)))
    utf16 = tmp_path / "utf16.jsonl"
    utf16.write_bytes((json.dumps(CHAT) + "\n").encode("utf-16"))
    assert "UTF-16" in str(rejection(str(utf16)))
    blank = tmp_path / "blank.jsonl"
    blank.write_text("\n\r\n  \n")
    assert str(rejection(str(blank))) == "the file holds no records"
    latin1 = tmp_path / "latin1.jsonl"
    latin1.write_bytes(json.dumps(CHAT).encode() + b"\n" + '{"prompt": "caf\xe9"}'.encode("latin-1") + b"\n")
    error = rejection(str(latin1))
    assert error.line == 2 and "UTF-8" in str(error)


def test_tool_calls_train_with_their_tools_and_no_none_text(tmp_path, tokenizer):
    path = write_lines(tmp_path / "tools.jsonl", [TOOL_CHAT])
    assert validate_file(path).format == "messages"
    rows = load_training_rows(DataSpec(train_files=[path]), "supervised", seed=0).train
    assert rows[0]["tools"] == TOOL_CHAT["tools"]
    assert rows[0]["messages"][1]["content"] == "" and rows[0]["messages"][1]["tool_calls"]

    # The tiny model's template knows nothing of tools: the call is trained as text, not as an empty turn.
    kept, _ = tokenize_rows(tokenizer, rows, DataSpec(train_files=[path]), "sft")
    trained = tokenizer.decode([t for t in kept[0]["labels"] if t != -100])
    call = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'
    assert trained == call + tokenizer.eos_token + "It is 20 C." + tokenizer.eos_token
    assert "None" not in tokenizer.decode(kept[0]["input_ids"])

    # A template that renders tools and tool calls gets both as they are.
    tool_tokenizer = type(tokenizer).from_pretrained(tokenizer.name_or_path)
    tool_tokenizer.chat_template = (
        "{% if tools %}<|system|>TOOLS {{ tools | length }}<|end|>{% endif %}"
        "{% for message in messages %}{% if message['role'] == 'assistant' %}<|assistant|>{% generation %}"
        "{% for call in message.get('tool_calls') or [] %}CALL {{ call.function.name }}{% endfor %}"
        "{{ message['content'] }}<|eos|>{% endgeneration %}"
        "{% else %}<|{{ message['role'] }}|>{{ message['content'] }}<|end|>{% endif %}{% endfor %}"
        "{% if add_generation_prompt %}<|assistant|>{% endif %}")
    kept, _ = tokenize_rows(tool_tokenizer, rows, DataSpec(train_files=[path]), "sft")
    assert tool_tokenizer.decode(kept[0]["input_ids"]).startswith("<|system|>TOOLS 1")
    trained = tool_tokenizer.decode([t for t in kept[0]["labels"] if t != -100])
    assert trained == "CALL get_weather" + tokenizer.eos_token + "It is 20 C." + tokenizer.eos_token


def test_openai_function_calling_becomes_tool_calls(tmp_path):
    path = write_lines(tmp_path / "functions.jsonl", [FUNCTION_CHAT])
    assert validate_file(path).format == "messages"
    row = load_training_rows(DataSpec(train_files=[path]), "supervised", seed=0).train[0]
    call = row["messages"][1]
    assert call["tool_calls"] == [{"type": "function", "function": {"name": "get_weather", "arguments": "{}"}}]
    assert "function_call" not in call and row["messages"][2]["role"] == "tool"
    assert row["tools"] == [{"type": "function", "function": FUNCTION_CHAT["functions"][0]}]


def test_text_parts_are_joined_and_images_refused_naming_the_part(tmp_path):
    text_parts = [{"type": "text", "text": "Sort "}, {"type": "text", "text": "b a"}]
    parts = {"messages": [{"role": "user", "content": text_parts},
                          {"role": "assistant", "content": [{"type": "text", "text": "a b"}]}]}
    path = write_lines(tmp_path / "parts.jsonl", [parts])
    row = load_training_rows(DataSpec(train_files=[path]), "supervised", seed=0).train[0]
    assert [m["content"] for m in row["messages"]] == ["Sort b a", "a b"]
    image = {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]},
                          {"role": "assistant", "content": "a cat"}]}
    error = rejection(write_lines(tmp_path / "image.jsonl", [CHAT, image]))
    assert error.line == 2 and error.field == "messages[0].content[0]" and "image_url" in str(error)


def test_trl_pairs_without_a_prompt_use_the_shared_part(tmp_path, tokenizer):
    conversational = {"chosen": [{"role": "user", "content": "Sort b a"}, {"role": "assistant", "content": "a b"}],
                      "rejected": [{"role": "user", "content": "Sort b a"}, {"role": "assistant", "content": "b a"}],
                      "score_chosen": 8.0, "score_rejected": 2.0}
    standard = {"chosen": "Human: Sort b a Assistant: a b", "rejected": "Human: Sort b a Assistant: b a"}
    for name, record in (("conversational", conversational), ("standard", standard)):
        path = write_lines(tmp_path / f"{name}.jsonl", [record])
        assert validate_file(path).format == "preference"
        row = load_training_rows(DataSpec(train_files=[path]), "dpo", seed=0).train[0]
        assert row["prompt"][-1]["role"] == "user" and "Sort b a" in row["prompt"][-1]["content"]
        assert row["chosen"][0]["content"].strip() == "a b" and row["rejected"][0]["content"].strip() == "b a"
        kept, _ = tokenize_rows(tokenizer, [row], DataSpec(train_files=[path]), "preference")
        assert kept[0]["chosen_ids"] != kept[0]["rejected_ids"]
    unrelated = {"chosen": [{"role": "assistant", "content": "a"}], "rejected": [{"role": "assistant", "content": "b"}]}
    error = rejection(write_lines(tmp_path / "unrelated.jsonl", [unrelated]))
    assert error.field == "prompt" and "add a 'prompt'" in str(error)
    same = {"chosen": "the same", "rejected": "the same"}
    assert "nothing after" in str(rejection(write_lines(tmp_path / "same.jsonl", [same])))


def test_openai_dpo_rows_keep_their_prompt_and_refuse_a_missing_side(tmp_path, tokenizer):
    record = {"input": {"messages": [{"role": "user", "content": "Hi"}], "tools": [], "parallel_tool_calls": True},
              "preferred_output": [{"role": "assistant", "content": "Hello!"}],
              "non_preferred_output": [{"role": "assistant", "content": "Go away"}]}
    path = write_lines(tmp_path / "dpo.jsonl", [record])
    row = load_training_rows(DataSpec(train_files=[path]), "dpo", seed=0).train[0]
    assert row == {"prompt": [{"role": "user", "content": "Hi"}],
                   "chosen": [{"role": "assistant", "content": "Hello!"}],
                   "rejected": [{"role": "assistant", "content": "Go away"}]}
    calling = {**record, "preferred_output": [{"role": "assistant", "content": None, "tool_calls": [
        {"id": "c1", "type": "function", "function": {"name": "greet", "arguments": "{}"}}]}]}
    calling_path = write_lines(tmp_path / "calling.jsonl", [calling])
    rows = load_training_rows(DataSpec(train_files=[calling_path]), "dpo", seed=0).train
    kept, _ = tokenize_rows(tokenizer, rows, DataSpec(train_files=[calling_path]), "preference")
    assert tokenizer.decode(kept[0]["chosen_ids"]) == (
        '<tool_call>\n{"name": "greet", "arguments": {}}\n</tool_call>' + tokenizer.eos_token)
    broken = {key: value for key, value in record.items() if key != "non_preferred_output"}
    error = rejection(write_lines(tmp_path / "broken.jsonl", [record, broken]))
    assert error.line == 2 and error.field == "non_preferred_output"


def test_sharegpt_and_alpaca_files_train_as_chats(tmp_path, tokenizer):
    sharegpt = {"system": "Be brief.", "conversations": [
        {"from": "human", "value": "Sort c b a"}, {"from": "gpt", "value": "a b c"},
        {"from": "human", "value": "And z y?"}, {"from": "gpt", "value": "y z"}], "id": "x1"}
    path = write_lines(tmp_path / "sharegpt.jsonl", [sharegpt])
    assert validate_file(path).format == "messages"
    row = load_training_rows(DataSpec(train_files=[path]), "supervised", seed=0).train[0]
    assert [m["role"] for m in row["messages"]] == ["system", "user", "assistant", "user", "assistant"]
    kept, _ = tokenize_rows(tokenizer, [row], DataSpec(train_files=[path]), "sft")
    trained = tokenizer.decode([t for t in kept[0]["labels"] if t != -100])
    assert trained == "a b c" + tokenizer.eos_token + "y z" + tokenizer.eos_token
    from alignment_core.ppo.prompts import load_prompts

    assert load_prompts([path])[0][-1] == {"role": "user", "content": "And z y?"}  # PPO reads its prompts too
    bad = {"conversations": [{"from": "human", "value": "hi"}, {"from": "robot", "value": "hello"}]}
    error = rejection(write_lines(tmp_path / "bad.jsonl", [sharegpt, bad]))
    assert error.line == 2 and error.field == "conversations[1].from" and "'robot'" in str(error)

    alpaca = [{"instruction": "Sort the letters", "input": None, "output": "a b"},
              {"instruction": "Sort", "input": "b a", "output": "a b"}]
    path = write_lines(tmp_path / "alpaca.jsonl", alpaca)
    rows = load_training_rows(DataSpec(train_files=[path]), "supervised", seed=0).train
    assert [r["messages"][0]["content"] for r in rows] == ["Sort the letters", "Sort\n\nb a"]


def test_an_unknown_record_names_the_formats_it_could_be(tmp_path):
    error = rejection(write_lines(tmp_path / "unknown.jsonl", [{"text": "just text"}]))
    assert error.line == 1 and "'conversations' (ShareGPT)" in str(error) and "'messages'" in str(error)


def test_trl_conversational_prompt_completion(tmp_path, tokenizer):
    record = {"prompt": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Sort b a"}],
              "completion": [{"role": "assistant", "content": "a b"}]}
    path = write_lines(tmp_path / "pc.jsonl", [record, {"prompt": "Sort d c", "completion": "c d"}])
    assert validate_file(path).format == "prompt_completion"
    rows = load_training_rows(DataSpec(train_files=[path]), "supervised", seed=0).train
    assert [m["role"] for m in rows[0]["messages"]] == ["system", "user", "assistant"]
    kept, _ = tokenize_rows(tokenizer, rows, DataSpec(train_files=[path]), "sft")
    assert tokenizer.decode([t for t in kept[0]["labels"] if t != -100]) == "a b" + tokenizer.eos_token
    no_answer = {"prompt": [{"role": "user", "content": "hi"}], "completion": [{"role": "user", "content": "x"}]}
    error = rejection(write_lines(tmp_path / "bad.jsonl", [no_answer]))
    assert error.field == "completion" and "assistant" in str(error)


def test_json_nested_past_the_parsers_depth_is_a_format_error_naming_the_line(tmp_path):
    # A recursion error escaped from the upload's validation as a 500 and dropped the client's connection.
    path = tmp_path / "deep.jsonl"
    path.write_text(json.dumps(CHAT) + "\n" + '{"messages": ' + "[" * 100_000 + "]" * 100_000 + "}\n")
    error = rejection(str(path))
    assert error.line == 2 and "nested too deeply" in str(error)


@pytest.mark.parametrize(("change", "field"), [
    (lambda r: r["messages"][1].update(tool_calls=["get_weather(city='Paris')"]), "messages[1].tool_calls[0]"),
    (lambda r: r["messages"][1].update(tool_calls=[{"id": "c", "type": "function"}]), "messages[1].tool_calls[0].name"),
    (lambda r: r["messages"][1]["tool_calls"][0]["function"].update(name=""),
     "messages[1].tool_calls[0].function.name"),
    (lambda r: r["messages"][1]["tool_calls"][0]["function"].update(arguments=[1, 2]),
     "messages[1].tool_calls[0].function.arguments"),
    (lambda r: r.update(tools="get_weather"), "tools"),
    (lambda r: r.update(tools=[{"name": "get_weather"}]), "tools[0]"),
    (lambda r: r.update(tools=[{"type": "function", "function": {"parameters": {}}}]), "tools[0].function.name"),
])
def test_malformed_tool_calls_and_tools_are_refused_at_upload_naming_the_field(tmp_path, change, field):
    # Each of these passed validation and then failed the job at training (AttributeError, a template ValueError)
    # or trained a call named null.
    record = json.loads(json.dumps(TOOL_CHAT))
    change(record)
    error = rejection(write_lines(tmp_path / "tools.jsonl", [CHAT | {"messages": CHAT["messages"]}, record]))
    assert (error.line, error.field) == (2, field)


def test_the_flat_tool_call_shape_and_older_functions_still_validate(tmp_path):
    record = json.loads(json.dumps(TOOL_CHAT))
    record["messages"][1]["tool_calls"] = [{"name": "get_weather", "arguments": {"city": "Paris"}}]
    assert validate_file(write_lines(tmp_path / "flat.jsonl", [record, FUNCTION_CHAT])).num_examples == 2


@pytest.mark.parametrize("margin", ["NaN", "Infinity", "-Infinity", "true", '"0.5"'])
def test_a_margin_that_is_not_a_finite_number_is_refused(tmp_path, margin):
    # NaN / Infinity parse (Python's json reads them) and true is an int to Python: each reached the reward loss.
    path = tmp_path / "margin.jsonl"
    path.write_text('{"prompt": "p", "chosen": "a", "rejected": "b", "margin": 0.5}\n'
                    f'{{"prompt": "p", "chosen": "a", "rejected": "b", "margin": {margin}}}\n')
    error = rejection(str(path))
    assert (error.line, error.field) == (2, "margin")


@pytest.mark.parametrize("record", [
    {"input": {"messages": [{"role": "user", "content": "hi"}]}, "preferred_output": [{"role": "user", "content": "a"}],
     "non_preferred_output": [{"role": "assistant", "content": "b"}]},
    {"prompt": [{"role": "user", "content": "hi"}], "chosen": [{"role": "assistant", "content": "a"}],
     "rejected": [{"role": "system", "content": "b"}]},
])
def test_a_preference_side_without_an_assistant_turn_is_refused_at_upload(tmp_path, record):
    # It passed and then failed the job with the chat template's "the rendered prompt is not a prefix" error.
    side = "preferred_output" if "input" in record else "rejected"
    error = rejection(write_lines(tmp_path / "pairs.jsonl", [record]))
    assert (error.line, error.field) == (1, side) and "assistant" in str(error)


@pytest.mark.parametrize(("content", "says"), [
    (lambda: __import__("gzip").compress(json.dumps(CHAT).encode()), "gunzip"),
    (lambda: b"PK\x03\x04\x14\x00\x00\x00", "unzip"),
    (lambda: b"PAR1\x15\x04\x15", "read_parquet"),
    (lambda: (json.dumps(CHAT) + "\r").encode() * 3, "lone CR"),
])
def test_compressed_parquet_and_cr_only_files_are_named_with_the_fix(tmp_path, content, says):
    # These were refused as "not valid UTF-8 at byte 1" or "Extra data at column 94", which says nothing of the fix.
    path = tmp_path / "data.jsonl"
    path.write_bytes(content())
    error = rejection(str(path))
    assert error.line == 1 and says in str(error)


def test_a_list_record_after_line_one_is_not_told_to_run_the_whole_file_through_jq(tmp_path):
    # The jq command converts a file that is one JSON array; for line 5 of a JSONL file it is the wrong advice.
    path = write_lines(tmp_path / "pairs.jsonl", [CHAT] * 4 + [["Sort b a", "a b"]])
    error = rejection(path)
    assert error.line == 5 and "jq" not in str(error) and "one JSON object" in str(error)


ULTRAFEEDBACK = {  # HuggingFaceH4/ultrafeedback_binarized's columns: the pair, and the chosen chat as "messages"
    "prompt": "Sort b a", "prompt_id": "p1",
    "chosen": [{"role": "user", "content": "Sort b a"}, {"role": "assistant", "content": "a b"}],
    "rejected": [{"role": "user", "content": "Sort b a"}, {"role": "assistant", "content": "b a"}],
    "messages": [{"role": "user", "content": "Sort b a"}, {"role": "assistant", "content": "a b"}],
    "score_chosen": 8.0, "score_rejected": 2.0,
}


def test_ultrafeedback_style_pairs_with_a_messages_column_are_preference_data(tmp_path, tokenizer):
    # They were detected as chat ('messages' came first), so DPO refused the best-known DPO dataset.
    path = write_lines(tmp_path / "ultrafeedback.jsonl", [ULTRAFEEDBACK] * 3)
    assert validate_file(path).format == "preference"
    row = load_training_rows(DataSpec(train_files=[path]), "dpo", seed=0).train[0]
    assert row["prompt"] == [{"role": "user", "content": "Sort b a"}]
    assert [m["content"] for m in row["chosen"]] == ["a b"] and [m["content"] for m in row["rejected"]] == ["b a"]
    kept, _ = tokenize_rows(tokenizer, [row], DataSpec(train_files=[path]), "preference")
    assert kept[0]["chosen_ids"] != kept[0]["rejected_ids"]
    # A spec that wants the chat for SFT says so.
    sft = load_training_rows(DataSpec(train_files=[path], format="messages"), "supervised", seed=0).train[0]
    assert [m["role"] for m in sft["messages"]] == ["user", "assistant"]


def test_dolly_records_train_as_instructions(tmp_path, tokenizer):
    # databricks-dolly-15k names the fields context / response: they were refused as "field 'output': missing".
    dolly = [{"instruction": "Sort the letters.", "context": "b a", "response": "a b", "category": "closed_qa"},
             {"instruction": "Say hi.", "context": "", "response": "hi", "category": "open_qa"}]
    path = write_lines(tmp_path / "dolly.jsonl", dolly)
    assert validate_file(path).format == "instruction"
    rows = load_training_rows(DataSpec(train_files=[path]), "supervised", seed=0).train
    by_answer = {row["messages"][-1]["content"]: row["messages"][0]["content"] for row in rows}
    assert by_answer == {"a b": "Sort the letters.\n\nb a", "hi": "Say hi."}
    kept, _ = tokenize_rows(tokenizer, rows, DataSpec(train_files=[path]), "sft")
    assert len(kept) == 2
    empty = rejection(write_lines(tmp_path / "empty.jsonl", [{"instruction": "x", "response": ""}]))
    assert (empty.line, empty.field) == (1, "response")  # the user's name for it, not Alpaca's


def test_a_pair_whose_prompt_column_has_another_name_is_told_to_rename_it(tmp_path):
    # Intel/orca_dpo_pairs: system, question, chosen, rejected. The error said only "add a 'prompt' field".
    orca = {"system": "", "question": "Sort b a", "chosen": "a b", "rejected": "b a"}
    error = rejection(write_lines(tmp_path / "orca.jsonl", [orca]))
    assert (error.line, error.field) == (1, "prompt") and "rename it to 'prompt'" in str(error)
    assert "'question'" in str(error)
    renamed = {"system": "", "prompt": "Sort b a", "chosen": "a b", "rejected": "b a"}
    assert validate_file(write_lines(tmp_path / "renamed.jsonl", [renamed])).format == "preference"
