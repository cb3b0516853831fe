"""What a generation method is: its turn function, its call plan and its config rule, in one value.

Each method module (moaa.engine.moa, self_moa, smoa) defines a `Method` beside its turn function;
`moaa.engine.methods` registers them. The plan says, for one config, which calls one assistant turn
makes (and which a run makes once): the agent, how often, with which prompt and what each call
sends. The engine dispatches on the registry, `calls_per_prompt` adds the plan up, and the dry run
(moaa.work.estimate) sizes each call from the plan's own message builder, so the three agree by
construction; tests/test_methods.py checks every plan against what the engine really sends.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from moaa.config.sft_methods import no_rule

if TYPE_CHECKING:
    from moaa.config import AgentConfig, GenerationConfig
    from moaa.engine.context import PromptRun
    from moaa.prompts import Template

Message = dict[str, str]
# One call's messages from the conversation so far and the reference texts it shows.
Build = Callable[[list[Message], list[str]], list[Message]]
# Answers one assistant turn: (run, conversation so far, turn number) -> the answer's text.
Turn = Callable[["PromptRun", list[Message], int], Awaitable[str]]


@dataclass(frozen=True)
class Step:
    """`calls` alike calls of one agent in one assistant turn (or once per run: `per_run`).

    `label` is where the agent sits in the config (proposers[0], aggregator, smoa.moderator);
    `part` and `template` make the calls' tag; `build` makes one call's messages, given
    `syntheses` running syntheses (sized as this agent's answers) then `references` earlier
    answers; each call asks for `samples` texts (n), so it yields that many answers.
    """

    label: str
    agent: AgentConfig
    part: str
    template: Template
    build: Build
    calls: int = 1
    references: int = 0
    syntheses: int = 0
    samples: int = 1
    per_run: bool = False

    @property
    def answers(self) -> int:
        return self.calls * self.samples


@dataclass(frozen=True)
class Plan:
    """The calls of one assistant turn (and of a run, once); `stops_early` says why a turn may make
    fewer calls than planned ("" when it never does: the counts are then exact, not an upper bound)."""

    steps: tuple[Step, ...]
    stops_early: str = ""


@dataclass(frozen=True)
class Method:
    """A generation method: the name `sft.method` takes, how it answers a turn, and what that costs.

    `check` is the method's own config rule: it raises ValueError("field: what to change") and may
    fill the method's defaults (moa's 3 layers); GenerationConfig runs it when a config loads. A
    built-in's `check` and `aggregator` are the ones moaa.config.sft_methods states (a config loads
    without the engine); registering a Method outside moaa adds its rule there. `aggregator`: the
    method needs `sft.aggregator`.
    """

    name: str
    turn: Turn
    plan: Callable[[GenerationConfig], Plan]
    check: Callable[[GenerationConfig], None] = no_rule
    aggregator: bool = True
