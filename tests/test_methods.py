"""Every generation method's call plan (moaa.engine.plan) against what the engine really sends, and a
toy method that goes through config load, the dry run and the engine from one registration."""

from __future__ import annotations

import asyncio
import json
import re
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
from conftest import ROOT, make_config
from fakes import FakeCall, FakeClient, all_calls, fake_clients

from moaa.config import GenerationConfig
from moaa.engine import calls_per_prompt, run_prompts
from moaa.engine.context import Call, PromptResult, PromptRun
from moaa.engine.methods import REGISTRY, method_names, method_of, plan_of, register
from moaa.engine.moa import propose_build
from moaa.engine.plan import Method, Plan, Step
from moaa.errors import ConfigError
from moaa.models.client import Message
from moaa.prompts import Template
from moaa.prompts.generation import PROPOSE, with_system
from moaa.rows import Prompt
from moaa.work.estimate import estimate_run
from moaa.work.estimate_report import format_estimate

ENDPOINTS = ("a", "b", "c", "agg", "mod", "roles")
BUILTINS = ("single", "moa", "moa-lite", "self-moa", "self-moa-seq", "smoa")
VARIANTS = [
    ("single", {}),
    ("moa", {"layers": 2}),
    ("moa", {"layers": 4}),
    ("moa-lite", {}),
    ("self-moa", {"self_moa": {"samples": 4}}),
    ("self-moa-seq", {"seq": {"samples": 12, "window": 6, "new_per_step": 3, "repeats": 2}}),
    ("self-moa-seq", {"seq": {"samples": 7, "window": 4, "new_per_step": 2}}),
    ("smoa", {"smoa": {"rounds": 2, "k": 2, "early_stop": False, "task": "answering questions"}}),  # roles generated
    ("smoa", {"smoa": {"rounds": 3, "k": 1, "roles": ["r0", "r1"], "moderator": {"endpoint": "mod"}}}),
]
# Two user turns: every plan step runs once per turn, a per-run step once.
TWO_TURNS = Prompt.from_messages(
    [
        {"role": "system", "content": "Be kind."},
        {"role": "user", "content": "What is MoA?"},
        {"role": "assistant", "content": "old"},
        {"role": "user", "content": "And SMoA?"},
    ],
    source="test",
)
TURNS = 2
_HEADING = re.compile(r"^Response \d+(?: \([^)\n]*\))?:$", re.MULTILINE)


def make_gen(method: str, **overrides: Any) -> GenerationConfig:
    raw: dict[str, Any] = {
        "method": method,
        "proposers": [{"endpoint": "a"}, {"endpoint": "b"}, {"endpoint": "c"}],
        "aggregator": {"endpoint": "agg"},
        "smoa": {"role_generator": {"endpoint": "roles"}},
    }
    for key, value in overrides.items():
        raw[key] = raw.get(key, {}) | value if isinstance(value, dict) else value
    return GenerationConfig.model_validate(raw)


def respond(call: FakeCall) -> str | None:
    """Moderators pick answers 0 and 1 and never stop; role generators write the roles asked for."""
    if ".moderator." in call.tag:
        return json.dumps({"reasoning": "r", "selected": [0, 1], "stop": False})
    if ".role_generator." in call.tag:
        n = int(call.last_user.split("Write ")[1].split(" ")[0])
        return json.dumps([f"You are expert {i}." for i in range(n)])
    return None


def run_one(gen: GenerationConfig, prompt: Prompt = TWO_TURNS) -> tuple[PromptResult, dict[str, FakeClient]]:
    clients = fake_clients(*ENDPOINTS, responder=respond)
    results: list[PromptResult] = []
    asyncio.run(run_prompts([prompt], gen, clients, on_result=results.append))
    assert len(results) == 1 and results[0].failure is None, results[0].failure
    return results[0], clients


def references(messages: list[Message]) -> int:
    return sum(len(_HEADING.findall(m.get("content") or "")) for m in messages)


def sent(clients: dict[str, FakeClient]) -> Counter:
    """(endpoint, tag, n, references shown) of every call the engine made, counted."""
    return Counter((c.client, c.tag, c.n, references(c.messages)) for c in all_calls(clients))


def planned(plan: Plan, turns: int, stage: str = "sft") -> Counter:
    """The same keys as `sent`, read from the plan."""
    out: Counter = Counter()
    for step in plan.steps:
        key = (step.agent.endpoint, step.template.tag(stage, step.part), step.samples, step.references + step.syntheses)
        out[key] += step.calls * (1 if step.per_run else turns)
    return out


def test_every_builtin_method_is_registered_and_has_a_variant_here():
    assert set(BUILTINS) <= set(method_names())
    assert {method for method, _ in VARIANTS} == set(BUILTINS)


@pytest.mark.parametrize("method, overrides", VARIANTS)
def test_the_plan_is_what_the_engine_sends(method, overrides):
    gen = make_gen(method, **overrides)
    result, clients = run_one(gen)
    plan = plan_of(gen)
    assert sent(clients) == planned(plan, TURNS)
    counts = calls_per_prompt(gen, turns=TURNS)
    per_run = sum(counts["per_run"].values())
    assert counts["calls"] + per_run == len(all_calls(clients))
    assert counts["calls"] == result.calls  # the prompt's own calls (role generation is the run's)
    assert counts["answers"] == len(result.trace)  # one trace step per text
    assert counts["upper_bound"] is (method == "smoa" and gen.smoa.early_stop)


