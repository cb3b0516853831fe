"""Shared by the verification tests: a test-server responder that plays scripted proposers, an
aggregator and its re-ask per question, and a check of written rows that does not trust the
pipeline's own verdicts."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from moaa.config import SandboxConfig
from moaa.rows import Reference
from moaa.verify.answer import check_answer
from moaa.verify.code_tests import check_tests

REASK_OPENING = "Your answer above is wrong"


@dataclass
class Script:
    """What each role answers one question: proposers by their role ("p0", "p1", ...), the aggregator,
    its re-ask after a failed check, and the policy's samples (preference) in order."""

    proposals: list[str]
    aggregate: str
    reask: str | None = None
    samples: list[str] = field(default_factory=list)


class Tutor:
    """A responder for moaa.testing.openai_server: answers by `scripts[question]`; the default reply
    (None) for anything else (judges, unknown questions). `reask_feedback` keeps what re-asks were told."""

    def __init__(self, scripts: dict[str, Script]):
        self.scripts = scripts
        self.reask_feedback: list[str] = []

    def __call__(self, request: dict[str, Any]) -> str | list[str] | None:
        messages = request["messages"]
        question = next((m["content"] for m in messages if m["role"] == "user"), "")
        script = self.scripts.get(question)
        if script is None:
            return None
        last = messages[-1]
        if last["role"] == "user" and last["content"].startswith(REASK_OPENING):
            self.reask_feedback.append(last["content"])
            return script.reask if script.reask is not None else script.aggregate
        system = next((m["content"] for m in messages if m["role"] == "system"), "")
        if "Responses:\n\n" in system:
            return script.aggregate
        if system.startswith("policy") and script.samples:
            return script.samples[: request.get("n", 1)] if request.get("n", 1) > 1 else script.samples[0]
        if system[:1] == "p" and system[1:2].isdigit():
            return script.proposals[int(system[1:2]) % len(script.proposals)]
        return None


def python(code: str) -> str:
    return f"Here is the function:\n\n```python\n{code}\n```\n"


def recheck(reference: Reference, text: str) -> str:
    """The status of `text` against `reference`, checked here with the check functions themselves
    (not the Verifier, its workers or any verdict the pipeline wrote); "none" when it has no check."""
    from moaa.verify.sql import check_sql

    statuses = []
    if reference.answer is not None:
        statuses.append(check_answer(reference.answer, text).status)
    if reference.tests:
        statuses.append(check_tests(reference, text, SandboxConfig()).status)
    if reference.schema is not None:
        statuses.append(check_sql(reference, text, 10).status)
    return "fail" if "fail" in statuses else "pass" if statuses else "none"


def write_source(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path
