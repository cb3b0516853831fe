"""Several students answer the same held-out prompts once; the judge compares named pairs of them in
both orders (a disagreement between the orders is a tie), with moaa.train.evaluate's pieces.

    evals = evaluate_students(students={"A": run_a, "B": run_b, "base": student}, datasets=[a, b],
                              matchups=[("A", "B"), ("A", "base")], out=folder)

Prompts: the test-split prompts every data set version has. The split is decided per prompt_id with
the same test_size and seed in every arm, so no student was trained on any of them; sorted by
prompt_id, the first `limit` of the eval settings. A multi-turn prompt's earlier assistant turns were
written by the first data set's method; every student sees that same conversation (`differs` counts
such prompts). Each matchup is written as an eval folder `<out>/eval-<model>-vs-<baseline>/`
(results.json, results.md, lineage.json). Returns {"held_out", "judge", "matchups", "lengths", "answer_chars", ...}.
"""

from __future__ import annotations

import asyncio
import logging
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from moaa.errors import InputError
from moaa.models.stats import RunStats
from moaa.train.data import find_dataset, held_out_prompts
from moaa.train.evaluate import (
    DEFAULT_CONFIG,
    EvalAnswer,
    build_results,
    client_for,
    judged_records,
    load_eval_settings,
    running_endpoints,
    write_results,
)
from moaa.train.runs import write_lineage

log = logging.getLogger(__name__)

ClientFor = Callable[..., Any]  # (ref, settings, stats, name) -> a chat client, as evaluate.client_for


def shared_held_out(datasets: list[Any], limit: int | None) -> tuple[list[dict[str, Any]], int]:
    """The held-out prompts all `datasets` have (the first's conversations), and how many conversations differ."""
    per = [{p["prompt_id"]: p for p in held_out_prompts(d)} for d in datasets]
    ids = sorted(set.intersection(*(set(p) for p in per)))
    if not ids:
        refs = ", ".join(d.ref for d in datasets)
        raise InputError(f"{refs} share no held-out prompt; raise prompts.limit or output.test_size")
    ids = ids[:limit] if limit else ids
    differs = sum(1 for i in ids if any(p[i]["messages"] != per[0][i]["messages"] for p in per[1:]))
    return [per[0][i] for i in ids], differs


def length_stats(answers: list[str]) -> dict[str, float]:
    chars = [len(a) for a in answers]
    return {"n": len(chars), "mean": statistics.fmean(chars) if chars else 0.0,
            "median": statistics.median(chars) if chars else 0.0, "min": min(chars, default=0),
            "max": max(chars, default=0), "empty": sum(1 for c in chars if c == 0)}  # fmt: skip


def answer_students(
    students: dict[str, str], prompts: list[dict[str, Any]], settings: Any, stats: RunStats, clients: ClientFor
) -> dict[str, list[EvalAnswer]]:
    """Each student's answers to `prompts`, one student in memory at a time."""
    from moaa.models.transformers_backend import unload
    from moaa.train.evaluate import answer_all

    answers = {}
    for label, ref in students.items():
        client = clients(ref, settings, stats, label)
        tag = f"compare.{label}"
        answers[label] = asyncio.run(answer_all(client, prompts, settings.generation, tag, settings.answers))
        unload(client.model)
    return answers


def evaluate_students(
    *,
    students: dict[str, str],
    datasets: list[str],
    matchups: list[tuple[str, str]],
    out: str | Path,
    config: str | Path | None = DEFAULT_CONFIG,
    overrides: list[str] | None = None,
    data_root: str | Path = "data",
    clients: ClientFor = client_for,
    judge_client: Any = None,
) -> dict[str, Any]:
    """Answers of every student on the shared held-out prompts, then each matchup judged in both orders."""
    started = time.time()
    settings = load_eval_settings(config, overrides)
    versions = [find_dataset(d, data_root) for d in datasets]
    prompts, differs = shared_held_out(versions, settings.limit)
    students = {label: _resolve(ref, settings) for label, ref in students.items()}
    out, stats = Path(out), RunStats()
    log.info("compare: %s on %d held-out prompts", ", ".join(f"{a} vs {b}" for a, b in matchups), len(prompts))
    with running_endpoints(settings, out, students.values()) as resolved:
        answers = answer_students(students, prompts, resolved, stats, clients)
        judge = judge_client or clients(resolved.judge.endpoint, resolved, stats, "judge")
        results = {}
        for model, baseline in matchups:
            results[f"{model} vs {baseline}"] = _matchup(
                resolved, versions[0], prompts, (model, baseline), students, answers, judge, stats, out
            )
    return {
        "held_out": {"n": len(prompts), "prompt_ids": [p["prompt_id"] for p in prompts], "differs": differs,
                     "datasets": [v.to_dict() for v in versions]},
        "judge": {"endpoint": settings.judge.endpoint, "model": getattr(judge, "model", ""),
                  "local": bool(settings.endpoints[settings.judge.endpoint].local)},
        "matchups": results,
        "lengths": {label: length_stats([x.text for x in a]) for label, a in answers.items()},
        "answer_chars": {label: [len(x.text) for x in a] for label, a in answers.items()},
        "eval_usage": stats.summary(), "eval_seconds": round(time.time() - started, 1),
    }  # fmt: skip


def _matchup(
    settings: Any, dataset: Any, prompts: list[dict[str, Any]], pair: tuple[str, str], students: dict[str, str],
    answers: dict[str, list[EvalAnswer]], judge: Any, stats: RunStats, out: Path,
) -> dict[str, Any]:  # fmt: skip
    """One pair judged in both orders, written as an eval folder; its results (without the per-prompt list)."""
    started = time.time()
    model, baseline = pair
    records = judged_records(settings, judge, prompts, answers[model], answers[baseline])
    results = build_results(settings, dataset, students[model], students[baseline], records, judge, stats,
                            time.time() - started)  # fmt: skip
    results |= {"model_label": model, "baseline_label": baseline}
    folder = out / f"eval-{model}-vs-{baseline}"
    folder.mkdir(parents=True, exist_ok=True)
    write_results(folder, results)
    parents = [dataset.to_dict(), {"kind": "model", "role": "model", "ref": students[model]},
               {"kind": "model", "role": "baseline", "ref": students[baseline]}]  # fmt: skip
    write_lineage(folder, "eval", parents, summary={k: results.get(k) for k in ("win", "tie", "loss", "win_rate")})
    keep = {k: v for k, v in results.items() if k not in ("per_prompt", "settings", "usage")}
    return keep | {"eval": str(folder.resolve()), "scores": [r["score"] for r in records]}


def _resolve(ref: str, settings: Any) -> str:
    from moaa.models.student import resolve_model

    return ref if ref in settings.endpoints else resolve_model(ref)
