"""`moaa train eval`: a model against a baseline on held-out prompts, judged pairwise in both orders.

Usage: moaa train eval [--model RUN_DIR|HUB_ID|ENDPOINT] [--baseline ...] [--data NAME[@vN]]
       [--config configs/train/eval.yaml] [--set limit=8 ...] [--output DIR]

Prompts are the `test` split of a data set version (decided per prompt_id, never trained on): by
default the version the model was trained on. Model and baseline answer every prompt with the
same sampling; the judge compares the two answers in both orders (moaa.preference.pairwise_judge.
PairwiseJudge, MT-Bench style: a disagreement between the orders is a tie). Reported: win / tie /
loss, the win rate with a Wilson (or bootstrap) interval, and the length-controlled win rate
(moaa.train.winrate). Results go to `results.json` and `results.md` in `<model>/eval/<run>/`
(or `runs/eval/<run>/` for a model that is not a folder), with a lineage.json.

Defaults: the model is the latest DPO run (else the latest SFT run), of those trained on `--data`
when it is given; the baseline is the model it descends from first (walking the runs' lineage back
to the original student).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, ValidationError

from moaa.config import (
    AgentConfig,
    AnswersConfig,
    CacheConfig,
    EndpointConfig,
    Sampling,
    Strict,
    apply_override,
    describe_validation_error,
)
from moaa.errors import ConfigError, InputError
from moaa.models.stats import RunStats
from moaa.train.data import DEFAULT_ROOT, DatasetVersion, find_dataset, held_out_prompts
from moaa.train.runs import DEFAULT_RUNS, latest_run, new_run_dir, read_lineage, write_lineage
from moaa.train.tables import format_results_table

log = logging.getLogger(__name__)

DEFAULT_CONFIG = "configs/train/eval.yaml"


class EvalSettings(Strict):
    """configs/train/eval.yaml: the judge, how many held-out prompts, how answers are sampled."""

    endpoints: dict[str, EndpointConfig]
    judge: AgentConfig
    criteria: list[str] = Field(default_factory=lambda: ["helpfulness", "truthfulness", "instruction following"])
    limit: int | None = Field(4, ge=1)  # held-out prompts to use (None: all)
    generation: Sampling = Sampling(temperature=0.0, max_tokens=256, seed=0)
    max_attempts: int = Field(3, ge=1)
    weighted: bool = Field(
        False,
        description="read each order's verdict from the judge's log-probabilities (the probability mass on A vs B; "
        "AlpacaEval 2's weighted win rate) instead of the letter it wrote: the win rate is the mean preference, a "
        "prompt within tie_threshold of 0.5 is a tie, and the letters' counts are kept beside it (`letters`). "
        "Needs an endpoint that returns top_logprobs (llama.cpp, vLLM, OpenAI); without them the letters decide",
    )
    tie_threshold: float = Field(0.05, ge=0, lt=0.5, description="weighted: a preference this close to 0.5 is a tie")
    ci: Literal["wilson", "bootstrap"] = "wilson"
    confidence: float = Field(0.95, gt=0, lt=1)
    bootstrap_samples: int = Field(1000, ge=100)
    seed: int = 0
    answers: AnswersConfig = Field(
        default_factory=lambda: AnswersConfig(truncated="reask", reask_max_tokens=1024),
        description="what becomes of an answer cut at generation.max_tokens (finish_reason length): reask asks "
        "again with twice the budget, up to reask_max_tokens; a prompt whose answer (model's or baseline's) is "
        "still cut is excluded from judging (drop: at once), so neither the verdict nor the length control reads "
        "a cut answer; keep judges it as it is. Cut answers are counted in the results either way",
    )
    cache: CacheConfig = Field(
        default_factory=lambda: CacheConfig(enabled=False),
        description="the request cache (moaa.models.cache); off by default, so an eval asks its models afresh. "
        "enabled: true answers a repeated eval (same prompts, models, sampling) from the cache",
    )


def load_eval_settings(path: str | Path | None = DEFAULT_CONFIG, overrides: list[str] | None = None) -> EvalSettings:
    raw: dict[str, Any] = {}
    if path is not None:
        if not Path(path).is_file():
            raise ConfigError(f"{path}: eval settings file not found; pass e.g. --config {DEFAULT_CONFIG}")
        raw = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    for item in overrides or []:
        apply_override(raw, item)
    try:
        settings = EvalSettings.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(f"{path}: {describe_validation_error(exc, EvalSettings)}") from None
    if settings.judge.endpoint not in settings.endpoints:
        known = ", ".join(sorted(settings.endpoints))
        raise ConfigError(f"{path}: judge.endpoint '{settings.judge.endpoint}' is not under endpoints ({known})")
    return settings


@dataclass
class EvalResult:
    output: Path
    results: dict[str, Any]

    def summary(self) -> str:
        return format_results_table(self.results)


# ---------------------------------------------------------------- which models


def default_model(runs_root: str | Path = DEFAULT_RUNS, dataset: str | None = None) -> str:
    """The latest DPO run, else the latest SFT run (with `dataset`: of those trained on that data set)."""
    try:
        return str(latest_run("dpo", runs_root, dataset=dataset))
    except InputError:
        try:
            return str(latest_run("sft", runs_root, dataset=dataset))
        except InputError:
            on = f" trained on data set {dataset!r}" if dataset else ""
            raise InputError(f"no finished dpo or sft run{on} under {runs_root}/; train one or pass --model") from None


def origin_model(ref: str) -> str:
    """The first model of `ref`'s lineage (the student before any moaa training)."""
    seen = set()
    while Path(ref).is_dir() and (record := read_lineage(ref)) and ref not in seen:
        seen.add(ref)
        base = record.get("base_model") or {}
        if not base.get("ref"):
            break
        ref = base["ref"]
    return ref


