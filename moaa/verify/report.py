"""Verification counts in words: the run summary's, the data card's and the run report's line per stage.

They read a stage's counters (moaa.engine.verification for sft, moaa.preference.verified_pairs for preference):

    sft_line(counters, "moa")
    # 'moa: 4 of 4 prompts checked, 3 verified (75%: 2 at first, 1 after a re-ask, 0 from a proposal),
    #  1 failed (dropped as unverified), 0 unverifiable; 6 without a check'
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def _n(counters: Mapping[str, int], key: str) -> int:
    return int(counters.get(key, 0))


def checked(counters: Mapping[str, int], prefix: str = "verify") -> int:
    return sum(_n(counters, f"{prefix}_{status}") for status in ("pass", "fail", "unverifiable"))


def sft_line(counters: Mapping[str, int], method: str) -> str:
    """The SFT stage's verified yield ("" when verification did not run)."""
    total, none = checked(counters), _n(counters, "verify_none")
    if not total and not none:
        return ""
    passed, failed = _n(counters, "verify_pass"), _n(counters, "verify_fail")
    share = f"{100 * passed / total:.0f}%: " if total else ""
    how = (
        f"{_n(counters, 'verify_first_pass')} at first, {_n(counters, 'verify_reask_pass')} after a re-ask, "
        f"{_n(counters, 'verify_proposal')} from a proposal"
    )
    dropped = _n(counters, "verify_unverified")
    fate = "dropped as unverified" if dropped == failed else f"{dropped} dropped as unverified, {failed - dropped} kept"
    return (
        f"{method}: {total} prompts checked, {passed} verified ({share}{how}), {failed} failed ({fate}), "
        f"{_n(counters, 'verify_unverifiable')} unverifiable; {none} without a check"
    )


def preference_line(counters: Mapping[str, int]) -> str:
    """The preference stage's candidate verdicts and verified pairs ("" when nothing was checked)."""
    total = checked(counters, "candidates")
    if not total and not _n(counters, "verify_none"):
        return ""
    parts = [
        f"{total} candidates checked: {_n(counters, 'candidates_pass')} passed, {_n(counters, 'candidates_fail')} "
        f"failed, {_n(counters, 'candidates_unverifiable')} unverifiable",
        f"{_n(counters, 'pairs_verified')} pairs chosen-passes/rejected-fails",
    ]
    if _n(counters, "pairs_judged_passing"):
        parts.append(f"{_n(counters, 'pairs_judged_passing')} judged among passing answers")
    if none := _n(counters, "verify_none"):
        parts.append(f"{none} prompt{'s' if none != 1 else ''} without a check")
    return "; ".join(parts)


def verification_lines(stages: Mapping[str, Any], method: str) -> list[tuple[str, str]]:
    """(stage, its verification counts in words) for each stage that checked answers; `stages` as
    a run summary or a manifest's counts hold them ({stage: {"counters": {...}}})."""
    lines = []
    for stage, agg in stages.items():
        counters = (agg or {}).get("counters") or {}
        text = sft_line(counters, method) if stage == "sft" else preference_line(counters)
        if text:
            lines.append((stage, text))
    return lines
