"""Cluster & Filter, a defense against deceptive proposers (arXiv 2503.05856; ALGORITHMS.md section 5).

The last layer's answers are embedded (MiniLM, L2-normalised rows), split by 2-means, and only the
larger cluster goes to the aggregator; when the clusters tie, or there are fewer than three
answers, every answer is kept. A misleading proposer tends to land alone in the smaller cluster.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from moaa.engine.context import Answer, PromptRun

log = logging.getLogger(__name__)


def two_means(vectors: Any, iterations: int = 50) -> list[int]:
    """Cluster labels (0/1) of the rows by 2-means, seeded with the two rows farthest apart."""
    import numpy as np

    x = np.asarray(vectors, dtype=np.float64)
    if len(x) < 2:
        return [0] * len(x)
    dist = ((x[:, None, :] - x[None, :, :]) ** 2).sum(-1)
    a, b = np.unravel_index(int(dist.argmax()), dist.shape)
    centres = x[[a, b]].copy()
    labels = None
    for _ in range(iterations):
        new = ((x[:, None, :] - centres[None, :, :]) ** 2).sum(-1).argmin(1)
        if labels is not None and (new == labels).all():
            break
        labels = new
        for c in (0, 1):
            if (labels == c).any():
                centres[c] = x[labels == c].mean(0)
    return [int(v) for v in labels]


def larger_cluster(vectors: Any) -> list[int]:
    """Indices of the rows in the larger 2-means cluster; all rows on a tie or below three rows."""
    n = len(vectors)
    if n < 3:
        return list(range(n))
    labels = two_means(vectors)
    ones = sum(labels)
    if ones * 2 == n:
        return list(range(n))
    keep = 1 if ones * 2 > n else 0
    return [i for i, label in enumerate(labels) if label == keep]


def default_embed(texts: list[str]) -> Any:
    from moaa.local.embeddings import embed  # heavy (sentence-transformers): only when the defense is on

    return embed(texts)


async def apply_cluster_filter(run: PromptRun, answers: list[Answer]) -> list[Answer]:
    """`answers` reduced to their larger cluster when `cluster_filter` is on; the rest marked unselected."""
    if not run.gen.cluster_filter or len(answers) < 3:
        return answers
    embed = run.embed or default_embed
    vectors = await asyncio.to_thread(embed, [a.text for a in answers])
    keep = set(larger_cluster(vectors))
    for i, answer in enumerate(answers):
        if i not in keep:
            answer.step.selected = False
            answer.step.meta = json.dumps({"filtered": "cluster_filter"})
    dropped = len(answers) - len(keep)
    if dropped:
        run.counters["filtered_answers"] += dropped
    return [a for i, a in enumerate(answers) if i in keep]
