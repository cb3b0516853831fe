"""Only verified answers become SFT rows where a check exists (`sft.verify`; ALGORITHMS.md section 10).

The prompt's final answer (its last assistant turn: the aggregate, or the single model's answer) is
checked against its reference (moaa.verify). Under `require` (the default), a failing answer is
re-asked once of the agent that wrote it (`reask`), shown the check's feedback (the failing test,
"your final answer 9 is not correct"; never the reference's answer), then, if that fails too, the
turn's proposals are checked and the first passing one (latest layer first) becomes the answer
(`proposals`); else the prompt fails with reason `unverified` (permanent: a re-run would get the
same answers from the cache). An unverifiable verdict (a check that could not run) keeps the row,
its verdict recorded. `keep` records the verdict and keeps every row; `off` checks nothing.

Every verdict is a trace step of kind "verification" (moaa.verify.trace_step); the row's
`verification` column is the verdict of its answer and which answer it is (final, reask, proposal).
Counters (the summary, the card and the run report read them): verify_pass / verify_fail /
verify_unverifiable (the prompt's outcome), verify_none (no check applies), verify_first_pass (the
method's own answer passed), verify_reasks, verify_reask_pass, verify_proposal, verify_unverified
(prompts dropped).
"""

from __future__ import annotations

import asyncio
from dataclasses import replace

from moaa.engine.context import Answer, PromptFailed, PromptRun
from moaa.engine.quality import aggregate_problem
from moaa.models.client import Message
from moaa.prompts.generation import VERIFY_REASK
from moaa.verify import Verdict, Verifier, count, trace_step

PROPOSAL_KINDS = ("proposal", "sample")


async def verified_final(run: PromptRun, verifier: Verifier, text: str) -> str:
    """The prompt's final answer once checked (`text`, a re-ask's or a proposal's); PromptFailed
    `unverified` when none passes under `require`. Sets run.verification."""
    mode = run.gen.verify.mode
    if mode == "off":
        return text
    if not verifier.kinds(run.prompt):
        run.counters["verify_none"] += 1
        return text
    verdict = await _check(run, verifier, text, "final")
    if mode == "keep" or not verdict.failed:
        if verdict.passed:
            run.counters["verify_first_pass"] += 1
        return _settle(run, verdict, "final", text)
    first = verdict
    _unselect(run, text)  # whatever follows, this answer is not the row
    if run.gen.verify.reask and run.final_call is not None:
        again = await _reask(run, verdict)
        if again is not None:
            verdict = await _check(run, verifier, again, "reask")
            if verdict.passed:
                run.counters["verify_reask_pass"] += 1
                return _settle(run, verdict, "reask", again)
            _unselect(run, again)
    if run.gen.verify.proposals:
        found = await _passing_proposal(run, verifier)
        if found is not None:
            run.counters["verify_proposal"] += 1
            return _settle(run, found[1], "proposal", found[0])
    count(run.counters, first)
    run.counters["verify_unverified"] += 1
    tried = " after a re-ask" if run.counters.get("verify_reasks") else ""
    tried += " and no proposal passed" if run.gen.verify.proposals else ""
    raise PromptFailed("unverified", f"the answer failed its check{tried}: {first.reason}")


def _unselect(run: PromptRun, text: str) -> None:
    """The trace shows a final answer that failed its check as not kept."""
    for step in reversed(run.trace):
        if step.kind in ("aggregate", "answer") and step.text == text and step.selected:
            step.selected = False
            return


def _settle(run: PromptRun, verdict: Verdict, answer: str, text: str) -> str:
    count(run.counters, verdict)
    run.verification = verdict.column(answer)
    return text


async def _check(run: PromptRun, verifier: Verifier, text: str, answer: str) -> Verdict:
    verdict = await verifier.check(run.prompt, text)
    assert verdict is not None  # verifier.kinds said a check applies
    _record(run, verdict, answer, 0)
    return verdict


def _record(run: PromptRun, verdict: Verdict, agent: str, index: int) -> None:
    run.record(trace_step(run.prompt.prompt_id, run.stage, verdict, index=index, turn=run.final_turn, agent=agent))


async def _reask(run: PromptRun, verdict: Verdict) -> str | None:
    """The final writer's answer when shown what failed; None when it gave none usable."""
    assert run.final_call is not None
    call, messages = run.final_call
    run.counters["verify_reasks"] += 1
    correction = {"role": "user", "content": VERIFY_REASK.render(feedback=verdict.hint)}
    failed_answer = run.final_text or ""
    asked: list[Message] = [*messages, {"role": "assistant", "content": failed_answer}, correction]
    got = await run.ask(replace(call, who=f"{call.who}-verify-reask", template=VERIFY_REASK), asked)
    if not got or aggregate_problem(got[0].text, [], run.gen.quality)[0]:
        return None  # no answer, or one pasting scaffolding: not a row either way
    return got[0].text


async def _passing_proposal(run: PromptRun, verifier: Verifier) -> tuple[str, Verdict] | None:
    """The first proposal of the final turn that passes (latest layer first), with its verdict."""
    candidates = _proposals(run)
    if not candidates:
        return None
    verdicts = await asyncio.gather(*(verifier.check(run.prompt, a.text) for a in candidates))
    for answer, verdict in zip(candidates, verdicts, strict=True):  # recorded in order, however they finished
        assert verdict is not None
        _record(run, verdict, answer.step.agent, answer.step.index)
    return next(((a.text, v) for a, v in zip(candidates, verdicts, strict=True) if v is not None and v.passed), None)


def _proposals(run: PromptRun) -> list[Answer]:
    """The final turn's complete proposals, each text once, latest layer first (gates passed)."""
    turn = run.final_turn
    keep_cut = run.answers.truncated == "keep"
    steps = [
        s for s in run.trace
        if s.kind in PROPOSAL_KINDS and s.turn == turn and s.text.strip()
        and s.finish_reason not in ("error", "content_filter") and (keep_cut or s.finish_reason != "length")
    ]  # fmt: skip
    steps.sort(key=lambda s: (-s.layer, s.index))
    seen: set[str] = set()
    out = []
    for step in steps:
        if step.text not in seen and not aggregate_problem(step.text, [], run.gen.quality)[0]:
            seen.add(step.text)
            out.append(Answer(step.text, step))
    return out
