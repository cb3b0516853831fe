"""The in-process transformers backend behind the ChatClient seam, on a tiny random model:
sampling parameters, n, seeds, usage and stats, one generate at a time, LoRA adapter folders,
and selection by `backend: transformers` in a config.

Run: .venv/bin/python -m pytest tests/test_transformers_client.py -x -q
"""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import pytest
from tiny_models import build_tiny_causal_lm, build_tiny_tokenizer

from moaa.config import EndpointConfig, Sampling
from moaa.models import transformers_backend as tc
from moaa.models.stats import RunStats
from moaa.models.transformers_backend import TransformersChatClient, _cut_at_stop

MESSAGES = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "say hello"}]


@pytest.fixture(scope="module")
def tiny_lm(tmp_path_factory) -> Path:
    return build_tiny_causal_lm(tmp_path_factory.mktemp("tiny") / "lm")


@pytest.fixture(autouse=True)
def _fresh_models():
    tc.unload()
    yield
    tc.unload()


def client_for(path: Path, stats: RunStats | None = None, **endpoint) -> TransformersChatClient:
    return TransformersChatClient("student", EndpointConfig(model=str(path), backend="transformers", **endpoint),
                                  stats or RunStats())  # fmt: skip


def chat(client, sampling: Sampling | None = None, n: int = 1, messages=MESSAGES):
    return asyncio.run(client.chat(messages, sampling, n=n, tag="eval.model"))


def never_eos(ref: Path) -> None:
    """Make the random model never end on its own, so lengths are exact."""
    loaded = tc.load(str(ref))
    loaded.model.generation_config.suppress_tokens = [loaded.tokenizer.eos_token_id, loaded.tokenizer.pad_token_id]


def test_sampling_n_seed_usage_and_stats(tiny_lm: Path):
    stats = RunStats()
    client = client_for(tiny_lm, stats)
    never_eos(tiny_lm)
    done = chat(client, Sampling(temperature=1.0, top_p=0.9, max_tokens=6, seed=3), n=3)
    prompt_ids = build_tiny_tokenizer().apply_chat_template(MESSAGES, tokenize=False, add_generation_prompt=True)
    prompt_len = len(build_tiny_tokenizer()(prompt_ids, add_special_tokens=False)["input_ids"])
    assert len(done.texts) == 3 and done.finish_reasons == ["length"] * 3
    assert done.prompt_tokens == prompt_len and done.completion_tokens == 18
    assert (done.endpoint, done.model) == ("student", str(tiny_lm))
    assert len(set(done.texts)) > 1  # three samples, not one repeated
    again = chat(client, Sampling(temperature=1.0, top_p=0.9, max_tokens=6, seed=3), n=3)
    other = chat(client, Sampling(temperature=1.0, top_p=0.9, max_tokens=6, seed=4), n=3)
    assert again.texts == done.texts and other.texts != done.texts
    counter = stats.endpoints["student"]
    assert (counter.calls, counter.requests, counter.truncated) == (3, 3, 9)
    assert counter.prompt_tokens == 3 * prompt_len and counter.completion_tokens == 54
    assert stats.tags["eval.model|student"].calls == 3 and len(stats.latencies["student"]) == 3


def test_eos_ends_an_answer(tiny_lm: Path):
    stats = RunStats()
    loaded = tc.load(str(tiny_lm))
    loaded.model.generation_config.sequence_bias = {(loaded.tokenizer.eos_token_id,): 100.0}
    done = chat(client_for(tiny_lm, stats), Sampling(temperature=0.7, max_tokens=5, seed=0), n=2)
    assert done.texts == ["", ""] and done.finish_reasons == ["stop", "stop"] and done.completion_tokens == 0
    assert stats.endpoints["student"].empty == 2 and stats.endpoints["student"].truncated == 0


def test_greedy_and_endpoint_defaults(tiny_lm: Path):
    client = client_for(tiny_lm, sampling=Sampling(temperature=0.0, max_tokens=4))
    never_eos(tiny_lm)
    first, second = chat(client, n=2), chat(client, Sampling(seed=99))
    assert first.texts[0] == first.texts[1] == second.texts[0]  # greedy ignores seeds
    assert first.completion_tokens == 8 and second.completion_tokens == 4


def test_one_generate_at_a_time(tiny_lm: Path, monkeypatch):
    client = client_for(tiny_lm, sampling=Sampling(max_tokens=3, temperature=0.0))
    model = tc.load(str(tiny_lm)).model
    active, peak, real = [0], [0], model.generate
    guard = threading.Lock()

    def generate(*args, **kwargs):
        with guard:
            active[0] += 1
            peak[0] = max(peak[0], active[0])
        time.sleep(0.05)
        try:
            return real(*args, **kwargs)
        finally:
            with guard:
                active[0] -= 1

    monkeypatch.setattr(model, "generate", generate)

    async def many():
        return await asyncio.gather(*(client.chat(MESSAGES) for _ in range(4)))

    results = asyncio.run(many())
    assert len(results) == 4 and peak[0] == 1


def test_lora_adapter_folder_loads_merged(tiny_lm: Path, tmp_path: Path):
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    peft_model = get_peft_model(
        AutoModelForCausalLM.from_pretrained(tiny_lm),
        LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False),
    )
    peft_model.save_pretrained(tmp_path / "adapter")
    merged = peft_model.merge_and_unload()
    loaded = tc.load(str(tmp_path / "adapter")).model
    key = "model.layers.1.self_attn.v_proj.weight"
    torch.testing.assert_close(loaded.state_dict()[key], merged.state_dict()[key])
    base = AutoModelForCausalLM.from_pretrained(tiny_lm).state_dict()[key]
    assert not torch.equal(base, loaded.state_dict()[key])
    done = chat(client_for(tmp_path / "adapter"), Sampling(temperature=0.0, max_tokens=3))
    assert done.completion_tokens == 3


def test_stop_strings_cut_the_text():
    assert _cut_at_stop("alpha beta gamma", ["gamma", "beta"]) == ("alpha ", True)
    assert _cut_at_stop("alpha", ["zzz"]) == ("alpha", False)
    assert _cut_at_stop("alpha", None) == ("alpha", False)


def test_config_backend_transformers_builds_this_client(tiny_lm: Path, tmp_path: Path):
    from conftest import make_config

    from moaa.models.session import build_clients

    config = make_config(
        tmp_path, "http://127.0.0.1:9/v1", "cache.enabled=false",
        endpoints={"student": {"backend": "transformers", "model": str(tiny_lm)}},
        sft={"method": "single", "proposers": [{"endpoint": "student", "temperature": 0.0, "max_tokens": 3}]},
    )  # fmt: skip
    clients = build_clients(config, RunStats())
    assert isinstance(clients["student"], TransformersChatClient)
    assert config.endpoints["student"].max_concurrency == 1
