"""`moaa compare CONFIG`: is the mixture worth its extra calls? Two generation methods make SFT data
on the same prompts, the same student is fine-tuned on each, and the judge compares the students.

Usage: moaa compare configs/local.yaml [--arm-b single] [--baseline-agent precise] [--arm-a moa]
       [--set prompts.limit=40] [--settings configs/train/compare.yaml] [--sft-set max_steps=40]

Arm A is the run config's own method (or `arm_a`); arm B a baseline, by default `single` with the
baseline agent: the proposer on the aggregator's endpoint (the model the config trusts to write the
final answer, answering alone; the aggregator itself when no proposer shares its endpoint), or the
one named by `baseline_agent`. Any method can be named for
either arm (e.g. moa vs self-moa). The two arms' run configs differ in `name` and `sft` only: same
prompts and prompt seed, same sampling seeds, same split (output.test_size / split_seed, decided
per prompt_id), same request cache (an arm that exists already costs no model call to re-run);
the preference stage is off (this compares SFT data).

Per arm: data set `<name>-A@vN` / `<name>-B@vN` -> SFT of the same student with the same settings
-> runs/sft/... Then moaa.train.matchups: students A, B and the base student answer the held-out
prompts both arms share, and the judge compares A vs B, A vs base and B vs base in both orders.
With `verified` (`--verified`), the students are also scored by what they get right: their answers to
the held-out prompts that carry a reference, checked (moaa.train.pass_rates), beside the judge.
The run folder runs/compare/<name>-<ts>/ holds results.json, report.md with plots, one eval folder
per matchup, and lineage.json (written last) listing every artifact with its parents.

Preference recipes (`preference_a` / `preference_b`, `--preference-a FILE` / `--preference-b FILE`): the
arms share the run config's SFT stage and differ only in `preference` (a block laid over the config's:
a pool, a pairing rule, a scorer). Both make SFT data and pairs; the student is fine-tuned once, on arm
A's SFT rows (the same prompts, seeds and request cache make B's the same), then DPO on each arm's
pairs from that one SFT model; students A and B are the two DPO runs and `base` is the SFT model
they both started from, so the matchups measure what each recipe's pairs add.
The orchestration (Prefect flow) lives in flows/compare_flow.py, which passes the steps in.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import Field, ValidationError, field_validator

from moaa.config import (
    AgentConfig,
    MoaaConfig,
    Strict,
    describe_validation_error,
    dump_config,
    load_config,
    parse_config,
)
from moaa.engine.methods import method_of
from moaa.errors import ConfigError, InputError
from moaa.train.recipes import describe_recipe, pairing_of, recipe_configs
from moaa.train.runs import DEFAULT_RUNS, new_run_dir, write_lineage

log = logging.getLogger(__name__)

DEFAULT_SETTINGS = "configs/train/compare.yaml"
MATCHUPS = (("A", "B"), ("A", "base"), ("B", "base"))  # (model, baseline): A vs B is the head to head
ONE_MODEL = ("single", "self-moa", "self-moa-seq")  # methods whose proposers are one agent


class CompareSettings(Strict):
    """configs/train/compare.yaml plus the command line: the two arms and the scale they run at."""

    data_config: str = Field("configs/local.yaml", description="the run config; arm A is its method")
    data_overrides: list[str] = Field(default_factory=list, description="--set overrides of the run config")
    name: str | None = Field(None, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", description="default: config name")
    arm_a: str | None = Field(None, description="arm A's method (default: the run config's sft.method)")
    arm_b: str = Field("single", description="arm B's method")
    baseline_agent: str | None = Field(
        None,
        description="the agent of a one-model arm: a proposer's name or index, or 'aggregator' (default: the "
        "proposer on the aggregator's endpoint, else the aggregator itself; the first proposer without one)",
    )
    prompts: int | None = Field(None, ge=1, description="prompts.limit of both arms (None: the run config's)")
    test_size: float | None = Field(None, gt=0, lt=1, description="output.test_size of both arms")
    student: str | None = Field(None, description="the student both arms fine-tune (None: the local student)")
    runs_root: str = str(DEFAULT_RUNS)
    sft_config: str = "configs/train/sft.yaml"
    sft_overrides: list[str] = Field(default_factory=list)
    eval_config: str = "configs/train/eval.yaml"
    eval_overrides: list[str] = Field(default_factory=list)
    verified: bool = Field(
        False,
        description="also score the students by held-out pass rate: their answers to the test-split prompts "
        "that carry a reference, checked (moaa.verify), beside the judge's matchups",
    )

    preference_a: dict[str, Any] | None = Field(
        None,
        description="compare preference recipes: a `preference` block laid over the run config's for arm A "
        "(mappings merged key by key, lists replaced; `enabled` is implied). Either set: both arms use the run "
        "config's SFT stage and differ only here; arm_a / arm_b / baseline_agent are not used",
    )
    preference_b: dict[str, Any] | None = Field(None, description="arm B's preference block (see preference_a)")
    dpo_config: str = "configs/train/dpo.yaml"
    dpo_overrides: list[str] = Field(default_factory=list)

    @property
    def recipes(self) -> bool:
        """True: the arms compare preference recipes (SFT once, DPO per arm), not generation methods."""
        return self.preference_a is not None or self.preference_b is not None

    @field_validator("arm_a", "arm_b")
    @classmethod
    def _registered(cls, name: str | None) -> str | None:
        if name is not None:
            method_of(name)  # the names sft.method takes: the engine's registry, not a copy of it
        return name


def load_compare_settings(path: str | Path | None = DEFAULT_SETTINGS, **flags: Any) -> CompareSettings:
    """The settings file with the command line's values laid over it (a flag left None keeps the file's)."""
    raw: dict[str, Any] = {}
    if path is not None:
        if not Path(path).is_file():
            raise ConfigError(f"{path}: compare settings file not found; pass e.g. --settings {DEFAULT_SETTINGS}")
        raw = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
        if not isinstance(raw, dict):
            raise ConfigError(f"{path}: the top level must be a mapping of keys, not {type(raw).__name__}")
    for key, value in flags.items():
        if key.endswith("_overrides"):
            raw[key] = [*(raw.get(key) or []), *(value or [])]  # the file's, then the command line's
        elif value is not None:
            raw[key] = value
    try:
        return CompareSettings.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(f"{path or 'compare settings'}: {describe_validation_error(exc, CompareSettings)}") from None


# ---------------------------------------------------------------- the two arms


@dataclass
class Arm:
    label: str  # "A" or "B"
    config: MoaaConfig

    recipe: bool = False  # the arms differ in `preference` (a preference-recipe compare)

    @property
    def method(self) -> str:
        if self.recipe:
            return f"pairs: {pairing_of(self.config)}"
        return self.config.sft.method

    def describe(self) -> str:
        """e.g. 'moa (precise, teacher, creative -> aggregator)' or 'single (precise)'; for a preference
        recipe its pool, pairing rule and scorer, e.g. 'pool policy x3 + mixture, best_worst, verifier+pointwise'."""
        if self.recipe:
            return describe_recipe(self.config)
        gen = self.config.sft
        names = [p.name or p.endpoint for p in gen.proposers]
        agg = f" -> {gen.aggregator.name or gen.aggregator.endpoint}" if gen.aggregator else ""
        return f"{gen.method} ({', '.join(names)}{agg})"


def pick_agent(base: MoaaConfig, choice: str | None) -> AgentConfig:
    """The agent a one-model arm uses (see CompareSettings.baseline_agent)."""
    gen = base.sft
    if choice is None:  # the model the config trusts to write final answers, answering alone
        agg = gen.aggregator
        if agg is None:
            return gen.proposers[0]
        return next((p for p in gen.proposers if p.endpoint == agg.endpoint), agg)
    if choice == "aggregator":
        if gen.aggregator is None:
            raise InputError(f"baseline agent 'aggregator': the run config's method {gen.method} has no aggregator")
        return gen.aggregator
    if choice.isdigit() and int(choice) < len(gen.proposers):
        return gen.proposers[int(choice)]
    found = [p for p in gen.proposers if p.name == choice]
    if not found:
        known = ", ".join(p.name or str(i) for i, p in enumerate(gen.proposers))
        raise InputError(f"baseline agent {choice!r} is not a proposer of the run config ({known}, or aggregator)")
    return found[0]


def arm_config(base: MoaaConfig, label: str, method: str, agent: AgentConfig, name: str) -> MoaaConfig:
    """The run config of one arm: `base` with its own name and generation method, SFT data only."""
    raw = dump_config(base)
    raw["name"] = f"{name}-{label}"
    raw["preference"]["enabled"] = False
    gen = raw["sft"]
    if method != base.sft.method:
        gen["method"], gen["layers"] = method, None  # the method's own default layers
    if method in ONE_MODEL and (method != base.sft.method or label == "B"):
        gen["proposers"] = [agent.model_dump(mode="json")]
        if method == "single":
            gen["aggregator"] = None
        elif gen.get("aggregator") is None:  # Self-MoA: the same model aggregates its samples
            gen["aggregator"] = agent.model_dump(mode="json") | {"role": None}
    if method != "single" and gen.get("aggregator") is None:
        raise InputError(
            f"arm {label} ({method}) needs an aggregator and the run config ({base.sft.method}) has none; "
            "make arm A the config with the mixture"
        )
    return parse_config(raw, source=f"arm {label} ({method}) of {base.name}")


def build_arms(base: MoaaConfig, s: CompareSettings) -> list[Arm]:
    """Arms A and B: identical run configs apart from `name` and `sft`."""
    if s.prompts:
        base = base.model_copy(update={"prompts": base.prompts.model_copy(update={"limit": s.prompts})})
    if s.test_size:
        base = base.model_copy(update={"output": base.output.model_copy(update={"test_size": s.test_size})})
    name = s.name or base.name
    if s.recipes:
        configs = recipe_configs(base, (s.preference_a, s.preference_b), name)
        return [Arm(label, config, recipe=True) for label, config in zip("AB", configs, strict=True)]
    agent = pick_agent(base, s.baseline_agent)
    arm_a = Arm("A", arm_config(base, "A", s.arm_a or base.sft.method, agent, name))
    arm_b = Arm("B", arm_config(base, "B", s.arm_b, agent, name))
    if arm_a.config.sft == arm_b.config.sft:
        raise InputError(
            f"arms A and B would make the same data ({arm_a.describe()}); name another method with --arm-b "
            "or another agent with --baseline-agent"
        )
    return [arm_a, arm_b]


# ---------------------------------------------------------------- the run


@dataclass
class CompareSteps:
    """What run_compare calls; flows/compare_flow.py wraps each in a Prefect flow or task."""

    make_data: Callable[[MoaaConfig], dict[str, Any]]  # a run config -> the pipeline summary (version_path)
    sft: Callable[..., Any]  # moaa.train.sft.run_sft
    evaluate: Callable[..., dict[str, Any]]  # moaa.train.matchups.evaluate_students
    pass_rates: Callable[..., dict[str, Any]] | None = None  # moaa.train.pass_rates.score_students (--verified)
    dpo: Callable[..., Any] | None = None  # moaa.train.dpo.run_dpo (preference recipes)


def arm_cost(summary: dict[str, Any]) -> dict[str, Any]:
    """Calls, tokens and cost per prompt of an arm's data, from its pipeline summary (cached calls count
    at what they cost when first made: the price of making the data, not of this re-run)."""
    sft = summary["stages"].get("sft", {})
    answered = max(sft.get("rows", 0) + sft.get("failed", 0), 1)
    per = summary["per_prompt"]
    return {
        "prompts": answered, "rows": sft.get("rows", 0), "failed": sft.get("failed", 0),
        "calls_per_prompt": per["calls"], "tokens_per_prompt": per["tokens"],
        "cost_per_prompt": round(summary.get("cost_to_make", summary["cost"]) / answered, 6),
        "calls": summary["calls"], "new_calls": summary["this_run"]["calls"], "seconds": summary["seconds"],
    } | (_pairs(summary["stages"]["preference"]) if "preference" in summary["stages"] else {})  # fmt: skip


def _pairs(stage: dict[str, Any]) -> dict[str, Any]:
    """An arm's pairs: how many were made, of how many prompts, and why the others were dropped."""
    return {"pairs": stage.get("rows", 0), "pair_prompts": stage.get("prompts", 0),
            "pairs_dropped": dict(stage.get("dropped") or {})}  # fmt: skip


