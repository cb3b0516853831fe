"""The per-prompt machinery every generation method shares: one model call, traced and accounted.

`PromptRun.ask` is the only place the engine calls a client. It derives the call's seed, builds its
tag, records one TraceStep per returned text (and one for a call that failed), and turns failed
calls and empty texts into dropped answers rather than exceptions. `EndpointError` is not caught:
it stops the run.
"""

from __future__ import annotations

import json
import logging
import random
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from moaa.config import AgentConfig, AnswersConfig, GenerationConfig, Sampling
from moaa.models.agent_calls import (
    client_for,
    derive_seed,
    larger_budget,
    sampling_for,
    split_tokens,
)
from moaa.models.client import CallError, ChatClient, Completion, Message
from moaa.prompts import Template
from moaa.rows import Failure, Prompt, SFTRow, TraceStep

log = logging.getLogger(__name__)

Embedder = Callable[[list[str]], Any]  # texts -> (n, d) array of L2-normalised rows


class PromptFailed(Exception):
    """A prompt that cannot be answered; becomes a Failure row (`transient`: a re-run asks again)."""

    def __init__(self, reason: str, error: str = "", transient: bool = False):
        super().__init__(f"{reason}: {error}")
        self.reason = reason
        self.error = error
        self.transient = transient


@dataclass
class Answer:
    """One surviving text and the trace step that recorded it (to mark it selected or not)."""

    text: str
    step: TraceStep


@dataclass(frozen=True)
class Call:
    """Where one model call sits in a prompt's answer: who makes it, with which prompt, and what it yields.

    `who` names the agent in seeds and the trace (proposer0, aggregator, moderator; a re-ask gets its
    own); `part` and `template` make the call's tag (`sft.proposer.propose@v1`); `kind` is the trace
    step's kind (answer, proposal, sample, aggregate, synthesis, moderator); `index` is the first
    trace index of its texts; `final`: the text becomes the row's answer.
    """

    agent: AgentConfig
    who: str
    part: str
    template: Template
    kind: str
    turn: int
    layer: int
    index: int = 0
    role: str | None = None
    n: int = 1
    response_format: dict[str, Any] | None = None
    final: bool = False


