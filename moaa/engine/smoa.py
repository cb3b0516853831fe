"""Sparse MoA (Li et al. 2024; ALGORITHMS.md section 4): role play, response selection, early stop.

Each round the proposers (each with its role description) answer; one moderator call sees the
round's answers numbered from 0 and returns JSON with its reasoning, the k chosen answers and a
stop flag. Only the chosen k go forward: as references for the next round and, after the last
round or an early stop, to the final aggregation. A reply that does not parse gives k answers at
random (seeded). Roles are generated once per run by `generate_roles`.
"""

from __future__ import annotations

import json
import logging
import re
from typing import Any

from moaa.client import CallError, ChatClient, Message
from moaa.config import AgentConfig
from moaa.engine.context import Answer, PromptRun, derive_seed, json_format, sampling_of
from moaa.engine.defense import apply_cluster_filter
from moaa.engine.moa import aggregate, proposer_layer
from moaa.prompts.generation import (
    FALLBACK_ROLES,
    MODERATOR,
    MODERATOR_SCHEMA,
    ROLES,
    moderator_messages,
    roles_messages,
)

log = logging.getLogger(__name__)

_JSON_OBJECT = re.compile(r"\{.*\}", re.DOTALL)
_JSON_LIST = re.compile(r"\[.*\]", re.DOTALL)


def parse_moderation(text: str, count: int, k: int) -> tuple[list[int], bool] | None:
    """(chosen indices, stop) from a moderator reply, or None when it does not parse.

    Indices must be integers in range; duplicates are dropped and at most k are kept.
    """
    found = _JSON_OBJECT.search(text or "")
    try:
        data = json.loads(found.group(0)) if found else None
    except ValueError:
        return None
    if not isinstance(data, dict):
        return None
    raw = data.get("selected")
    if not isinstance(raw, list):
        return None
    chosen: list[int] = []
    for item in raw:
        if isinstance(item, bool) or not isinstance(item, int) or not 0 <= item < count:
            continue
        if item not in chosen:
            chosen.append(item)
    if not chosen:
        return None
    stop = data.get("stop")
    return chosen[:k], stop is True or (isinstance(stop, str) and stop.strip().lower() == "true")


async def moderate(
    run: PromptRun, convo: list[Message], turn: int, layer: int, answers: list[Answer]
) -> tuple[list[Answer], bool]:
    """One moderator call: the k answers that go forward, and whether to stop now."""
    smoa = run.gen.smoa
    agent = smoa.moderator or run.gen.aggregator
    assert agent is not None
    k = min(smoa.k, len(answers))
    fmt = json_format(run.client(agent), "moderation", MODERATOR_SCHEMA)
    got = await run.ask(
        agent,
        "moderator",
        "moderator",
        MODERATOR,
        moderator_messages(convo, [a.text for a in answers], k),
        kind="moderator",
        turn=turn,
        layer=layer,
        response_format=fmt,
    )
    parsed = parse_moderation(got[0].text, len(answers), k) if got else None
    meta: dict[str, Any] = {}
    if parsed is None:
        run.counters["moderator_parse_failures" if got else "moderator_failures"] += 1
        chosen, stop = sorted(run.rng("moderator", turn, layer).sample(range(len(answers)), k)), False
        meta["fallback"] = "random"
    else:
        chosen, stop = parsed
        meta["reasoning"] = _reasoning(got[0].text)
    meta |= {"selected": chosen, "stop": stop}
    if got:
        got[0].step.meta = json.dumps(meta, ensure_ascii=False)
    for i, answer in enumerate(answers):
        answer.step.selected = i in chosen
    return [answers[i] for i in chosen], stop


def _reasoning(text: str) -> str:
    found = _JSON_OBJECT.search(text)
    try:
        value = json.loads(found.group(0)).get("reasoning", "") if found else ""
    except ValueError:
        return ""
    return value if isinstance(value, str) else json.dumps(value)


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
    data: Any = None
    for pattern in (_JSON_LIST, _JSON_OBJECT):
        found = pattern.search(text or "")
        try:
            data = json.loads(found.group(0)) if found else None
        except ValueError:
            data = None
        if data is not None:
            break
    if isinstance(data, dict):
        data = next((v for v in data.values() if isinstance(v, list)), None)
    if not isinstance(data, list):
        return []
    roles: list[str] = []
    for item in data:
        if isinstance(item, str) and item.strip() and item.strip() not in roles:
            roles.append(item.strip())
    return roles


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
                roles_messages(n, task), sampling_of(agent, seed), tag=ROLES.tag(stage, "role_generator")
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
