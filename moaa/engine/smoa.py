"""Sparse MoA (Li et al. 2024; ALGORITHMS.md section 4): role play, response selection, early stop.

Each round the proposers (each with its role description) answer; one moderator call sees the
round's answers numbered from 0 and returns JSON with its reasoning, the k chosen answers and a
stop flag. Only the chosen k go forward: as references for the next round and, after the last
round or an early stop, to the final aggregation. The reply's JSON is found by balanced braces
(moaa.json_text), so prose after it does no harm; a reply without a valid choice (unparsable, or an
index out of range) gives k answers at random (seeded), recorded in the moderator's trace step
(`fallback`, `problem`) and counted (moderator_parse_failures, moderator_invalid_choices). Roles are
generated once per run by `generate_roles`, from a task description (`smoa.task`, else a few of the
run's prompts: `describe_task`), as the SMoA reference builds them per data set. The method's spec
(SMOA: turn, call plan, config rule) closes the module.
"""

from __future__ import annotations

import functools
import itertools
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from moaa.config import AgentConfig, GenerationConfig
from moaa.config.sft_methods import check_smoa
from moaa.engine.context import Answer, Call, PromptRun
from moaa.engine.defense import apply_cluster_filter
from moaa.engine.moa import aggregate, aggregator_step, proposer_layer, proposer_steps
from moaa.engine.plan import Method, Plan, Step
from moaa.json_text import json_objects
from moaa.models.agent_calls import derive_seed, json_format, sampling_for
from moaa.models.client import CallError, ChatClient, Message
from moaa.prompts.generation import (
    FALLBACK_ROLES,
    MODERATOR,
    MODERATOR_SCHEMA,
    ROLES,
    moderator_messages,
    roles_messages,
)
from moaa.rows import Prompt

log = logging.getLogger(__name__)


@dataclass
class Moderation:
    """What a moderator reply chose; `problem` says why it cannot be used ("" when it can)."""

    chosen: list[int] = field(default_factory=list)
    stop: bool = False
    reasoning: str = ""
    problem: str = ""


def parse_moderation(text: str, count: int, k: int) -> Moderation:
    """The moderator's choice: integer indices below `count`, duplicates dropped, at most k kept.

    A choice holding an index out of range (or not an integer) is invalid as a whole: SMoA falls
    back to random k rather than keeping part of a choice the moderator may have miscounted.
    """
    data = next((o for o in json_objects(text or "") if isinstance(o, dict) and "selected" in o), None)
    if data is None:
        return Moderation(problem="unparsable: no JSON object with 'selected'")
    raw = data["selected"]
    if not isinstance(raw, list) or not raw:
        return Moderation(problem=f"unparsable: 'selected' is {json.dumps(raw)}, not a list of numbers")
    bad = [item for item in raw if isinstance(item, bool) or not isinstance(item, int) or not 0 <= item < count]
    if bad:
        return Moderation(problem=f"invalid choice {json.dumps(bad)} of responses 0-{count - 1}")
    stop = data.get("stop")
    reasoning = data.get("reasoning", "")
    return Moderation(
        chosen=list(dict.fromkeys(raw))[:k],
        stop=stop is True or (isinstance(stop, str) and stop.strip().lower() == "true"),
        reasoning=reasoning if isinstance(reasoning, str) else json.dumps(reasoning),
    )


async def moderate(
    run: PromptRun, convo: list[Message], turn: int, layer: int, answers: list[Answer]
) -> tuple[list[Answer], bool]:
    """One moderator call: the k answers that go forward, and whether to stop now."""
    smoa = run.gen.smoa
    agent = smoa.moderator or run.gen.aggregator
    assert agent is not None
    k = min(smoa.k, len(answers))
    fmt = json_format(run.client(agent), "moderation", MODERATOR_SCHEMA)
    call = Call(agent, "moderator", "moderator", MODERATOR, "moderator", turn, layer, response_format=fmt)
    got = await run.ask(call, moderator_messages(convo, [a.text for a in answers], k))
    parsed = parse_moderation(got[0].text, len(answers), k) if got else Moderation(problem="no answer")
    meta: dict[str, Any] = {}
    if parsed.problem:
        counter = "moderator_failures" if not got else "moderator_parse_failures"
        if parsed.problem.startswith("invalid"):
            counter = "moderator_invalid_choices"
        run.counters[counter] += 1
        chosen, stop = sorted(run.rng("moderator", turn, layer).sample(range(len(answers)), k)), False
        meta |= {"fallback": "random", "problem": parsed.problem}
    else:
        chosen, stop = parsed.chosen, parsed.stop
        meta["reasoning"] = parsed.reasoning
    meta |= {"selected": chosen, "stop": stop}
    if got:
        got[0].step.meta = json.dumps(meta, ensure_ascii=False)
    for i, answer in enumerate(answers):
        answer.step.selected = i in chosen
    return [answers[i] for i in chosen], stop