@dataclass
class PromptResult:
    """Everything one prompt produced: the row or the failure, the trace, and its cost.

    `calls` counts `client.chat` invocations (failed ones included; an n=K call is one call);
    `counters` holds what was dropped: failed_calls, empty_answers, filtered_answers,
    moderator_parse_failures, moderator_invalid_choices, moderator_failures; the quality gates'
    gate_scaffolding, gate_verbatim_copy, gate_reasks, gate_dropped (moaa.engine.quality); and answers
    cut at max_tokens: truncated_dropped, truncated_reasked, truncated_kept (final answers, per
    `answers.truncated`), truncated_references (proposals and running syntheses, always kept),
    content_filtered (dropped); degraded (1 for a row made by fewer answers than a layer asked,
    min_answers allowing it) and degraded_layers.
    """

    prompt: Prompt
    row: SFTRow | None
    trace: list[TraceStep]
    failure: Failure | None
    calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    counters: dict[str, int] = field(default_factory=dict)


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
        answers: AnswersConfig | None = None,
    ):
        self.prompt = prompt
        self.gen = gen
        self.answers = answers or AnswersConfig()
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
        self.last_transient = True  # the class of last_error (a 400 or a content filter is not)
        self.last_truncated = False  # last_error is a final answer cut at max_tokens
        self._last_tokens = 256  # the last cut answer's length: the budget to double when none was set
        # Layers answered by fewer than asked (min_answers allowed it): "layer 1: 2 of 3 proposers answered"
        self.degraded: list[str] = []
        # The last call whose text became the answer (with its messages and text): sft.verify re-asks it.
        self.final_call: tuple[Call, list[Message]] | None = None
        self.final_text: str | None = None
        self.verification: dict[str, Any] | None = None  # the row's `verification` (moaa.engine.verification)

    @property
    def trace(self) -> list[TraceStep]:
        return [step for steps in self._steps for step in steps]

    @property
    def final_turn(self) -> int:
        """The turn of the prompt's final answer (its last assistant turn)."""
        if self.final_call is not None:
            return self.final_call[0].turn
        return max((step.turn for step in self.trace), default=0)

    def record(self, step: TraceStep) -> None:
        """A trace step that is no model call (a verdict), in the order it happened."""
        self._steps.append([step])
        self._models.append("")

    @property
    def models(self) -> list[str]:
        """The models that answered, each once, in call order."""
        return list(dict.fromkeys(m for m in self._models if m))

    def client(self, agent: AgentConfig) -> ChatClient:
        return client_for(agent, self.clients, "sft")

    def seed(self, agent: AgentConfig, turn: int, layer: int, who: str, sample: int = 0) -> int:
        if agent.seed is not None:
            return agent.seed
        return derive_seed(self.prompt.prompt_id, turn, layer, who, sample)

    def rng(self, *parts: object) -> random.Random:
        return random.Random(derive_seed(self.prompt.prompt_id, *parts))

    async def ask(self, call: Call, messages: list[Message]) -> list[Answer]:
        """Make `call` with `messages`; one Answer per non-empty text (failed calls and empty texts are dropped).

        A `final` text becomes the row's answer, so one cut at max_tokens follows
        `answers.truncated` (dropped, re-asked with a larger budget, or kept); other texts are
        references and are kept when cut, counted as truncated_references."""
        agent = call.agent
        sampling = sampling_for(agent, self.seed(agent, call.turn, call.layer, call.who))
        while True:
            got = await self._ask_once(call, messages, sampling)
            budget = self._larger_budget(agent, sampling) if got is None else None
            if budget is None:
                if call.final and got:
                    self.final_call, self.final_text = (call, messages), got[0].text
                return got or []
            self.counters["truncated_reasked"] += 1
            sampling = sampling.model_copy(update={"max_tokens": budget})

    def _larger_budget(self, agent: AgentConfig, sampling: Sampling) -> int | None:
        if self.answers.truncated != "reask":
            return None
        return larger_budget(self.client(agent), sampling, self._last_tokens, self.answers.reask_max_tokens)

    async def _ask_once(self, call: Call, messages: list[Message], sampling: Sampling) -> list[Answer] | None:
        """One call; None when its final answer was cut and `answers.truncated` is reask."""
        client = self.client(call.agent)
        self.calls += 1
        slot = len(self._steps)
        self._steps.append([])
        self._models.append("")
        try:
            done = await client.chat(
                messages,
                sampling,
                n=call.n,
                response_format=call.response_format,
                tag=call.template.tag(self.stage, call.part),
            )
        except CallError as exc:
            self.counters["failed_calls"] += 1
            self.last_error, self.last_transient, self.last_truncated = str(exc), exc.transient, False
            meta = json.dumps({"error": str(exc)})
            self._steps[slot].append(self._step(call, "", 0, selected=False, finish_reason="error", meta=meta))
            return []
        return self._record(slot, done, call, sampling.max_tokens)

    def _record(self, slot: int, done: Completion, call: Call, budget: int | None) -> list[Answer] | None:
        self.prompt_tokens += done.prompt_tokens
        self.completion_tokens += done.completion_tokens
        self._models[slot] = done.model
        answers = []
        shares = split_tokens(done.completion_tokens, done.texts)  # n>1 replies report usage per call
        who = call.who
        for i, (text, reason, tokens) in enumerate(zip(done.texts, done.finish_reasons, shares, strict=True)):
            empty = not text.strip()
            cut = reason == "length" and call.final
            drop = empty or reason == "content_filter" or (cut and not self._keep_cut())
            step = self._step(
                call,
                text,
                i,
                selected=not drop,
                prompt_tokens=done.prompt_tokens if i == 0 else 0,
                completion_tokens=tokens,
                latency_s=done.latency_s,
                finish_reason=reason,
                cached=done.cached,
                model=done.model,
                meta=self._meta(call, done.reasoning[i] if done.reasoning else ""),
            )
            self._steps[slot].append(step)
            if reason == "content_filter":  # before `empty`: a filtered answer is often empty, and it is permanent
                self.counters["content_filtered"] += 1
                self._dropped(f"content_filter: the provider's content filter stopped {who}'s answer ({done.model})",
                              transient=False)  # fmt: skip
            elif empty:
                self.counters["empty_answers"] += 1
                self._dropped(f"empty answer from {who} ({done.model})", transient=True)
            elif cut and drop:
                self._last_tokens = max(tokens, 1)
                if self.answers.truncated == "reask" and self._larger_budget(call.agent, Sampling(max_tokens=budget)):
                    return None  # asked again with a larger budget
                self.counters["truncated_dropped"] += 1
                limit = f"max_tokens {budget}" if budget else f"{tokens} tokens"
                place = f"layer {call.layer}, endpoint {call.agent.endpoint}, {done.model}"
                where = f"{self.stage} {call.kind} of {who} ({place})"
                self._dropped(f"{where}: answer cut at {limit}", transient=True, truncated=True)
            else:
                if reason == "length":
                    self.counters["truncated_kept" if call.final else "truncated_references"] += 1
                answers.append(Answer(text, step))
        return answers

    def _meta(self, call: Call, reasoning: str) -> str:
        """A step's meta: its reasoning, and on a final answer the layers that had fewer answers than asked."""
        meta: dict[str, Any] = {"reasoning": reasoning} if reasoning else {}
        if call.final and self.degraded:
            meta["degraded"] = list(self.degraded)
        return json.dumps(meta) if meta else ""

    def _keep_cut(self) -> bool:
        return self.answers.truncated == "keep"

    def _dropped(self, error: str, *, transient: bool, truncated: bool = False) -> None:
        self.last_error, self.last_transient, self.last_truncated = error, transient, truncated

    def _step(self, call: Call, text: str, offset: int, *, model: str = "", **extra: Any) -> TraceStep:
        """The trace step of the call's text number `offset` (its index: the call's index + offset)."""
        return TraceStep(
            prompt_id=self.prompt.prompt_id,
            stage=self.stage,
            kind=call.kind,
            text=text,
            agent=call.agent.name or call.who,
            model=model or self.client(call.agent).model,
            role=call.role or "",
            turn=call.turn,
            layer=call.layer,
            index=call.index + offset,
            **extra,
        )

    def note_width(self, where: str, got: int, asked: int, what: str) -> None:
        """Record a layer that went on with fewer answers than asked (min_answers allowed it): the
        row is then `degraded` (counted once per prompt) and its final trace step says so."""
        if got < asked:
            self.counters["degraded_layers"] += 1
            self.degraded.append(f"{where}: {got} of {asked} {what}")

    def fail(self, reason: str, fallback: str) -> PromptFailed:
        """The prompt's failure, named by its last dropped answer: `truncated` when that was cut."""
        if not self.last_error:
            return PromptFailed(reason, fallback, transient=True)
        return PromptFailed("truncated" if self.last_truncated else reason, self.last_error, self.last_transient)

    def result(self, row: SFTRow | None = None, failure: Failure | None = None) -> PromptResult:
        if row is not None and self.degraded:
            self.counters["degraded"] = 1  # a row made by fewer proposers (or samples) than configured
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
