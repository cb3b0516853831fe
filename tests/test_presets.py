"""Every preset names models its provider serves: ids compared with moaa/config/model_ids.py, the one list."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from moaa.config import load_config
from moaa.config.model_ids import PROVIDERS, provider_of, unknown_models
from tests.conftest import ROOT, make_config

PRESET_FILES = sorted(
    [*(ROOT / "configs").glob("*.yaml"), *(ROOT / "configs" / "providers").glob("*.yaml")]
    + [ROOT / "configs" / "train" / "eval.yaml"]
)


def endpoints_of(path: Path) -> dict[str, dict]:
    """The endpoints a YAML file defines itself (anchors and `<<` merges resolved by the YAML loader)."""
    return (yaml.safe_load(path.read_text(encoding="utf-8")) or {}).get("endpoints") or {}


@pytest.mark.parametrize("path", PRESET_FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_preset_endpoint_names_a_model_its_provider_lists(path):
    for name, ep in endpoints_of(path).items():
        urls = ep.get("base_url") or []
        provider = provider_of(urls if isinstance(urls, str) else (urls or [None])[0], bool(ep.get("local")))
        assert provider is not None, f"{path.name}: endpoint '{name}' reaches no provider of model_ids.py: add it"
        assert provider.serves(ep["model"]), (
            f"{path.name}: endpoint '{name}' names model {ep['model']!r}, which is not among the {provider.name} "
            f"ids checked on {provider.checked}: {sorted(provider.ids)}"
        )


def test_the_presets_cover_every_remote_provider_and_each_list_says_when_and_where():
    assert {p.name for p in PROVIDERS} >= {"openai", "together", "vllm", "ollama", "llama.cpp", "embedded"}
    for provider in PROVIDERS:
        assert len(provider.checked) == 10 and provider.checked.startswith("20") and provider.source


@pytest.mark.parametrize(
    "model, known",
    [("gpt-4-1-mini", False), ("gpt-4-1-nano", False), ("gpt-4.1-nano", False), ("gpt-6.1-terra", True)],
)
def test_a_misspelled_or_retired_openai_id_is_not_in_the_list(model, known):
    assert provider_of("https://api.openai.com/v1").serves(model) is known


def test_the_dry_run_names_a_model_the_known_provider_does_not_list(tmp_path):
    config = make_config(tmp_path, "https://api.openai.com/v1", "endpoints.test.model=gpt-4-1-mini")
    assert unknown_models(config) == [
        "endpoint 'test': model 'gpt-4-1-mini' is not among the openai model ids moaa checked on 2026-12-06 "
        "(moaa/config/model_ids.py); `moaa check` asks openai whether it serves it"
    ]
    # a server of the user's own (unknown address) is never second-guessed
    assert unknown_models(make_config(tmp_path, "http://10.0.0.5:9000/v1")) == []


def test_the_openai_preset_loads_and_sends_no_temperature_to_the_model_that_refuses_it():
    config = load_config(ROOT / "configs" / "providers" / "openai.yaml")
    sol = config.endpoints[config.sft.aggregator.endpoint]
    assert sol.extra_body["reasoning_effort"] != "none" and config.sft.aggregator.temperature is None
    assert sol.sampling.temperature is None
    for proposer in config.sft.proposers:  # a temperature only with reasoning_effort none
        assert config.endpoints[proposer.endpoint].extra_body["reasoning_effort"] == "none"
