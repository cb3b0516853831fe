"""What a check reads from an answer: its fenced code blocks, its SQL query.

An answer is markdown: code sits in fenced blocks (```python ... ```). The blocks of the tests'
language (or with no language named) are joined in order, so a function and the example below it
run together; a Python block that does not parse (a shell transcript, `>>>` prompts) is left out.
An answer with no fenced block counts as code only when all of it parses.
"""

from __future__ import annotations

import ast
import re

FENCE_RE = re.compile(r"^[ \t]*(```+|~~~+)[ \t]*([\w+#.-]*)[^\n]*\n(.*?)^[ \t]*\1[ \t]*$", re.DOTALL | re.MULTILINE)
LANGUAGES = {
    "python": ("python", "py", "python3", "py3"),
    "javascript": ("javascript", "js", "node", "nodejs", "jsx", "mjs", "typescript", "ts"),
    "sql": ("sql", "sqlite", "postgresql", "postgres", "mysql", "psql"),
}
_THINK_RE = re.compile(r"<think>.*?</think>", re.DOTALL)


def fenced_blocks(text: str) -> list[tuple[str, str]]:
    """(language, code) of every fenced block, in order; language lower-cased, "" when none is named."""
    return [(m.group(2).lower(), m.group(3)) for m in FENCE_RE.finditer(strip_thinking(text))]


def strip_thinking(text: str) -> str:
    """The answer without a reasoning model's <think> blocks (what the user reads)."""
    return _THINK_RE.sub("", text)


def code_of(text: str, language: str) -> str | None:
    """The answer's code in `language` (python or javascript), or None when it has none."""
    names = LANGUAGES[language]
    blocks = [code for lang, code in fenced_blocks(text) if lang in names or not lang]
    if language == "python":
        blocks = [code for code in blocks if _parses(code)]
    if blocks:
        return "\n\n".join(block.rstrip() for block in blocks) + "\n"
    bare = strip_thinking(text).strip()
    if language == "python" and bare and _parses(bare) and not _is_prose(bare):
        return bare + "\n"
    return None


def sql_of(text: str) -> str | None:
    """The answer's query: its last SQL block (a fix after a first try), else a bare SELECT/WITH answer."""
    names = LANGUAGES["sql"]
    blocks = [code for lang, code in fenced_blocks(text) if lang in names]
    blocks = blocks or [code for lang, code in fenced_blocks(text) if not lang and _looks_like_query(code)]
    if blocks:
        return blocks[-1].strip()
    bare = strip_thinking(text).strip()
    return bare if _looks_like_query(bare) and "\n\n" not in bare else None


def _looks_like_query(text: str) -> bool:
    return bool(re.match(r"(?is)^\s*(select|with)\b", text))


def _parses(code: str) -> bool:
    try:
        ast.parse(code)
    except (SyntaxError, ValueError):
        return False
    return True


def _is_prose(text: str) -> bool:
    """A sentence that happens to parse (a bare name, `Hello`) is not code."""
    tree = ast.parse(text)
    return all(isinstance(node, ast.Expr) and isinstance(node.value, (ast.Name, ast.Constant)) for node in tree.body)
