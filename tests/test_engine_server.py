"""The generation engine seen from a real OpenAI-compatible test server (requests on 127.0.0.1)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from moaa.config import EndpointConfig, GenerationConfig
from moaa.engine import answer_prompt, calls_per_prompt, run_prompts
from moaa.errors import EndpointError
from moaa.models.client import OpenAIChatClient
from moaa.models.stats import RunStats
from moaa.rows import Prompt
from moaa.testing.openai_server import OpenAITestServer

MODELS = {"a": "model-a", "b": "model-b", "c": "model-c", "agg": "model-agg"}


def respond(req: dict) -> str | None:
    """Moderator calls get JSON picking answers 1 and 0; a model named *-broken always fails."""
    if req["model"].endswith("broken"):
        raise RuntimeError("broken model")
    text = json.dumps(req["messages"])
    if "You moderate" in text:
        return json.dumps({"reasoning": "1 and 0 are best", "selected": [1, 0], "stop": False})
    return None


@pytest.fixture
def server():
    with OpenAITestServer(responder=respond) as srv:
        yield srv


def make_gen(method: str, **overrides: Any) -> GenerationConfig:
    raw = {"method": method, "proposers": [{"endpoint": e} for e in "abc"], "aggregator": {"endpoint": "agg"}}
    if method == "moa":
        raw["layers"] = 2  # the MoA-Lite shape; moa's default of 3 layers is tested in test_config
    return GenerationConfig.model_validate(raw | overrides)


def run(srv: OpenAITestServer, coro_fn, models: dict[str, str] = MODELS, **endpoint: Any):
    """Run `coro_fn(clients)` against `srv` with one real client per endpoint (no retries)."""

    async def go():
        stats = RunStats()
        clients = {
            name: OpenAIChatClient(
                name,
                EndpointConfig(model=model, base_url=srv.base_url, max_retries=0, backoff_s=0.01, **endpoint),
                stats,
                api_key="k",
            )
            for name, model in models.items()
        }
        try:
            return await coro_fn(clients)
        finally:
            for client in clients.values():
                await client.aclose()

    return asyncio.run(go())


def chats(srv: OpenAITestServer) -> list[dict]:
    return [r["body"] for r in srv.requests if r["path"] == "/v1/chat/completions"]


PROMPT = Prompt.from_messages([{"role": "user", "content": "Name three prime numbers."}])

VARIANTS = [
    ("single", {}, 1),
    ("moa", {"layers": 2}, 4),
    ("moa", {"layers": 3}, 7),
    ("moa-lite", {}, 4),
    ("self-moa", {"self_moa": {"samples": 6}}, 2),
    ("self-moa-seq", {"seq": {"samples": 9, "window": 5, "new_per_step": 2, "repeats": 2}}, 4),
    ("smoa", {"smoa": {"rounds": 2, "k": 2, "roles": ["R1", "R2", "R3"]}}, 9),
]


@pytest.mark.parametrize("method, overrides, expected", VARIANTS)
def test_requests_per_prompt(server, method, overrides, expected):
    gen = make_gen(method, **overrides)
    result = run(server, lambda clients: answer_prompt(PROMPT, gen, clients))
    bodies = chats(server)
    assert result.failure is None
    assert len(bodies) == expected == calls_per_prompt(gen)["calls"] == result.calls
    assert len({b["seed"] for b in bodies}) == expected  # every call has its own explicit seed
    assert result.row.messages[-1]["content"].startswith(f"[{bodies[-1]['model']}] answer ")
    assert result.prompt_tokens == sum(s.prompt_tokens for s in result.trace) > 0


def test_aggregator_request_carries_surviving_answers_only(server):
    models = MODELS | {"b": "model-broken"}
    gen = make_gen("moa", min_answers=2)  # a degraded row allowed: 2 of 3 proposers
    result = run(server, lambda clients: answer_prompt(PROMPT, gen, clients), models)
    assert result.failure is None
    assert result.counters == {"failed_calls": 1, "degraded": 1, "degraded_layers": 1}
    assert json.loads(result.trace[-1].meta)["degraded"] == ["layer 1: 2 of 3 proposers answered"]
    agg = next(b for b in chats(server) if b["model"] == "model-agg")
    system = agg["messages"][0]["content"]
    answers = [s.text for s in result.trace if s.kind == "proposal" and s.selected]
    assert len(answers) == 2 and all(f"Response {i + 1}:\n{t}" in system for i, t in enumerate(answers))
    assert "Response 3:" not in system and "model-broken" not in system
    assert agg["messages"][1:] == PROMPT.messages
    assert result.row.models == ["model-a", "model-c", "model-agg"]
    assert [s.finish_reason for s in result.trace if s.agent == "proposer1"] == ["error"]


def test_all_proposers_broken_is_a_failure(server):
    models = {name: "model-broken" for name in "abc"} | {"agg": "model-agg"}
    result = run(server, lambda clients: answer_prompt(PROMPT, make_gen("moa"), clients), models)
    assert result.row is None and result.failure.reason == "proposers_failed"
    assert "HTTP 500" in result.failure.error
    assert {b["model"] for b in chats(server)} == {"model-broken"}


@pytest.mark.parametrize("ignore_n", [False, True])
def test_self_moa_uses_n_or_separate_seeded_calls(ignore_n):
    gen = make_gen("self-moa", self_moa={"samples": 4})
    with OpenAITestServer(ignore_n=ignore_n) as srv:
        result = run(srv, lambda clients: answer_prompt(PROMPT, gen, clients))
        samples = [b for b in chats(srv) if b["model"] == "model-a"]
    assert result.failure is None
    texts = [s.text for s in result.trace if s.kind == "sample"]
    assert len(set(texts)) == 4
    if ignore_n:  # the first call asks n=4, gets one choice, the client asks 3 more with new seeds
        assert [b.get("n") for b in samples] == [4, None, None, None]
        assert len({b["seed"] for b in samples}) == 4
    else:
        assert len(samples) == 1 and samples[0]["n"] == 4


def test_smoa_requests_forward_selected_answers(server):
    gen = make_gen("smoa", smoa={"rounds": 2, "k": 2, "roles": ["R1", "R2", "R3"]})
    result = run(server, lambda clients: answer_prompt(PROMPT, gen, clients))
    round1 = [s.text for s in result.trace if s.kind == "proposal" and s.layer == 1]
    second = [b for b in chats(server) if b["model"] == "model-a"][1]
    assert second["messages"][0]["content"].startswith("R1\n\n")
    assert f"Response 1:\n{round1[1]}\n\nResponse 2:\n{round1[0]}" in second["messages"][0]["content"]
    assert round1[2] not in second["messages"][0]["content"]


def test_endpoint_error_propagates():
    with OpenAITestServer(script=["401"]) as srv:
        with pytest.raises(EndpointError, match="refused the key"):
            run(srv, lambda clients: answer_prompt(PROMPT, make_gen("single"), clients))


def test_run_prompts_streams_many_prompts(server):
    prompts = [Prompt.from_messages([{"role": "user", "content": f"question {i}"}]) for i in range(40)]
    done: list = []
    gen = make_gen("moa")
    run(server, lambda clients: run_prompts(iter(prompts), gen, clients, on_result=done.append, max_in_flight=8))
    assert sorted(r.prompt.prompt_id for r in done) == sorted(p.prompt_id for p in prompts)
    assert all(r.failure is None for r in done) and len(chats(server)) == 40 * 4


def test_a_content_filter_fails_the_prompt_for_good(server):
    """Permanent, as the README says: a re-run keeps the failure instead of asking again."""
    server.set_script(["content_filter"])
    gen = make_gen("single")
    result = run(server, lambda clients: answer_prompt(PROMPT, gen, clients), MODELS)
    assert result.row is None and result.failure.transient is False
    assert result.failure.error == "content_filter: the provider's content filter stopped proposer0's answer (model-a)"
    assert result.counters == {"content_filtered": 1} and len(chats(server)) == 1
