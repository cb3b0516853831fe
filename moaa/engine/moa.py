"""Single-model answers and layered Mixture-of-Agents (Wang et al. 2024; ALGORITHMS.md section 1).

A turn of `moa` with L layers: L-1 proposer layers (layer 1 answers the conversation as it is;
layers 2..L-1 also see the previous layer's surviving answers), then one aggregator call on the
last layer's answers. `moa-lite` is the same with L=2. `single` is one call to proposers[0].
The methods' specs (SINGLE, MOA, MOA_LITE: turn, call plan, config rule) close the module.
"""

from __future__ import annotations

import asyncio
import functools
from dataclasses import replace

from moaa.config import AgentConfig, GenerationConfig
from moaa.config.sft_methods import check_moa, check_moa_lite
from moaa.engine.context import Answer, Call, PromptRun
from moaa.engine.defense import apply_cluster_filter
from moaa.engine.plan import Build, Method, Plan, Step
from moaa.engine.quality import gated_aggregate
from moaa.models.client import Message
from moaa.prompts import Template
from moaa.prompts.generation import AGGREGATE, PROPOSE, aggregator_messages, proposer_messages


def role_of(run: PromptRun, i: int) -> str | None:
    """Proposer i's role description: the run's roles (SMoA) first, else its configured role."""
    if run.roles:
        return run.roles[i % len(run.roles)]
    return run.gen.proposers[i].role


def reference_texts(run: PromptRun, answers: list[Answer], turn: int, layer: int) -> list[str]:
    texts = [a.text for a in answers]
    if run.gen.shuffle_references:
        run.rng("shuffle", turn, layer).shuffle(texts)
    return texts


def need(run: PromptRun, asked: int) -> int:
    """Fewest survivors a layer of `asked` answers needs: all of them unless min_answers allows fewer."""
    return asked if run.gen.min_answers is None else min(run.gen.min_answers, asked)


async def proposer_layer(
    run: PromptRun, convo: list[Message], turn: int, layer: int, previous: list[Answer] | None
) -> list[Answer]:
    """Every proposer answers concurrently; fails the prompt when too few answers survive."""
    refs = reference_texts(run, previous, turn, layer) if previous else None
    template = AGGREGATE if refs else PROPOSE
    calls = []
    for i, agent in enumerate(run.gen.proposers):
        role = role_of(run, i)
        messages = proposer_messages(convo, role, refs)
        call = Call(agent, f"proposer{i}", "proposer", template, "proposal", turn, layer, index=i, role=role)
        calls.append(run.ask(call, messages))
    answers = [a for got in await asyncio.gather(*calls) for a in got]
    asked = len(run.gen.proposers)
    if len(answers) < need(run, asked):
        raise run.fail("proposers_failed", f"layer {layer}: {len(answers)} of {asked} proposers answered")
    run.note_width(f"layer {layer}", len(answers), asked, "proposers answered")
    return answers


async def aggregate(
    run: PromptRun,
    convo: list[Message],
    turn: int,
    layer: int,
    answers: list[Answer],
    *,
    template: Template = AGGREGATE,
    kind: str = "aggregate",
    marked: str | None = None,
) -> str:
    """One aggregator call over `answers` (`marked`: a text labelled as the running synthesis);
    fails the prompt when it gives no answer."""
    agent = run.gen.aggregator
    assert agent is not None  # GenerationConfig guarantees one for every method but single
    refs = reference_texts(run, answers, turn, layer)
    messages = aggregate_messages(agent, template, convo, refs, marked)

    # Self-MoA-Seq's earlier syntheses are references, not the row's answer.
    call = Call(agent, "aggregator", "aggregator", template, kind, turn, layer, final=kind == "aggregate")

    async def ask(asked: list[Message], attempt: int) -> list[Answer]:
        # A re-ask gets its own seed.
        return await run.ask(replace(call, who=f"aggregator-reask{attempt}") if attempt else call, asked)

    got = await ask(messages, 0)
    if not got:
        raise run.fail("aggregator_failed", "the aggregator gave no answer")
    return await gated_aggregate(run, messages, refs, got, ask, marked)


