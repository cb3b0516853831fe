"""Answer prompts with the configured method: one prompt (`answer_prompt`) or a stream (`run_prompts`).

A prompt may be a conversation: every user turn is answered by the mixture given the conversation
so far, its original assistant turns are replaced by the mixture's answers, and system messages
are kept. A prompt that cannot be answered becomes a Failure (never dropped); `EndpointError`
propagates and stops the run.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable, Iterable

from moaa.config import AnswersConfig, GenerationConfig
from moaa.engine.context import Embedder, PromptFailed, PromptResult, PromptRun
from moaa.engine.methods import method_of
from moaa.engine.plan import Turn
from moaa.engine.smoa import TASK_SAMPLES, describe_task, generate_roles
from moaa.engine.verification import verified_final
from moaa.fanout import fan_out
from moaa.models.client import ChatClient, Message
from moaa.rows import Failure, Prompt, SFTRow
from moaa.verify import Verifier

log = logging.getLogger(__name__)


async def answer_prompt(
    prompt: Prompt,
    gen: GenerationConfig,
    clients: dict[str, ChatClient],
    *,
    roles: list[str] | None = None,
    stage: str = "sft",
    embed: Embedder | None = None,
    answers: AnswersConfig | None = None,
    verifier: Verifier | None = None,
) -> PromptResult:
    """Answer every user turn of `prompt` with `gen.method` (its registered turn function).

    SFT row columns: prompt_id, messages (system and user turns as given, assistant turns written
    by the mixture, ending with an assistant turn), source, method, models (distinct, in order of
    first use), category, verification (the final answer's verdict, or None), reference (the
    prompt's, as JSON text, or None). `roles` are SMoA's
    role descriptions when the config names none; `embed` replaces the MiniLM embedder of the
    cluster filter (tests); `answers` says what becomes of a final answer cut at max_tokens
    (default: dropped, the prompt a `truncated` failure); `verifier` checks the final answer where
    the prompt has a check, as `gen.verify` says (moaa.engine.verification).
    """
    smoa_roles = (gen.smoa.roles or roles) if gen.method == "smoa" else None
    run = PromptRun(prompt, gen, clients, stage, smoa_roles, embed, answers)
    try:
        messages = await _answer_turns(run, method_of(gen.method).turn)
        if verifier is not None:
            final = await verified_final(run, verifier, messages[-1]["content"])
            messages[-1] = {"role": "assistant", "content": final}
    except PromptFailed as exc:
        return run.result(failure=Failure(prompt.prompt_id, stage, exc.reason, exc.error, exc.transient))
    reference = prompt.reference.to_json() if prompt.reference is not None else None
    row = SFTRow(
        prompt.prompt_id,
        messages,
        prompt.source,
        gen.method,
        list(run.models),
        prompt.category,
        run.verification,
        reference,
    )
    return run.result(row=row)


async def _answer_turns(run: PromptRun, answer_turn: Turn) -> list[Message]:
    convo: list[Message] = []
    turn = 0
    for message in run.prompt.messages:
        role = message.get("role")
        if role == "assistant":
            # Replaced by the mixture's answer (an assistant turn right after another is dropped).
            if convo and convo[-1]["role"] == "user":
                convo.append({"role": "assistant", "content": await answer_turn(run, convo, turn)})
                turn += 1
            continue
        if role not in ("system", "user"):
            raise PromptFailed("bad_message", f"message role {role!r} (expected system, user or assistant)")
        convo.append({"role": role, "content": message.get("content") or ""})
    if convo and convo[-1]["role"] == "user":
        convo.append({"role": "assistant", "content": await answer_turn(run, convo, turn)})
        turn += 1
    if not turn:
        raise PromptFailed("no_user_turn", "the prompt has no user message to answer")
    return convo


async def run_prompts(
    prompts: Iterable[Prompt],
    gen: GenerationConfig,
    clients: dict[str, ChatClient],
    *,
    on_result: Callable[[PromptResult], None],
    max_in_flight: int = 64,
    roles: list[str] | None = None,
    stage: str = "sft",
    embed: Embedder | None = None,
    answers: AnswersConfig | None = None,
    verifier: Verifier | None = None,
) -> None:
    """Answer `prompts` with at most `max_in_flight` in flight, calling `on_result` as each finishes.

    The iterable is consumed lazily (memory stays flat however many prompts there are). SMoA roles
    missing from both the config and `roles` are generated once here. The first exception
    (EndpointError, or one raised by `on_result` or the iterable) cancels the rest and propagates.
    """
    if gen.method == "smoa" and not gen.smoa.roles and not roles:
        agent = gen.smoa.role_generator or gen.aggregator
        assert agent is not None
        prompts = iter(prompts)
        first = list(itertools.islice(prompts, TASK_SAMPLES))  # the task is described by a few prompts
        prompts = itertools.chain(first, prompts)
        task = gen.smoa.task or describe_task(first)
        roles = await generate_roles(len(gen.proposers), clients[agent.endpoint], agent, task=task, stage=stage)

    async def answer(prompt: Prompt) -> PromptResult:
        return await answer_prompt(
            prompt, gen, clients, roles=roles, stage=stage, embed=embed, answers=answers, verifier=verifier
        )

    await fan_out(prompts, answer, on_result, max_in_flight)
