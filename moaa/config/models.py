"""The config models: a run's endpoints, prompt source, SFT and preference stages, output and run settings.

Each field carries its help text (`Field(description=...)`, shown by `moaa config explain`) and
each rule on a config's shape is the validator of the model it constrains, with one message.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


_ENDPOINT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")
_VARIABLE_NAME = re.compile(r"[A-Z_][A-Z0-9_]*")


REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")  # a hub repo: ORG/NAME


_KEY_PREFIXES = ("SK-", "SK_", "HF_", "GSK_", "XAI-", "AIZA", "AKIA", "GHP_", "GITHUB_PAT_")


def is_variable_name(value: str) -> bool:
    """Whether `value` reads as an environment variable's name rather than a key: capitals, digits
    and `_`, not opening like a known key (sk-, hf_, AKIA...), and not a long run without a `_`."""
    if not _VARIABLE_NAME.fullmatch(value) or value.upper().startswith(_KEY_PREFIXES):
        return False
    return "_" in value or len(value) < 20 or not any(c.isdigit() for c in value)


class Sampling(Strict):
    """Sampling parameters; unset fields fall back to the endpoint's defaults."""

    temperature: float | None = Field(
        None,
        ge=0,
        le=2,
        description="sampling temperature, 0-2 (0: near-greedy); unset: the endpoint's, else the server's",
    )
    top_p: float | None = Field(
        None, gt=0, le=1, description="nucleus sampling: keep the likeliest tokens up to this total probability (0-1]"
    )
    max_tokens: int | None = Field(
        None,
        ge=1,
        description="most tokens one answer may have; an answer cut there is `truncated` (see answers.truncated)",
    )
    seed: int | None = Field(
        None,
        description="sampling seed sent with every call; unset: one derived from the prompt id and the call's "
        "place, so a re-run asks the same",
    )
    stop: list[str] | None = Field(None, description="strings that end an answer where they appear (not included)")
    # Ask for the top-k log-probabilities of every answer token (OpenAI's logprobs/top_logprobs;
    # llama.cpp's server honours them): judges read probability-weighted ratings from them.
    top_logprobs: int | None = Field(
        None,
        ge=1,
        le=20,
        description="ask for the top-k log-probabilities of each answer token (1-20), which "
        "preference.scorer.weighted_ratings reads",
    )
    extra_body: dict[str, Any] | None = Field(
        None,
        description="fields added to the request body as they are (vLLM's top_k, min_p, chat_template_kwargs; "
        "OpenAI's reasoning_effort); laid over the endpoint's extra_body key by key, and part of the cache key",
    )

    def over(self, base: Sampling | None) -> Sampling:
        """These parameters laid over `base` (set fields win).

        Both sides are validated Samplings, so the merge is built without re-validating (once per
        model call: the hot path).
        """
        if base is None:
            return self
        mine = self.sampling_dict()
        merged = base.sampling_dict() | {k: v for k, v in mine.items() if v is not None}
        if mine.get("extra_body") and base.extra_body:  # extra_body merges key by key (the agent's win)
            merged["extra_body"] = base.extra_body | mine["extra_body"]
        return self if merged == mine else Sampling.model_construct(**merged)

    def sampling_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in Sampling.model_fields}


class BatchConfig(Strict):
    """An endpoint's Batch API settings (moaa.models.batch): one batch per round of a shard's calls."""

    enabled: bool = Field(False, description="send this endpoint's calls as batches instead of one by one")
    price_factor: float = Field(
        0.5, ge=0, le=1, description="batch price as a share of price_input/output_per_mtok (OpenAI, Together: 0.5)"
    )
    quiet_s: float = Field(
        2.0, gt=0, description="a batch is sent once no new call has arrived for this long (a round's fan-out)"
    )
    max_wait_s: float = Field(60.0, gt=0, description="a batch is sent at the latest this long after its first call")
    poll_s: float = Field(30.0, gt=0, description="seconds between status checks of a submitted batch")
    max_requests: int = Field(50_000, ge=1, description="requests per batch file (OpenAI, Together: 50,000)")
    max_bytes: int = Field(
        200_000_000, ge=1, description="bytes per batch input file (OpenAI: 200 MB; Together: 100 MB)"
    )
    file_purpose: str = Field(
        "batch", description="the purpose of the uploaded file (OpenAI: batch; Together: batch-api)"
    )
    completion_window: str = Field("24h", description="the completion window asked for (OpenAI and Together: 24h)")


