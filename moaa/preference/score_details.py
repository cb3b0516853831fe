"""The typed details of a Score: what a scorer writes, the stage counts and the trace keeps.

A scorer fills the fields of its kind; the trace step of a verdict holds `ScoreDetail.to_json()`,
whose keys are the fields that were set (the viewer, moaa.preference.bias and the data set's
readers read that JSON; `PairRecord.from_json` reads a pair back).

- every judge: usage (calls, tokens, unparsed answers), panel (the judges counted, when not all),
  error and left_out ("missing_judge") for an unscored candidate, hard_score (weighted verdicts:
  what the written digits or letters alone give);
- pointwise and MoA judges: criteria, judges (one JudgeRecord each), ratings (the panel's mean, or
  the aggregator's), rationales and aggregator (MoA), criteria_selection (MoA, first candidate);
- pairwise judge: pairs (one PairRecord per pair and judge, kept on the lower index), wins, ties,
  losses;
- reward model: reward_model (its path), templated (its chat template rendered the conversation);
- verifier: verdict (moaa.verify.Verdict.to_dict(), None where the prompt has no check), and where a
  tie-breaker scored the candidate: tie_break (its score), its usage and judge (its details).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class Usage:
    """What a candidate's verdicts cost: calls (failed ones included), tokens, answers that did not parse."""

    calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    unparsed: int = 0

    def to_json(self) -> dict[str, int]:
        return {"calls": self.calls, "prompt_tokens": self.prompt_tokens,
                "completion_tokens": self.completion_tokens, "unparsed": self.unparsed}  # fmt: skip


@dataclass
class JudgeRecord:
    """One judge's verdict on one answer (or the MoA aggregator's): its model, attempts and raw
    answers; when it parsed, the ratings, their mean (`overall`) and rationales; weighted: the
    digits it wrote (`hard_ratings`) and their mean (`hard_overall`)."""

    judge: str
    model: str
    attempts: int
    raw: list[str]
    weighted: bool = False
    hard_ratings: dict[str, float] | None = None
    error: str = ""
    overall: float | None = None
    ratings: dict[str, float] | None = None
    rationales: dict[str, str] | None = None
    hard_overall: float | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"judge": self.judge, "model": self.model, "attempts": self.attempts, "raw": self.raw}
        out |= {"weighted": True, "hard_ratings": self.hard_ratings} if self.weighted else {}
        out |= {"error": self.error} if self.error else {}
        if self.ratings is not None:
            out |= {"overall": self.overall, "ratings": self.ratings, "rationales": self.rationales}
        return out | ({"hard_overall": self.hard_overall} if self.hard_overall is not None else {})


@dataclass
class PairRecord:
    """One pairwise comparison by one judge, both orders: each order's winner ("A"/"B"/"tie"; `ab`:
    the lower index shown first) and raw answers, the outcome for the lower index ("first",
    "second", "tie"; None unjudged) and whether the orders agreed; weighted: each order's preference
    for the lower index, their mean and its outcome; `error` when an order went unanswered."""

    judge: str
    other: int
    ab: str | None
    ba: str | None
    outcome: str | None
    agree: bool | None
    raw_ab: list[str] = field(default_factory=list)
    raw_ba: list[str] = field(default_factory=list)
    preference: float | None = None
    orders: list[float] | None = None
    weighted_outcome: str | None = None
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"judge": self.judge, "other": self.other, "ab": self.ab, "ba": self.ba,
                               "outcome": self.outcome, "agree": self.agree, "raw_ab": self.raw_ab,
                               "raw_ba": self.raw_ba}  # fmt: skip
        if self.orders is not None:
            out |= {"preference": self.preference, "orders": self.orders, "weighted_outcome": self.weighted_outcome}
        return out | ({"error": self.error} if self.error is not None else {})

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> PairRecord:
        """A pair read back from a trace step's meta (keys a trace lacks keep their defaults)."""
        return cls(
            str(data.get("judge") or ""), int(data.get("other") or 0), data.get("ab"), data.get("ba"),
            data.get("outcome"), data.get("agree"), list(data.get("raw_ab") or []), list(data.get("raw_ba") or []),
            data.get("preference"), data.get("orders"), data.get("weighted_outcome"), data.get("error"),
        )  # fmt: skip


@dataclass
class ScoreDetail:
    """The details of one candidate's Score (the module docstring says which scorer sets what)."""

    criteria: list[str] | None = None
    judges: list[JudgeRecord] | None = None
    pairs: list[PairRecord] | None = None
    usage: Usage | None = None
    panel: list[str] | None = None
    wins: int | None = None
    ties: int | None = None
    losses: int | None = None
    aggregator: JudgeRecord | None = None
    error: str | None = None
    left_out: str | None = None
    ratings: dict[str, float] | None = None
    rationales: dict[str, str] | None = None
    hard_score: float | None = None
    criteria_selection: dict[str, Any] | None = None
    reward_model: str | None = None
    templated: bool | None = None
    verified: bool = False  # made by the verifier scorer: `verdict` is set (None: no check)
    verdict: dict[str, Any] | None = None
    tie_break: float | None = None
    judge: ScoreDetail | None = None  # the tie-breaker's details, where it scored this candidate

    def to_json(self) -> dict[str, Any]:
        """The trace's form: the fields that were set, records as JSON."""
        out: dict[str, Any] = {"verdict": self.verdict} if self.verified else {}
        for name in ("criteria", "judges", "pairs", "usage", "panel", "wins", "ties", "losses", "aggregator",
                     "error", "left_out", "ratings", "rationales", "hard_score", "criteria_selection",
                     "reward_model", "templated"):  # fmt: skip
            value = getattr(self, name)
            if value is not None:
                out[name] = _json(value)
        if self.judge is not None:
            out |= {"tie_break": self.tie_break, "usage": _json(self.usage) if self.usage else {},
                    "judge": self.judge.to_json()}  # fmt: skip
        return out


def _json(value: Any) -> Any:
    if isinstance(value, list):
        return [_json(v) for v in value]
    return value.to_json() if hasattr(value, "to_json") else value
