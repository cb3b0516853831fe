"""Request knobs and reasoning models: extra_body and the token-limit parameter reach the server and
the cache key; thinking is split off answers at the seam and kept in the trace."""

from __future__ import annotations

import asyncio
import json

import pytest

from moaa.config import EndpointConfig, Sampling
from moaa.models.cache import CachedClient, RequestCache, request_key
from moaa.models.client import OpenAIChatClient, parse_completion, request_options
from moaa.models.reasoning import split_reasoning
from moaa.models.stats import RunStats
from moaa.testing.openai_replies import default_reply
from moaa.testing.openai_server import OpenAITestServer
from tests.conftest import make_config
from tests.pipeline_helpers import verdict_responder, version_rows, work_rows

MESSAGES = [{"role": "user", "content": "Say hi."}]


def endpoint(base_url: str, **fields) -> EndpointConfig:
    return EndpointConfig(base_url=base_url, model="test-model", max_retries=0, timeout_s=5, **fields)


def ask(client, sampling: Sampling | None = None):
    async def go():
        try:
            return await client.chat(MESSAGES, sampling)
        finally:
            await getattr(client, "inner", client).aclose()

    return asyncio.run(go())


def test_extra_body_of_endpoint_and_agent_arrive_merged_with_the_token_parameter():
    with OpenAITestServer() as srv:
        ep = endpoint(
            srv.base_url,
            extra_body={"top_k": 20, "min_p": 0.05, "model": "not-this-one"},
            token_limit_param="max_completion_tokens",
            sampling=Sampling(max_tokens=64),
        )
        agent = Sampling(temperature=0.3, extra_body={"top_k": 5, "chat_template_kwargs": {"enable_thinking": False}})
        ask(OpenAIChatClient("test", ep, RunStats()), agent)
        body = srv.requests[-1]["body"]
    assert body["top_k"] == 5  # the agent's value wins over the endpoint's
    assert body["min_p"] == 0.05
    assert body["chat_template_kwargs"] == {"enable_thinking": False}
    assert body["model"] == "test-model"  # extra_body never replaces the body's own fields
    assert body["max_completion_tokens"] == 64 and "max_tokens" not in body
    assert body["temperature"] == 0.3


def test_request_knobs_are_in_the_cache_key_and_defaults_keep_old_keys():
    params = Sampling(temperature=0.5)
    plain = request_key("m", MESSAGES, params, 1, None, "t")
    assert request_key("m", MESSAGES, params, 1, None, "t", request_options(endpoint("http://x/v1"))) == plain
    knobs = [
        request_options(endpoint("http://x/v1", extra_body={"top_k": 5})),
        request_options(endpoint("http://x/v1", token_limit_param="max_completion_tokens")),
        request_options(endpoint("http://x/v1", keep_reasoning=True)),
    ]
    keys = {request_key("m", MESSAGES, params, 1, None, "t", options) for options in knobs}
    keys.add(request_key("m", MESSAGES, params.model_copy(update={"extra_body": {"min_p": 0.1}}), 1, None, "t"))
    assert plain not in keys and len(keys) == 4


def test_a_changed_extra_body_asks_the_server_again(tmp_path):
    with OpenAITestServer() as srv:
        cache = RequestCache(tmp_path / "cache.sqlite")
        for top_k in (5, 5, 6):
            ep = endpoint(srv.base_url, extra_body={"top_k": top_k})
            stats = RunStats()
            ask(CachedClient(OpenAIChatClient("test", ep, stats), cache, stats))
        assert [r["body"]["top_k"] for r in srv.requests] == [5, 6]


@pytest.mark.parametrize(
    "content, separate, answer, reasoning",
    [
        ("<think>plan it</think>\n\nThe answer.", None, "The answer.", "plan it"),
        ("plan it</think>The answer.", None, "The answer.", "plan it"),  # the template opened the block
        ("The answer.", "plan it", "The answer.", "plan it"),  # reasoning_content
        ("<think>still planning", None, "", "still planning"),  # cut while thinking
        ("No thinking here.", None, "No thinking here.", ""),
    ],
)
def test_split_reasoning(content, separate, answer, reasoning):
    assert split_reasoning(content, separate) == (answer, reasoning)


def test_reasoning_content_and_reasoning_tokens_are_read_from_a_reply():
    reply = {
        "choices": [
            {"message": {"content": "Paris.", "reasoning_content": "France's capital."}, "finish_reason": "stop"},
            {"message": {"content": "<think>hmm</think>Lyon?", "reasoning": None}, "finish_reason": "stop"},
        ],
        "usage": {"prompt_tokens": 7, "completion_tokens": 30, "completion_tokens_details": {"reasoning_tokens": 22}},
    }
    done = parse_completion(reply, "ep", "m", 0.1)
    assert done.texts == ["Paris.", "Lyon?"]
    assert done.reasoning == ["France's capital.", "hmm"]
    assert (done.completion_tokens, done.reasoning_tokens) == (30, 22)
    kept = parse_completion(reply, "ep", "m", 0.1, keep_reasoning=True)
    assert kept.texts[0] == "<think>\nFrance's capital.\n</think>\n\nParis."


def test_reasoning_tokens_are_counted_per_endpoint():
    def responder(request: dict) -> str:
        return "<think>thinking hard</think>Hello."

    with OpenAITestServer(responder=responder) as srv:
        stats = RunStats()
        done = ask(OpenAIChatClient("test", endpoint(srv.base_url), stats))
    assert done.text == "Hello." and done.reasoning == ["thinking hard"]
    assert stats.endpoints["test"].calls == 1


THINK = "<think>SECRET-PLAN weigh the options first</think>\n\n"


def thinking_responder(request: dict) -> list[str]:
    """Every reply opens with a think block, judges' verdicts too (they parse only without it)."""
    verdict = verdict_responder(request)
    replies = [verdict] if verdict is not None else [default_reply(request, i) for i in range(request.get("n", 1))]
    return [THINK + reply for reply in replies]


def test_a_think_block_leaves_no_think_text_in_sft_or_dpo(tmp_path, prefect_harness):
    from tests.test_pipeline import run

    with OpenAITestServer(responder=thinking_responder) as srv:
        config = make_config(
            tmp_path,
            srv.base_url,
            "prompts.limit=3",
            "preference.enabled=true",
            "preference.policy.endpoint=test",
            "preference.samples=3",
            "preference.scorer.judges=[{endpoint: test}]",
            "preference.min_margin=0.1",
            "output.test_size=0",
        )
        summary = run(config)
    sft = version_rows(summary["version_path"], "sft")
    dpo = version_rows(summary["version_path"], "dpo")
    assert len(sft) == 3 and dpo, summary["stages"]
    data = json.dumps(sft + dpo)
    assert "SECRET-PLAN" not in data and "think>" not in data
    trace = work_rows(tmp_path / "work", "sft", "trace")
    assert any("SECRET-PLAN" in step["meta"] for step in trace if step["kind"] == "aggregate")
    assert all("SECRET-PLAN" not in step["text"] for step in trace)
    samples = [s for s in work_rows(tmp_path / "work", "preference", "trace") if s["kind"] == "sample"]
    assert samples and all("SECRET-PLAN" in json.loads(s["meta"])["reasoning"] for s in samples)
    assert all("SECRET-PLAN" not in s["text"] for s in samples)
