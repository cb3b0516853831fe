"""Quality gates on aggregates before they become data (ALGORITHMS.md section 8).

Small aggregators paste the scaffolding back ("... Response 1: To determine the size ...") or copy
one reference verbatim; both look like answers and are data bugs. A copy is a bug only when it
loses information: the aggregate is one voice picked out of references that say other things. It
is kept when the references agree on it (it is the text most references give, and at least two
give it: the consensus a majority vote would pick, as Ensemble-Instruct keeps two models that agree
exactly), and when it is Self-MoA-Seq's own running synthesis kept as it is (the synthesis already
holds the earlier samples; the window repeats it to bias the aggregator towards it).
`aggregate_problem` names what is wrong with an aggregate ("" when nothing is); `gated_aggregate`
re-asks a rejected one up to `sft.quality.reasks` times, showing the aggregator its answer and what
was wrong, then fails the prompt with reason `quality_scaffolding` or `quality_verbatim_copy`.
Counters (the run summary's quality line and the card read them): gate_scaffolding and
gate_verbatim_copy (aggregates rejected), gate_reasks (re-asks made), gate_dropped (prompts failed
by the gate).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Awaitable, Callable

from moaa.config import QualityConfig
from moaa.engine.context import Answer, PromptFailed, PromptRun
from moaa.models.client import Message
from moaa.prompts.generation import AGGREGATE, QUALITY_REASK, SEQ_AGGREGATE, SYNTHESIS_LABEL

# "Response 1:", "**Response 2**:", "Response 3 (synthesis of earlier answers):", "Responses 1 and 2:"
# are the references' own headings; a real answer rarely writes a capitalised numbered "Response N:".
_SCAFFOLD_RE = re.compile(r"\bResponses?\s+\d{1,2}(?:\s*(?:and|,|&)\s*\d{1,2})*\**\s*(?:\([^)\n]{0,60}\))?\s*\**\s*:")


def _phrases() -> tuple[str, ...]:
    """Distinctive sentences of the aggregation templates (their first two sentences) and the clauses
    of the re-ask's own instruction, lower-cased: an aggregator asked again once answered with the
    instruction itself ("No numbered response headings, no mention of other responses ..."), and
    `make data` wrote it as an SFT row."""
    out = []
    for template in (AGGREGATE, SEQ_AGGREGATE):
        sentences = [s.strip() for s in re.split(r"(?<=[.;])\s+", template.text) if len(s.strip()) > 30]
        out += [s.lower().rstrip(".;") for s in sentences[:2]]
    clauses = [c.strip() for c in re.split(r"[.:;]", QUALITY_REASK.text) if len(c.strip()) > 30 and "{" not in c]
    return tuple(dict.fromkeys([*out, *(c.lower() for c in clauses), SYNTHESIS_LABEL]))


TEMPLATE_PHRASES = _phrases()


def _normal(text: str) -> str:
    return " ".join(text.split()).lower()


def aggregate_problem(
    text: str, references: list[str], gates: QualityConfig, synthesis: str | None = None
) -> tuple[str, str]:
    """(counter, problem) for an aggregate that fails a gate, else ("", ""); `synthesis`: the
    running synthesis among the references (Self-MoA-Seq), which the aggregate may keep."""
    if gates.scaffolding:
        found = _SCAFFOLD_RE.search(text)
        if found:
            return "scaffolding", f"it contains the references' heading {found.group(0).strip()!r}"
        flat = _normal(text)
        phrase = next((p for p in TEMPLATE_PHRASES if p in flat), None)
        if phrase:
            return "scaffolding", f"it repeats the instructions ({phrase[:60]!r})"
    if gates.verbatim_copy and len(references) >= 2:
        copied = lone_copy(text, references, synthesis)
        if copied:
            return "verbatim_copy", f"it is response {copied} copied word for word"
    return "", ""


def lone_copy(text: str, references: list[str], synthesis: str | None = None) -> int:
    """The 1-based index of the reference `text` copies when that copy loses information, else 0.

    Not a loss: `text` is the running `synthesis` (Self-MoA-Seq), or the references agree on it (at
    least two give it and no other text is given by more). The synthesis, repeated in the window,
    counts as one voice."""
    flat = _normal(text)
    if synthesis is not None and flat == _normal(synthesis):
        return 0
    voices = [_normal(r) for r in references]
    if synthesis is not None:
        marked = _normal(synthesis)
        voices = [marked] + [v for v in voices if v != marked]
    if flat not in voices:
        return 0
    counts = Counter(voices)
    if counts[flat] >= 2 and counts[flat] == max(counts.values()):
        return 0
    return next(i for i, ref in enumerate(references, start=1) if _normal(ref) == flat)


Ask = Callable[[list[Message], int], Awaitable[list[Answer]]]


async def gated_aggregate(
    run: PromptRun,
    messages: list[Message],
    references: list[str],
    got: list[Answer],
    ask: Ask,
    synthesis: str | None = None,
) -> str:
    """The aggregate in `got` once it passes the gates; `ask(messages, attempt)` re-asks it."""
    gates = run.gen.quality
    text = got[0].text
    for attempt in range(gates.reasks + 1):
        counter, problem = aggregate_problem(text, references, gates, synthesis)
        if not counter:
            return text
        run.counters[f"gate_{counter}"] += 1
        got[0].step.selected = False  # the trace shows the rejected aggregate as not kept
        if attempt == gates.reasks:
            run.counters["gate_dropped"] += 1
            raise PromptFailed(f"quality_{counter}", f"the aggregate failed the quality gate: {problem}")
        run.counters["gate_reasks"] += 1
        correction = {"role": "user", "content": QUALITY_REASK.render(problem=problem)}
        got = await ask([*messages, {"role": "assistant", "content": text}, correction], attempt + 1)
        if not got:
            raise run.fail("aggregator_failed", "the aggregator gave no answer when asked again")
        text = got[0].text
    return text


def gate_summary(counters: dict[str, int]) -> str:
    """The gates' counts in words, for the run summary and the data card."""
    scaffolding, copies = counters.get("gate_scaffolding", 0), counters.get("gate_verbatim_copy", 0)
    return (
        f"{scaffolding + copies} aggregates rejected by the quality gates ({scaffolding} with reference "
        f"scaffolding, {copies} verbatim copies; {counters.get('gate_reasks', 0)} re-asked, "
        f"{counters.get('gate_dropped', 0)} prompts dropped)"
    )