def arm_data(arm: Arm, steps: CompareSteps) -> dict[str, Any]:
    """One arm's data set version; returns the arm's record (without its training)."""
    log.info("compare: arm %s = %s", arm.label, arm.describe())
    summary = steps.make_data(arm.config)
    path = Path(summary["version_path"])
    return {
        "label": arm.label, "method": arm.method, "describe": arm.describe(), "config_name": arm.config.name,
        "dataset": f"{path.parent.name}@{path.name}", "dataset_path": str(path.resolve()), "cost": arm_cost(summary),
    }  # fmt: skip


def run_arm(arm: Arm, s: CompareSettings, steps: CompareSteps, student: str) -> dict[str, Any]:
    """One arm: its data set version, then the student's SFT on it; returns the arm's record."""
    record = arm_data(arm, steps)
    sft = steps.sft(data=record["dataset"], model=student, config=s.sft_config, overrides=s.sft_overrides,
                    data_root=arm.config.output.root, runs_root=s.runs_root)  # fmt: skip
    return record | {"sft": str(Path(sft.output).resolve())}


def run_recipes(arms: list[Arm], s: CompareSettings, steps: CompareSteps, student: str) -> dict[str, dict[str, Any]]:
    """Both arms' data (SFT rows and pairs), one SFT of the student on arm A's rows, then DPO on each arm's
    pairs from that SFT model; each record's `sft` is the DPO run (the student the matchups judge) and
    `sft_start` the shared SFT model."""
    if steps.dpo is None:
        raise ConfigError("compare: preference recipes need a DPO step (CompareSteps.dpo)")
    records = {arm.label: arm_data(arm, steps) for arm in arms}
    root = arms[0].config.output.root
    sft = steps.sft(data=records["A"]["dataset"], model=student, config=s.sft_config, overrides=s.sft_overrides,
                    data_root=root, runs_root=s.runs_root)  # fmt: skip
    start = str(Path(sft.output).resolve())
    for arm in arms:
        record = records[arm.label]
        try:
            dpo = steps.dpo(data=record["dataset"], model=start, config=s.dpo_config, overrides=s.dpo_overrides,
                            data_root=root, runs_root=s.runs_root)  # fmt: skip
        except InputError as exc:  # e.g. a recipe that made no training pair
            raise InputError(f"compare: arm {arm.label} ({arm.describe()}): {exc}") from None
        record |= {"sft_start": start, "sft": str(Path(dpo.output).resolve())}
    return records


