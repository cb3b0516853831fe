"""The preference stage's candidate pool: which agents answer each prompt, and how pairs are drawn.

`preference.policy` + `samples` is the short form of a pool of one agent (label `policy`);
`preference.candidates` lists several, each with its own samples (UltraFeedback's four models);
`include_sft_answer` adds the mixture's own SFT answer (label `mixture`). `pairing` says which
candidates may face each other: best vs worst of the pool (MoAA, UltraFeedback), one side always
from one agent (Tulu 3's on-policy pairs), or the stronger agent's answer over the weaker's
(delta learning). The rules on their shape live in PreferenceConfig's validator (moaa.config.models).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import Field, model_validator

from moaa.config.endpoints import AgentConfig, Strict

MIXTURE = "mixture"  # the label of the SFT answer in the pool (include_sft_answer)
POLICY = "policy"  # the label of the short form's one agent, unless it has a name


class CandidateConfig(AgentConfig):
    """One agent of the pool: an endpoint, its sampling, and how many answers it gives per prompt."""

    samples: int = Field(1, ge=1, description="answers this agent gives per prompt (one n=samples call)")


class DeltaConfig(Strict):
    """Delta pairs (Geng et al. 2025, arXiv 2507.06187): the stronger agent's answer over the weaker's."""

    stronger: str = Field(description="the label of the agent whose answer is chosen (a candidate's name, or mixture)")
    weaker: str = Field(description="the label of the agent whose answer is rejected")


class PairingConfig(Strict):
    """Which two candidates become a pair; unset: the best- and the worst-scored of the whole pool."""

    one_side_from: str | None = Field(
        None,
        description="every pair holds one answer of this agent (its label), chosen or rejected by score, the other "
        "from the rest of the pool (Tulu 3's on-policy pairs: the agent is the student being trained)",
    )
    delta: DeltaConfig | None = Field(
        None,
        description="chosen from delta.stronger, rejected from delta.weaker, kept only where the scorer (or "
        "verifier) agrees with that order by min_margin (delta learning)",
    )

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, value: Any) -> Any:
        if value in (None, "best_worst"):
            return {}
        if value == "delta":
            raise ValueError("pairing delta needs its two agents: pairing: {delta: {stronger: LABEL, weaker: LABEL}}")
        if isinstance(value, str):
            raise ValueError(
                f"{value!r} is no pairing; use best_worst, {{one_side_from: LABEL}} or "
                "{delta: {stronger: LABEL, weaker: LABEL}}"
            )
        return value

    @model_validator(mode="after")
    def _one_rule(self) -> PairingConfig:
        if self.one_side_from is not None and self.delta is not None:
            raise ValueError("set one of one_side_from or delta, not both")
        return self

    @property
    def rule(self) -> str:
        return "delta" if self.delta else "one_side_from" if self.one_side_from else "best_worst"

    def named(self) -> list[tuple[str, str]]:
        """(field, label) of every agent the rule names."""
        if self.delta is not None:
            return [("pairing.delta.stronger", self.delta.stronger), ("pairing.delta.weaker", self.delta.weaker)]
        return [("pairing.one_side_from", self.one_side_from)] if self.one_side_from else []

    def describe(self) -> str:
        if self.delta is not None:
            return f"delta: {self.delta.stronger}'s answer chosen over {self.delta.weaker}'s"
        if self.one_side_from:
            return f"one side from {self.one_side_from}: every pair holds one of its answers"
        return "best vs worst of the pool"


@dataclass(frozen=True)
class PoolMember:
    """An agent of the pool: its label, where its config sits, the agent, its samples, its seed key."""

    label: str
    path: str  # the dotted config path, for messages and the dry run (policy, candidates[1])
    agent: AgentConfig | None  # None: the mixture's SFT answer, read from this run's SFT rows
    samples: int
    seed_key: str  # what the per-prompt seed is derived from (moaa.preference.candidates.policy_sampling)
