"""Shared by the moaa.sources tests (test_sources.py, test_sources_streaming.py): a source config,
a JSONL file, the texts of a prompt set, chat messages."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from moaa.config import PromptSourceConfig
from moaa.sources import DROP_REASONS

NO_DROPS = dict.fromkeys(DROP_REASONS, 0)


def src(path: Path | str, **kw: Any) -> PromptSourceConfig:
    return PromptSourceConfig(path=str(path), **kw)


def write_jsonl(path: Path, rows: list[Any]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def texts(prompt_set) -> list[str]:
    return [p.messages[-1]["content"] for p in prompt_set.prompts]


def user(text: str) -> dict[str, str]:
    return {"role": "user", "content": text}


def assistant(text: str) -> dict[str, str]:
    return {"role": "assistant", "content": text}