async def smoa_turn(run: PromptRun, convo: list[Message], turn: int) -> str:
    smoa = run.gen.smoa
    selected: list[Answer] | None = None
    layer = 0
    for layer in range(1, smoa.rounds + 1):
        answers = await proposer_layer(run, convo, turn, layer, selected)
        selected, stop = await moderate(run, convo, turn, layer, answers)
        if stop and smoa.early_stop:
            break
    assert selected is not None
    selected = await apply_cluster_filter(run, selected)
    return await aggregate(run, convo, turn, layer + 1, selected)


def parse_roles(text: str) -> list[str]:
    """Distinct non-empty role strings from a JSON list (or an object holding one) in `text`."""
    found = [*json_objects(text or "", "[]"), *json_objects(text or "")]
    data = next((v for v in found if isinstance(v, list) or (isinstance(v, dict) and v)), None)
    if isinstance(data, dict):
        data = next((v for v in data.values() if isinstance(v, list)), None)
    if not isinstance(data, list):
        return []
    roles: list[str] = []
    for item in data:
        if isinstance(item, str) and item.strip() and item.strip() not in roles:
            roles.append(item.strip())
    return roles


TASK_SAMPLES = 3  # prompts quoted in a task description derived from the run's prompts
TASK_SAMPLE_CHARS = 160


def describe_task(prompts: list[Prompt]) -> str:
    """A task description for the role generator from a few prompts: their last user messages, cut short."""
    quoted = []
    for prompt in prompts[:TASK_SAMPLES]:
        text = next((m.get("content") or "" for m in reversed(prompt.messages) if m.get("role") == "user"), "")
        text = " ".join(text.split())
        if text:
            quoted.append(f'"{text[:TASK_SAMPLE_CHARS]}{"..." if len(text) > TASK_SAMPLE_CHARS else ""}"')
    if not quoted:
        return ""
    # Only the prompts' text: a folder name would make the roles (and the cache) depend on the machine.
    return "answering user requests such as " + "; ".join(quoted)


def run_task(task: str | None, shard: Path) -> str:
    """`smoa.task`, else a description from the first prompts of a run's first input shard."""
    if task:
        return task
    prompts = []
    with shard.open(encoding="utf-8") as lines:
        for line in itertools.islice(lines, TASK_SAMPLES):
            prompts.append(Prompt(**json.loads(line)))
    return describe_task(prompts)


async def generate_roles(
    n: int, client: ChatClient, agent: AgentConfig, *, task: str = "", stage: str = "sft", attempts: int = 3
) -> list[str]:
    """`n` distinct role descriptions from one call (re-asked with a new seed when the reply falls short).

    After `attempts` short or failed replies the missing roles come from FALLBACK_ROLES, with a warning.
    """
    roles: list[str] = []
    for attempt in range(attempts):
        seed = agent.seed + attempt if agent.seed is not None else derive_seed("roles", n, task, attempt)
        try:
            done = await client.chat(
                roles_messages(n, task), sampling_for(agent, seed), tag=ROLES.tag(stage, "role_generator")
            )
        except CallError as exc:
            log.warning("role generation failed (%s)", exc)
            continue
        for role in parse_roles(done.text):
            if role not in roles:
                roles.append(role)
        if len(roles) >= n:
            return roles[:n]
    log.warning("role generation gave %d of %d roles; filling in built-in roles", len(roles), n)
    for role in FALLBACK_ROLES:
        if len(roles) >= n:
            break
        if role not in roles:
            roles.append(role)
    return [roles[i % len(roles)] for i in range(n)]


def _moderate(k: int, convo: list[Message], refs: list[str]) -> list[Message]:
    return moderator_messages(convo, refs, k)


def _roles(n: int, task: str, _convo: list[Message], _refs: list[str]) -> list[Message]:
    return roles_messages(n, task)


def plan_smoa(gen: GenerationConfig) -> Plan:
    """Every round: the proposers (round 2 on: seeing the k chosen), one moderator call; then the
    aggregator on the k chosen. Roles not in the config are generated once per run. With
    `early_stop` the counts are the most a turn makes."""
    smoa, proposers = gen.smoa, len(gen.proposers)
    k = min(smoa.k, proposers)
    moderator = smoa.moderator or gen.aggregator
    assert moderator is not None
    # The estimate sizes each proposer's role: the given ones, else built-in ones of a typical length.
    roles = list(smoa.roles or [FALLBACK_ROLES[i % len(FALLBACK_ROLES)] for i in range(proposers)])
    moderate = functools.partial(_moderate, k)
    steps = [
        *proposer_steps(gen, smoa.rounds, k, roles),
        Step("smoa.moderator", moderator, "moderator", MODERATOR, moderate, calls=smoa.rounds, references=proposers),
        aggregator_step(gen, k),
    ]
    if not smoa.roles:
        generator = smoa.role_generator or gen.aggregator
        assert generator is not None
        build = functools.partial(_roles, proposers, smoa.task or "")
        steps.append(Step("smoa.role_generator", generator, "role_generator", ROLES, build, per_run=True))
    stops = "the moderator may stop before the last round" if smoa.early_stop else ""
    return Plan(tuple(steps), stops_early=stops)


SMOA = Method("smoa", smoa_turn, plan_smoa, check_smoa)
