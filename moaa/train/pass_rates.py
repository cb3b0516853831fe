"""Students scored by what they get right: `make compare --verified`'s held-out pass rate.

The held-out prompts are those of the arms' prompt source that its train/test split (output.test_size
and split_seed, decided per prompt_id) puts in `test` and that carry a reference (moaa.verify): no
student was trained on them, and each answer can be checked. Every student (A, B, the base) answers
them with the eval settings' sampling, each answer is checked, and each student's pass rate is
reported with its Wilson interval, beside the judge's matchups; for each pair of students, how often
one was right where the other was wrong.

    scores = score_students(students={"A": run_a, "B": run_b, "base": student}, config=arm_a_config,
                            out=folder)   # {"n", "prompt_ids", "students": {...}, "pairs": {...}}
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

from moaa.config import MoaaConfig
from moaa.errors import InputError
from moaa.models.stats import RunStats
from moaa.rows import Prompt
from moaa.train.evaluate import DEFAULT_CONFIG, EvalAnswer, client_for, load_eval_settings, running_endpoints
from moaa.train.winrate import wilson_interval

log = logging.getLogger(__name__)


def verifiable_held_out(config: MoaaConfig) -> list[Prompt]:
    """The run config's prompts in the test split that carry a reference, by prompt_id."""
    from moaa.dataset.files import split_of
    from moaa.sources import load_prompts

    out = config.output
    prompts = load_prompts(config.prompts).prompts
    held = [
        p for p in prompts if p.reference is not None and split_of(p.prompt_id, out.test_size, out.split_seed) == "test"
    ]
    if not held:
        raise InputError(
            f"{config.prompts.path or config.prompts.hf_dataset}: no held-out prompt carries a reference, so no "
            "pass rate can be measured; use a checkable prompt set (e.g. --set prompts.path=configs/prompts/"
            "verified.jsonl) and enough prompts (--prompts 40)"
        )
    return sorted(held, key=lambda p: p.prompt_id)


def score_students(
    *,
    students: dict[str, str],
    config: MoaaConfig | dict[str, Any],
    pairs: list[tuple[str, str]],
    out: str | Path,
    eval_config: str | Path | None = DEFAULT_CONFIG,
    eval_overrides: list[str] | None = None,
) -> dict[str, Any]:
    """Each student's answers to the verifiable held-out prompts, checked; pass rates and paired counts."""
    from moaa.models.transformers_backend import unload
    from moaa.train.evaluate import answer_all
    from moaa.verify import Verifier

    if not isinstance(config, MoaaConfig):
        config = MoaaConfig.model_validate(config)
    settings = load_eval_settings(eval_config, eval_overrides)
    prompts = verifiable_held_out(config)
    asked = [{"prompt_id": p.prompt_id, "messages": p.messages} for p in prompts]
    log.info("compare: pass rates of %s on %d checkable held-out prompts", ", ".join(students), len(prompts))
    stats, verifier, passed = RunStats(), Verifier(config.verify), {}
    with running_endpoints(settings, Path(out), students.values()) as resolved:
        for label, ref in students.items():
            client = client_for(ref, resolved, stats, label)
            tag = f"compare.verified.{label}"
            answers = asyncio.run(answer_all(client, asked, resolved.generation, tag, settings.answers))
            unload(client.model)
            passed[label] = asyncio.run(_checked(verifier, prompts, answers))
    return {
        "n": len(prompts),
        "prompt_ids": [p.prompt_id for p in prompts],
        "students": {label: _rate(statuses) for label, statuses in passed.items()},
        "pairs": {f"{a} vs {b}": _paired(passed[a], passed[b]) for a, b in pairs},
    }


async def _checked(verifier: Any, prompts: list[Prompt], answers: list[EvalAnswer]) -> list[str]:
    """Each answer's status; an answer still cut at max_tokens after its re-asks fails (it did not finish)."""
    verdicts = await asyncio.gather(*(verifier.check(p, a.text) for p, a in zip(prompts, answers, strict=True)))
    return [
        "fail" if a.cut else v.status if v is not None else "unverifiable"
        for v, a in zip(verdicts, answers, strict=True)
    ]


def _rate(statuses: list[str]) -> dict[str, Any]:
    k, n = statuses.count("pass"), len(statuses)
    return {"passed": k, "n": n, "pass_rate": k / n if n else float("nan"), "ci": list(wilson_interval(k, n)),
            "unverifiable": statuses.count("unverifiable"), "statuses": statuses}  # fmt: skip


def _paired(ours: list[str], theirs: list[str]) -> dict[str, int]:
    """How often each student was right where the other was not (the discordant pairs), and alike."""
    pairs = list(zip(ours, theirs, strict=True))
    return {
        "only_model": sum(1 for a, b in pairs if a == "pass" and b != "pass"),
        "only_baseline": sum(1 for a, b in pairs if a != "pass" and b == "pass"),
        "both": sum(1 for a, b in pairs if a == b == "pass"),
        "neither": sum(1 for a, b in pairs if a != "pass" and b != "pass"),
    }


def pass_rate_table(scores: dict[str, Any]) -> str:
    """| student | passed | pass rate [95% Wilson] | (and each pair's discordant counts)."""
    lines = ["| student | passed | pass rate [95% Wilson] |", "|---|---|---|"]
    for label, s in scores["students"].items():
        lo, hi = s["ci"]
        rate = f"{100 * s['pass_rate']:.1f}% [{100 * lo:.1f}%, {100 * hi:.1f}%]"
        lines.append(f"| {label} | {s['passed']}/{s['n']} | {rate} |")
    lines += ["", "| pair | only the first right | only the second right | both | neither |", "|---|---|---|---|---|"]
    for key, p in scores["pairs"].items():
        lines.append(f"| {key} | {p['only_model']} | {p['only_baseline']} | {p['both']} | {p['neither']} |")
    return "\n".join(lines)
