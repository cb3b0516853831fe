"""Rouge-L F1 between two texts: the agreement measure of Ensemble-Instruct and the duplicate rule of
Self-Instruct.

Written here, 30 lines: no package moaa keeps computes it (rouge-score, which both papers' code uses,
is not in requirements.lock, and nltk's translate metrics have no ROUGE). It follows rouge-score's
`RougeScorer(["rougeL"])` without stemming: lower-cased text, every run of characters other than
a-z and 0-9 a separator, the longest common subsequence of the two token lists, F1 of its precision
and recall. Self-Instruct (gen_instructions.py) scores instructions exactly so; Ensemble-Instruct's
ensemble_output.py also stems (Porter), which moaa does not: stemmed or not, equal words agree.
"""

from __future__ import annotations

import re

_SEPARATOR = re.compile(r"[^a-z0-9]+")


def tokens(text: str) -> list[str]:
    """rouge-score's default tokens: lower case, split on anything but a-z and 0-9."""
    return [t for t in _SEPARATOR.split(text.lower()) if t]


def lcs_length(a: list[str], b: list[str]) -> int:
    """The length of the longest common subsequence (one row of the table at a time)."""
    if len(a) < len(b):
        a, b = b, a
    previous = [0] * (len(b) + 1)
    for x in a:
        current = [0]
        for j, y in enumerate(b, 1):
            current.append(previous[j - 1] + 1 if x == y else max(previous[j], current[j - 1]))
        previous = current
    return previous[-1]


def rouge_l(a: str, b: str) -> float:
    """Rouge-L F1 of two texts (symmetric; 0.0 when either has no token)."""
    ta, tb = tokens(a), tokens(b)
    if not ta or not tb:
        return 0.0
    common = lcs_length(ta, tb)
    if not common:
        return 0.0
    precision, recall = common / len(ta), common / len(tb)
    return 2 * precision * recall / (precision + recall)