@pytest.mark.parametrize("method, overrides", VARIANTS)
def test_each_plan_builds_the_messages_the_engine_sends(method, overrides):
    """With the engine's own references put back, a step's builder makes that call's messages exactly."""
    gen = make_gen(method, **overrides)
    prompt = Prompt.from_messages([{"role": "user", "content": "What is MoA?"}], source="test")
    _, clients = run_one(gen, prompt)
    checked = 0
    builds = {
        (s.agent.endpoint, s.template.tag("sft", s.part), s.references + s.syntheses): s for s in plan_of(gen).steps
    }
    for call in all_calls(clients):
        step = builds[(call.client, call.tag, references(call.messages))]
        if step.part == "proposer" and method == "smoa" and not gen.smoa.roles:
            continue  # the plan sizes generated roles by built-in ones; the calls are counted above
        text = "\n\n".join(m["content"] for m in call.messages)
        refs = [block.split(":\n", 1)[1] for block in text.split("\n\n") if _HEADING.match(block.split("\n", 1)[0])]
        assert step.build(prompt.messages, refs) == call.messages
        checked += 1
    assert checked


def test_method_rules_are_stated_once_and_checked_at_load(tmp_path):
    with pytest.raises(ConfigError, match=r"sft.layers: method 'moa' needs layers >= 2 \(got 1\)"):
        make_config(tmp_path, "http://x/v1", "sft.layers=1")
    with pytest.raises(ConfigError, match=r"sft.method: Input should be 'single', .* or 'smoa' \(got 'moe'\)"):
        make_config(tmp_path, "http://x/v1", "sft.method=moe")
    with pytest.raises(ValueError, match="already registered"):
        register(Method("moa", method_of("single").turn, method_of("single").plan))


# ---------------------------------------------------------------- a toy method, all in one place

# Its prompt: the aggregator revises one draft.
REVISE = Template("toy-revise", "v1", "Here is a draft answer to the latest user message:\n\nResponse 1:\n{draft}\n\n"
                  "Find its weakest part and write a better answer.")  # fmt: skip


def revise_messages(convo: list[Message], refs: list[str]) -> list[Message]:
    return with_system(convo, REVISE.render(draft=refs[0]))


async def draft_and_revise_turn(run: PromptRun, convo: list[Message], turn: int) -> str:
    """proposers[0] drafts, the aggregator revises the draft into the answer."""
    drafter, reviser = run.gen.proposers[0], run.gen.aggregator
    assert reviser is not None
    draft = await run.ask(Call(drafter, "proposer0", "proposer", PROPOSE, "proposal", turn, 1), convo)
    if not draft:
        raise run.fail("proposers_failed", "no draft")
    call = Call(reviser, "aggregator", "aggregator", REVISE, "aggregate", turn, 2, final=True)
    got = await run.ask(call, revise_messages(convo, [draft[0].text]))
    if not got:
        raise run.fail("aggregator_failed", "no revision")
    return got[0].text


def plan_draft_and_revise(gen: GenerationConfig) -> Plan:
    assert gen.aggregator is not None
    return Plan(
        (
            Step("proposers[0]", gen.proposers[0], "proposer", PROPOSE, propose_build(None)),
            Step("aggregator", gen.aggregator, "aggregator", REVISE, revise_messages, references=1),
        )
    )


def check_draft_and_revise(gen: GenerationConfig) -> None:
    if len(gen.proposers) != 1:
        raise ValueError(f"proposers: method 'draft-revise' drafts with one proposer (got {len(gen.proposers)})")


DRAFT_REVISE = Method("draft-revise", draft_and_revise_turn, plan_draft_and_revise, check_draft_and_revise)


@pytest.fixture
def toy_method() -> Iterator[Method]:
    register(DRAFT_REVISE)
    yield DRAFT_REVISE
    del REGISTRY[DRAFT_REVISE.name]


def test_a_toy_method_loads_estimates_and_runs_from_one_registration(toy_method, tmp_path):
    with pytest.raises(ConfigError, match=r"sft.proposers: method 'draft-revise' drafts with one proposer \(got 3\)"):
        make_config(tmp_path, "http://x/v1", "sft.method=draft-revise")
    sft = {"method": "draft-revise", "proposers": [{"endpoint": "test"}], "aggregator": {"endpoint": "test"}}
    config = make_config(tmp_path, "http://x/v1", sft=sft)

    est = estimate_run(config, base_dir=ROOT)  # 4 one-turn prompts, two calls each
    assert est["stages"]["sft"]["calls"] == est["total"]["calls"] == 8
    assert {label: a["calls"] for label, a in est["stages"]["sft"]["agents"].items()} == {
        "proposers[0]": 4,
        "aggregator": 4,
    }
    assert "method draft-revise - no model was called" in format_estimate(est)

    gen = make_gen("draft-revise", proposers=[{"endpoint": "a"}])
    result, clients = run_one(gen)
    assert sent(clients) == planned(plan_of(gen), TURNS)
    assert [c.tag for c in clients["agg"].calls] == ["sft.aggregator.toy-revise@v1"] * TURNS
    assert references(clients["agg"].calls[-1].messages) == 1  # the reviser saw the turn's draft
    assert result.row is not None and result.row.method == "draft-revise"
    assert result.row.messages[-1]["content"] == result.trace[-1].text
    assert [s.kind for s in result.trace] == ["proposal", "aggregate"] * TURNS
