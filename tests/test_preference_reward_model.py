"""The reward-model scorer on tiny checkpoints built and saved by the tests (no Hub): a one-logit
LlamaForSequenceClassification, an ArmoRM-shaped custom-code model whose `output.score` counts, a
backbone without a head and a two-label classifier (both refused); the real loading code, chat
templating, batching, and the stage choosing by reward."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import pytest
from fakes import FakeClient
from tiny_models import build_tiny_custom_reward_model, build_tiny_headless_model, build_tiny_reward_model

from moaa.config import PreferenceConfig
from moaa.errors import ConfigError
from moaa.preference import judge_prompt
from moaa.preference.candidates import collapse
from moaa.preference.reward_model import RewardModelScorer, format_conversation, load_reward_model
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
    assert (scores[0].details.reward_model, scores[0].details.templated) == (rm_path, True)


def test_model_is_loaded_once_per_process(rm_path):
    assert load_reward_model(rm_path) is load_reward_model(rm_path)


@pytest.fixture(scope="module")
def armo_path(tmp_path_factory) -> str:
    return str(build_tiny_custom_reward_model(tmp_path_factory.mktemp("armo")))


@pytest.fixture(scope="module")
def headless_path(tmp_path_factory) -> str:
    return str(build_tiny_headless_model(tmp_path_factory.mktemp("base")))


def test_custom_code_reward_model_scores_with_its_output_score(armo_path):
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(armo_path)
    model = AutoModelForSequenceClassification.from_pretrained(armo_path, trust_remote_code=True).eval()
    expected, logit0 = [], []
    for text in TEXTS:
        messages = [*PROMPT.messages, {"role": "assistant", "content": text}]
        ids = tok(tok.apply_chat_template(messages, tokenize=False), add_special_tokens=False, return_tensors="pt")
        with torch.inference_mode():
            out = model(**ids)
        expected.append(out.score[0, 0].item())
        logit0.append(out.logits[0, 0].item())
    got = collapse(TEXTS, ["stop"] * 3, "policy")
    scores = asyncio.run(RewardModelScorer(armo_path, "cpu", 2, trust_remote_code=True).score(PROMPT, got.candidates))
    assert [s.score for s in scores] == pytest.approx(expected, abs=1e-5)
    assert [s.score for s in scores] != pytest.approx(logit0, abs=1e-3)  # the score, not the first objective
    assert all(v > 9 for v in expected)  # the model's own scale (score = 10 + half the rewards' sum)


def test_custom_code_is_not_run_unless_allowed(armo_path):
    # Without the option transformers would build a stock LlamaForSequenceClassification with a fresh head.
    with pytest.raises(ConfigError) as err:
        load_reward_model(armo_path)
    assert str(err.value) == (
        f"preference.scorer.reward_model: '{armo_path}' defines its own model class "
        "(modeling_tiny_armo.TinyArmoRM); set preference.scorer.trust_remote_code: true to run the code that "
        "ships with it (only for a checkpoint you trust), else transformers would score with a stock class "
        "and a random head"
    )


def test_a_checkpoint_without_a_head_is_an_error_naming_the_model(headless_path):
    with pytest.raises(ConfigError) as err:
        load_reward_model(headless_path)
    message = str(err.value)
    assert message.startswith(f"preference.scorer.reward_model: '{headless_path}' has no weights for score.weight")
    assert "\n" not in message


def test_a_classifier_of_several_labels_is_not_a_reward_model(tmp_path):
    path = str(build_tiny_reward_model(tmp_path / "two", num_labels=2))
    got = collapse(TEXTS[:2], ["stop"] * 2, "policy")
    with pytest.raises(ConfigError, match=f"'{path}' gives 2 logits and no `score`"):
        asyncio.run(RewardModelScorer(path).score(PROMPT, got.candidates))


def test_a_preference_run_on_a_headless_checkpoint_stops_with_one_line(
    headless_path, tmp_path, prefect_harness, capsys, monkeypatch
):
    from moaa.testing.openai_server import OpenAITestServer
    from tests.pipeline_helpers import assert_one_line_error, run_main, write_config

    monkeypatch.chdir(tmp_path)
    with OpenAITestServer() as srv:
        cfg = write_config(
            tmp_path,
            srv.base_url,
            "preference.enabled=true",
            "preference.policy.endpoint=test",
            "preference.samples=2",
            "preference.scorer.kind=reward_model",
            f"preference.scorer.reward_model={headless_path}",
        )
        line = assert_one_line_error((run_main("run", str(cfg)), capsys.readouterr().err), 2)
    assert line.startswith(f"error: preference.scorer.reward_model: '{headless_path}' has no weights for score.weight")
    assert not list(tmp_path.glob("data/**/dpo*")) and not list(tmp_path.glob("work/preference/**/rows*.jsonl"))


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


ARMO_LIKE = [0.12, 0.15, 0.09, 0.18, 0.11]  # five samples of one prompt, ArmoRM-style (issue 36)


def test_a_reward_model_run_on_armorm_like_scores_writes_pairs(tmp_path, prefect_harness, capsys, monkeypatch):
    """A whole `moaa run` with the default margin: rewards a few hundredths apart are real preferences
    (the old default, 0.5 in every scorer's units, dropped every pair as near_tie)."""
    from tiny_models import build_tiny_counting_reward_model

    from moaa.testing.openai_server import OpenAITestServer
    from tests.pipeline_helpers import latest_version, run_main, version_rows, write_config, write_prompts

    monkeypatch.chdir(tmp_path)
    rm = build_tiny_counting_reward_model(tmp_path / "rm")
    samples = [" ".join(["x"] * round(100 * v)) for v in ARMO_LIKE]

    def responder(req: dict):
        return samples if req.get("n") == 5 else None  # the policy's n=5 call; the SFT stage's default replies

    with OpenAITestServer(responder=responder) as srv:
        cfg = write_config(
            tmp_path, srv.base_url, f"prompts.path={write_prompts(tmp_path, 3)}", "prompts.limit=null",
            "preference.enabled=true", "preference.policy.endpoint=test", "preference.samples=5",
            "preference.scorer.kind=reward_model", f"preference.scorer.reward_model={rm}",
            "preference.scorer.trust_remote_code=true",
        )  # fmt: skip
        assert run_main("run", str(cfg)) == 0, capsys.readouterr().err
    rows = version_rows(latest_version(tmp_path / "data"), "dpo")
    assert len(rows) == 3
    assert all((r["score_chosen"], r["score_rejected"]) == pytest.approx((0.18, 0.09)) for r in rows)
    assert all(r["chosen"][0]["content"] == samples[3] and r["rejected"][0]["content"] == samples[2] for r in rows)
