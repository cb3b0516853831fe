"""Self-MoA and Self-MoA-Seq (Li et al. 2025; ALGORITHMS.md section 3).

Self-MoA: K samples of the best model in ONE `n=K` call (the client falls back to separate seeded
calls where a server returns fewer choices), aggregated as in MoA.
Self-MoA-Seq: S samples, aggregated through a sliding window: the first step synthesises the first
`window` samples; each later step synthesises the running synthesis (listed `repeats` times) and
`new_per_step` new samples, so the aggregator never sees more than `window` references. The
synthesis is labelled in the prompt, so the aggregator can tell it from the samples whatever `repeats`.
The methods' specs (SELF_MOA, SELF_MOA_SEQ: turn, call plan) close the module.
"""

from __future__ import annotations

from moaa.config import GenerationConfig
from moaa.engine.context import Answer, Call, PromptRun
from moaa.engine.defense import apply_cluster_filter
from moaa.engine.moa import aggregate, aggregate_build, aggregator_step, need, propose_build, role_of
from moaa.engine.plan import Method, Plan, Step
from moaa.models.client import Message
from moaa.prompts.generation import PROPOSE, SEQ_AGGREGATE, proposer_messages


async def sample(run: PromptRun, convo: list[Message], turn: int, count: int) -> list[Answer]:
    """`count` samples of proposers[0] in one call; fails the prompt when too few survive."""
    agent, role = run.gen.proposers[0], role_of(run, 0)
    call = Call(agent, "proposer0", "proposer", PROPOSE, "sample", turn, 1, role=role, n=count)
    answers = await run.ask(call, proposer_messages(convo, role, None))
    if len(answers) < need(run, count):
        raise run.fail("proposers_failed", f"{len(answers)} of {count} samples survived")
    run.note_width("samples", len(answers), count, "samples survived")
    return answers


async def self_moa_turn(run: PromptRun, convo: list[Message], turn: int) -> str:
    answers = await sample(run, convo, turn, run.gen.self_moa.samples)
    answers = await apply_cluster_filter(run, answers)
    return await aggregate(run, convo, turn, 2, answers)


def seq_windows(count: int, window: int, new_per_step: int) -> list[list[int]]:
    """Sample indices each step adds: the first `window`, then `new_per_step` at a time."""
    steps = [list(range(min(count, window)))]
    for start in range(window, count, new_per_step):
        steps.append(list(range(start, min(count, start + new_per_step))))
    return steps


async def self_moa_seq_turn(run: PromptRun, convo: list[Message], turn: int) -> str:
    seq = run.gen.seq
    answers = await sample(run, convo, turn, seq.samples)
    answers = await apply_cluster_filter(run, answers)
    steps = seq_windows(len(answers), seq.window, seq.new_per_step)
    synthesis: Answer | None = None
    for step, indices in enumerate(steps, start=1):
        refs = [answers[i] for i in indices]
        if synthesis is not None:
            refs = [synthesis] * seq.repeats + refs
        last = step == len(steps)
        text = await aggregate(
            run,
            convo,
            turn,
            1 + step,
            refs,
            template=SEQ_AGGREGATE,
            kind="aggregate" if last else "synthesis",
            marked=synthesis.text if synthesis is not None else None,
        )
        synthesis = Answer(text, run.trace[-1])
    assert synthesis is not None
    return synthesis.text


def sample_step(gen: GenerationConfig, count: int) -> Step:
    """`count` samples of proposers[0] in one n=count call."""
    p0 = gen.proposers[0]
    return Step("proposers[0]", p0, "proposer", PROPOSE, propose_build(p0.role), samples=count)


def plan_self_moa(gen: GenerationConfig) -> Plan:
    samples = gen.self_moa.samples
    return Plan((sample_step(gen, samples), aggregator_step(gen, samples)))


def plan_self_moa_seq(gen: GenerationConfig) -> Plan:
    seq, agg = gen.seq, gen.aggregator
    assert agg is not None
    steps = [sample_step(gen, seq.samples)]
    for i, indices in enumerate(seq_windows(seq.samples, seq.window, seq.new_per_step)):
        synth = seq.repeats if i else 0  # every step after the first shows the running synthesis
        build = aggregate_build(agg, SEQ_AGGREGATE, marked=bool(synth))
        steps.append(
            Step("aggregator", agg, "aggregator", SEQ_AGGREGATE, build, references=len(indices), syntheses=synth)
        )
    return Plan(tuple(steps))


SELF_MOA = Method("self-moa", self_moa_turn, plan_self_moa)
SELF_MOA_SEQ = Method("self-moa-seq", self_moa_seq_turn, plan_self_moa_seq)
