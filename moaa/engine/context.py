"""The per-prompt machinery every generation method shares: one model call, traced and accounted.

`PromptRun.ask` is the only place the engine calls a client. It derives the call's seed, builds its
tag, records one TraceStep per returned text (and one for a call that failed), and turns failed
calls and empty texts into dropped answers rather than exceptions. `EndpointError` is not caught:
it stops the run.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from moaa.client import CallError, ChatClient, Completion, Message
from moaa.config import AgentConfig, GenerationConfig, Sampling
from moaa.errors import ConfigError
from moaa.prompts import Template
from moaa.rows import Failure, Prompt, SFTRow, TraceStep

log = logging.getLogger(__name__)

_SAMPLING_FIELDS = tuple(Sampling.model_fields)
Embedder = Callable[[list[str]], Any]  # texts -> (n, d) array of L2-normalised rows


class PromptFailed(Exception):
    """A prompt that cannot be answered; becomes a Failure row."""

    def __init__(self, reason: str, error: str = ""):
        super().__init__(f"{reason}: {error}")
        self.reason = reason
        self.error = error


@dataclass
class Answer:
    """One surviving text and the trace step that recorded it (to mark it selected or not)."""

    text: str
    step: TraceStep


@dataclass
class PromptResult:
    """Everything one prompt produced: the row or the failure, the trace, and its cost.

    `calls` counts `client.chat` invocations (failed ones included; an n=K call is one call);
    `counters` holds what was dropped: failed_calls, empty_answers, filtered_answers,
    moderator_parse_failures, moderator_invalid_choices, moderator_failures, and the quality gates'
    gate_scaffolding, gate_verbatim_copy, gate_reasks, gate_dropped (moaa.engine.quality).
    """

    prompt: Prompt
    row: SFTRow | None
    trace: list[TraceStep]
    failure: Failure | None
    calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    counters: dict[str, int] = field(default_factory=dict)


def derive_seed(*parts: object) -> int:
    """A stable 31-bit seed from the parts (prompt id, turn, layer, agent, sample)."""
    digest = hashlib.blake2b("|".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") & 0x7FFFFFFF


def sampling_of(agent: AgentConfig, seed: int | None) -> Sampling:
    values = {k: getattr(agent, k) for k in _SAMPLING_FIELDS}
    values["seed"] = seed
    return Sampling.model_construct(**values)


# A grammar-constrained rationale may otherwise run on until max_tokens cuts the verdict off.
LOCAL_RATIONALE_CHARS = 240


def json_format(client: ChatClient, name: str, schema: dict[str, Any]) -> dict[str, Any] | None:
    """The response_format that carries `schema` to the client's endpoint (its own shape), else None."""
    endpoint = getattr(client, "endpoint", None) or getattr(getattr(client, "inner", None), "endpoint", None)
    if endpoint is None or not getattr(endpoint, "json_schema", False):
        return None
    if getattr(endpoint, "json_schema_style", "openai") == "llama.cpp":
        return {"type": "json_object", "schema": bounded_rationales(schema, LOCAL_RATIONALE_CHARS)}
    return {"type": "json_schema", "json_schema": {"name": name, "schema": schema, "strict": True}}


def bounded_rationales(schema: Any, max_chars: int) -> Any:
    """A copy of `schema` whose "rationale" strings have a maxLength (llama.cpp's grammar honours it)."""
    if isinstance(schema, list):
        return [bounded_rationales(v, max_chars) for v in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: bounded_rationales(v, max_chars) for k, v in schema.items()}
    props = out.get("properties")
    if isinstance(props, dict) and isinstance(props.get("rationale"), dict):
        props["rationale"] = props["rationale"] | {"maxLength": max_chars}
    return out


