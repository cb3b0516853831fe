"""Texts compared word by word for the pages: a pair's chosen vs rejected side, and which words of an
aggregate came from which of its inputs.

    chosen, rejected = word_diff("The angle is 80 degrees.", "The angle is 9 degrees.")
    # [("The angle is ", None), ("80 ", "ins"), ("degrees.", None)], [..., ("9 ", "del"), ...]
    spans = borrowed("...", ["proposal one ...", "proposal two ..."])
    # [("text from input 0 ", 0), ("own words ", None), ("shared text ", "shared"), ...]

A segment is (text, tag); the texts of a result joined are the input exactly (whitespace kept).
word_diff aligns the words with difflib's SequenceMatcher (the standard library's diff, as in
`git diff --word-diff`). borrowed marks every run of at least `n` consecutive words (compared
lower-cased, without surrounding punctuation) that also occurs in an input, in any order, by n-gram
lookup; a run found in several inputs is "shared". Words beyond `limit` are left unmarked, so a page
stays fast whatever a model wrote.
"""

from __future__ import annotations

import difflib
import re
import string

Segment = tuple[str, object]  # (text, tag): None, "ins", "del", an input's index, or "shared"
_WORD = re.compile(r"\S+\s*")
LIMIT = 4_000


def _words(text: str) -> tuple[str, list[str]]:
    """(leading whitespace, words each with the whitespace after it)."""
    stripped = text.lstrip()
    return text[: len(text) - len(stripped)], _WORD.findall(stripped)


def _key(word: str) -> str:
    return word.strip().strip(string.punctuation).lower() or word.strip()


def _merge(segments: list[Segment]) -> list[Segment]:
    out: list[Segment] = []
    for text, tag in segments:
        if out and out[-1][1] == tag:
            out[-1] = (out[-1][0] + text, tag)
        elif text:
            out.append((text, tag))
    return out


def word_diff(old: str, new: str, limit: int = LIMIT) -> tuple[list[Segment], list[Segment]]:
    """`old` with the words `new` lacks tagged "del", and `new` with the words `old` lacks tagged "ins"."""
    lead_a, a = _words(old or "")
    lead_b, b = _words(new or "")
    if len(a) > limit or len(b) > limit:
        return [(old or "", None)], [(new or "", None)]
    matcher = difflib.SequenceMatcher(None, [w.strip() for w in a], [w.strip() for w in b], autojunk=False)
    left: list[Segment] = [(lead_a, None)]
    right: list[Segment] = [(lead_b, None)]
    for op, i1, i2, j1, j2 in matcher.get_opcodes():
        same = op == "equal"
        left.append(("".join(a[i1:i2]), None if same else "del"))
        right.append(("".join(b[j1:j2]), None if same else "ins"))
    return _merge(left), _merge(right)


def borrowed(text: str, inputs: list[str], n: int = 4, limit: int = LIMIT) -> list[Segment]:
    """`text` with each run of >= n words found in an input tagged by that input's index ("shared": several)."""
    lead, words = _words(text or "")
    keys = [_key(w) for w in words[:limit]]
    grams: dict[tuple[str, ...], set[int]] = {}
    for index, source in enumerate(inputs):
        found = [_key(w) for w in _words(source or "")[1][:limit]]
        for i in range(len(found) - n + 1):
            grams.setdefault(tuple(found[i : i + n]), set()).add(index)
    owners: list[set[int]] = [set() for _ in words]
    for i in range(len(keys) - n + 1):
        for index in grams.get(tuple(keys[i : i + n]), ()):
            for k in range(i, i + n):
                owners[k].add(index)
    segments: list[Segment] = [(lead, None)]
    for word, found in zip(words, owners, strict=True):
        tag: object = None if not found else next(iter(found)) if len(found) == 1 else "shared"
        segments.append((word, tag))
    return _merge(segments)


def share_of(segments: list[Segment]) -> dict[object, float]:
    """The fraction of the text's characters under each tag (None: its own words)."""
    total = sum(len(text) for text, _ in segments) or 1
    out: dict[object, float] = {}
    for text, tag in segments:
        out[tag] = out.get(tag, 0.0) + len(text) / total
    return out
