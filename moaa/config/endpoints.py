"""The config of model servers and of the agents that call them: sampling, endpoints, batch mode.

Each field carries its help text (`Field(description=...)`, shown by `moaa config explain`).
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


ENDPOINT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")


LOCAL_SLOTS = 4  # the embedded server's default parallel slots (and the local endpoint's max_concurrency)
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
        values = self.__dict__  # the fields' values (reading model_fields costs ~1 us a field: per call)
        return {k: values[k] for k in SAMPLING_FIELDS}


SAMPLING_FIELDS = tuple(Sampling.model_fields)


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
        description="the embedded llama.cpp server, started and stopped by moaa (one parallel slot per request "
        "of max_concurrency)",
    )
    backend: Literal["openai", "transformers"] = Field(
        "openai", description="openai: HTTP to an OpenAI-compatible server; transformers: in-process, small models"
    )
    api_key_env: str | None = Field(
        None,
        description="the NAME of the environment variable holding the key (e.g. OPENAI_API_KEY), never the key",
    )
    max_concurrency: int = Field(
        16,
        ge=1,
        description="most requests in flight to this endpoint at once (local: 4, the embedded server's "
        "parallel slots; transformers: 1)",
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
    # How the schema travels: OpenAI's {"type": "json_schema", ...}, or llama.cpp's
    # {"type": "json_object", "schema": ...} (llama-cpp-python's server rejected the OpenAI shape;
    # llama.cpp's own reads both). Local: llama.cpp.
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
            # The embedded llama.cpp server decodes this many requests at once (one slot each, see
            # moaa.local.server): 4 measured best on 2 cores (README, "The embedded local model").
            if "max_concurrency" not in self.model_fields_set:
                self.max_concurrency = LOCAL_SLOTS
            # It answers n>1 but reports one choice's tokens as the usage: n seeded requests instead,
            # decoded together in its slots, so every token is counted.
            if "supports_n" not in self.model_fields_set:
                self.supports_n = False
            # llama.cpp turns a schema into a grammar, so even a 0.5B judge answers with a verdict
            # that parses (it wrote the rubric's JSON unconstrained, then ran out of tokens).
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