def trained_on(ref: str) -> str | None:
    """The data set version (folder) a moaa run was trained on, if `ref` is one."""
    record = read_lineage(ref) if Path(ref).is_dir() else None
    for parent in (record or {}).get("parents", []):
        if parent.get("kind") == "dataset":
            return parent.get("path")
    return None


def client_for(ref: str, settings: EvalSettings, stats: RunStats, name: str) -> Any:
    """A chat client for `ref`: an endpoint of the eval settings by name, else the transformers backend;
    built like a run's (moaa.models.session), behind the request cache when `cache.enabled`."""
    from moaa.models.session import build_client, open_cache

    endpoint = settings.endpoints.get(ref)
    if endpoint is None:
        endpoint, ref = EndpointConfig(model=ref, backend="transformers"), name
    return build_client(ref, endpoint, stats, open_cache(settings.cache))


@contextlib.contextmanager
def running_endpoints(settings: EvalSettings, log_dir: Path, refs: Iterable[str] = ()) -> Iterator[EvalSettings]:
    """`settings` with the judge's endpoint, and those of `refs` that name one, pointing at a running server
    where they are local: the embedded server is started as for a run (moaa.models.session.serve_local)."""
    from moaa.models.session import serve_local

    names = [settings.judge.endpoint, *(r for r in refs if r in settings.endpoints)]
    with serve_local(settings.endpoints, names, log_dir) as endpoints:
        yield settings.model_copy(update={"endpoints": endpoints})


# ---------------------------------------------------------------- the comparison


@dataclass(frozen=True)
class EvalAnswer:
    """One model's answer to a held-out prompt: its text, whether it is still cut at max_tokens, re-asks made."""

    text: str
    cut: bool = False
    reasked: int = 0