async def single_turn(run: PromptRun, convo: list[Message], turn: int) -> str:
    agent, role = run.gen.proposers[0], role_of(run, 0)
    call = Call(agent, "proposer0", "proposer", PROPOSE, "answer", turn, 1, role=role, final=True)
    got = await run.ask(call, proposer_messages(convo, role, None))
    if not got:
        raise run.fail("proposers_failed", "the model gave no answer")
    return got[0].text


async def moa_turn(run: PromptRun, convo: list[Message], turn: int) -> str:
    layers = layers_of(run.gen)
    answers: list[Answer] | None = None
    for layer in range(1, layers):
        answers = await proposer_layer(run, convo, turn, layer, answers)
    assert answers is not None
    answers = await apply_cluster_filter(run, answers)
    return await aggregate(run, convo, turn, layers, answers)


def layers_of(gen: GenerationConfig) -> int:
    layers = gen.layers
    assert layers is not None  # moaa.config.sft_methods' check_moa / check_moa_lite set it when the config loads
    return layers


# ---------------------------------------------------------------- messages, plans, rules


def aggregate_messages(
    agent: AgentConfig, template: Template, convo: list[Message], refs: list[str], marked: str | None = None
) -> list[Message]:
    """An aggregator call: its own role (e.g. a length limit) opens the system message, as a
    proposer's does, then `template` with the references (`marked`: the running synthesis)."""
    return aggregator_messages(proposer_messages(convo, agent.role, None), refs, template, marked)


def _propose(role: str | None, convo: list[Message], refs: list[str]) -> list[Message]:
    return proposer_messages(convo, role, refs or None)


def _aggregate(
    agent: AgentConfig, template: Template, mark: bool, convo: list[Message], refs: list[str]
) -> list[Message]:
    return aggregate_messages(agent, template, convo, refs, refs[0] if mark and refs else None)


def propose_build(role: str | None) -> Build:
    """A proposer call's messages: its role, then any references (as `proposer_layer` sends them)."""
    return functools.partial(_propose, role)


def aggregate_build(agent: AgentConfig, template: Template = AGGREGATE, marked: bool = False) -> Build:
    """An aggregator call's messages (`marked`: the first reference is the running synthesis)."""
    return functools.partial(_aggregate, agent, template, marked)


def proposer_steps(gen: GenerationConfig, rounds: int, references: int, roles: list[str] | None = None) -> list[Step]:
    """Every proposer answers `rounds` times: first the conversation, then seeing `references` answers."""
    first, later = [], []
    for i, agent in enumerate(gen.proposers):
        role = roles[i % len(roles)] if roles else agent.role
        label, build = f"proposers[{i}]", propose_build(role)
        first.append(Step(label, agent, "proposer", PROPOSE, build))
        if rounds > 1:
            later.append(Step(label, agent, "proposer", AGGREGATE, build, calls=rounds - 1, references=references))
    return first + later


def aggregator_step(gen: GenerationConfig, references: int) -> Step:
    assert gen.aggregator is not None
    return Step(
        "aggregator", gen.aggregator, "aggregator", AGGREGATE, aggregate_build(gen.aggregator), references=references
    )


def plan_single(gen: GenerationConfig) -> Plan:
    p0 = gen.proposers[0]
    return Plan((Step("proposers[0]", p0, "proposer", PROPOSE, propose_build(p0.role)),))


def plan_moa(gen: GenerationConfig) -> Plan:
    proposers = len(gen.proposers)
    return Plan((*proposer_steps(gen, layers_of(gen) - 1, proposers), aggregator_step(gen, proposers)))


SINGLE = Method("single", single_turn, plan_single, aggregator=False)
MOA = Method("moa", moa_turn, plan_moa, check_moa)
MOA_LITE = Method("moa-lite", moa_turn, plan_moa, check_moa_lite)
