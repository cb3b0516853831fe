"""A check's verdict: pass, fail or unverifiable, with a short reason a person can read.

`score` is the fraction of the check passed (tests: asserts passed; constraints: instructions
followed; 1.0 or 0.0 for an answer or a query), which the `verifier` scorer ranks by; `checks`
names the checks that ran (answer, tests, constraints, sql, own); `details` is what the trace keeps
(the parsed answer, each test's outcome, the rows compared); `feedback` is what a model re-asked
may be told: the reason without the reference's answer or rows ("your final answer 9 is not
correct", never "... the reference 80"), so a re-ask cannot pass by copying it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

Status = Literal["pass", "fail", "unverifiable"]
STATUSES: tuple[Status, ...] = ("pass", "fail", "unverifiable")
REASON_CHARS = 300  # a reason is a line, not a log


@dataclass(frozen=True)
class Verdict:
    status: Status
    reason: str = ""
    score: float | None = None
    checks: tuple[str, ...] = ()
    details: dict[str, Any] = field(default_factory=dict)
    feedback: str = ""  # "" : the reason is safe to show

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"verdict status {self.status!r}; expected one of {', '.join(STATUSES)}")
        if len(self.reason) > REASON_CHARS:
            object.__setattr__(self, "reason", self.reason[: REASON_CHARS - 3] + "...")
        if self.score is None and self.status != "unverifiable":
            object.__setattr__(self, "score", 1.0 if self.status == "pass" else 0.0)

    @property
    def hint(self) -> str:
        """What a re-asked model is shown."""
        return self.feedback or self.reason

    @property
    def passed(self) -> bool:
        return self.status == "pass"

    @property
    def failed(self) -> bool:
        return self.status == "fail"

    def column(self, answer: str | None = None) -> dict[str, Any]:
        """The row's `verification` value: status, reason, score, checks (and, SFT, which answer it is)."""
        out = {"status": self.status, "reason": self.reason, "score": self.score, "checks": list(self.checks)}
        return out | ({"answer": answer} if answer is not None else {})

    def to_dict(self) -> dict[str, Any]:
        """Everything, for a trace step's meta (and a check worker's reply)."""
        return self.column() | {"details": self.details} | ({"feedback": self.feedback} if self.feedback else {})


def passed(reason: str, check: str, score: float = 1.0, **details: Any) -> Verdict:
    return Verdict("pass", reason, score, (check,), details)


def failed(reason: str, check: str, score: float = 0.0, *, feedback: str = "", **details: Any) -> Verdict:
    return Verdict("fail", reason, score, (check,), details, feedback)


def unverifiable(reason: str, check: str, **details: Any) -> Verdict:
    return Verdict("unverifiable", reason, None, (check,), details)


def combine(verdicts: list[Verdict]) -> Verdict:
    """One verdict for several checks of one answer: it fails if any fails, passes if every one
    passed, else it is unverifiable (a check that could not run leaves the answer unproven). The
    score is the mean of the checks that ran; the reason names the deciding check."""
    if len(verdicts) == 1:
        return verdicts[0]
    checks = tuple(c for v in verdicts for c in v.checks)
    details = {c: v.to_dict() for v in verdicts for c in v.checks}
    ran = [v for v in verdicts if v.status != "unverifiable"]
    scores = [v.score for v in ran if v.score is not None]
    score = sum(scores) / len(scores) if scores else None
    failing = [v for v in verdicts if v.failed]
    if failing:
        return Verdict("fail", _named(failing[0]), score, checks, details, failing[0].hint)
    if len(ran) == len(verdicts):
        return Verdict("pass", "; ".join(_named(v) for v in verdicts), score, checks, details)
    unknown = next(v for v in verdicts if v.status == "unverifiable")
    return Verdict("unverifiable", _named(unknown), None, checks, details)


def _named(verdict: Verdict) -> str:
    return f"{verdict.checks[0]}: {verdict.reason}" if verdict.checks else verdict.reason
