"""The SFT stage's config: how answers are written (the generation method, its agents, its settings,
the quality gates), and each method's own config rule.

A method's rule is the name `sft.method` takes, its `check` (raises ValueError("field: what to change")
and may fill the method's defaults: moa's 3 layers) and whether it needs `sft.aggregator`.
GenerationConfig checks them when a config loads, from `METHODS`, without importing the engine:

    METHODS["moa"].check(gen)     # fills moa's default 3 layers; ValueError("layers: ...") when < 2

The built-in methods' rules are stated here, once; each method's turn function and call plan live in
its engine module (moaa.engine.moa, self_moa, smoa), whose `Method` carries the same rule. The engine's
registry (moaa.engine.methods.REGISTRY) is this very dict: registering a new method there makes its
name and rule known to the config too.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from pydantic import Field, field_validator, model_validator

from moaa.config.endpoints import AgentConfig, Strict
from moaa.config.verify import SFTVerifyConfig


class SelfMoAConfig(Strict):
    """Self-MoA: one model sampled several times, its answers aggregated."""

    samples: int = Field(6, ge=1, description="answers sampled from the one proposer per prompt (the paper's 6)")


class SeqConfig(Strict):
    samples: int = Field(12, ge=1, description="answers sampled from the one proposer per prompt")
    window: int = Field(6, ge=2, description="answers the aggregator reads per step (new ones + the running synthesis)")
    new_per_step: int = Field(3, ge=1, description="fresh samples entering the window at each step")
    repeats: int = Field(1, ge=1, description="how often the running synthesis appears in the window")

    @model_validator(mode="after")
    def _fits(self) -> SeqConfig:
        if self.new_per_step + self.repeats > self.window:
            raise ValueError("new_per_step + repeats must not exceed window")
        return self


class SMoAConfig(Strict):
    rounds: int = Field(2, ge=1, description="proposer rounds before the final aggregation")
    k: int = Field(2, ge=1, description="answers the moderator selects each round for the next (at most the proposers)")
    moderator: AgentConfig | None = Field(
        None, description="the agent that selects answers and decides an early stop; unset: the aggregator"
    )
    early_stop: bool = Field(True, description="honour the moderator's stop flag, which ends the rounds early")
    roles: list[str] | None = Field(
        None, description="role descriptions given to the proposers in turn; unset: generated once per run"
    )
    task: str | None = Field(
        None,
        description="what the prompts ask for, given to the role generator (SMoA builds roles from each "
        "data set's task description); unset: described by a few of the run's own prompts",
    )
    role_generator: AgentConfig | None = Field(
        None, description="the agent that writes the proposers' roles when roles is unset; unset: the aggregator"
    )


class QualityConfig(Strict):
    """Gates on every aggregate before it becomes data (ALGORITHMS.md section 8; moaa.engine.quality)."""

    scaffolding: bool = Field(
        True,
        description="reject an aggregate that pastes the prompt's scaffolding back: 'Response N:' headings or "
        "the aggregation template's own phrases",
    )
    verbatim_copy: bool = Field(
        True,
        description="reject an aggregate that is one of its (two or more) references, word for word, when the "
        "others say something else; a copy of what most references agree on (two or more, no other text given "
        "by more), or of Self-MoA-Seq's running synthesis, is kept",
    )
    reasks: int = Field(
        1,
        ge=0,
        description="times a rejected aggregate is asked again (shown its answer and what was wrong) before the "
        "prompt fails with reason quality_scaffolding or quality_verbatim_copy; 0 drops it at once",
    )


class GenerationConfig(Strict):
    """The SFT stage: how answers are written (see ALGORITHMS.md sections 1-5)."""

    method: str = Field(
        "moa",
        description="how answers are written: single (one model), moa (layers of proposers, then the aggregator), "
        "moa-lite (2 layers), self-moa (samples of one model, aggregated), self-moa-seq (a sliding window over "
        "many samples), smoa (role-played proposers; a moderator keeps k per round), or a method registered in "
        "moaa.engine.methods",
    )
    layers: int | None = Field(
        None,
        description="moa: how many layers, the last one the aggregator (default 3, the paper's); moa-lite is "
        "always 2; other methods have no layers",
    )
    proposers: list[AgentConfig] = Field(
        default_factory=list, description="the agents that answer each prompt (at least one; self-moa uses the first)"
    )
    aggregator: AgentConfig | None = Field(
        None, description="the agent that writes the final answer from the references; every method but single"
    )
    min_answers: int | None = Field(
        None,
        ge=1,
        description="fewest answers a proposer layer (or Self-MoA's samples) needs, else the prompt fails "
        "(proposers_failed, transient: a re-run asks again); unset: every one asked, so a mixture never quietly "
        "narrows. Lower it to keep rows made by fewer (capped at those asked): each is counted as `degraded` in "
        "the summary and card, and its final trace step says how many answered",
    )
    shuffle_references: bool = Field(
        False, description="shuffle the references (seeded per prompt) before the aggregator reads them"
    )
    cluster_filter: bool = Field(
        False, description="Cluster & Filter defense: keep the larger cluster of answers before aggregating"
    )
    self_moa: SelfMoAConfig = Field(SelfMoAConfig(), description="settings of method self-moa")
    seq: SeqConfig = Field(SeqConfig(), description="settings of method self-moa-seq")
    smoa: SMoAConfig = Field(SMoAConfig(), description="settings of method smoa")
    quality: QualityConfig = Field(QualityConfig(), description="gates every aggregate passes before it becomes data")
    verify: SFTVerifyConfig = Field(
        SFTVerifyConfig(),
        description="where a prompt carries a reference, what becomes of an answer that fails it (require, keep "
        "or off; `sft.verify: keep` is short for `sft.verify.mode: keep`)",
    )

    @field_validator("method")
    @classmethod
    def _registered(cls, name: str) -> str:
        rule_of(name)
        return name

    @model_validator(mode="after")
    def _shape(self) -> GenerationConfig:
        if not self.proposers:
            raise ValueError("at least one proposer is required")
        check_generation(self)  # each method states its own rules (and defaults) once, beside its turn
        return self


# ---------------------------------------------------------------- each method's config rule


def no_rule(gen: GenerationConfig) -> None:
    """A method whose config needs nothing beyond the common rules."""


@dataclass(frozen=True)
class MethodRule:
    """A method's config rule: `check` raises ValueError("field: what to change") and may fill the
    method's defaults (moa's 3 layers); `aggregator`: the method needs `sft.aggregator`."""

    name: str
    check: Callable[[GenerationConfig], None] = no_rule
    aggregator: bool = True


class Rule(Protocol):
    """What GenerationConfig reads of a method: a MethodRule here, or the engine's Method."""

    @property
    def name(self) -> str: ...
    @property
    def check(self) -> Callable[[GenerationConfig], None]: ...
    @property
    def aggregator(self) -> bool: ...


