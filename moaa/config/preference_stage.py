"""The preference stage's config: who answers (a policy or a pool), how candidates are ranked (the
scorer: reward model, judges, verifier) and how pairs are drawn from them (ALGORITHMS.md sections 7-10).

Apart from `moaa.config.models` because it is the largest stage config; import it from `moaa.config`.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, field_validator, model_validator

from moaa.config.endpoints import AgentConfig, Strict
from moaa.config.pools import MIXTURE, POLICY, CandidateConfig, PairingConfig, PoolMember
from moaa.config.scales import SCALES, Margin, check_margin, margin_for
from moaa.config.verify import Mode, VerifierScorerConfig, _mode

VERSION_REF = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*@v[0-9]+$")  # a data set version: NAME@vN


class ScorerConfig(Strict):
    """How candidates are ranked (ALGORITHMS.md section 7)."""

    kind: Literal["reward_model", "pointwise", "pairwise", "moa_judge", "verifier"] = Field(
        "pointwise",
        description="reward_model: a sequence classifier's score; pointwise: judges rate each answer 1-5; "
        "pairwise: judges compare every ordered pair; moa_judge: judges' verdicts read by an aggregator judge; "
        "verifier: each answer checked against the prompt's reference, a passing one chosen over a failing one",
    )
    judges: list[AgentConfig] = Field(
        default_factory=list, description="the judge agents (at least one, for every kind but reward_model)"
    )
    aggregator: AgentConfig | None = Field(
        None, description="moa_judge: the final judge that reads the judges' verdicts (required there)"
    )
    reward_model: str | None = Field(
        None, description="reward_model: a hub id or local folder of a sequence classifier (required there)"
    )
    trust_remote_code: bool = Field(
        False,
        description="reward_model: run the checkpoint's own modeling code (its config's auto_map), as "
        "ArmoRM needs for `output.score`; this executes code that ships with the model on this machine",
    )
    device: str = Field("cpu", description="reward_model: the torch device, e.g. cpu or cuda:0")
    batch_size: int = Field(8, ge=1, description="reward_model: answers scored per forward pass")
    criteria: list[str] | None = Field(
        None,
        description="the criteria judges rate on; unset: UltraFeedback's four aspects, and for moa_judge "
        "moaa's MoAA list (accuracy, instruction following, helpfulness, depth, clarity, conciseness, safety, "
        "creativity; moaa.prompts.criteria.MOAA_CRITERIA); moa_judge's aggregator picks num_criteria of them "
        "per prompt (MoAA's stage 2)",
    )
    num_criteria: int = Field(
        3, ge=1, description="moa_judge: criteria picked per prompt from criteria (MoAA: 3); all, if no more listed"
    )
    max_attempts: int = Field(3, ge=1, description="asks per verdict: an unparsable one is asked again")
    rationales: bool = Field(
        True,
        description="pointwise and pairwise: judges write a short rationale before each rating or verdict "
        "(UltraFeedback, MT-Bench); false asks for the ratings or the winner's letter only, a verdict of a few "
        "tokens (for small local judges whose verdicts are weighted)",
    )
    weighted_ratings: bool = Field(
        False,
        description="read verdicts from the judge's top log-probabilities where the endpoint returns them "
        "(llama.cpp, vLLM, OpenAI); else the written verdict counts. pointwise: each rating is its "
        "probability-weighted mean over 1-5 (G-Eval); pairwise: each order's verdict is the probability mass "
        "on A vs B, averaged over both orders (AlpacaEval 2's weighted win rate). Breaks the ties a small "
        "judge makes",
    )
    tie_threshold: float = Field(
        0.05,
        ge=0,
        lt=0.5,
        description="pairwise with weighted_ratings: a comparison whose preference for one answer (averaged "
        "over both orders) is within this of 0.5 is tallied as a tie; the score stays the continuous mean",
    )
    verifier: VerifierScorerConfig = Field(
        VerifierScorerConfig(), description="kind verifier: its tie-breaker and what becomes of unseparated prompts"
    )

    def judged_kind(self) -> str:
        """The kind whose judges or reward model are called: the verifier's tie-breaker, else the kind."""
        if self.kind != "verifier":
            return self.kind
        return self.verifier.breaker(bool(self.judges), self.reward_model is not None)


