"""The quality filters of a data spec: score threshold and exact duplicates (token length bounds are
applied after tokenization, in ``data.tokenization``)."""

from __future__ import annotations

import json
from typing import Any


def passes_min_score(record: dict, min_score: float | None) -> bool:
    """Keep records whose numeric 'score' is at least `min_score` (records without a score are kept)."""
    if min_score is None:
        return True
    score = record.get("score")
    return not isinstance(score, (int, float)) or score >= min_score


def deduplicate(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Drop exact duplicate rows (after conversion, so the same example in two formats is one), keeping order."""
    seen: set[str] = set()
    unique = []
    for row in rows:
        key = json.dumps(row, sort_keys=True)
        if key not in seen:
            seen.add(key)
            unique.append(row)
    return unique


def within_length(num_tokens: int, min_length: int | None, max_length: int | None) -> bool:
    """The token-length bounds of ``data.filters``."""
    if min_length is not None and num_tokens < min_length:
        return False
    return max_length is None or num_tokens <= max_length
