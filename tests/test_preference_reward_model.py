"""The reward-model scorer on a tiny LlamaForSequenceClassification built and saved by the test
(no Hub): the real loading code, chat templating, batching, and the stage choosing by reward."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import pytest
from fakes import FakeClient
from tiny_models import build_tiny_reward_model

from moaa.config import PreferenceConfig
from moaa.errors import ConfigError
from moaa.preference import judge_prompt
from moaa.preference.candidates import collapse
from moaa.preference.reward_model import RewardModelScorer, format_conversation, load_reward_model, score_texts
from moaa.rows import Prompt

PROMPT = Prompt.from_messages([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Name a city."}])
TEXTS = ["Rome.", "Paris is the capital of France.", "Oslo, in Norway, is a fine city with a fjord."]


@pytest.fixture(scope="module")
def rm_path(tmp_path_factory) -> str:
    return str(build_tiny_reward_model(tmp_path_factory.mktemp("rm")))


def direct_scores(path: str, texts: list[str]) -> list[float]:
    """Each conversation scored alone, straight through transformers (the reference)."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForSequenceClassification.from_pretrained(path).eval()
    out = []
    for text in texts:
        messages = [*PROMPT.messages, {"role": "assistant", "content": text}]
        ids = tok(tok.apply_chat_template(messages, tokenize=False), add_special_tokens=False, return_tensors="pt")
        with torch.inference_mode():
            out.append(model(**ids).logits[0, 0].item())
    return out


def test_conversation_is_chat_templated(rm_path):
    _, tok, _ = load_reward_model(rm_path)
    text, templated = format_conversation(tok, [*PROMPT.messages, {"role": "assistant", "content": "Rome."}])
    assert templated is True
    assert text == "<|system|>\nBe brief.[SEP]\n<|user|>\nName a city.[SEP]\n<|assistant|>\nRome.[SEP]\n"


def test_plain_format_without_a_chat_template():
    tok = SimpleNamespace(chat_template=None)
    text, templated = format_conversation(
        tok, [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]
    )
    assert (text, templated) == ("User: Hi\n\nAssistant: Hello", False)


@pytest.mark.parametrize("batch_size", [1, 2, 8])
def test_scores_match_one_by_one_forward_passes_whatever_the_batch(rm_path, batch_size):
    got = collapse(TEXTS, ["stop"] * 3, "policy")
    scores = asyncio.run(RewardModelScorer(rm_path, "cpu", batch_size).score(PROMPT, got.candidates))
    expected = direct_scores(rm_path, TEXTS)
    assert [s.score for s in scores] == pytest.approx(expected, abs=1e-5)
    assert len(set(round(v, 6) for v in expected)) == 3  # a random model still separates them
    assert scores[0].details == {"reward_model": rm_path, "templated": True}


def test_model_is_loaded_once_per_process(rm_path):
    assert load_reward_model(rm_path) is load_reward_model(rm_path)


def test_output_score_wins_over_logits_like_armorm():
    import torch

    class Tokenizer:
        model_max_length = 64

        def __call__(self, texts, **kwargs):
            return SimpleNamespace(to=lambda device: {"input_ids": torch.zeros(len(texts), 3)})

    class ArmoLike:  # ArmoRM returns a per-row `score` next to its 19 objective logits
        device = torch.device("cpu")
        config = SimpleNamespace(max_position_embeddings=64)

        def __call__(self, **batch):
            n = batch["input_ids"].shape[0]
            return SimpleNamespace(score=torch.arange(n, dtype=torch.float32) + 7, logits=torch.zeros(n, 19))

    assert score_texts(ArmoLike(), Tokenizer(), ["a", "b", "c"], 2, True) == [7.0, 8.0, 7.0]


def test_stage_pairs_the_highest_and_lowest_reward(rm_path):
    expected = direct_scores(rm_path, TEXTS)
    pref = PreferenceConfig.model_validate(
        {
            "enabled": True,
            "policy": {"endpoint": "pol"},
            "samples": 3,
            "min_margin": 0.0,
            "scorer": {"kind": "reward_model", "reward_model": rm_path, "batch_size": 2},
        }
    )
    clients = {"pol": FakeClient("pol", model="policy-m", responder=lambda call: TEXTS)}
    result = asyncio.run(judge_prompt(PROMPT, pref, clients))
    best, worst = expected.index(max(expected)), expected.index(min(expected))
    assert result.row.chosen[0]["content"] == TEXTS[best]
    assert result.row.rejected[0]["content"] == TEXTS[worst]
    assert result.row.score_chosen == pytest.approx(max(expected), abs=1e-5)
    assert [t.score for t in result.trace if t.kind == "sample"] == pytest.approx(expected, abs=1e-5)


def test_reward_model_config_errors(tmp_path):
    with pytest.raises(ValueError, match="scorer.reward_model: required for kind reward_model"):
        PreferenceConfig.model_validate(
            {"enabled": True, "policy": {"endpoint": "pol"}, "scorer": {"kind": "reward_model"}}
        )
    with pytest.raises(ConfigError, match=f"cannot load '{tmp_path}/missing' as a sequence classifier"):
        load_reward_model(str(tmp_path / "missing"))


def test_cuda_without_a_gpu_is_a_config_error(rm_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    with pytest.raises(ConfigError, match="preference.scorer.device: 'cuda'"):
        load_reward_model(rm_path, "cuda")
