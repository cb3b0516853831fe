"""The model ids moaa's presets may name, per provider, with when and where each list was checked.

One list in one place: `tests/test_presets.py` loads every preset under `configs/` and compares each
endpoint's `model` with the list of the provider its base_url reaches, so an id rewritten by mistake
(`gpt-4-1-mini` for `gpt-4.1-mini`, an endpoint-name rule reaching the model) or one that a provider
retired fails there, not on a paid run. `moaa run --dry-run` names a model a known provider's list
does not hold. A list is what its source said on the date given; `moaa check CONFIG` asks the
provider itself (its /v1/models and a 1-token request).

To add a preset for a new provider, add its ids here with the date and the page they were read on.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from moaa.config.models import MoaaConfig


@dataclass(frozen=True)
class ProviderModels:
    """The chat model ids one provider serves, as its own documentation listed them on `checked`."""

    name: str
    addresses: tuple[str, ...]  # host, or host:port for a local server at its documented default port
    ids: frozenset[str]
    checked: str  # YYYY-MM-DD
    source: str
    unverified: str = ""  # what could not be read from the provider itself

    def serves(self, model: str) -> bool:
        return model in self.ids


PROVIDERS = (
    ProviderModels(
        "openai",
        ("api.openai.com",),
        frozenset({"gpt-6.1-sol", "gpt-6.1-terra", "gpt-6-luna", "gpt-6-astra"}),
        "2026-12-06",
        "developers.openai.com/api/docs/deprecations (upcoming shutdowns and their recommended replacements)",
        "the model pages (developers.openai.com/api/docs/models/<id>) and the pricing page could not be read "
        "here: the ids are those the deprecations page recommends and gateway catalogues link to those pages",
    ),
    ProviderModels(
        "together",
        ("api.together.ai", "api.together.xyz"),
        frozenset(
            {
                "Qwen/Qwen3-235B-A22B-Instruct-2507-tput",
                "Qwen/Qwen3-235B-A22B-Thinking-2507",
                "meta-llama/Llama-3.3-70B-Instruct-Turbo",
                "deepseek-ai/DeepSeek-V3.1",
                "moonshotai/Kimi-K2-Instruct-0905",
                "moonshotai/Kimi-K2.5",
                "openai/gpt-oss-120b",
                "openai/gpt-oss-20b",
                "zai-org/GLM-4.7",
            }
        ),  # fmt: skip
        "2026-12-06",
        "docs.together.ai/docs/serverless-models (chat models table); base URL from Together's OpenAPI spec",
        "the deprecations page's schedule (docs.together.ai/docs/deprecations) could be read only in part",
    ),
    ProviderModels(
        "vllm",
        ("127.0.0.1:8000", "localhost:8000"),
        frozenset({"Qwen/Qwen3-8B"}),
        "2026-12-06",
        "the Hugging Face repository id `vllm serve` is given (Qwen3's README, Run Locally: vLLM)",
    ),
    ProviderModels(
        "ollama",
        ("127.0.0.1:11434", "localhost:11434"),
        frozenset({"qwen3:8b"}),
        "2026-12-06",
        "Ollama's library tag for Qwen3 8B (Qwen3's README, Run Locally: Ollama)",
        "ollama.com/library/qwen3 itself could not be read here",
    ),
    ProviderModels(
        "llama.cpp",
        ("127.0.0.1:8080", "localhost:8080"),
        frozenset({"qwen3-8b"}),
        "2026-12-06",
        "llama-server serves the one model it was started with whatever `model` says; the id is a label",
    ),
    ProviderModels(
        "embedded",
        ("local",),
        frozenset({"qwen2.5-coder-0.5b-instruct"}),
        "2026-12-06",
        "moaa.local.model (the GGUF moaa verifies by sha256)",
    ),
)


def provider_of(base_url: str | None, local: bool = False) -> ProviderModels | None:
    """The known provider an endpoint reaches: by host (host:port for a local server), None if unknown."""
    if local:
        address = "local"
    else:
        parts = urlsplit(base_url or "")
        host = parts.hostname or ""
        address = f"{host}:{parts.port}" if host in ("127.0.0.1", "localhost") else host
    return next((p for p in PROVIDERS if address in p.addresses), None)


def unknown_models(config: MoaaConfig) -> list[str]:
    """One line per used endpoint whose model a known provider's list does not hold."""
    lines = []
    for name in config.used_endpoints():
        ep = config.endpoints[name]
        urls = ep.base_urls() or [None]
        provider = provider_of(urls[0], ep.local and not ep.base_urls())
        if provider is not None and not provider.serves(ep.model):
            lines.append(
                f"endpoint '{name}': model '{ep.model}' is not among the {provider.name} model ids moaa checked on "
                f"{provider.checked} (moaa/config/model_ids.py); `moaa check` asks {provider.name} whether it serves it"
            )
    return lines
