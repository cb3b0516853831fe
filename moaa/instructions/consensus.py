"""Consensus selection: is a synthesized task's answer agreed on, and which answer is the consensus?

Ensemble-Instruct's rule (ensemble_output.py, for three outputs), for any number of answers:
1. two answers equal after normalising (lower case, no punctuation, spaces collapsed): that answer
   is the consensus, agreement 1.0;
2. else the answer with the highest summed similarity to the others is the consensus, and the
   agreement is the lowest pairwise similarity (the paper keeps the example when it is above a floor,
   0.01; moaa's floor is `instructions.agreement.threshold`).
Similarity is Rouge-L F1 (the paper's) or, with `measure: embedding`, the cosine of MiniLM
embeddings. Fewer than two answers cannot agree: no consensus.
"""

from __future__ import annotations

import string
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import combinations
from typing import Any

from moaa.instructions.rouge import rouge_l

Embedder = Callable[[list[str]], Any]  # texts -> (n, d) array of unit rows (moaa.local.embeddings.embed)
_PUNCTUATION = str.maketrans("", "", string.punctuation)


@dataclass(frozen=True)
class Consensus:
    """The consensus of a task's answers: which one (an index into them), and how well they agree."""

    index: int
    agreement: float  # 1.0 on an exact match, else the lowest pairwise similarity
    exact: bool


def normalise_answer(text: str) -> str:
    """SQuAD's normalisation, as the paper's exact match: lower case, no punctuation, spaces collapsed."""
    return " ".join(text.lower().translate(_PUNCTUATION).split())


def similarities(texts: Sequence[str], measure: str, embed: Embedder | None = None) -> list[list[float]]:
    """The symmetric matrix of pairwise similarities (1.0 on the diagonal)."""
    size = len(texts)
    matrix = [[1.0] * size for _ in range(size)]
    if measure == "embedding":
        if embed is None:
            from moaa.local.embeddings import embed
        vectors = embed(list(texts))
        for i, j in combinations(range(size), 2):
            matrix[i][j] = matrix[j][i] = float(vectors[i] @ vectors[j])
        return matrix
    for i, j in combinations(range(size), 2):
        matrix[i][j] = matrix[j][i] = rouge_l(texts[i], texts[j])
    return matrix


def find_consensus(texts: Sequence[str], measure: str = "rouge_l", embed: Embedder | None = None) -> Consensus | None:
    """The consensus of `texts` (see the module docstring); None for fewer than two."""
    if len(texts) < 2:
        return None
    normal = [normalise_answer(t) for t in texts]
    for i, j in combinations(range(len(texts)), 2):
        if normal[i] and normal[i] == normal[j]:
            return Consensus(i, 1.0, True)
    matrix = similarities(texts, measure, embed)
    pairs = [matrix[i][j] for i, j in combinations(range(len(texts)), 2)]
    summed = [sum(row) - 1.0 for row in matrix]
    best = max(range(len(texts)), key=lambda i: summed[i])  # the first of equals: the writer's own
    return Consensus(best, round(min(pairs), 4), False)
