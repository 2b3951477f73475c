"""Planning a model that is not downloaded: the table of known architectures, shapes given on the command line,
which source the output names, and the API's admission control reading the same sources.

The command runs as users run it (`python -m services.cli.main plan`), offline, with an empty Hugging Face
cache unless a test fills one.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from alignment_core.planning import ShapeOverrides, parse_param_count, read_model_shape, resolve_model_shape
from alignment_core.planning.architectures import KNOWN_ARCHITECTURES, find_architecture
from alignment_core.planning.model_shape import shape_from_config
from alignment_core.specs import JobSpec

ROOT = Path(__file__).resolve().parents[2]
TABLE = "table of known architectures"


def plan(*args: str, cache: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_HUB_CACHE": str(cache),
           "COLUMNS": "250"}
    return subprocess.run([sys.executable, "-m", "services.cli.main", "plan", *args], capture_output=True,
                          text=True, cwd=ROOT, env=env, timeout=300)


@pytest.fixture()
def empty_cache(tmp_path: Path) -> Path:
    (tmp_path / "hub-cache").mkdir()
    return tmp_path / "hub-cache"


@pytest.mark.parametrize("known", KNOWN_ARCHITECTURES, ids=lambda known: known.name)
def test_each_table_entry_counts_its_advertised_size(known):
    from transformers import AutoConfig

    # A mistyped width, depth or vocabulary moves the count by far more than the model cards' rounding.
    shape = shape_from_config(AutoConfig.for_model(known.model_type, **known.config_fields()))
    assert shape.total_params == pytest.approx(known.advertised_params, rel=0.01)
    assert shape.num_layers == known.num_hidden_layers and shape.vocab_size == known.vocab_size


def test_table_shape_is_the_downloaded_configs_shape(tmp_path):
    from transformers import LlamaConfig

    # Llama-3.1-8B's config.json, as a folder would hold it.
    LlamaConfig(hidden_size=4096, num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=8,
                intermediate_size=14336, vocab_size=128256, tie_word_embeddings=False).save_pretrained(tmp_path)
    from_table = resolve_model_shape("meta-llama/Llama-3.1-8B")
    from_disk = read_model_shape(str(tmp_path))
    assert TABLE in from_table.source and str(tmp_path) in from_disk.source
    assert from_table.total_params == from_disk.total_params == 8_030_261_248
    assert from_table.linears == from_disk.linears and from_table.kv_dim == from_disk.kv_dim == 1024


def test_names_find_their_architecture():
    assert find_architecture("meta-llama/Llama-3.1-8B-Instruct").name == "meta-llama/Llama-3.1-8B"
    assert find_architecture("qwen/qwen2.5-7b-instruct").name == "Qwen/Qwen2.5-7B"
    assert find_architecture("unsloth/Llama-3.2-1B-Instruct").name == "meta-llama/Llama-3.2-1B"  # a mirror
    assert find_architecture("meta-llama/Llama-3.1-8B-pruned") is None
    assert find_architecture("Llama-3.1-8B") is None  # a bare name is a local folder that is not there


def test_overrides_change_a_known_shape_and_a_count_sets_the_depth():
    base = resolve_model_shape("Qwen/Qwen2.5-7B")
    deeper = resolve_model_shape("Qwen/Qwen2.5-7B", overrides=ShapeOverrides(num_layers=40))
    assert deeper.num_layers == 40 and deeper.total_params > base.total_params
    assert "num_hidden_layers 40" in deeper.source
    # Gemma 2 alternates sliding and full attention; a new depth keeps the pattern and builds.
    gemma = resolve_model_shape("google/gemma-2-9b", overrides=ShapeOverrides(params=parse_param_count("12B")))
    assert gemma.total_params == pytest.approx(12e9, rel=0.02) and gemma.hidden_size == 3584
    with pytest.raises(ValueError, match="not both"):
        ShapeOverrides(params=10**9, num_layers=4)
    assert parse_param_count("1.5B") == 1_500_000_000 and parse_param_count("500M") == 500_000_000
    with pytest.raises(ValueError, match="not a parameter count"):
        parse_param_count("7 bn")


def test_plan_answers_for_a_known_model_that_is_not_downloaded(empty_cache):
    fits = plan("--model", "Qwen/Qwen2.5-0.5B-Instruct", "--gpu", "H100-80GB", cache=empty_cache)
    assert fits.returncode == 0, fits.stdout + fits.stderr
    assert f"model shape: alignd's {TABLE} (Qwen/Qwen2.5-0.5B), not downloaded" in fits.stdout
    assert "0.494B parameters" in fits.stdout and "recommended" in fits.stdout
    big = plan("--model", "meta-llama/Llama-3.1-70B", "--method", "dpo", "--gpu", "A100-80GB", "--gpus", "8",
               cache=empty_cache)
    assert big.returncode == 1 and "Traceback" not in big.stderr  # full DPO does not fit as given
    assert "70.554B parameters" in big.stdout and "(meta-llama/Llama-3.1-70B), not downloaded" in big.stdout
    assert "recommended" in big.stdout


def test_a_downloaded_config_wins_over_the_table(tmp_path, empty_cache):
    from transformers import LlamaConfig

    # A Hugging Face cache holding a (pruned) Llama-3.2-1B config: what is on disk is what gets planned.
    snapshot = empty_cache / "models--meta-llama--Llama-3.2-1B" / "snapshots" / ("0" * 40)
    LlamaConfig(hidden_size=2048, num_hidden_layers=8, num_attention_heads=32, num_key_value_heads=8,
                intermediate_size=8192, vocab_size=128256, tie_word_embeddings=True).save_pretrained(snapshot)
    (empty_cache / "models--meta-llama--Llama-3.2-1B" / "refs").mkdir()
    (empty_cache / "models--meta-llama--Llama-3.2-1B" / "refs" / "main").write_text("0" * 40)
    result = plan("--model", "meta-llama/Llama-3.2-1B", cache=empty_cache)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "config.json of meta-llama/Llama-3.2-1B in the Hugging Face cache" in result.stdout
    assert "0.749B parameters" in result.stdout  # 8 of the 16 blocks (the table has 1.236B)


def test_a_spec_file_model_and_shape_overrides(tmp_path, empty_cache):
    spec = tmp_path / "spec.yaml"
    spec.write_text("method: supervised\nmodel: {name_or_path: myorg/private-model, lora: {r: 8}}\n"
                    "data: {train_files: [x.jsonl]}\ndistribution: {gpus_per_worker: 1}\n")
    unknown = plan(str(spec), cache=empty_cache)
    assert unknown.returncode == 2 and "Traceback" not in unknown.stderr
    message = " ".join(unknown.stderr.replace("│", " ").split())
    assert "model 'myorg/private-model': no shape to plan with" in message
    assert "the hub was not asked (HF_HUB_OFFLINE is on)" in message
    assert "pass --params N (e.g. --params 7B)" in message and "--hidden-size, --layers, --heads" in message

    by_count = plan(str(spec), "--params", "13B", cache=empty_cache)
    assert by_count.returncode == 0, by_count.stdout + by_count.stderr
    assert "no config for 'myorg/private-model': shaped like meta-llama/Llama-2-13b-hf; 40 layers to make 13B" \
        in by_count.stdout
    shaped = plan(str(spec), "--hidden-size", "4096", "--layers", "32", "--heads", "32", "--intermediate-size",
                  "11008", "--vocab-size", "32000", cache=empty_cache)
    assert shaped.returncode == 0 and "the shape given for 'myorg/private-model'" in shaped.stdout
    assert "6.738B parameters" in shaped.stdout  # Llama-2-7B's shape, its count
    partial = plan(str(spec), "--hidden-size", "4096", "--layers", "32", cache=empty_cache)
    partial_message = " ".join(partial.stderr.replace("│", " ").split())
    assert partial.returncode == 2 and "pass --heads, --intermediate-size, --vocab-size too" in partial_message
    # --model replaces the spec's model; --layers changes the table's shape.
    what_if = plan(str(spec), "--model", "mistralai/Mistral-7B-v0.1", "--layers", "16", cache=empty_cache)
    assert what_if.returncode == 0, what_if.stdout + what_if.stderr
    assert "(mistralai/Mistral-7B-v0.1), not downloaded; changed: num_hidden_layers 16" in what_if.stdout


def test_api_admission_refuses_a_known_model_that_is_not_downloaded():
    from services.api.errors import ApiError
    from services.api.job_requests import _check_memory

    def gpu_job(model: str) -> JobSpec:
        return JobSpec.model_validate({"method": "supervised", "model": {"name_or_path": model},
                                       "data": {"train_files": ["file-x"]}, "distribution": {"gpus_per_worker": 1}})

    with pytest.raises(ApiError) as refused:
        _check_memory(gpu_job("meta-llama/Llama-3.1-70B-Instruct"))
    assert refused.value.status == 400 and refused.value.code == "model_does_not_fit"
    assert "(70.55B parameters; shape from alignd's table of known architectures" in refused.value.message
    assert _check_memory(gpu_job("myorg/unknown-model")) is None  # no shape: the stage will tell
