"""Prompt sources: read instructions from a file or Hugging Face data set, normalise, filter, sample.

    from moaa.config import PromptSourceConfig
    from moaa.sources import load_prompts
    prompt_set = load_prompts(PromptSourceConfig(path="configs/prompts/default.jsonl"))

Filters run in this order, each drop counted by reason: empty (no user text), too_short / too_long
(characters of the user turns), duplicate (same normalised conversation), near_duplicate (MiniLM
cosine >= near_dedup_threshold against an earlier kept prompt), sampled_out (beyond `limit`).
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from moaa.config import PromptSourceConfig
from moaa.errors import InputError
from moaa.rows import Message, Prompt, prompt_id_of
from moaa.sources.conversations import check_columns, row_messages
from moaa.sources.filters import (
    dedup_key,
    drop_exact_duplicates,
    drop_near_duplicates,
    sample_stable,
    user_chars,
    user_text,
)
from moaa.sources.readers import read_rows

__all__ = ["DROP_REASONS", "PromptSet", "load_prompts"]

log = logging.getLogger(__name__)

DROP_REASONS = ("empty", "too_short", "too_long", "duplicate", "near_duplicate", "sampled_out")


@dataclass
class PromptSet:
    """The prompts to answer, and how they were obtained (for the data set manifest)."""

    prompts: list[Prompt]
    dropped: dict[str, int]  # reason -> count, every reason in DROP_REASONS present
    total_read: int  # rows read from the source
    fingerprint: str  # sha256 of the source data and the filter settings
    source: str  # the file name or hub id, also in each Prompt.source


@dataclass
class _Item:
    where: str
    row: dict[str, Any]
    messages: list[Message]


def load_prompts(cfg: PromptSourceConfig, base_dir: Path | None = None) -> PromptSet:
    """Prompts from `cfg.path` or `cfg.hf_dataset` (relative paths resolved against `base_dir`)."""
    raw = read_rows(cfg, base_dir)
    found = set().union(*(row.keys() for _, row in raw.rows))
    check_columns(cfg, found, raw.origin)
    dropped = dict.fromkeys(DROP_REASONS, 0)
    items = []
    for where, row in raw.rows:
        messages = row_messages(row, where, cfg)
        reason = _drop_reason(messages, cfg)
        if reason:
            dropped[reason] += 1
        else:
            items.append(_Item(where, row, messages))
    if cfg.dedup:
        items, dropped["duplicate"] = drop_exact_duplicates(items, lambda it: dedup_key(it.messages))
    if cfg.near_dedup_threshold is not None:
        items, dropped["near_duplicate"] = drop_near_duplicates(
            items, lambda it: user_text(it.messages), cfg.near_dedup_threshold
        )
    items, dropped["sampled_out"] = sample_stable(items, cfg.limit, cfg.seed)
    prompts = _to_prompts(items, cfg, raw.label)
    log.info(
        "%s: read %d rows, kept %d prompts, dropped %s",
        raw.label,
        len(raw.rows),
        len(prompts),
        {k: v for k, v in dropped.items() if v} or "none",
    )
    return PromptSet(prompts, dropped, len(raw.rows), _fingerprint(raw.digest, raw.label, cfg), raw.label)


def _drop_reason(messages: list[Message], cfg: PromptSourceConfig) -> str:
    """Why a conversation is dropped before de-duplication ("" to keep it)."""
    if not messages:
        return "empty"
    size = user_chars(messages)
    return "too_short" if size < cfg.min_chars else "too_long" if size > cfg.max_chars else ""


def _to_prompts(items: list[_Item], cfg: PromptSourceConfig, source: str) -> list[Prompt]:
    prompts = []
    first_seen: dict[str, str] = {}
    repeats: Counter[str] = Counter()
    for item in items:
        category = item.row.get("category")
        category = None if category is None else str(category)
        if cfg.id_column:
            prompt_id = _given_id(item, cfg.id_column)
            if prompt_id in first_seen:
                raise InputError(
                    f"{item.where}: duplicate id '{prompt_id}' (first at {first_seen[prompt_id]}); "
                    f"ids in column '{cfg.id_column}' must be unique"
                )
        else:
            prompt_id = prompt_id_of(item.messages)
            # Only with dedup off can two prompts hash alike; keep ids unique for shards and caches.
            repeats[prompt_id] += 1
            if repeats[prompt_id] > 1:
                prompt_id = f"{prompt_id}-{repeats[prompt_id]}"
        first_seen[prompt_id] = item.where
        prompts.append(Prompt(prompt_id, item.messages, source, category))
    return prompts


def _given_id(item: _Item, column: str) -> str:
    value = item.row.get(column)
    if value is None or str(value).strip() == "":
        raise InputError(
            f"{item.where}: empty id in column '{column}'; give every row an id or unset prompts.id_column"
        )
    return str(value).strip()


def _fingerprint(digest: str, label: str, cfg: PromptSourceConfig) -> str:
    settings = cfg.model_dump(mode="json", exclude={"path", "hf_dataset"})
    blob = json.dumps({"data": digest, "source": label, "settings": settings}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()