async def answer_all(
    client: Any, prompts: list[dict[str, Any]], sampling: Sampling, tag: str, answers: AnswersConfig | None = None
) -> list[EvalAnswer]:
    """One answer per prompt (an answer whose call failed is empty, and loses). A cut answer (finish_reason
    length) is asked again with twice the budget while `answers.truncated` is reask, up to reask_max_tokens."""
    from moaa.models.agent_calls import larger_budget
    from moaa.models.client import CallError

    answers = answers or AnswersConfig()

    async def one(prompt: dict[str, Any]) -> EvalAnswer:
        asked, reasked = sampling, 0
        while True:
            try:
                done = await client.chat(prompt["messages"], asked, tag=tag)
            except CallError as exc:
                log.warning("%s: no answer for %s (%s)", client.name, prompt["prompt_id"], exc)
                return EvalAnswer("", reasked=reasked)
            cut = done.finish_reasons[0] == "length"
            bigger = larger_budget(client, asked, len(done.text) // 4, answers.reask_max_tokens) if cut else None
            if answers.truncated != "reask" or bigger is None:
                return EvalAnswer(done.text, cut, reasked)
            reasked += 1
            asked = asked.model_copy(update={"max_tokens": bigger})

    return list(await asyncio.gather(*(one(p) for p in prompts)))


def judged_records(
    settings: EvalSettings,
    judge_client: Any,
    prompts: list[dict[str, Any]],
    ours: list[EvalAnswer],
    theirs: list[EvalAnswer],
) -> list[dict[str, Any]]:
    """One record per prompt: the judge's verdicts on both answers, or `excluded: "cut"` (not judged)
    where either answer is still cut and `answers.truncated` is not keep; answers, lengths, cut flags."""
    keep_cut = settings.answers.truncated == "keep"
    judged = [i for i, (a, b) in enumerate(zip(ours, theirs, strict=True)) if keep_cut or not (a.cut or b.cut)]
    verdicts = asyncio.run(judge_all(settings, judge_client, [prompts[i] for i in judged],
                                     [ours[i].text for i in judged], [theirs[i].text for i in judged]))  # fmt: skip
    by_index = dict(zip(judged, verdicts, strict=True))
    records = []
    for i, (prompt, a, b) in enumerate(zip(prompts, ours, theirs, strict=True)):
        excluded = {"prompt_id": prompt["prompt_id"], "score": None, "model_first": None, "baseline_first": None,
                    "agree": None, "error": None, "excluded": "cut"}  # fmt: skip
        records.append(by_index.get(i, excluded) | {
            "model_answer": a.text, "baseline_answer": b.text, "model_chars": len(a.text),
            "baseline_chars": len(b.text), "model_cut": a.cut, "baseline_cut": b.cut,
            "reasked": {"model": a.reasked, "baseline": b.reasked},
        })  # fmt: skip
    return records


async def judge_all(
    settings: EvalSettings, judge_client: Any, prompts: list[dict[str, Any]], ours: list[str], theirs: list[str]
) -> list[dict[str, Any]]:
    """Per prompt: the model's score (1 win, 0.5 tie, 0 loss, None unjudged) and both orders' verdicts."""
    from moaa.preference.candidates import Candidate
    from moaa.preference.pairwise_judge import PairwiseJudge
    from moaa.prompts.criteria import criterion_of
    from moaa.rows import Prompt

    judge = PairwiseJudge([(settings.judge, judge_client)], [criterion_of(c) for c in settings.criteria],
                          settings.max_attempts, settings.weighted, tie_threshold=settings.tie_threshold)  # fmt: skip

    async def one(prompt: dict[str, Any], a: str, b: str) -> dict[str, Any]:
        candidates = [Candidate(0, a, "model"), Candidate(1, b, "baseline")]
        score = (await judge.score(Prompt(prompt["prompt_id"], prompt["messages"]), candidates))[0]
        pair = (score.details.pairs or [])[0]
        hard = score.details.hard_score
        letters = hard if hard is not None else score.score  # weighted: what the letters alone gave
        return {"prompt_id": prompt["prompt_id"], "score": score.score, "letters": letters, "model_first": pair.ab,
                "baseline_first": pair.ba, "agree": pair.agree, "error": pair.error,
                **({"orders": pair.orders} if pair.orders is not None else {})}  # fmt: skip

    return list(await asyncio.gather(*(one(p, a, b) for p, a, b in zip(prompts, ours, theirs, strict=True))))


def compare(
    settings: EvalSettings, prompts: list[dict[str, Any]], model_client: Any, baseline_client: Any, judge_client: Any
) -> list[dict[str, Any]]:
    """Answers of both models and the judge's verdicts, one record per prompt."""
    from moaa.models.transformers_backend import unload

    ours = asyncio.run(answer_all(model_client, prompts, settings.generation, "eval.model", settings.answers))
    unload(model_client.model)  # one student in memory at a time
    theirs = asyncio.run(answer_all(baseline_client, prompts, settings.generation, "eval.baseline", settings.answers))
    unload(baseline_client.model)
    return judged_records(settings, judge_client, prompts, ours, theirs)


def run_eval(
    *,
    model: str | None = None,
    baseline: str | None = None,
    data: str | None = None,
    config: str | Path | None = DEFAULT_CONFIG,
    overrides: list[str] | None = None,
    output: str | Path | None = None,
    data_root: str | Path = DEFAULT_ROOT,
    runs_root: str | Path = DEFAULT_RUNS,
    judge_client: Any = None,
) -> EvalResult:
    """Compare `model` with `baseline` on held-out prompts; write results.json / results.md."""
    from moaa.models.student import resolve_model

    started = time.time()
    settings = load_eval_settings(config, overrides)
    named = find_dataset(data, data_root) if data else None
    model_ref = model or default_model(runs_root, named.name if named else None)
    model_ref = model_ref if model_ref in settings.endpoints else resolve_model(model_ref)
    baseline_ref = baseline or origin_model(model_ref)
    baseline_ref = baseline_ref if baseline_ref in settings.endpoints else resolve_model(baseline_ref)
    if baseline_ref == model_ref:
        raise InputError(f"model and baseline are the same ({model_ref}); pass --baseline")
    dataset = named or find_dataset(trained_on(model_ref), data_root)
    prompts = held_out_prompts(dataset, settings.limit)
    out = _output_dir(output, model_ref, runs_root)
    stats = RunStats()
    log.info(
        "eval: %s vs %s on %d held-out prompts of %s -> %s", model_ref, baseline_ref, len(prompts), dataset.ref, out
    )
    with running_endpoints(settings, out, [model_ref, baseline_ref]) as resolved:
        judge = judge_client or client_for(resolved.judge.endpoint, resolved, stats, "judge")
        records = compare(resolved, prompts, client_for(model_ref, resolved, stats, "model"),
                          client_for(baseline_ref, resolved, stats, "baseline"), judge)  # fmt: skip
    results = build_results(settings, dataset, model_ref, baseline_ref, records, judge, stats, time.time() - started)
    write_results(out, results)
    write_lineage(out, "eval", [dataset.to_dict(), _model_parent(model_ref, "model"),
                                _model_parent(baseline_ref, "baseline")], summary=_headline(results))  # fmt: skip
    return EvalResult(out, results)


def build_results(
    settings: EvalSettings, dataset: DatasetVersion, model_ref: str, baseline_ref: str,
    records: list[dict[str, Any]], judge: Any, stats: RunStats, seconds: float,
) -> dict[str, Any]:  # fmt: skip
    from moaa.train.winrate import summarize

    judged = [r for r in records if r["score"] is not None]
    excluded = sum(1 for r in records if r.get("excluded") == "cut")
    numbers = summarize(
        [r["score"] for r in judged], [r["model_chars"] for r in judged], [r["baseline_chars"] for r in judged],
        confidence=settings.confidence, method=settings.ci, samples=settings.bootstrap_samples, seed=settings.seed,
    )  # fmt: skip
    return {
        "model": model_ref, "baseline": baseline_ref, "dataset": dataset.to_dict(), "split": "test",
        "judge": {"endpoint": settings.judge.endpoint, "model": getattr(judge, "model", "")},
        "prompts": len(records), "unjudged": len(records) - len(judged) - excluded, **numbers,
        "cut": {"model": sum(1 for r in records if r.get("model_cut")),
                "baseline": sum(1 for r in records if r.get("baseline_cut")),
                "reasked": sum(r.get("reasked", {}).get("model", 0) + r.get("reasked", {}).get("baseline", 0)
                               for r in records),
                "excluded": excluded, "policy": settings.answers.truncated,
                "max_tokens": settings.generation.max_tokens, "reask_max_tokens": settings.answers.reask_max_tokens},
        "order_agreement": sum(1 for r in judged if r["agree"]) / len(judged) if judged else None,
        **(weighted_numbers(judged, settings.tie_threshold) if settings.weighted else {}),
        "mean_chars": {"model": _mean([r["model_chars"] for r in records]),
                       "baseline": _mean([r["baseline_chars"] for r in records])},
        "settings": settings.model_dump(mode="json"), "seconds": round(seconds, 1), "usage": stats.summary(),
        "per_prompt": records,
    }  # fmt: skip


def weighted_numbers(judged: list[dict[str, Any]], threshold: float) -> dict[str, Any]:
    """A weighted eval's counts (a preference within `threshold` of 0.5 is a tie) and, beside them, what the
    letters alone gave (`letters`: win / tie / loss and win rate over the same prompts)."""
    from moaa.preference.pairwise_judge import outcome_of

    outcomes = [outcome_of(r["score"], threshold) for r in judged]
    letters = [r["letters"] for r in judged if r.get("letters") is not None]
    return {
        "weighted": True, "tie_threshold": threshold,
        "win": outcomes.count("first"), "tie": outcomes.count("tie"), "loss": outcomes.count("second"),
        "letters": {"win": letters.count(1.0), "tie": letters.count(0.5), "loss": letters.count(0.0),
                    "win_rate": sum(letters) / len(letters) if letters else None},
    }  # fmt: skip


def _mean(values: list[int]) -> float:
    return sum(values) / len(values) if values else 0.0


def _headline(results: dict[str, Any]) -> dict[str, Any]:
    keys = ("n", "win", "tie", "loss", "win_rate", "ci", "lc_win_rate", "unjudged")
    return {k: results.get(k) for k in keys}


def _model_parent(ref: str, role: str) -> dict[str, Any]:
    record = read_lineage(ref) if Path(ref).is_dir() else None
    return {"kind": "model", "role": role, "ref": (record or {}).get("id", ref), "path": ref}


def _output_dir(output: str | Path | None, model_ref: str, runs_root: str | Path) -> Path:
    if output is not None:
        out = Path(output)
        if out.exists() and any(out.iterdir()):
            raise InputError(f"{out} already exists and is not empty; pass a new --output folder")
        out.mkdir(parents=True, exist_ok=True)
        return out
    if Path(model_ref).is_dir():  # next to the model: <model>/eval/<timestamp>/
        return new_run_dir("eval", "vs", Path(model_ref))
    return new_run_dir("eval", Path(model_ref).name, runs_root)


def write_results(out: Path, results: dict[str, Any]) -> None:
    (out / "results.json").write_text(json.dumps(results, indent=2, ensure_ascii=False, default=list) + "\n")
    (out / "results.md").write_text(format_results_table(results) + "\n")
