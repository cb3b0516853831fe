"""JSON values inside model text: the whole reply, fenced blocks, then balanced `{...}` spans.

Judges and SMoA's moderator are asked for JSON, but models wrap it in code fences or follow it with
prose (with braces of its own), so a greedy `\\{.*\\}` would swallow both. One reader for both.
"""

from __future__ import annotations

import json
import re
from typing import Any

_FENCE_RE = re.compile(r"```(?:json|JSON)?\s*(.*?)```", re.DOTALL)


def json_objects(text: str, brackets: str = "{}") -> list[Any]:
    """Every JSON value found in `text`: the whole text, fenced blocks, then balanced spans of
    `brackets` ("{}" objects, "[]" lists)."""
    found: list[Any] = []
    pieces = [text, *_FENCE_RE.findall(text)]
    pieces += _balanced_spans(text, *brackets)
    for piece in pieces:
        try:
            found.append(json.loads(piece))
        except (json.JSONDecodeError, ValueError):
            continue
    return found


def _balanced_spans(text: str, opener: str = "{", closer: str = "}") -> list[str]:
    """Top-level `{...}` (or `[...]`) spans, skipping brackets inside JSON strings."""
    spans, depth, start, in_str, escaped = [], 0, -1, False, False
    for i, ch in enumerate(text):
        if in_str:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_str = False
        elif ch == '"' and depth:
            in_str = True
        elif ch == opener:
            if depth == 0:
                start = i
            depth += 1
        elif ch == closer and depth:
            depth -= 1
            if depth == 0:
                spans.append(text[start : i + 1])
    return spans
