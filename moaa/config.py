"""Run configuration: strict pydantic models loaded from YAML, with `--set dotted.key=value` overrides.

A config names its endpoints (model servers) once and refers to them by name everywhere else.
Secrets never live here: an endpoint names the environment variable that holds its key.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from moaa.errors import ConfigError

METHODS = ("single", "moa", "moa-lite", "self-moa", "self-moa-seq", "smoa")


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


_VARIABLE_NAME = re.compile(r"[A-Z_][A-Z0-9_]*")
_KEY_PREFIXES = ("SK-", "SK_", "HF_", "GSK_", "XAI-", "AIZA", "AKIA", "GHP_", "GITHUB_PAT_")


def is_variable_name(value: str) -> bool:
    """Whether `value` reads as an environment variable's name rather than a key: capitals, digits
    and `_`, not opening like a known key (sk-, hf_, AKIA...), and not a long run without a `_`."""
    if not _VARIABLE_NAME.fullmatch(value) or value.upper().startswith(_KEY_PREFIXES):
        return False
    return "_" in value or len(value) < 20 or not any(c.isdigit() for c in value)


class Sampling(Strict):
    """Sampling parameters; unset fields fall back to the endpoint's defaults."""

    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    max_tokens: int | None = Field(None, ge=1)
    seed: int | None = None
    stop: list[str] | None = None
    # Ask for the top-k log-probabilities of every answer token (OpenAI's logprobs/top_logprobs;
    # llama.cpp's server honours them): judges read probability-weighted ratings from them.
    top_logprobs: int | None = Field(None, ge=1, le=20)
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

    model: str  # the served model name; for backend "transformers", a hub id or local folder
    base_url: str | list[str] | None = None
    local: bool = False  # the embedded llama.cpp server, started and stopped by moaa
    backend: Literal["openai", "transformers"] = "openai"  # transformers: in-process, small models
    api_key_env: str | None = Field(
        None,
        description="the NAME of the environment variable holding the key (e.g. OPENAI_API_KEY), never the key",
    )
    max_concurrency: int = Field(16, ge=1)
    requests_per_minute: float | None = Field(None, gt=0)
    tokens_per_minute: float | None = Field(None, gt=0)
    timeout_s: float = Field(120.0, gt=0)
    max_retries: int = Field(6, ge=0)
    backoff_s: float = Field(1.0, ge=0)  # first retry waits ~this long, doubling each time
    supports_n: bool | None = None  # None: detected on the first n>1 call
    json_schema: bool = True  # send a JSON schema response_format to judges (grammar-constrained output)
    # How the schema travels: OpenAI's {"type": "json_schema", ...}, or llama-cpp-python's
    # {"type": "json_object", "schema": ...} (its server rejects the OpenAI shape). Local: llama.cpp.
    json_schema_style: Literal["openai", "llama.cpp"] = "openai"
    sampling: Sampling = Sampling()
    price_input_per_mtok: float | None = Field(None, ge=0)
    price_output_per_mtok: float | None = Field(None, ge=0)
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

    endpoint: str
    name: str | None = None
    role: str | None = None  # a role description given as the system message


class SelfMoAConfig(Strict):
    samples: int = Field(6, ge=1)


class SeqConfig(Strict):
    samples: int = Field(12, ge=1)
    window: int = Field(6, ge=2)
    new_per_step: int = Field(3, ge=1)
    repeats: int = Field(1, ge=1)  # how often the running synthesis appears in the window

    @model_validator(mode="after")
    def _fits(self) -> SeqConfig:
        if self.new_per_step + self.repeats > self.window:
            raise ValueError("new_per_step + repeats must not exceed window")
        return self


