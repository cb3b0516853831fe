"""Tests for the engine's stream runner, SMoA role generation, 2-means and call estimates (fake client)."""

from __future__ import annotations

import asyncio
import json

import pytest
from fakes import FakeCall, FakeClient, fake_clients

from moaa.config import AgentConfig, EndpointConfig, GenerationConfig
from moaa.engine import calls_per_prompt, generate_roles, run_prompts
from moaa.engine.defense import larger_cluster, two_means
from moaa.engine.smoa import Moderation, describe_task, parse_moderation, parse_roles, run_task
from moaa.errors import EndpointError
from moaa.models.client import CallError
from moaa.prompts.generation import FALLBACK_ROLES
from moaa.rows import Prompt


def gen_of(method: str = "moa", **overrides) -> GenerationConfig:
    raw = {"method": method, "proposers": [{"endpoint": "a"}, {"endpoint": "b"}], "aggregator": {"endpoint": "agg"}}
    return GenerationConfig.model_validate(raw | overrides)


def prompts(count: int, consumed: list[int] | None = None):
    for i in range(count):
        if consumed is not None:
            consumed.append(i)
        yield Prompt.from_messages([{"role": "user", "content": f"q{i}"}])


class Gauge:
    """Counts calls in flight on every fake client it is attached to."""

    def __init__(self, clients: dict[str, FakeClient]):
        self.now = self.peak = 0
        for client in clients.values():
            client.chat = self.wrap(client.chat)

    def wrap(self, chat):
        async def wrapped(*args, **kwargs):
            self.now += 1
            self.peak = max(self.peak, self.now)
            try:
                return await chat(*args, **kwargs)
            finally:
                self.now -= 1

        return wrapped


def test_run_prompts_is_bounded_lazy_and_reports_each_result():
    clients = fake_clients("a", "b", "agg", delay_s=0.002)
    gauge = Gauge(clients)
    consumed: list[int] = []
    results = []

    def on_result(result):
        results.append(result)
        # never more than max_in_flight prompts taken from the source ahead of the results
        assert len(consumed) - len(results) <= 5

    asyncio.run(run_prompts(prompts(30, consumed), gen_of(), clients, on_result=on_result, max_in_flight=5))
    assert len(results) == 30 and all(r.failure is None for r in results)
    assert len({r.prompt.prompt_id for r in results}) == 30
    assert gauge.peak <= 5 * 2 and gauge.peak >= 6  # proposers of several prompts overlap


def test_run_prompts_stops_on_endpoint_error():
    clients = fake_clients("a", "b", "agg")
    clients["b"].responder = lambda call: EndpointError("endpoint 'b' refused the key (HTTP 401)")
    results = []
    with pytest.raises(EndpointError, match="refused the key"):
        asyncio.run(run_prompts(prompts(1000), gen_of(), clients, on_result=results.append, max_in_flight=4))
    assert len(clients["a"].calls) <= 4 and results == []


def test_run_prompts_propagates_on_result_errors():
    def on_result(result):
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        asyncio.run(run_prompts(prompts(10), gen_of(), fake_clients("a", "b", "agg"), on_result=on_result))


def test_run_prompts_generates_smoa_roles_once():
    clients = fake_clients("a", "b", "agg")

    def respond(call: FakeCall):
        if ".role_generator." in call.tag:
            return json.dumps(["You are A.", "You are B."])
        if ".moderator." in call.tag:
            return '{"reasoning": "", "selected": [0], "stop": true}'
        return None

    clients["agg"].responder = respond
    results = []
    asyncio.run(run_prompts(prompts(3), gen_of("smoa"), clients, on_result=results.append))
    role_calls = [c for c in clients["agg"].calls if ".role_generator." in c.tag]
    assert len(role_calls) == 1 and role_calls[0].tag == "sft.role_generator.smoa-roles@v1"
    assert {c.system for c in clients["a"].calls} == {"You are A."}
    assert {c.system for c in clients["b"].calls} == {"You are B."}
    assert all(r.failure is None for r in results)


@pytest.mark.parametrize(
    "replies, expected",
    [
        (['["r1", "r2", "r3"]'], ["r1", "r2", "r3"]),
        (['Sure! ```json\n{"roles": ["r1", "r2", "r2", "r3", "r4"]}\n```'], ["r1", "r2", "r3"]),
        (['["r1"]', '["r1", "r2"]', "no"], ["r1", "r2", FALLBACK_ROLES[0]]),
        ([CallError("timeout", "x")] * 3, list(FALLBACK_ROLES[:3])),
    ],
)
def test_generate_roles(replies, expected):
    answers = iter(replies)
    client = FakeClient("gen", responder=lambda call: next(answers))
    roles = asyncio.run(generate_roles(3, client, AgentConfig(endpoint="gen")))
    assert roles == expected
    assert len({c.seed for c in client.calls}) == len(client.calls)


