"""The config models: a run's prompt source, instruction stage, output, run settings and the whole config.

The preference stage's config is in `moaa.config.preference_stage`. Each field carries its help text
(`Field(description=...)`, shown by `moaa config explain`) and each rule on a config's shape is the
validator of the model it constrains, with one message.
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
from moaa.config.preference_stage import PreferenceConfig
from moaa.config.sft_methods import GenerationConfig
from moaa.config.verify import ReferenceColumns, VerifyConfig

SYNTHESIZED = "<instructions>"  # prompts.path while the instruction stage has not written its prompts yet
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