class SMoAConfig(Strict):
    rounds: int = Field(2, ge=1)
    k: int = Field(2, ge=1)
    moderator: AgentConfig | None = None  # defaults to the aggregator
    early_stop: bool = True
    roles: list[str] | None = None  # given roles; else generated once per run
    task: str | None = Field(
        None,
        description="what the prompts ask for, given to the role generator (SMoA builds roles from each "
        "data set's task description); unset: described by a few of the run's own prompts",
    )
    role_generator: AgentConfig | None = None  # defaults to the aggregator


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

    method: Literal["single", "moa", "moa-lite", "self-moa", "self-moa-seq", "smoa"] = "moa"
    layers: int | None = Field(
        None,
        description="moa: how many layers, the last one the aggregator (default 3, the paper's); moa-lite is "
        "always 2; other methods have no layers",
    )
    proposers: list[AgentConfig] = Field(default_factory=list)
    aggregator: AgentConfig | None = None
    min_answers: int = Field(1, ge=1)  # fewest surviving answers a layer needs
    shuffle_references: bool = False
    cluster_filter: bool = False  # Cluster & Filter defense on the last layer
    self_moa: SelfMoAConfig = SelfMoAConfig()
    seq: SeqConfig = SeqConfig()
    smoa: SMoAConfig = SMoAConfig()
    quality: QualityConfig = QualityConfig()

    @model_validator(mode="after")
    def _shape(self) -> GenerationConfig:
        if not self.proposers:
            raise ValueError("at least one proposer is required")
        if self.method != "single" and self.aggregator is None:
            raise ValueError(f"method '{self.method}' needs an aggregator")
        if self.method == "moa-lite":
            if self.layers not in (None, 2):
                raise ValueError(
                    f"layers: method 'moa-lite' always has 2 layers (got {self.layers}); remove sft.layers "
                    "or use method moa"
                )
            self.layers = 2
        elif self.method == "moa":
            if self.layers is None:
                self.layers = 3
            elif self.layers < 2:
                raise ValueError(
                    f"layers: method 'moa' needs layers >= 2 (got {self.layers}); use method single for one model"
                )
        if self.method == "smoa" and self.smoa.k > len(self.proposers):
            raise ValueError(
                f"smoa.k: the moderator picks {self.smoa.k} of {len(self.proposers)} proposers' answers; "
                f"set smoa.k to at most {len(self.proposers)} or add proposers"
            )
        return self


class PromptSourceConfig(Strict):
    """Where instructions come from and how they are filtered."""

    path: str | None = None  # .jsonl/.json/.csv/.parquet file, or a saved HF data set folder
    hf_dataset: str | None = None  # hub id or local path for datasets.load_dataset
    hf_config: str | None = None
    split: str = "train"
    prompt_column: str | None = None
    messages_column: str | None = None
    conversations_column: str | None = None
    id_column: str | None = None
    system_prompt: str | None = None
    dedup: bool = True
    near_dedup_threshold: float | None = Field(None, gt=0, le=1)
    min_chars: int = Field(1, ge=0)
    max_chars: int = Field(16000, ge=1)
    limit: int | None = Field(None, ge=1)
    seed: int = 0

    @model_validator(mode="after")
    def _one_source(self) -> PromptSourceConfig:
        if bool(self.path) == bool(self.hf_dataset):
            raise ValueError("set exactly one of path or hf_dataset")
        return self


class ScorerConfig(Strict):
    """How candidates are ranked (ALGORITHMS.md section 7)."""

    kind: Literal["reward_model", "pointwise", "pairwise", "moa_judge"] = "pointwise"
    judges: list[AgentConfig] = Field(default_factory=list)
    aggregator: AgentConfig | None = None  # the MoA judge's final judge
    reward_model: str | None = None  # hub id or local path of a sequence classifier
    trust_remote_code: bool = Field(
        False,
        description="reward_model: run the checkpoint's own modeling code (its config's auto_map), as "
        "ArmoRM needs for `output.score`; this executes code that ships with the model on this machine",
    )
    device: str = "cpu"
    batch_size: int = Field(8, ge=1)
    criteria: list[str] | None = None  # MoA judge: pick from these per prompt
    num_criteria: int = Field(3, ge=1)
    max_attempts: int = Field(3, ge=1)  # unparsable verdicts are re-asked
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

    enabled: bool = False
    policy: AgentConfig | None = None
    samples: int = Field(5, ge=2)
    scorer: ScorerConfig = ScorerConfig()
    min_margin: float = Field(0.5, ge=0)
    max_length_ratio: float | None = Field(None, gt=1)
    limit: int | None = Field(None, ge=1)  # how many prompts of the source to use

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
    root: str = "data"
    test_size: float = Field(0.1, ge=0, lt=1)
    split_seed: int = 0
    license: str = "apache-2.0"
    tags: list[str] = Field(default_factory=list)
    publish_repo_id: str | None = None  # publish each new version here when set
    private: bool = Field(True, description="publish the repo private (`moaa publish --public` overrides)")
    language: list[str] = Field(
        default_factory=lambda: ["en"], description="ISO 639 codes of the prompts' language, for the card"
    )