@pytest.mark.parametrize(
    "text, expected",
    [
        ('{"reasoning": "x", "selected": [2, 0], "stop": false}', Moderation([2, 0], False, "x")),
        ('Here: {"reasoning": "x", "selected": [1, 1, 0, 2], "stop": true}', Moderation([1, 0], True, "x")),
        ('{"selected": [0], "stop": "true"}', Moderation([0], True)),
        # a correct reply followed by prose with braces of its own (a greedy {.*} swallowed both)
        (
            '{"reasoning": "1 and 2 agree", "selected": [1, 2], "stop": false}\nNote: {1, 2} both cite {x}.',
            Moderation([1, 2], False, "1 and 2 agree"),
        ),
        ('```json\n{"reasoning": "r", "selected": [2], "stop": false}\n```', Moderation([2], False, "r")),
        ('{"selected": [7]}', Moderation(problem="invalid choice [7] of responses 0-2")),
        ('{"selected": [1, 9, "a"]}', Moderation(problem='invalid choice [9, "a"] of responses 0-2')),
        ("not json", Moderation(problem="unparsable: no JSON object with 'selected'")),
        ('{"selected": "0"}', Moderation(problem="unparsable: 'selected' is \"0\", not a list of numbers")),
    ],
)
def test_parse_moderation(text, expected):
    assert parse_moderation(text, count=3, k=2) == expected


def role_request(calls: list[FakeCall]) -> str:
    return next(c for c in calls if ".role_generator." in c.tag).last_user


def test_roles_are_generated_for_the_task_described_by_the_first_prompts():
    clients = fake_clients("a", "b", "agg")
    clients["agg"].responder = lambda call: '["You are A.", "You are B."]' if ".role_generator." in call.tag else None
    consumed: list[int] = []
    asyncio.run(run_prompts(prompts(5, consumed), gen_of("smoa"), clients, on_result=lambda r: None))
    assert consumed == [0, 1, 2, 3, 4]  # the peeked prompts are answered too
    assert 'on this task: answering user requests such as "q0"; "q1"; "q2".' in role_request(clients["agg"].calls)


def test_a_configured_task_is_given_to_the_role_generator():
    clients = fake_clients("a", "b", "agg")
    gen = gen_of("smoa", smoa={"task": "answering questions about tax law"})
    asyncio.run(run_prompts(prompts(2), gen, clients, on_result=lambda r: None))
    assert "on this task: answering questions about tax law." in role_request(clients["agg"].calls)


def test_run_task_reads_a_shard_and_cuts_long_prompts(tmp_path):
    shard = tmp_path / "part-00000.jsonl"
    texts = ["Explain   DPO\nbriefly.", "x" * 200, "q3", "q4"]
    shard.write_text(
        "".join(json.dumps(Prompt.from_messages([{"role": "user", "content": t}]).to_dict()) + "\n" for t in texts)
    )
    assert run_task("given", shard) == "given"
    assert run_task(None, shard) == f'answering user requests such as "Explain DPO briefly."; "{"x" * 160}..."; "q3"'
    assert describe_task([]) == ""


def test_parse_roles_rejects_non_lists():
    assert parse_roles('{"a": 1}') == [] and parse_roles("") == [] and parse_roles('[1, " x ", "x"]') == ["x"]


def test_two_means_and_larger_cluster():
    points = [[1, 0], [0.9, 0.1], [0.95, 0.05], [0, 1], [0.1, 0.9]]
    labels = two_means(points)
    assert labels[0] == labels[1] == labels[2] != labels[3] == labels[4]
    assert larger_cluster(points) == [0, 1, 2]
    assert larger_cluster([[1, 0], [0, 1]]) == [0, 1]
    assert larger_cluster([[1, 0], [1, 0], [0, 1], [0, 1]]) == [0, 1, 2, 3]  # tie: keep all
    assert larger_cluster([[1, 0]] * 4) == [0, 1, 2, 3]  # one cluster


def test_calls_per_prompt_details():
    gen = gen_of("self-moa", self_moa={"samples": 6})
    assert calls_per_prompt(gen)["agents"]["proposers[0]"] == {"endpoint": "a", "calls": 1, "answers": 6}
    no_n = {"a": EndpointConfig(model="m", base_url="http://x", supports_n=False)}
    assert calls_per_prompt(gen, endpoints=no_n)["calls"] == 7
    smoa = calls_per_prompt(gen_of("smoa", smoa={"rounds": 2}), turns=2)
    assert smoa["calls"] == 2 * (2 * 2 + 2 + 1) and smoa["upper_bound"] is True
    assert smoa["per_run"] == {"smoa.role_generator": 1}
    assert smoa["agents"]["smoa.moderator"] == {"endpoint": "agg", "calls": 4, "answers": 4}


@pytest.mark.slow
def test_cluster_filter_with_minilm_drops_the_odd_answer():
    from moaa.engine import answer_prompt

    gen = gen_of("moa", cluster_filter=True, proposers=[{"endpoint": e} for e in ("a", "b", "c", "d")])
    clients = fake_clients("a", "b", "c", "d", "agg")
    replies = {
        "a": "Paris is the capital of France.",
        "b": "The capital of France is Paris.",
        "c": "France's capital city is Paris.",
        "d": "Bananas are an excellent source of potassium for athletes.",
    }
    for name, text in replies.items():
        clients[name].responder = lambda call, text=text: text
    prompt = Prompt.from_messages([{"role": "user", "content": "What is the capital of France?"}])
    result = asyncio.run(answer_prompt(prompt, gen, clients))
    system = clients["agg"].calls[0].system
    assert "Bananas" not in system and all(replies[n] in system for n in "abc")
    assert result.counters == {"filtered_answers": 1}