# name -> MethodRule (a built-in the engine has not registered yet) or the engine's Method, which
# carries the same `check` and `aggregator` (moaa.engine.methods.register keeps them equal).
METHODS: dict[str, Rule] = {}


def rule_of(name: str) -> Rule:
    """The rule (or registered method) named `name`; ValueError naming the known ones otherwise."""
    try:
        return METHODS[name]
    except KeyError:
        names = [repr(n) for n in METHODS]
        raise ValueError(f"Input should be {', '.join(names[:-1])} or {names[-1]}") from None


def check_generation(gen: GenerationConfig) -> None:
    """The method's own config rules (GenerationConfig runs this when a config loads)."""
    rule = rule_of(gen.method)
    if rule.aggregator and gen.aggregator is None:
        raise ValueError(f"method '{gen.method}' needs an aggregator")
    rule.check(gen)


MOA_LAYERS = 3  # the paper's default shape


def check_moa(gen: GenerationConfig) -> None:
    if gen.layers is None:
        gen.layers = MOA_LAYERS
    elif gen.layers < 2:
        raise ValueError(f"layers: method 'moa' needs layers >= 2 (got {gen.layers}); use method single for one model")


def check_moa_lite(gen: GenerationConfig) -> None:
    if gen.layers not in (None, 2):
        raise ValueError(
            f"layers: method 'moa-lite' always has 2 layers (got {gen.layers}); remove sft.layers or use method moa"
        )
    gen.layers = 2


def check_smoa(gen: GenerationConfig) -> None:
    if gen.smoa.k > len(gen.proposers):
        raise ValueError(
            f"smoa.k: the moderator picks {gen.smoa.k} of {len(gen.proposers)} proposers' answers; "
            f"set smoa.k to at most {len(gen.proposers)} or add proposers"
        )


# In the engine's module order (moaa.engine.moa, self_moa, smoa), the order `sft.method`'s error lists them.
for _rule in (
    MethodRule("single", aggregator=False),
    MethodRule("moa", check_moa),
    MethodRule("moa-lite", check_moa_lite),
    MethodRule("self-moa"),
    MethodRule("self-moa-seq"),
    MethodRule("smoa", check_smoa),
):
    METHODS[_rule.name] = _rule