class PromptRun:
    """State of one prompt being answered: its trace, counters, tokens and models used."""

    def __init__(
        self,
        prompt: Prompt,
        gen: GenerationConfig,
        clients: dict[str, ChatClient],
        stage: str,
        roles: list[str] | None,
        embed: Embedder | None,
    ):
        self.prompt = prompt
        self.gen = gen
        self.clients = clients
        self.stage = stage
        self.roles = roles
        self.embed = embed
        # One slot per call, in the order calls start: concurrent calls finish in any order, but the
        # trace and the models list must not depend on it (same config, same data set).
        self._steps: list[list[TraceStep]] = []
        self._models: list[str] = []
        self.counters: Counter[str] = Counter()
        self.calls = self.prompt_tokens = self.completion_tokens = 0
        self.last_error = ""

    @property
    def trace(self) -> list[TraceStep]:
        return [step for steps in self._steps for step in steps]

    @property
    def models(self) -> list[str]:
        """The models that answered, each once, in call order."""
        return list(dict.fromkeys(m for m in self._models if m))

    def client(self, agent: AgentConfig) -> ChatClient:
        try:
            return self.clients[agent.endpoint]
        except KeyError:
            raise ConfigError(
                f"sft: agent uses endpoint '{agent.endpoint}' but no client was built for it "
                f"(clients: {', '.join(sorted(self.clients)) or 'none'})"
            ) from None

    def seed(self, agent: AgentConfig, turn: int, layer: int, who: str, sample: int = 0) -> int:
        if agent.seed is not None:
            return agent.seed
        return derive_seed(self.prompt.prompt_id, turn, layer, who, sample)

    def rng(self, *parts: object) -> random.Random:
        return random.Random(derive_seed(self.prompt.prompt_id, *parts))

    async def ask(
        self,
        agent: AgentConfig,
        who: str,
        part: str,
        template: Template,
        messages: list[Message],
        *,
        kind: str,
        turn: int,
        layer: int,
        index: int = 0,
        role: str | None = None,
        n: int = 1,
        response_format: dict[str, Any] | None = None,
    ) -> list[Answer]:
        """Call `agent`; one Answer per non-empty text (failed calls and empty texts are dropped)."""
        client = self.client(agent)
        sampling = sampling_of(agent, self.seed(agent, turn, layer, who))
        self.calls += 1
        slot = len(self._steps)
        self._steps.append([])
        self._models.append("")
        try:
            done = await client.chat(
                messages, sampling, n=n, response_format=response_format, tag=template.tag(self.stage, part)
            )
        except CallError as exc:
            self.counters["failed_calls"] += 1
            self.last_error = str(exc)
            self._steps[slot].append(
                self._step(
                    agent,
                    who,
                    kind,
                    "",
                    turn,
                    layer,
                    index,
                    role,
                    selected=False,
                    finish_reason="error",
                    meta=json.dumps({"error": str(exc)}),
                )
            )
            return []
        return self._record(slot, done, agent, who, kind, turn, layer, index, role)

    def _record(self, slot: int, done: Completion, agent, who, kind, turn, layer, index, role) -> list[Answer]:
        self.prompt_tokens += done.prompt_tokens
        self.completion_tokens += done.completion_tokens
        self._models[slot] = done.model
        answers = []
        total_chars = sum(len(t) for t in done.texts) or 1
        left = done.completion_tokens
        for i, (text, reason) in enumerate(zip(done.texts, done.finish_reasons, strict=True)):
            # n>1 replies report usage per call: share the completion tokens out by length.
            tokens = left if i == len(done.texts) - 1 else round(done.completion_tokens * len(text) / total_chars)
            left -= tokens
            empty = not text.strip()
            step = self._step(
                agent,
                who,
                kind,
                text,
                turn,
                layer,
                index + i,
                role,
                selected=not empty,
                prompt_tokens=done.prompt_tokens if i == 0 else 0,
                completion_tokens=tokens,
                latency_s=done.latency_s,
                finish_reason=reason,
                cached=done.cached,
                model=done.model,
            )
            self._steps[slot].append(step)
            if empty:
                self.counters["empty_answers"] += 1
                self.last_error = f"empty answer from {who} ({done.model})"
            else:
                answers.append(Answer(text, step))
        return answers

    def _step(self, agent, who, kind, text, turn, layer, index, role, *, model: str = "", **extra) -> TraceStep:
        return TraceStep(
            prompt_id=self.prompt.prompt_id,
            stage=self.stage,
            kind=kind,
            text=text,
            agent=agent.name or who,
            model=model or self.client(agent).model,
            role=role or "",
            turn=turn,
            layer=layer,
            index=index,
            **extra,
        )

    def fail(self, reason: str, fallback: str) -> PromptFailed:
        return PromptFailed(reason, self.last_error or fallback)

    def result(self, row: SFTRow | None = None, failure: Failure | None = None) -> PromptResult:
        return PromptResult(
            self.prompt,
            row,
            self.trace,
            failure,
            self.calls,
            self.prompt_tokens,
            self.completion_tokens,
            dict(self.counters),
        )