def run_compare(s: CompareSettings, steps: CompareSteps) -> dict[str, Any]:
    """Both arms, then the matchups; writes runs/compare/<name>-<ts>/ and returns its results."""
    from moaa.models.student import resolve_model
    from moaa.train.comparison_report import write_report
    from moaa.train.evaluate import load_eval_settings
    from moaa.train.settings import load_settings

    started = time.time()
    base = load_config(s.data_config, s.data_overrides)
    arms = build_arms(base, s)  # fail on a bad arm, or a bad SFT or eval setting, before anything runs
    load_settings("sft", s.sft_config, s.sft_overrides)
    if s.recipes:
        load_settings("dpo", s.dpo_config, s.dpo_overrides)
    load_eval_settings(s.eval_config, s.eval_overrides)
    if s.verified:
        from moaa.train.pass_rates import score_students, verifiable_held_out

        verifiable_held_out(arms[0].config)  # no checkable held-out prompt: fail now, not after the training
    student = resolve_model(s.student)
    name = s.name or base.name
    folder = new_run_dir("compare", name, s.runs_root)
    if s.recipes:
        records = run_recipes(arms, s, steps, student)
        base_student = records["A"]["sft_start"]  # both DPO runs started from it
    else:
        records = {arm.label: run_arm(arm, s, steps, student) for arm in arms}
        base_student = student
    students = {"A": records["A"]["sft"], "B": records["B"]["sft"], "base": base_student}
    evals = steps.evaluate(students=students, datasets=[records["A"]["dataset_path"], records["B"]["dataset_path"]],
                           matchups=list(MATCHUPS), config=s.eval_config, overrides=s.eval_overrides,
                           out=folder)  # fmt: skip
    if s.verified:
        evals["verified"] = (steps.pass_rates or score_students)(
            students=students, config=dump_config(arms[0].config), pairs=list(MATCHUPS), out=folder,
            eval_config=s.eval_config, eval_overrides=s.eval_overrides,
        )  # fmt: skip
    results = {
        "name": name, "folder": str(folder.resolve()), "run_config": s.data_config, "student": base_student,
        "kind": "preference" if s.recipes else "sft",
        "arms": records, **evals, "settings": s.model_dump(), "seconds": round(time.time() - started, 1),
    }  # fmt: skip
    (folder / "results.json").write_text(json.dumps(results, indent=2, ensure_ascii=False, default=list) + "\n")
    results["report"] = str(write_report(folder, results))
    write_lineage(folder, "compare", artifacts(records, evals, student), settings=s.model_dump(),
                  summary=headline(results))  # fmt: skip
    return results


