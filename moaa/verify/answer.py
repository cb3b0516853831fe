"""The `answer` check: the answer's final answer against the reference, with HF's math-verify.

math-verify reads numbers, fractions, percentages, LaTeX and `\\boxed{}` from both sides (the last
answer the text states, "the answer is" and boxed answers first) and compares them symbolically,
so "80", "$80^\\circ$" and "The largest angle is 80 degrees." all match a reference of 80. A GSM8K
reference ("... #### 72") is read after its `####`. A reference that is prose without a boxed or
`####` answer is not a final answer: the check is unverifiable rather than a guess.

Runs in a check worker (moaa.verify.worker), whose main thread lets math-verify's own time limits
(signal.alarm) work; a parse that runs away past them is killed with the worker.
"""

from __future__ import annotations

from moaa.verify.extract import strip_thinking
from moaa.verify.verdict import Verdict, failed, passed, unverifiable

MAX_REFERENCE_CHARS = 120  # a longer reference must say where its answer is (#### or \boxed)
PARSE_TIMEOUT_S = 5


def gold_text(reference: str) -> str | None:
    """The final answer a reference states: after GSM8K's `####`, a boxed one, or a short text."""
    if "####" in reference:
        return reference.rsplit("####", 1)[1].strip().replace(",", "")
    if "\\boxed" in reference or len(reference) <= MAX_REFERENCE_CHARS:
        return reference
    return None


def check_answer(reference: str, text: str) -> Verdict:
    from math_verify import parse, verify

    gold = gold_text(reference)
    if gold is None:
        return unverifiable(
            f"the reference is {len(reference)} characters of prose without a #### or \\boxed final answer", "answer"
        )
    gold_parsed = parse(gold, parsing_timeout=PARSE_TIMEOUT_S)
    if not gold_parsed:
        return unverifiable(f"math-verify cannot read the reference answer {gold!r}", "answer")
    shown_gold = _shown(gold_parsed, gold)
    answer = parse(strip_thinking(text), parsing_timeout=PARSE_TIMEOUT_S)
    if not answer:
        return failed(
            f"no final answer found (reference {shown_gold})", "answer",
            feedback="your answer does not state a final answer", reference=shown_gold,
        )  # fmt: skip
    shown = _shown(answer, "")
    if verify(gold_parsed, answer, timeout_seconds=PARSE_TIMEOUT_S):
        return passed(f"final answer {shown} matches the reference {shown_gold}", "answer", answer=shown)
    return failed(
        f"final answer {shown} does not match the reference {shown_gold}", "answer",
        feedback=f"your final answer {shown} is not correct", answer=shown, reference=shown_gold,
    )  # fmt: skip


def _shown(parsed: list, fallback: str) -> str:
    """How a parse result is named in a reason: the text it was read from (its second item)."""
    text = str(parsed[1]) if len(parsed) > 1 else str(parsed[0]) if parsed else fallback
    return text if len(text) <= 60 else text[:57] + "..."