class PreferenceConfig(Strict):
    """The DPO stage: a pool of agents (or one policy) answers, a scorer ranks, a pairing rule pairs."""

    enabled: bool = Field(False, description="run the preference stage and write a DPO data set")
    policy: AgentConfig | None = Field(
        None,
        description="the agent whose sampled answers become chosen/rejected: the short form of a pool of one "
        "(set this or candidates when enabled)",
    )
    samples: int = Field(5, ge=2, description="candidate answers sampled from the policy per prompt")
    candidates: list[CandidateConfig] | None = Field(
        None,
        description="the pool: several agents (endpoint, sampling, name, samples each) whose answers compete "
        "(UltraFeedback completes each prompt with four models); each answer keeps its agent's name (unset: "
        "candidate0, candidate1, ...) in the trace and the pair's chosen_agent / rejected_agent. Set this or policy",
    )
    include_sft_answer: bool | str = Field(
        False,
        description="add the prompt's SFT answer (the mixture's) to the pool as the candidate labelled mixture: "
        "true: this run's; NAME@vN: that version's SFT rows (under output.root); a prompt without an SFT row "
        "there has no mixture candidate",
    )

    @field_validator("include_sft_answer")
    @classmethod
    def _a_pinned_version(cls, value: bool | str) -> bool | str:
        if isinstance(value, str) and not VERSION_REF.match(value):
            raise ValueError(
                f"{value!r} is neither true/false nor a pinned version NAME@vN (e.g. my-moa@v3): a version is "
                "never edited, so the pairs it gives can be made again"
            )
        return value

    pairing: PairingConfig = Field(
        PairingConfig(),
        description="which candidates face each other: best_worst (the default), {one_side_from: LABEL} (every "
        "pair holds one of that agent's answers) or {delta: {stronger: LABEL, weaker: LABEL}}",
    )
    scorer: ScorerConfig = Field(ScorerConfig(), description="how the candidates are ranked")
    min_margin: Margin | dict[str, Margin] | None = Field(
        None,
        description="drop a pair whose best and worst scores differ by less (a near tie, label noise): a number "
        "in the scorer's own units, a share of its scale ('10%'), or either per scorer kind ({pointwise: 0.5, "
        "pairwise: 10%}); unset: the kind's default (pointwise and moa_judge 0.5 on 1-5, pairwise 0.1 on 0-1, "
        "reward_model 0; moaa.config.scales)",
    )
    max_length_ratio: float | None = Field(
        None,
        gt=1,
        description="drop a pair whose chosen answer is more than this many times longer than the rejected "
        "(length bias); unset: off",
    )
    limit: int | None = Field(None, ge=1, description="how many of the source's prompts to use for pairs; unset: all")
    verify: Mode = Field(
        "require",
        description="where a prompt carries a reference, with any scorer: require: a pair whose chosen answer "
        "fails its check is dropped (reason chosen_failed); keep: pairs are kept, their verdicts recorded; off: "
        "nothing is checked (the verifier scorer checks whatever this says)",
    )

    pair_audit: bool = Field(
        False,
        description="after a pair is chosen, the scorer's judges compare its chosen and rejected answers head to "
        "head, both orders, read by the letters and by log-probabilities (AlpacaEval 2); changes no row: the "
        "summary counts ties and the pairs whose rejected side the judge ranks first (a wrong answer, where the "
        "rejected one failed its check); 2 calls per judge per pair",
    )

    _verify_shorthand = field_validator("verify", mode="before")(lambda value: _mode(value))

    @model_validator(mode="after")
    def _audit_needs_judges(self) -> PreferenceConfig:
        if self.pair_audit and not self.scorer.judges:
            raise ValueError("pair_audit: needs the judges of preference.scorer.judges (it asks them); set some")
        return self

    @model_validator(mode="after")
    def _margins(self) -> PreferenceConfig:
        if isinstance(self.min_margin, dict):
            unknown = sorted(set(self.min_margin) - set(SCALES))
            if unknown:
                raise ValueError(f"min_margin: no scorer kind {', '.join(unknown)} (kinds: {', '.join(SCALES)})")
            for kind, value in self.min_margin.items():
                check_margin(value, kind, f"min_margin.{kind}")
        elif self.min_margin is not None:
            check_margin(self.min_margin, self.scorer.judged_kind())
        return self

    def margin(self) -> float:
        """The minimum margin in the scores' own units: min_margin resolved for the kind whose scores are
        compared (scorer.kind; for the verifier, its tie-breaker's kind: passing vs failing needs none)."""
        return margin_for(self.min_margin, self.scorer.judged_kind())[0]

    @model_validator(mode="after")
    def _one_pool(self) -> PreferenceConfig:
        if self.policy is not None and self.candidates is not None:
            raise ValueError("set one of policy (with samples) or candidates (each with its samples), not both")
        # Not model_fields_set: a config rebuilt from its dump (a shard's) holds every field.
        if self.candidates is not None and self.samples != type(self).model_fields["samples"].default:
            raise ValueError("samples: goes with policy; with candidates each agent gives its own samples")
        if self.candidates is not None and not self.candidates:
            raise ValueError("candidates: empty; list at least one agent (endpoint, samples)")
        if any(c.name == MIXTURE for c in self.candidates or []):
            raise ValueError(f"candidates: the name {MIXTURE!r} is the SFT answer's (include_sft_answer); rename it")
        labels = [m.label for m in self.pool()]
        twice = sorted({label for label in labels if labels.count(label) > 1})
        if twice:
            raise ValueError(f"candidates: the label {twice[0]!r} names two agents; give each a distinct name")
        for where, label in self.pairing.named():
            if self.enabled and label not in labels:
                known = ", ".join(labels) or "none"
                raise ValueError(f"{where}: no candidate {label!r} in the pool (its labels: {known})")
        if self.pairing.delta is not None:
            delta = self.pairing.delta
            if delta.stronger == delta.weaker:
                raise ValueError("pairing.delta: stronger and weaker name the same agent; name two")
            idle = [label for label in labels if label not in (delta.stronger, delta.weaker)]
            if self.enabled and idle:
                raise ValueError(
                    f"pairing.delta pairs {delta.stronger} with {delta.weaker} only; {', '.join(idle)} would be "
                    "asked and never paired: leave them out of the pool"
                )
        if self.enabled and self.pairing.one_side_from is not None and len(labels) < 2:
            raise ValueError("pairing.one_side_from: the pool needs another agent for the other side")
        return self

    def pool(self) -> list[PoolMember]:
        """The agents that answer each prompt, in order (the mixture's SFT answer, if included, last)."""
        members: list[PoolMember] = []
        if self.candidates is not None:
            for i, c in enumerate(self.candidates):
                label = c.name or f"candidate{i}"
                members.append(PoolMember(label, f"candidates[{i}]", c, c.samples, f"pref.candidates.{label}"))
        elif self.policy is not None:
            members.append(PoolMember(self.policy.name or POLICY, "policy", self.policy, self.samples, "pref.policy"))
        if self.include_sft_answer:
            members.append(PoolMember(MIXTURE, "include_sft_answer", None, 1, ""))
        return members

    def pool_size(self) -> int:
        """Candidates per prompt when every answer differs: every agent's samples, the mixture's one."""
        return sum(m.samples for m in self.pool())

    @model_validator(mode="after")
    def _needs_policy(self) -> PreferenceConfig:
        if not self.enabled:
            return self
        if self.policy is None and self.candidates is None:
            raise ValueError(
                "policy: preference.enabled needs a policy (the agent whose answers are ranked) or candidates"
            )
        if self.pool_size() < 2:
            raise ValueError(
                "candidates: the pool gives one answer per prompt; a pair needs two (raise an agent's samples)"
            )
        scorer = self.scorer
        kind, where = scorer.judged_kind(), "" if scorer.kind != "verifier" else " (the verifier's tie_breaker)"
        if kind == "reward_model" and not scorer.reward_model:
            raise ValueError(f"scorer.reward_model: required for kind reward_model{where} (a folder or hub id)")
        if kind not in ("reward_model", "none") and not scorer.judges:
            raise ValueError(f"scorer.judges: kind {kind}{where} needs at least one judge agent")
        if kind == "moa_judge" and scorer.aggregator is None:
            raise ValueError(f"scorer.aggregator: kind moa_judge{where} needs an aggregator judge")
        return self
