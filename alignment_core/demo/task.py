"""The demo task: sort a short list of letters.

Rule-checkable (``check`` decides correctness), learnable by a tiny model on a CPU in minutes, and
rich enough for preferences: a wrong answer can be unsorted, miss a letter or repeat one, or be
degenerate (one letter over and over, far too long, almost empty).
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path

ALPHABET = "abcdefgh"
MIN_ITEMS, MAX_ITEMS = 3, 6
INSTRUCTION = "Sort the letters:"
SYSTEM_PROMPT = "You sort letters alphabetically."


@dataclass(frozen=True)
class Problem:
    letters: tuple[str, ...]

    @property
    def prompt(self) -> str:
        return f"{INSTRUCTION} {' '.join(self.letters)}"

    @property
    def answer(self) -> str:
        return " ".join(sorted(self.letters))


def sample_problem(rng: random.Random) -> Problem:
    size = rng.randint(MIN_ITEMS, MAX_ITEMS)
    return Problem(tuple(rng.choice(ALPHABET) for _ in range(size)))


def parse_prompt(prompt: str) -> Problem:
    """Recover the problem from a prompt (the text after the instruction)."""
    start = prompt.rfind(INSTRUCTION)
    if start < 0:
        raise ValueError(f"not a demo-task prompt: {prompt!r}")
    tail = prompt[start + len(INSTRUCTION) :].split("\n")[0]
    return Problem(tuple(tail.split()))


def check(prompt: str, completion: str) -> bool:
    """True when the completion is exactly the sorted letters of the prompt."""
    return completion.split() == list(parse_prompt(prompt).answer.split())


def score(prompt: str, completion: str) -> float:
    """A graded reward in [0, 1]: 1 for a correct answer, partial credit by matching positions."""
    target = parse_prompt(prompt).answer.split()
    produced = completion.split()
    if produced == target:
        return 1.0
    matches = sum(1 for got, want in zip(produced, target) if got == want)
    return 0.8 * matches / max(len(produced), len(target), 1)


def reward_function(prompts: list[str], completions: list[str]) -> list[float]:
    """The checker as a batched reward function (the PPO stage's `function` reward source)."""
    return [score(prompt, completion) for prompt, completion in zip(prompts, completions)]


# A policy under RL drifts into these; the preference data shows them as rejected so a reward model learns
# to penalise them. Near-misses stay the majority (about 3 in 4), so the model still learns fine distinctions.
DEGENERATE_SHARE = 0.25
LONG_OUTPUT_ITEMS = (14, 24)

# Relative weights of the near-miss kinds. Merging repeated letters weighs most because it is the mistake a
# partly trained policy makes most: the SFT model of tests/core sorted 66 of 69 held-out lists without a
# repeated letter but only 36 of 131 with one, 50 of those answered with each letter once. DPO lowers the
# likelihood of what it sees rejected, so the mistakes a policy makes must be among them.
NEAR_MISS_KINDS = {"unsorted": 1, "swap": 1, "drop": 1, "duplicate": 1, "substitute": 1, "merge_repeats": 2}


def wrong_answer(problem: Problem, rng: random.Random) -> str:
    """A mistake: mostly a near-miss, sometimes degenerate output of the kind RL policies learn."""
    if rng.random() < DEGENERATE_SHARE:
        return degenerate_answer(problem, rng)
    return near_miss_answer(problem, rng)


def near_miss_answer(problem: Problem, rng: random.Random) -> str:
    """A plausible mistake: unsorted, a swapped pair, a dropped, duplicated or substituted letter, or each
    repeated letter written once."""
    letters = sorted(problem.letters)
    kind = rng.choices(list(NEAR_MISS_KINDS), weights=list(NEAR_MISS_KINDS.values()))[0]
    if kind == "merge_repeats" and len(set(letters)) < len(letters):
        candidate = sorted(set(letters))
    elif kind == "substitute":
        # Sorted and of the right length, so only the letters themselves tell it from the answer.
        candidate = letters[:]
        index = rng.randrange(len(candidate))
        candidate[index] = rng.choice([letter for letter in ALPHABET if letter != candidate[index]])
        candidate.sort()
    elif kind == "unsorted" and list(problem.letters) != letters:
        candidate = list(problem.letters)
    elif kind in ("drop", "merge_repeats"):  # a list without repeats has none to merge: drop a letter
        candidate = letters[:]
        del candidate[rng.randrange(len(candidate))]
    elif kind == "duplicate":
        candidate = letters[:]
        index = rng.randrange(len(candidate))
        candidate.insert(index, candidate[index])
    else:
        candidate = letters[:]
        index = rng.randrange(len(candidate) - 1)
        candidate[index], candidate[index + 1] = candidate[index + 1], candidate[index]
    answer = " ".join(candidate)
    if answer == problem.answer:  # a swap of equal letters changes nothing
        return " ".join(letters[:-1])
    return answer


def degenerate_answer(problem: Problem, rng: random.Random) -> str:
    """Degenerate output: one letter repeated, far too long, or (almost) empty."""
    kind = rng.choice(["repeat", "too_long", "empty"])
    if kind == "repeat":
        letter = rng.choice(problem.letters)
        return " ".join([letter] * rng.randint(*LONG_OUTPUT_ITEMS))
    if kind == "too_long":
        count = rng.randint(*LONG_OUTPUT_ITEMS)
        if rng.random() < 0.5:  # the right answer that never stops
            letters = sorted(problem.letters)
            return " ".join((letters * count)[:count])
        return " ".join(rng.choice(ALPHABET) for _ in range(count))
    # A single letter: the closest to empty the preference format allows (it rejects empty text).
    return rng.choice(problem.letters)


def messages_example(problem: Problem) -> dict:
    return {
        # No system turn: every stage and the evaluation then see the same prompt rendering.
        "messages": [
            {"role": "user", "content": problem.prompt},
            {"role": "assistant", "content": problem.answer},
        ]
    }


def preference_examples(problem: Problem, rng: random.Random) -> tuple[dict, dict]:
    """The same pair in our `prompt/chosen/rejected` shape and in OpenAI's DPO shape."""
    rejected = wrong_answer(problem, rng)
    ours = {"prompt": problem.prompt, "chosen": problem.answer, "rejected": rejected}
    openai_shape = {
        "input": {"messages": [{"role": "user", "content": problem.prompt}]},
        "preferred_output": [{"role": "assistant", "content": problem.answer}],
        "non_preferred_output": [{"role": "assistant", "content": rejected}],
    }
    return ours, openai_shape


DEMO_FILES = {
    "sft": "sft.jsonl",
    "preference": "preference.jsonl",
    "openai_dpo": "openai_dpo.jsonl",
    "prompts": "prompts.jsonl",
    "eval": "eval.jsonl",
}


def write_demo_data(directory: Path, seed: int = 0, train_size: int = 2000, eval_size: int = 200) -> dict[str, Path]:
    """Write every demo file under `directory`; held-out problems never appear in training files."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    eval_problems: list[Problem] = []
    seen: set[Problem] = set()
    while len(eval_problems) < eval_size:
        problem = sample_problem(rng)
        if problem not in seen:
            seen.add(problem)
            eval_problems.append(problem)
    train_problems: list[Problem] = []
    while len(train_problems) < train_size:
        problem = sample_problem(rng)
        if problem not in seen:  # duplicates within train are fine; leakage into eval is not
            train_problems.append(problem)

    paths = {name: directory / filename for name, filename in DEMO_FILES.items()}
    with (
        paths["sft"].open("w") as sft,
        paths["preference"].open("w") as pref,
        paths["openai_dpo"].open("w") as openai_dpo,
        paths["prompts"].open("w") as prompts,
    ):
        for problem in train_problems:
            sft.write(json.dumps(messages_example(problem)) + "\n")
            ours, openai_shape = preference_examples(problem, rng)
            pref.write(json.dumps(ours) + "\n")
            openai_dpo.write(json.dumps(openai_shape) + "\n")
            prompts.write(json.dumps({"prompt": problem.prompt}) + "\n")
    with paths["eval"].open("w") as held_out:
        for problem in eval_problems:
            ours, _ = preference_examples(problem, rng)
            held_out.write(json.dumps(ours) + "\n")
    return paths


def corpus_for_tokenizer() -> list[str]:
    """Text the tiny tokenizer is trained on: every letter and word the task uses."""
    rng = random.Random(1234)
    lines = [SYSTEM_PROMPT, INSTRUCTION, " ".join(ALPHABET)]
    for _ in range(300):
        problem = sample_problem(rng)
        lines.append(f"{problem.prompt} {problem.answer}")
    return lines