class RunSettings(Strict):
    shard_size: int = Field(100, ge=1)
    work_dir: str = ".moaa/work"
    task_runner: Literal["threads", "dask", "ray"] = "threads"
    address: str | None = None  # an existing Dask scheduler / Ray cluster
    workers: int = Field(2, ge=1)
    max_parallel_shards: int = Field(4, ge=1)
    max_failure_rate: float = Field(0.5, ge=0, le=1)
    min_prompts_for_failure_rate: int = Field(20, ge=1)
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
    enabled: bool = True
    path: str = ".moaa/cache.sqlite"


class MoaaConfig(Strict):
    """A whole run: endpoints, prompts, the SFT and preference stages, output."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    description: str = ""
    endpoints: dict[str, EndpointConfig]
    prompts: PromptSourceConfig
    sft: GenerationConfig
    preference: PreferenceConfig = PreferenceConfig()
    output: OutputConfig = OutputConfig()
    run: RunSettings = RunSettings()
    cache: CacheConfig = CacheConfig()
    answers: AnswersConfig = AnswersConfig()

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


# ---------------------------------------------------------------- loading


def load_config(path: str | Path, overrides: list[str] | None = None) -> MoaaConfig:
    """Read a YAML config (following `extends:`), apply `key=value` overrides, validate."""
    path = Path(path)
    raw = _read_yaml(path)
    for item in overrides or []:
        apply_override(raw, item)
    config = parse_config(raw, source=str(path))
    return config


def parse_config(raw: dict[str, Any], source: str = "config") -> MoaaConfig:
    try:
        config = MoaaConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(f"{source}: {describe_validation_error(exc, MoaaConfig)}") from None
    _check_endpoint_refs(config, source)
    return config


def _read_yaml(path: Path, seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found; pass a YAML file such as configs/local.yaml")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (byte {exc.start}); save the file as UTF-8") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f":{mark.line + 1}:{mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{path}{where}: malformed YAML: {problem}") from None
    if raw is None:
        raise ConfigError(f"{path}: the config file is empty")
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of keys, not {type(raw).__name__}")
    if "extends" not in raw:
        return raw
    parent = raw.pop("extends")
    where = f"{path}:{_line_of_key(path, 'extends')}"
    if not isinstance(parent, str) or not parent.strip():
        raise ConfigError(f"{where}: extends: expected the path of another YAML file, e.g. extends: local.yaml")
    parent_path = (path.parent / parent).resolve()
    if parent_path in seen or parent_path == path.resolve():
        raise ConfigError(f"{where}: extends: {parent} loops back to {parent_path}; remove one of the extends")
    if not parent_path.is_file():
        raise ConfigError(
            f"{where}: extends: {parent} not found (looked for {parent_path}); the path is relative to {path.parent}"
        )
    return deep_merge(_read_yaml(parent_path, (*seen, path.resolve(), parent_path)), raw)


def _line_of_key(path: Path, key: str) -> int:
    """The 1-based line of a top-level `key:` in a YAML file (1 when it cannot be told)."""
    try:
        node = yaml.compose(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return 1
    for k, _ in getattr(node, "value", []) or []:
        if getattr(k, "value", None) == key:
            return int(k.start_mark.line) + 1
    return 1


def deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """`over` laid onto `base`; mappings merge key by key, anything else is replaced."""
    merged = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def apply_override(raw: dict[str, Any], item: str) -> None:
    """Apply one `dotted.key=value` (value parsed as YAML; `a.0.b` indexes lists)."""
    key, sep, text = item.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set {item!r}: expected dotted.key=value, e.g. --set sft.layers=3")
    try:
        value = yaml.safe_load(text) if text.strip() else ""
    except yaml.YAMLError:
        value = text
    parts = key.strip().split(".")
    node: Any = raw
    for i, part in enumerate(parts[:-1]):
        node = _step(node, part, parts[: i + 1], item, create=True)
    last = parts[-1]
    if isinstance(node, list):
        index = _index(node, last, parts, item)
        node[index] = value
    else:
        node[last] = value


def _step(node: Any, part: str, so_far: list[str], item: str, create: bool) -> Any:
    if isinstance(node, list):
        return node[_index(node, part, so_far, item)]
    if not isinstance(node, dict):
        raise ConfigError(f"--set {item!r}: '{'.'.join(so_far[:-1])}' is not a mapping")
    if part not in node or node[part] is None:
        node[part] = {}
    return node[part]


def _index(node: list[Any], part: str, so_far: list[str], item: str) -> int:
    if not part.isdigit() or int(part) >= len(node):
        raise ConfigError(f"--set {item!r}: '{'.'.join(so_far)}' needs a list index below {len(node)}")
    return int(part)


def describe_validation_error(exc: ValidationError, root: type[BaseModel]) -> str:
    """The first error as `dotted.path: what is wrong` (with the allowed keys for unknown keys)."""
    err = exc.errors()[0]
    loc = [p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-"))]
    where = _dotted(loc) or "(top level)"
    if err["type"] == "extra_forbidden":
        allowed = ", ".join(_allowed_keys(root, loc[:-1]))
        return f"unknown key '{where}' (allowed here: {allowed})"
    if err["type"] == "missing":
        return f"missing required key '{where}'"
    msg = err["msg"].removeprefix("Value error, ")
    field, sep, rest = msg.partition(": ")
    if sep and field.replace("_", "").replace(".", "").isalnum() and " " not in field:
        # A model validator names the field it checks ("layers: ..."): report it at that field.
        where, msg = (f"{where}.{field}" if loc else field), rest
    got = err.get("input")
    secret = loc and loc[-1] == "api_key_env"  # a key typed there is never echoed
    shown = "" if isinstance(got, (dict, list)) or got is None or secret else f" (got {got!r})"
    return f"{where}: {msg}{shown}"


def _dotted(loc: list[Any]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _allowed_keys(model: type[BaseModel], loc: list[Any]) -> list[str]:
    current: Any = model
    for part in loc:
        if isinstance(part, int) or current is None:
            continue
        field = current.model_fields.get(part) if isinstance(current, type) else None
        current = _model_of(field.annotation) if field else None
    if isinstance(current, type) and issubclass(current, BaseModel):
        return list(current.model_fields)
    return []


def _model_of(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()) or ():
        found = _model_of(arg)
        if found:
            return found
    return None


def _check_endpoint_refs(config: MoaaConfig, source: str) -> None:
    known = sorted(config.endpoints)
    for path, agent in config.agents():
        if agent.endpoint not in config.endpoints:
            raise ConfigError(
                f"{source}: {path}.endpoint: unknown endpoint '{agent.endpoint}' "
                f"(defined under endpoints: {', '.join(known) or 'none'})"
            )


def resolve_api_key(name: str, endpoint: EndpointConfig) -> str:
    """The endpoint's key read from its environment variable (a placeholder when none is needed)."""
    if not endpoint.api_key_env:
        return "not-needed"
    value = os.environ.get(endpoint.api_key_env)
    if not value:
        raise ConfigError(
            f"endpoint '{name}': environment variable {endpoint.api_key_env} is not set; "
            f"export it (or change endpoints.{name}.api_key_env)"
        )
    from moaa.public import add_secret

    add_secret(value, endpoint.api_key_env)  # scrubbed from everything moaa writes
    return value


def check_environment(config: MoaaConfig) -> None:
    """Fail before any work when a used endpoint's key variable is missing."""
    for name in config.used_endpoints():
        resolve_api_key(name, config.endpoints[name])


def missing_keys(config: MoaaConfig) -> list[str]:
    """One line per used endpoint whose key variable is unset (a dry run reports them, not fails)."""
    out = []
    for name in config.used_endpoints():
        try:
            resolve_api_key(name, config.endpoints[name])
        except ConfigError as exc:
            out.append(str(exc))
    return out


def dump_config(config: MoaaConfig) -> dict[str, Any]:
    """The resolved config as plain data (it holds variable names, never keys)."""
    return config.model_dump(mode="json")


def dump_public_config(config: MoaaConfig) -> dict[str, Any]:
    """dump_config without secrets: a URL's credentials and any key value removed (what is written)."""
    from moaa.public import scrub

    return scrub(dump_config(config))
