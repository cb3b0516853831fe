"""Prompt filters: length limits, exact and near-duplicate removal, seeded sampling.

Built for one pass over a stream (moaa.sources): exact duplicates are found by a 16-byte digest
per kept prompt, near duplicates block by block against the kept embeddings, and sampling picks
positions once the number of survivors is known. Order is always preserved.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from moaa.rows import Message

if TYPE_CHECKING:
    import numpy as np  # imported by near-duplicate removal only: loading a config never needs it

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


def dedup_digest(messages: list[Message]) -> bytes:
    """16 bytes standing for `dedup_key`: what the exact de-duplication remembers per kept prompt."""
    return hashlib.blake2b(dedup_key(messages).encode(), digest_size=16).digest()


class NearDuplicates(Generic[T]):
    """Greedy near-duplicate removal over a stream, one block of _BLOCK items at a time.

    An item is kept unless the cosine of its text's embedding (MiniLM by default) with that of an
    already kept item is >= threshold. The kept embeddings are remembered: the one thing here that
    grows with the data (1.5 KiB per kept prompt for MiniLM), held as a list of blocks so that
    adding one never copies the others.
    """

    def __init__(self, threshold: float, embed: Callable[[list[str]], Any] | None = None):
        self.threshold = threshold
        self.embed = embed
        self.dropped = 0
        self.kept: list[np.ndarray] = []
        self.pending: list[tuple[T, str]] = []
        self._left_out: list[T] = []  # dropped since take_dropped was last asked

    def add(self, item: T, text: str) -> list[T]:
        """Queue an item; once a block is full, its kept items (in order), else []."""
        self.pending.append((item, text))
        return self.flush() if len(self.pending) >= _BLOCK else []

    def flush(self) -> list[T]:
        """The kept items of the queued block."""
        block, self.pending = self.pending, []
        if len(block) == 1 and not self.kept:
            mask = [True]  # nothing to compare with: no model needed
        elif block:
            embed = self.embed
            if embed is None:
                from moaa.local.embeddings import embed
            import numpy as np

            mask = self.keep(np.asarray(embed([text for _, text in block]), dtype=np.float32))
        else:
            mask = []
        self.dropped += mask.count(False)
        self._left_out.extend(item for (item, _), keep in zip(block, mask, strict=True) if not keep)
        return [item for (item, _), keep in zip(block, mask, strict=True) if keep]

    def take_dropped(self) -> list[T]:
        """The items dropped since the last call (to name them), in stream order."""
        left, self._left_out = self._left_out, []
        return left

    def keep(self, block: np.ndarray) -> list[bool]:
        """Which rows of `block` (unit vectors, the next rows of the stream) to keep; they are remembered."""
        import numpy as np

        too_close = np.zeros(len(block), bool)
        for kept in self.kept:  # everything kept before this block
            too_close |= (block @ kept.T).max(axis=1) >= self.threshold
        inner = block @ block.T  # rows of the block may also shadow each other
        chosen: list[int] = []
        for i in range(len(block)):
            if not too_close[i] and not (chosen and inner[i, chosen].max() >= self.threshold):
                chosen.append(i)
        if chosen:
            self.kept.append(block[chosen])
        picked = set(chosen)
        return [i in picked for i in range(len(block))]


def near_duplicate_mask(vectors: np.ndarray, threshold: float) -> list[bool]:
    """Greedy, in blocks of _BLOCK rows: keep a row unless it is too close to an earlier kept one."""
    near: NearDuplicates[None] = NearDuplicates(threshold)
    return [keep for start in range(0, len(vectors), _BLOCK) for keep in near.keep(vectors[start : start + _BLOCK])]


def sample_indices(count: int, limit: int | None, seed: int) -> list[int] | None:
    """A seeded random sample of `limit` of `count` positions, in order (None: keep all)."""
    if limit is None or limit >= count:
        return None
    return sorted(random.Random(seed).sample(range(count), limit))
