"""The config models: a run's endpoints, prompt source, SFT and preference stages, output and run settings.

Each field carries its help text (`Field(description=...)`, shown by `moaa config explain`) and
each rule on a config's shape is the validator of the model it constrains, with one message.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, Field, field_validator, model_validator

from moaa.config.endpoints import (
    ENDPOINT_NAME,
    AgentConfig,
    EndpointConfig,
    Strict,
)
from moaa.config.pools import MIXTURE, POLICY, CandidateConfig, PairingConfig, PoolMember
from moaa.config.scales import SCALES, Margin, check_margin, margin_for
from moaa.config.sft_methods import GenerationConfig
from moaa.config.verify import Mode, ReferenceColumns, VerifierScorerConfig, VerifyConfig, _mode

SYNTHESIZED = "<instructions>"  # prompts.path while the instruction stage has not written its prompts yet
VERSION_REF = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*@v[0-9]+$")  # a data set version: NAME@vN
REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")  # a hub repo: ORG/NAME


class PromptSourceConfig(Strict):
    """Where instructions come from and how they are filtered."""

    path: str | None = Field(
        None,
        description="a .jsonl/.json/.csv/.parquet file or a saved HF data set folder, relative to the working "
        "folder; set this or hf_dataset",
    )
    hf_dataset: str | None = Field(
        None, description="a hub id or local path for datasets.load_dataset; set this or path"
    )
    hf_config: str | None = Field(None, description="hf_dataset: the data set's config (subset) name")
    split: str = Field("train", description="the split to read from a data set")
    prompt_column: str | None = Field(
        None,
        description="a column of plain prompt text; none of the three set: messages, conversations, prompt, "
        "instruction, question or input, the first found",
    )
    messages_column: str | None = Field(
        None, description="a column of OpenAI-style turns ({role, content}); the conversation up to its last user turn"
    )
    conversations_column: str | None = Field(None, description="a column of ShareGPT-style turns ({from, value})")
    id_column: str | None = Field(
        None, description="a column of unique prompt ids; unset: ids are a hash of the conversation"
    )
    system_prompt: str | None = Field(None, description="a system message prepended to every prompt that has none")
    dedup: bool = Field(True, description="drop prompts whose normalised conversation repeats an earlier one")
    near_dedup_threshold: float | None = Field(
        None,
        gt=0,
        le=1,
        description="also drop prompts whose MiniLM embedding has cosine >= this with an earlier kept one "
        "(e.g. 0.95); unset: off",
    )
    min_chars: int = Field(1, ge=0, description="drop prompts whose user turns have fewer characters")
    max_chars: int = Field(16000, ge=1, description="drop prompts whose user turns have more characters")
    on_bad_row: Literal["error", "skip"] = Field(
        "error",
        description="a row that cannot be read (a JSONL line that is not JSON or not UTF-8, a malformed "
        "conversation): error stops at the first, naming file and line; skip leaves each out, counted as "
        "bad_row and named with its line and error in the version's failures config (stage prompts)",
    )
    limit: int | None = Field(
        None, ge=1, description="use at most this many prompts, a seeded sample of those kept; unset: all"
    )
    seed: int = Field(0, description="the seed of the limit sample")
    schedule: Literal["all", "next", "resample"] = Field(
        "all",
        description="what a repeated (scheduled) run takes: all: the prompts as selected, a finished run is up to "
        "date until the source or config changes; next: the next `limit` prompts in source order that no version "
        "of this data set holds yet (limit counts new prompts per run); resample: a new seeded sample of `limit` "
        "of those. next and resample add to "
        "the data set (each version holds the earlier ones' rows) and write no version when nothing is new",
    )
    reference: ReferenceColumns = Field(
        ReferenceColumns(),
        description="the columns that hold each prompt's reference (what its answer is checked against)",
    )

    @model_validator(mode="after")
    def _one_source(self) -> PromptSourceConfig:
        if bool(self.path) == bool(self.hf_dataset):
            raise ValueError("set exactly one of path or hf_dataset")
        return self


class AgreementConfig(Strict):
    """How the answers to a synthesized instruction are compared (Ensemble-Instruct's consensus)."""

    measure: Literal["rouge_l", "embedding"] = Field(
        "rouge_l",
        description="rouge_l: Rouge-L F1 of the word sequences (the paper's); embedding: cosine of MiniLM "
        "embeddings (the model of prompts.near_dedup_threshold)",
    )
    threshold: float = Field(
        0.2,
        ge=0,
        le=1,
        description="keep an instruction when its least agreeing pair of answers scores at least this "
        "(the paper's floor was 0.01 on mostly short outputs; moaa's default asks for real overlap)",
    )


class InstructionsConfig(Strict):
    """The instruction stage (Ensemble-Instruct, Lee et al. 2023): new prompts written by a mixture
    from seed tasks, kept where several answers agree, then answered by the SFT stage."""

    n: int = Field(ge=1, description="new instructions to keep; the rounds stop once this many passed consensus")
    seeds: str | None = Field(
        None,
        description="a JSONL file of seed tasks {id, category, instruction, input, output} (input empty for a "
        "task without one; optionally an `answer`, or a `signature` with its `tests`), relative to the working "
        "folder; unset: moaa's own set (configs/prompts/seed-tasks.jsonl)",
    )
    writers: list[AgentConfig] = Field(
        default_factory=list,
        description="the agents that write new tasks, one call each per round; unset: sft.proposers",
    )
    answerers: list[AgentConfig] = Field(
        default_factory=list,
        description="the agents that answer each new task for the consensus (with the writer's own answer, at "
        "least two answers are compared); unset: sft.proposers",
    )
    per_call: int = Field(4, ge=1, le=20, description="new tasks asked of a writer per call")
    examples: int = Field(
        6, ge=1, description="seed tasks shown per call, all with an input or all without (the paper: 24 and 10)"
    )
    input_share: float = Field(
        0.5, ge=0, le=1, description="share of calls that ask for tasks with an input (the rest: without)"
    )
    checkable_share: float = Field(
        0.25,
        ge=0,
        le=1,
        description="share of calls that ask for tasks with a final answer (shown the seed tasks that have an "
        "`answer`): a task is kept only if the answerers' consensus reaches the writer's answer, which then "
        "is its reference, checked again in the SFT stage (sft.verify); 0: none",
    )
    code_share: float = Field(
        0.0,
        ge=0,
        le=1,
        description="share of calls that ask for Python programming tasks, each one function with a stated "
        "signature and 3-6 `assert` tests (shown the seed tasks that have `tests`): the answerers see the "
        "signature, not the tests, and a task is kept only if the answerers' consensus answer passes the tests "
        "in moaa.verify's sandbox, which then are its reference, run again in the SFT stage (sft.verify); drawn "
        "beside checkable_share (their sum at most 1); 0: none",
    )
    constraint_share: float = Field(
        0.0,
        ge=0,
        le=1,
        description="share of tasks without a final answer that get one verifiable IFEval constraint appended "
        "(no commas, lowercase, a title, a word count, N bullet points, an ending phrase, a postscript; IFEval's "
        "own words), the constraint then being the prompt's reference, checked in the SFT stage (sft.verify), as "
        "Tulu 3 made its instruction-following data; 0: none",
    )
    max_rounds: int = Field(10, ge=1, description="at most this many rounds of writing, however many were kept")
    max_similarity: float = Field(
        0.7,
        gt=0,
        le=1,
        description="drop a new instruction whose Rouge-L with a seed, an earlier kept instruction or one "
        "written before it reaches this (Self-Instruct's 0.7)",
    )
    agreement: AgreementConfig = Field(AgreementConfig(), description="how the answers' agreement is measured")
    seed: int = Field(
        0,
        description="the seed of the examples shown and the calls' sampling; a scheduled run (prompts.schedule "
        "next or resample) adds the number of earlier batches, so each run writes new tasks",
    )

    @model_validator(mode="after")
    def _shares_split_the_calls(self) -> InstructionsConfig:
        if self.checkable_share + self.code_share > 1:
            raise ValueError(
                f"checkable_share {self.checkable_share:g} + code_share {self.code_share:g} is over 1: each is a "
                "share of the writers' calls; lower one"
            )
        return self


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
        "creativity; moaa.prompts.judging.MOAA_CRITERIA); moa_judge's aggregator picks num_criteria of them "
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


class OutputConfig(Strict):
    """Where versions are written and how they are split, described and published."""

    root: str = Field("data", description="the folder of data set versions (ROOT/NAME/vN)")
    test_size: float = Field(
        0.1, ge=0, lt=1, description="fraction of prompt ids in the test split, by a stable hash (0: no test split)"
    )
    split_seed: int = Field(0, description="the seed of the train/test hash; the same seed splits alike in every run")
    license: str = Field("apache-2.0", description="the license named on the data set card")
    tags: list[str] = Field(default_factory=list, description="extra tags for the data set card")
    publish_repo_id: str | None = Field(
        None, description="a hub data set repo (ORG/NAME) that each new version is published to; unset: none"
    )
    private: bool = Field(True, description="publish the repo private (`moaa publish --public` overrides)")
    language: list[str] = Field(
        default_factory=lambda: ["en"], description="ISO 639 codes of the prompts' language, for the card"
    )
    review: Literal["optional", "required"] = Field(
        "optional",
        description="required: a run writes its version but publishes nothing until a person has reviewed it "
        "(`moaa view NAME@vN`, then `moaa review apply NAME@vN` writes the reviewed version and publishes it)",
    )

    @field_validator("publish_repo_id")
    @classmethod
    def _a_repo_id(cls, value: str | None) -> str | None:
        # At load, not at the end of the run when the version is published.
        if value is not None and not REPO_ID.match(value):
            raise ValueError("repo id is invalid; use ORG/NAME (e.g. my-org/moa-sft)")
        return value


class RunSettings(Strict):
    """How a run is cut into shards and where they run."""

    shard_size: int = Field(100, ge=1, description="prompts per shard (the unit of resume and of parallel work)")
    work_dir: str = Field(".moaa/work", description="the folder of shards' finished rows, kept for resuming")
    task_runner: Literal["threads", "dask", "ray"] = Field(
        "threads", description="where shards run: threads in this process, a Dask cluster or a Ray cluster"
    )
    address: str | None = Field(
        None, description="an existing Dask scheduler or Ray cluster; unset: a local one is started"
    )
    workers: int = Field(
        2, ge=1, description="without address: dask's local worker processes, or the local Ray node's CPUs"
    )
    max_parallel_shards: int = Field(4, ge=1, description="threads: shards run at once")
    max_failure_rate: float = Field(
        0.5, ge=0, le=1, description="stop a stage once more than this fraction of its prompts failed"
    )
    min_prompts_for_failure_rate: int = Field(
        20, ge=1, description="finished prompts a stage needs before max_failure_rate is applied"
    )
    batch: bool = Field(
        False,
        description="send every remote OpenAI-compatible endpoint's calls through its Batch API "
        "(endpoints.<name>.batch sets it per endpoint, with its limits and price factor)",
    )


class AnswersConfig(Strict):
    """What becomes of an answer cut at max_tokens (finish_reason "length") where it would become data:
    a final SFT answer (the aggregator's, or a single model's) or a DPO candidate. References fed to
    an aggregator (proposals, Self-MoA-Seq's running syntheses) are kept and counted whatever this says."""

    truncated: Literal["drop", "reask", "keep"] = Field(
        "drop",
        description="drop: the answer never becomes data; a prompt left without one is a `truncated` failure "
        "(transient: a re-run asks again). reask: ask again with twice the budget, up to reask_max_tokens, then "
        "drop. keep: keep truncated answers as data (counted in the summary and card)",
    )
    reask_max_tokens: int = Field(4096, ge=1, description="reask: the largest max_tokens a re-asked call may have")


class CacheConfig(Strict):
    """The request cache: a re-run or resume replays identical model calls instead of paying again."""

    enabled: bool = Field(
        True, description="replay an answer already given to the same model, messages and sampling (seed included)"
    )
    path: str = Field(".moaa/cache.sqlite", description="the SQLite file of the cache")


class MoaaConfig(Strict):
    """A whole run: endpoints, prompts, the SFT and preference stages, output."""

    name: str = Field(
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$",
        description="the data set's name: letters, digits, '.', '_' or '-' (versions go to output.root/NAME)",
    )
    description: str = Field("", description="a sentence on the data set, for its card")
    endpoints: dict[str, EndpointConfig] = Field(
        description="the model servers, each by a name that agents use as their endpoint"
    )
    prompts: PromptSourceConfig = Field(description="where the instructions come from and how they are filtered")
    instructions: InstructionsConfig | None = Field(
        None,
        description="the instruction stage: new prompts synthesized from seed tasks by a mixture, kept by "
        "consensus, then answered by the SFT stage (`instructions: {n: 20}`); unset: off",
    )
    sft: GenerationConfig = Field(description="the SFT stage: how answers are written")
    preference: PreferenceConfig = Field(PreferenceConfig(), description="the DPO stage (off unless enabled)")
    output: OutputConfig = Field(OutputConfig(), description="where versions are written, split and published")
    run: RunSettings = Field(RunSettings(), description="shards, parallelism and the failure-rate stop")
    cache: CacheConfig = Field(CacheConfig(), description="the request cache")
    answers: AnswersConfig = Field(AnswersConfig(), description="what becomes of answers cut at max_tokens")
    verify: VerifyConfig = Field(VerifyConfig(), description="how answers are checked against their references")

    @field_validator("endpoints")
    @classmethod
    def _endpoint_names(cls, endpoints: dict[str, EndpointConfig]) -> dict[str, EndpointConfig]:
        for name in endpoints:
            if not ENDPOINT_NAME.fullmatch(name):
                raise ValueError(
                    f"endpoint name {name!r} may hold letters, digits, '-' and '_' only (dots would split "
                    f"`--set endpoints.NAME.key=...`); rename it, e.g. {re.sub(r'[^A-Za-z0-9_-]+', '-', name)!r}"
                )
        return endpoints

    @model_validator(mode="after")
    def _known_endpoints(self) -> MoaaConfig:
        # Here, not in load_config: a config rebuilt from its dump (a shard, a loop step) is checked too.
        known = ", ".join(sorted(self.endpoints)) or "none"
        for path, agent in self.agents():
            if agent.endpoint not in self.endpoints:
                raise ValueError(
                    f"{path}.endpoint: unknown endpoint '{agent.endpoint}' (defined under endpoints: {known})"
                )
        return self

    @model_validator(mode="before")
    @classmethod
    def _synthesized_source(cls, data: Any) -> Any:
        # With the instruction stage on, the prompts are its output (moaa.instructions): `prompts:` then
        # holds only their filters, schedule and limit, and names no source of its own.
        if isinstance(data, dict) and data.get("instructions") is not None:
            prompts = data.get("prompts") if isinstance(data.get("prompts"), dict) else {}
            if prompts.get("path") not in (None, SYNTHESIZED) or prompts.get("hf_dataset"):
                raise ValueError(
                    "prompts.path/hf_dataset: with instructions on, the prompts are the synthesized instructions; "
                    "remove prompts.path and prompts.hf_dataset (seed tasks go in instructions.seeds)"
                )
            data = data | {"prompts": prompts | {"path": SYNTHESIZED}}
        return data

    def agents(self) -> list[tuple[str, AgentConfig]]:
        """Every (dotted path, agent) pair, for validation and dry runs."""
        found: list[tuple[str, AgentConfig]] = []
        _collect_agents(self, "", found)
        return found

    def used_endpoints(self) -> list[str]:
        return sorted({agent.endpoint for _, agent in self.agents()})


def _collect_agents(node: Any, path: str, found: list[tuple[str, AgentConfig]]) -> None:
    if isinstance(node, AgentConfig):
        found.append((path, node))
    elif isinstance(node, BaseModel):
        if isinstance(node, PreferenceConfig) and not node.enabled:
            return
        for key in type(node).model_fields:
            _collect_agents(getattr(node, key), f"{path}.{key}" if path else key, found)
    elif isinstance(node, list):
        for i, item in enumerate(node):
            _collect_agents(item, f"{path}[{i}]", found)
