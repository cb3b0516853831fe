"""Row types named once. Column names match what TRL reads (`messages`; `prompt`/`chosen`/`rejected`).

- Prompt: an instruction or conversation to answer; assistant turns in it are regenerated.
- SFT row: prompt_id, messages (the conversation with the final answers as assistant turns),
  source, category, method, models.
- Trace row: every intermediate answer or verdict (see TraceStep).
- Failure row: prompt_id, stage, reason, error, transient (a re-run asks the prompt again).
- DPO row: prompt_id, prompt (messages), chosen / rejected (one assistant message each),
  score_chosen, score_rejected, chosen_model, rejected_model.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from typing import Any

Message = dict[str, str]


def prompt_id_of(messages: list[Message]) -> str:
    """A stable id: hash of the conversation's roles and whitespace-normalised texts."""
    canon = [[m["role"], " ".join(str(m.get("content", "")).split())] for m in messages]
    return hashlib.sha256(json.dumps(canon, ensure_ascii=False).encode()).hexdigest()[:16]


@dataclass
class Prompt:
    prompt_id: str
    messages: list[Message]
    source: str = ""
    category: str | None = None

    @classmethod
    def from_messages(cls, messages: list[Message], source: str = "", category: str | None = None) -> Prompt:
        return cls(prompt_id_of(messages), messages, source, category)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class TraceStep:
    """One intermediate call of a prompt: who said what, at which layer/round, and its cost."""

    prompt_id: str
    stage: str  # "sft", "candidates", "judge", ...
    kind: str  # "proposal", "aggregate", "moderator", "sample", "verdict", ...
    text: str
    agent: str = ""
    model: str = ""
    role: str = ""
    turn: int = 0  # which assistant turn of the conversation
    layer: int = 0  # MoA layer / SMoA round / Self-MoA-Seq step
    index: int = 0  # position within the layer
    selected: bool = True  # forwarded to the next layer
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency_s: float = 0.0
    finish_reason: str = ""
    cached: bool = False
    score: float | None = None
    meta: str = ""  # JSON text: rationales, parsed verdicts, moderator output...

    def to_dict(self) -> dict[str, Any]:
        return dict(vars(self))  # flat fields: a shallow copy equals asdict, at a tenth of the cost (hot path)


# Causes no re-ask can fix: the prompt itself, a 400 for its request, a content filter.
PERMANENT_REASONS = ("no_user_turn", "bad_message", "content_filter")


def is_transient(reason: str, error: str = "") -> bool:
    """Whether a failure may pass when asked again: connection, timeout, 5xx, 429, empty or truncated
    answers are; a 400 (`bad_request`), a content filter and a malformed prompt are not."""
    if reason in PERMANENT_REASONS or error.startswith(("bad_request", "content_filter")):
        return False
    return "HTTP 400" not in error and "content filter" not in error


def failure_is_transient(row: dict[str, Any]) -> bool:
    """A written failure row's class (rows written before the column existed are classified now)."""
    value = row.get("transient")
    return bool(value) if value is not None else is_transient(row.get("reason", ""), row.get("error", ""))


@dataclass
class Failure:
    prompt_id: str
    stage: str
    reason: str  # short machine-friendly: "proposers_failed", "aggregator_failed", "truncated", ...
    error: str = ""
    transient: bool | None = None  # None: classified from reason and error (is_transient)

    def __post_init__(self) -> None:
        if self.transient is None:
            self.transient = is_transient(self.reason, self.error)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class SFTRow:
    prompt_id: str
    messages: list[Message]
    source: str
    method: str
    models: list[str] = field(default_factory=list)
    category: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class PreferenceRow:
    prompt_id: str
    prompt: list[Message]
    chosen: list[Message]
    rejected: list[Message]
    score_chosen: float
    score_rejected: float
    chosen_model: str
    rejected_model: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def trace_meta(step: dict[str, Any]) -> dict[str, Any]:
    """A trace row's `meta` JSON as a dict ({} when absent, unreadable or not an object)."""
    try:
        meta = json.loads(step.get("meta") or "{}")
    except json.JSONDecodeError:
        return {}
    return meta if isinstance(meta, dict) else {}