class EndpointConfig(Strict):
    """One OpenAI-compatible model server (or several replicas of it)."""

    model: str = Field(
        description="the served model name sent with each request; for backend transformers, a hub id or local folder"
    )
    base_url: str | list[str] | None = Field(
        None,
        description="the server's OpenAI-compatible URL, e.g. http://127.0.0.1:8000/v1; a list: replicas of the "
        "same model, shared between; required unless local or backend transformers",
    )
    local: bool = Field(
        False,
        description="the embedded llama.cpp server, started and stopped by moaa (one request at a time, no n)",
    )
    backend: Literal["openai", "transformers"] = Field(
        "openai", description="openai: HTTP to an OpenAI-compatible server; transformers: in-process, small models"
    )
    api_key_env: str | None = Field(
        None,
        description="the NAME of the environment variable holding the key (e.g. OPENAI_API_KEY), never the key",
    )
    max_concurrency: int = Field(
        16, ge=1, description="most requests in flight to this endpoint at once (1 when local or transformers)"
    )
    requests_per_minute: float | None = Field(None, gt=0, description="client-side request rate limit; unset: no limit")
    tokens_per_minute: float | None = Field(
        None, gt=0, description="client-side limit on prompt + answer tokens per minute; unset: no limit"
    )
    timeout_s: float = Field(120.0, gt=0, description="seconds one request may take before it is retried")
    max_retries: int = Field(
        6, ge=0, description="retries of a failed request (timeouts, 429, 5xx) before the call fails"
    )
    backoff_s: float = Field(1.0, ge=0, description="seconds the first retry waits, doubling with each retry")
    supports_n: bool | None = Field(
        None,
        description="whether the server honours n>1 (several answers in one call); unset: found out on the first "
        "such call (false when local)",
    )
    json_schema: bool = Field(
        True, description="send judges a JSON schema response_format, so their verdicts are grammar-constrained"
    )
    # How the schema travels: OpenAI's {"type": "json_schema", ...}, or llama-cpp-python's
    # {"type": "json_object", "schema": ...} (its server rejects the OpenAI shape). Local: llama.cpp.
    json_schema_style: Literal["openai", "llama.cpp"] = Field(
        "openai",
        description="the response_format shape: openai (json_schema) or llama.cpp (json_object with a schema); "
        "llama.cpp when local",
    )
    sampling: Sampling = Field(
        Sampling(), description="default sampling for every agent on this endpoint; an agent's own fields win"
    )
    price_input_per_mtok: float | None = Field(
        None, ge=0, description="USD per million prompt tokens, for the dry run's cost estimate; unset: not priced"
    )
    price_output_per_mtok: float | None = Field(
        None, ge=0, description="USD per million answer tokens, for the dry run's cost estimate; unset: not priced"
    )
    extra_body: dict[str, Any] = Field(
        default_factory=dict,
        description="fields added to every request body of this endpoint (an agent's extra_body wins key by "
        "key); the body's own fields (model, messages, n, ...) are never replaced",
    )
    token_limit_param: Literal["max_tokens", "max_completion_tokens"] = Field(
        "max_tokens",
        description="the body field that carries max_tokens: OpenAI's reasoning models (o-series, gpt-5) need "
        "max_completion_tokens; vLLM, Ollama, llama.cpp and Together read max_tokens",
    )
    keep_reasoning: bool = Field(
        False,
        description="keep a reasoning model's thinking (<think>...</think> in the text, or reasoning_content) "
        "in answers, as a leading <think> block; false keeps it only in the trace, out of SFT answers, DPO "
        "sides and judge parsing",
    )
    batch: BatchConfig = Field(
        default_factory=lambda: BatchConfig(),
        description="send this endpoint's calls through the provider's Batch API (files + batches, OpenAI's "
        "shape) at its batch price: `batch: true`, or a mapping of BatchConfig settings",
    )

    @field_validator("batch", mode="before")
    @classmethod
    def _batch_shorthand(cls, value: Any) -> Any:
        return {"enabled": value} if isinstance(value, bool) else value

    @field_validator("api_key_env")
    @classmethod
    def _a_variable_name(cls, value: str | None) -> str | None:
        # The message never repeats the value: a key typed here by mistake must not reach a terminal.
        if value is not None and not is_variable_name(value):
            raise ValueError(
                "expected the NAME of an environment variable (capitals, digits, _: e.g. OPENAI_API_KEY); "
                "this looks like a key itself: export it as a variable and name that variable here"
            )
        return value

    @model_validator(mode="after")
    def _local_defaults(self) -> EndpointConfig:
        if self.local:
            # llama-cpp-python's server answers one request at a time and ignores n.
            if "max_concurrency" not in self.model_fields_set:
                self.max_concurrency = 1
            if "supports_n" not in self.model_fields_set:
                self.supports_n = False
            # llama-cpp-python's server turns a schema into a grammar, so even a 0.5B judge answers
            # with a verdict that parses (it wrote the rubric's JSON unconstrained, then ran out of tokens).
            if "json_schema_style" not in self.model_fields_set:
                self.json_schema_style = "llama.cpp"
        elif self.backend == "transformers":
            if "max_concurrency" not in self.model_fields_set:
                self.max_concurrency = 1
        elif not self.base_url:
            raise ValueError("base_url is required unless local: true or backend: transformers")
        for url in self.base_urls():
            _check_url(url)
        return self

    def base_urls(self) -> list[str]:
        if self.base_url is None:
            return []
        return [self.base_url] if isinstance(self.base_url, str) else list(self.base_url)


