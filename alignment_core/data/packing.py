"""Pack tokenized SFT examples into sequences of at most ``max_length`` tokens.

Best-fit decreasing: examples are placed longest first into the fullest bin they fit, so little
room is wasted and no example is split. Each packed row keeps ``seq_lengths`` so the collator
rebuilds per-example position ids and attention never crosses an example boundary (TRL's
padding-free layout).
"""

from __future__ import annotations

from typing import Any


def pack_examples(examples: list[dict[str, list[int]]], max_length: int) -> list[dict[str, Any]]:
    """Rows of ``{"input_ids", "labels", "seq_lengths"}``; every example must fit max_length."""
    order = sorted(range(len(examples)), key=lambda index: -len(examples[index]["input_ids"]))
    bins: list[list[int]] = []
    room: list[int] = []
    for index in order:
        size = len(examples[index]["input_ids"])
        if size > max_length:
            raise ValueError(f"example {index} has {size} tokens, more than max_length {max_length}")
        candidates = [slot for slot, free in enumerate(room) if free >= size]
        if candidates:
            best = min(candidates, key=lambda slot: room[slot])
            bins[best].append(index)
            room[best] -= size
        else:
            bins.append([index])
            room.append(max_length - size)
    packed = []
    for members in bins:
        members.sort()  # keep the data's own order inside a pack
        packed.append({
            "input_ids": [token for index in members for token in examples[index]["input_ids"]],
            "labels": [label for index in members for label in examples[index]["labels"]],
            "seq_lengths": [len(examples[index]["input_ids"]) for index in members],
        })
    return packed