def artifacts(records: dict[str, dict[str, Any]], evals: dict[str, Any], student: str) -> list[dict[str, Any]]:
    """Every artifact of the comparison with its parents (the compare folder's lineage)."""
    out: list[dict[str, Any]] = []
    for r in records.values():
        dataset = {"kind": "dataset", "ref": r["dataset"]}
        out.append(dataset | {"path": r["dataset_path"], "arm": r["label"], "method": r["method"], "parents": []})
        if "sft_start" in r:  # a preference recipe: the shared SFT model (on arm A's rows), then this arm's DPO
            if r["label"] == "A":
                out.append({"kind": "sft", "path": r["sft_start"], "arm": "A+B",
                            "parents": [dataset, {"kind": "model", "ref": student}]})  # fmt: skip
            out.append({"kind": "dpo", "path": r["sft"], "arm": r["label"],
                        "parents": [dataset, {"kind": "model", "ref": r["sft_start"]}]})  # fmt: skip
            continue
        out.append({"kind": "sft", "path": r["sft"], "arm": r["label"],
                    "parents": [dataset, {"kind": "model", "ref": student}]})  # fmt: skip
    for key, m in evals["matchups"].items():
        out.append({"kind": "eval", "path": m["eval"], "matchup": key, "parents": [
            {"kind": "model", "ref": m["model"], "role": "model"},
            {"kind": "model", "ref": m["baseline"], "role": "baseline"}]})  # fmt: skip
    return out


def headline(results: dict[str, Any]) -> dict[str, Any]:
    """The numbers a person asks for first: each matchup's win rate and interval, each arm's cost per prompt."""
    keys = ("win", "tie", "loss", "win_rate", "ci", "lc_win_rate")
    verified = results.get("verified")
    return {
        "matchups": {k: {x: m.get(x) for x in keys} for k, m in results["matchups"].items()},
        "cost_per_prompt": {label: r["cost"]["cost_per_prompt"] for label, r in results["arms"].items()},
        "calls_per_prompt": {label: r["cost"]["calls_per_prompt"] for label, r in results["arms"].items()},
    } | ({"pass_rates": {k: (v["pass_rate"], v["ci"]) for k, v in verified["students"].items()}} if verified else {})
