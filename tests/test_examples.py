"""Each example runs from a clean checkout with `alignd train examples/X.yaml --output-dir runs/X`: it reads only
built-in demo files and earlier examples' outputs; `alignd demo` trains DPO on the same measured recipe."""

from __future__ import annotations

from pathlib import Path

import yaml

from alignment_core.data.demo_sources import DEMO_SCHEME
from alignment_core.specs import JobSpec, load_spec

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def example(name: str) -> JobSpec:
    return load_spec(yaml.safe_load((EXAMPLES / f"{name}.yaml").read_text()))


# Files the README's chain writes between examples, with the command that writes them.
GENERATED = {"runs/on_policy.jsonl": "python -m alignment_core.demo.on_policy runs/sft/model runs/on_policy.jsonl"}


def test_examples_need_only_demo_files_and_earlier_examples() -> None:
    names = sorted(path.stem for path in EXAMPLES.glob("*.yaml"))
    outputs = {f"runs/{name}/model" for name in names}
    readme = (EXAMPLES.parent / "README.md").read_text()
    for name in names:
        spec = example(name)
        for path in [*spec.data.train_files, *spec.data.eval_files]:
            assert path.startswith(DEMO_SCHEME) or path in GENERATED, (name, path)
            if path in GENERATED:  # the example and the README both say how to make it
                assert GENERATED[path] in (EXAMPLES / f"{name}.yaml").read_text() and GENERATED[path] in readme
        assert spec.model.name_or_path == "alignd-tiny" or spec.model.name_or_path in outputs, name
        reward = getattr(spec.method, "reward", None)
        assert reward is None or reward.type != "model" or reward.model in outputs, name


def test_demo_dpo_stage_uses_the_example_recipe() -> None:
    from services.cli.demo import STAGE_SETTINGS

    spec = example("dpo")
    hyper = STAGE_SETTINGS["dpo"]["hyperparameters"]
    assert "lora" not in STAGE_SETTINGS["dpo"] and spec.model.lora is None
    assert spec.method.sft_weight > 0  # RPO: without it held-out rule satisfaction falls (0.695 -> 0.535)
    assert (hyper["beta"], hyper["sft_weight"]) == (spec.method.beta, spec.method.sft_weight)
    recipe = ("learning_rate", "max_steps", "batch_size")
    assert {key: hyper[key] for key in recipe} == {key: getattr(spec.training, key) for key in recipe}
