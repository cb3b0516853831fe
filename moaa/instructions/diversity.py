"""How varied a set of instructions is, compared with the seed tasks (the figures Ensemble-Instruct and
Self-Instruct report): distinct n-grams, and the mean pairwise distance of MiniLM embeddings.

    diversity(["Sort the list.", "Translate the sentence."])      # {"count", "distinct_1", "distinct_2"}
    embedding_distance(texts)                                      # 1 - mean pairwise cosine (loads MiniLM)

distinct-n: unique n-grams over all n-grams of the texts (rouge.tokens), pooled; it falls as texts
repeat each other. The embedding distance needs the offline MiniLM model (moaa.local.embeddings,
~10 s to load on 2 cores), so a batch records distinct-n only and `embedding_distance` is asked for.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from itertools import combinations
from typing import Any

from moaa.instructions.rouge import tokens


def distinct_n(texts: Sequence[str], n: int) -> float:
    """Unique n-grams / all n-grams over `texts` (0.0 when they hold none)."""
    grams = [tuple(words[i : i + n]) for words in map(tokens, texts) for i in range(len(words) - n + 1)]
    return round(len(set(grams)) / len(grams), 4) if grams else 0.0


def diversity(texts: Sequence[str]) -> dict[str, Any]:
    return {"count": len(texts), "distinct_1": distinct_n(texts, 1), "distinct_2": distinct_n(texts, 2)}


def embedding_distance(texts: Sequence[str], embed: Callable[[list[str]], Any] | None = None) -> float | None:
    """1 - the mean cosine of every pair's embeddings (None for fewer than two texts)."""
    if len(texts) < 2:
        return None
    if embed is None:
        from moaa.local.embeddings import embed
    vectors = embed(list(texts))
    pairs = [float(vectors[i] @ vectors[j]) for i, j in combinations(range(len(texts)), 2)]
    return round(1 - sum(pairs) / len(pairs), 4)