def _check_url(url: str) -> None:
    """An endpoint URL must be http(s)://host[:port][/path]; anything else would be retried for nothing."""
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a port that is not a number
    except ValueError:
        parts = None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
        shown = url if len(url) <= 60 and "@" not in url else "the given value"
        raise ValueError(
            f"base_url: {shown!r} is not an http(s) URL; write it like http://127.0.0.1:8000/v1 "
            "or https://api.together.xyz/v1"
        )


class AgentConfig(Sampling):
    """A model playing one part (proposer, aggregator, judge...): endpoint + sampling + role."""

    endpoint: str = Field(description="the name of the endpoint (a key under endpoints) this agent calls")
    name: str | None = Field(
        None,
        description="a label for traces, reports and compare baselines; unset: its part (proposer0, "
        "aggregator, policy) or, for a judge, its model",
    )
    role: str | None = Field(None, description="a role description given to the agent as its system message")


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
        True, description="reject an aggregate that is one of its (two or more) references, word for word"
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
    min_answers: int = Field(
        1, ge=1, description="fewest surviving answers a layer needs, else the prompt fails (capped at those asked)"
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

    @field_validator("method")
    @classmethod
    def _registered(cls, name: str) -> str:
        from moaa.engine.methods import method_of  # lazily: the engine imports this module

        method_of(name)
        return name

    @model_validator(mode="after")
    def _shape(self) -> GenerationConfig:
        if not self.proposers:
            raise ValueError("at least one proposer is required")
        from moaa.engine.methods import check_generation

        check_generation(self)  # each method states its own rules (and defaults) once, beside its turn
        return self


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
    limit: int | None = Field(
        None, ge=1, description="use at most this many prompts, a seeded sample of those kept; unset: all"
    )
    seed: int = Field(0, description="the seed of the limit sample")

    @model_validator(mode="after")
    def _one_source(self) -> PromptSourceConfig:
        if bool(self.path) == bool(self.hf_dataset):
            raise ValueError("set exactly one of path or hf_dataset")
        return self


class ScorerConfig(Strict):
    """How candidates are ranked (ALGORITHMS.md section 7)."""

    kind: Literal["reward_model", "pointwise", "pairwise", "moa_judge"] = Field(
        "pointwise",
        description="reward_model: a sequence classifier's score; pointwise: judges rate each answer 1-5; "
        "pairwise: judges compare every ordered pair; moa_judge: judges' verdicts read by an aggregator judge",
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
        description="the criteria judges rate on; unset: UltraFeedback's four aspects; moa_judge picks "
        "num_criteria of them per prompt",
    )
    num_criteria: int = Field(3, ge=1, description="moa_judge: criteria picked per prompt from criteria")
    max_attempts: int = Field(3, ge=1, description="asks per verdict: an unparsable one is asked again")
    rationales: bool = Field(
        True,
        description="pointwise: judges write a short rationale before each rating (UltraFeedback); false asks "
        "for ratings only, a verdict of a few tokens (for small local judges whose ratings are weighted)",
    )
    weighted_ratings: bool = Field(
        False,
        description="pointwise: score each rating as its probability-weighted mean over 1-5 from the judge's "
        "top log-probabilities (G-Eval), where the endpoint returns them; breaks the ties a small judge makes",
    )


class PreferenceConfig(Strict):
    """The DPO stage: a policy samples candidates, a scorer ranks them, best vs worst."""

    enabled: bool = Field(False, description="run the preference stage and write a DPO data set")
    policy: AgentConfig | None = Field(
        None, description="the agent whose sampled answers become chosen/rejected (required when enabled)"
    )
    samples: int = Field(5, ge=2, description="candidate answers sampled from the policy per prompt")
    scorer: ScorerConfig = Field(ScorerConfig(), description="how the candidates are ranked")
    min_margin: float = Field(
        0.5, ge=0, description="drop a pair whose best and worst scores differ by less (a near tie, label noise)"
    )
    max_length_ratio: float | None = Field(
        None,
        gt=1,
        description="drop a pair whose chosen answer is more than this many times longer than the rejected "
        "(length bias); unset: off",
    )
    limit: int | None = Field(None, ge=1, description="how many of the source's prompts to use for pairs; unset: all")

    @model_validator(mode="after")
    def _needs_policy(self) -> PreferenceConfig:
        if not self.enabled:
            return self
        if self.policy is None:
            raise ValueError("policy: preference.enabled needs a policy (the agent whose answers are ranked)")
        scorer = self.scorer
        if scorer.kind == "reward_model" and not scorer.reward_model:
            raise ValueError("scorer.reward_model: required for kind reward_model (a folder or hub id)")
        if scorer.kind != "reward_model" and not scorer.judges:
            raise ValueError(f"scorer.judges: kind {scorer.kind} needs at least one judge agent")
        if scorer.kind == "moa_judge" and scorer.aggregator is None:
            raise ValueError("scorer.aggregator: kind moa_judge needs an aggregator judge")
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
    workers: int = Field(2, ge=1, description="dask: worker processes of the local cluster (without address)")
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
    sft: GenerationConfig = Field(description="the SFT stage: how answers are written")
    preference: PreferenceConfig = Field(PreferenceConfig(), description="the DPO stage (off unless enabled)")
    output: OutputConfig = Field(OutputConfig(), description="where versions are written, split and published")
    run: RunSettings = Field(RunSettings(), description="shards, parallelism and the failure-rate stop")
    cache: CacheConfig = Field(CacheConfig(), description="the request cache")
    answers: AnswersConfig = Field(AnswersConfig(), description="what becomes of answers cut at max_tokens")

    @field_validator("endpoints")
    @classmethod
    def _endpoint_names(cls, endpoints: dict[str, EndpointConfig]) -> dict[str, EndpointConfig]:
        for name in endpoints:
            if not _ENDPOINT_NAME.fullmatch(name):
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
