"""Prompt filters: length limits, exact and near-duplicate removal, seeded sampling.

Each filter takes the kept items and returns (kept, number dropped); order is always preserved.
"""

from __future__ import annotations

import json
import logging
import random
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import numpy as np

from moaa.rows import Message

log = logging.getLogger(__name__)

T = TypeVar("T")
_BLOCK = 512  # candidates compared against the kept set per matrix product


def normalise(text: str) -> str:
    """Casefolded, whitespace collapsed: the form duplicates are compared in."""
    return " ".join(text.casefold().split())


def dedup_key(messages: list[Message]) -> str:
    """The whole conversation (roles and normalised texts) as one comparable string."""
    return json.dumps([[m["role"], normalise(m["content"])] for m in messages], ensure_ascii=False)


def user_chars(messages: list[Message]) -> int:
    """Characters of the user turns: what the length limits measure."""
    return sum(len(m["content"]) for m in messages if m["role"] == "user")


def user_text(messages: list[Message]) -> str:
    return "\n".join(m["content"] for m in messages if m["role"] == "user")


def drop_exact_duplicates(items: list[T], key: Callable[[T], str]) -> tuple[list[T], int]:
    """The first of each group of items with equal keys."""
    seen: set[str] = set()
    kept = []
    for item in items:
        k = key(item)
        if k not in seen:
            seen.add(k)
            kept.append(item)
    return kept, len(items) - len(kept)


def near_duplicate_mask(vectors: np.ndarray, threshold: float) -> list[bool]:
    """Greedy: keep a row unless its cosine with an already kept row is >= threshold (rows unit length)."""
    n = len(vectors)
    keep = [False] * n
    kept = np.zeros((0, vectors.shape[1] if vectors.ndim == 2 else 0), dtype=np.float32)
    for start in range(0, n, _BLOCK):
        block = vectors[start : start + _BLOCK]
        # One matrix product against everything kept before this block, then a short greedy pass
        # inside the block (its rows may also shadow each other).
        too_close = (block @ kept.T).max(axis=1) >= threshold if len(kept) else np.zeros(len(block), bool)
        inner = block @ block.T
        chosen: list[int] = []
        for i in range(len(block)):
            if too_close[i] or (chosen and inner[i, chosen].max() >= threshold):
                continue
            chosen.append(i)
            keep[start + i] = True
        kept = np.concatenate([kept, block[chosen]])
    return keep


def drop_near_duplicates(
    items: list[T], text: Callable[[T], str], threshold: float, embed: Callable[[list[str]], Any] | None = None
) -> tuple[list[T], int]:
    """Items whose text embedding is not too close to an earlier kept one (MiniLM by default)."""
    if len(items) < 2:
        return items, 0
    if embed is None:
        from moaa.embeddings import embed
    vectors = np.asarray(embed([text(item) for item in items]), dtype=np.float32)
    mask = near_duplicate_mask(vectors, threshold)
    kept = [item for item, keep in zip(items, mask, strict=True) if keep]
    return kept, len(items) - len(kept)


def sample_stable(items: Sequence[T], limit: int | None, seed: int) -> tuple[list[T], int]:
    """A seeded random sample of `limit` items, in their original order."""
    if limit is None or limit >= len(items):
        return list(items), 0
    chosen = sorted(random.Random(seed).sample(range(len(items)), limit))
    return [items[i] for i in chosen], len(items) - limit
