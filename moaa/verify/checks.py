"""The Verifier: every check a prompt's answer gets, run off the event loop, as one verdict.

    verifier = Verifier(config.verify)
    verdict = await verifier.check(prompt, text)   # None: no check applies to this prompt

A prompt's reference (moaa.rows.Reference) decides its checks: `answer` (moaa.verify.answer),
`tests` (moaa.verify.code_tests, in the sandbox), `constraints` (moaa.verify.constraints), `sql`
(moaa.verify.sql); `verify.check` adds your own for every prompt (moaa.verify.own). All but tests
run in check workers (moaa.verify.worker); at most `verify.workers` checks run at once.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import MutableMapping
from typing import Any

from moaa.config import VerifyConfig
from moaa.rows import Prompt, TraceStep
from moaa.verify.code_tests import check_tests
from moaa.verify.own import load_own_check
from moaa.verify.verdict import STATUSES, Verdict, combine
from moaa.verify.worker import check_workers


class Verifier:
    def __init__(self, cfg: VerifyConfig):
        self.cfg = cfg
        if cfg.check:
            load_own_check(cfg.check)  # a wrong name stops the run now, with one line
        self._slots: asyncio.Semaphore | None = None
        self._loop: asyncio.AbstractEventLoop | None = None  # the semaphore's: one per event loop

    def kinds(self, prompt: Prompt) -> list[str]:
        """The checks `prompt` gets (empty: none applies)."""
        kinds = list(prompt.reference.kinds) if prompt.reference is not None else []
        return kinds + (["own"] if self.cfg.check else [])

    async def check(self, prompt: Prompt, text: str) -> Verdict | None:
        """The verdict on `text` as the final answer to `prompt`; None when no check applies."""
        kinds = self.kinds(prompt)
        if not kinds:
            return None
        if self._slots is None or self._loop is not asyncio.get_running_loop():
            self._slots, self._loop = asyncio.Semaphore(self.cfg.workers), asyncio.get_running_loop()
        verdicts = await asyncio.gather(*(self._one(kind, prompt, text) for kind in kinds))
        return combine(list(verdicts))

    async def _one(self, kind: str, prompt: Prompt, text: str) -> Verdict:
        assert self._slots is not None
        async with self._slots:
            if kind == "tests":
                assert prompt.reference is not None
                return await asyncio.to_thread(check_tests, prompt.reference, text, self.cfg.sandbox)
            request = {
                "kind": kind,
                "text": text,
                "reference": prompt.reference.to_dict() if prompt.reference is not None else {},
                "prompt_text": last_user_text(prompt),
                "settings": {
                    "constraints": self.cfg.constraints,
                    "timeout_s": self.cfg.timeout_s,
                    "check": self.cfg.check,
                },
            }
            if kind == "own":
                request["prompt"] = prompt.to_dict()
            pool = check_workers(self.cfg.workers)
            # Past the checks' own limits (SQL's progress handler, math-verify's alarms): a runaway.
            return await asyncio.to_thread(pool.run, request, 2 * self.cfg.timeout_s + 1)


def last_user_text(prompt: Prompt) -> str:
    return next((m.get("content", "") for m in reversed(prompt.messages) if m.get("role") == "user"), "")


def trace_step(
    prompt_id: str, stage: str, verdict: Verdict, *, index: int = 0, turn: int = 0, agent: str = ""
) -> TraceStep:
    """The trace's record of a verdict: kind "verification", its reason as text, its score, selected
    when it passed; meta holds the whole verdict (checks, details: parsed answers, tests' outcomes)."""
    return TraceStep(
        prompt_id=prompt_id,
        stage=stage,
        kind="verification",
        text=verdict.reason,
        agent=agent,
        role="verifier",
        turn=turn,
        index=index,
        selected=verdict.passed,
        score=verdict.score,
        meta=json.dumps(verdict.to_dict(), ensure_ascii=False, default=str),
    )


def count(counters: MutableMapping[str, int], verdict: Verdict | None, prefix: str = "verify") -> None:
    """Add a verdict to a stage's counters: `<prefix>_pass`, `_fail`, `_unverifiable` (nothing for None)."""
    if verdict is not None:
        counters[f"{prefix}_{verdict.status}"] = counters.get(f"{prefix}_{verdict.status}", 0) + 1


def status_counts(counters: MutableMapping[str, int] | dict[str, Any], prefix: str = "verify") -> dict[str, int]:
    return {status: int(counters.get(f"{prefix}_{status}", 0)) for status in STATUSES}
