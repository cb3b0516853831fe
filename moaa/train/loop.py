"""The self-improvement loop: each round makes MoA data, fine-tunes the student on it, lets the student
sample answers that a judge turns into preference pairs, runs DPO, and evaluates the result against
the previous round's model. It stops after `rounds` rounds, or as soon as a round's win rate
against the previous one is below 0.5 + `min_gain`.

One round, with the data set names `<name>-moa` and `<name>-pairs` (a new version each round):
1. MoA data: the run config (e.g. configs/local.yaml) with its preference stage off, a different
   seeded sample of prompts per round (prompts.seed + round), optionally the current student as one
   more proposer (`endpoints.student`, backend transformers) -> `<name>-moa@vR`.
2. SFT of the current student on it -> runs/sft/...
3. Student samples -> judged pairs: the same run config with the preference stage on and the SFT
   student as its policy (or, where the config lists `preference.candidates`, as its agent named
   `student`, added when none is: `pairing: {one_side_from: student}` makes Tulu 3's on-policy pairs)
   -> `<name>-pairs@vR` (the SFT stage's calls are answered by the request cache: same prompts, same
   requests).
4. DPO of the SFT model on those pairs -> runs/dpo/... (skipped, keeping the SFT model, when the
   judge separated no pair).
5. Eval of the round's model against the previous round's on the held-out prompts of `<name>-pairs@vR`.

The orchestration (Prefect flow, tasks) lives in flows/loop_flow.py, which passes the steps in; every run
folder has its own lineage.json, and the loop's folder runs/loop/<name>-<ts>/ has a lineage.json
listing every artifact with its parents, and a README.md with the rounds table.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import Field

from moaa.config import AgentConfig, CandidateConfig, EndpointConfig, MoaaConfig, Strict, load_config
from moaa.errors import InputError
from moaa.train.runs import DEFAULT_RUNS, new_run_dir, run_parent, write_lineage
from moaa.train.tables import format_rounds_table

log = logging.getLogger(__name__)

STUDENT = "student"  # the endpoint name the loop gives the current student


class LoopSettings(Strict):
    name: str = Field("loop", pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    data_config: str = "configs/local.yaml"
    data_overrides: list[str] = Field(default_factory=list)
    rounds: int = Field(2, ge=1)
    min_gain: float = 0.05
    student: str | None = None  # the starting model (None: the local student)
    student_proposer: bool = False
    prompts_per_round: int | None = Field(None, ge=1)
    samples: int | None = Field(None, ge=2)
    runs_root: str = str(DEFAULT_RUNS)
    sft_config: str = "configs/train/sft.yaml"
    sft_overrides: list[str] = Field(default_factory=list)
    dpo_config: str = "configs/train/dpo.yaml"
    dpo_overrides: list[str] = Field(default_factory=list)
    eval_config: str = "configs/train/eval.yaml"
    eval_overrides: list[str] = Field(default_factory=list)


@dataclass
class LoopSteps:
    """What a round calls; flows/loop_flow.py wraps each in a Prefect flow or task."""

    make_data: Callable[[MoaaConfig], dict[str, Any]]  # a run config -> the pipeline summary (version_path)
    sft: Callable[..., Any]  # moaa.train.sft.run_sft
    dpo: Callable[..., Any]  # moaa.train.dpo.run_dpo
    evaluate: Callable[..., Any]  # moaa.train.evaluate.run_eval


def student_endpoint(ref: str, base: MoaaConfig) -> EndpointConfig:
    """The current student as an in-process endpoint, with the run config's default max_tokens."""
    tokens = next((e.sampling.max_tokens for e in base.endpoints.values() if e.sampling.max_tokens), None)
    return EndpointConfig(model=ref, backend="transformers", sampling={"max_tokens": tokens})


def moa_config(base: MoaaConfig, s: LoopSettings, round_: int, student: str) -> MoaaConfig:
    """Step 1's run config: MoA data only, a new prompt sample, optionally the student proposing."""
    config = base.model_copy(deep=True)
    config.name = f"{s.name}-moa"
    config.prompts.seed = base.prompts.seed + round_ - 1
    if s.prompts_per_round:
        config.prompts.limit = s.prompts_per_round
    config.preference.enabled = False
    if s.student_proposer:
        config.endpoints[STUDENT] = student_endpoint(student, base)
        config.sft.proposers.append(AgentConfig(endpoint=STUDENT, name=STUDENT, temperature=0.7))
    return config


def pairs_config(moa: MoaaConfig, s: LoopSettings, policy: str) -> MoaaConfig:
    """Step 3's run config: the same data, plus pairs sampled from `policy` (the SFT student) and judged."""
    config = moa.model_copy(deep=True)
    config.name = f"{s.name}-pairs"
    config.endpoints[STUDENT] = student_endpoint(policy, moa)
    pref = config.preference
    pref.enabled = True
    if pref.candidates is not None:  # a pool: the student is its agent named student (added if none is)
        named = next((c for c in pref.candidates if c.name == "student"), None)
        if named is not None:
            named.endpoint = STUDENT
        else:
            student = CandidateConfig(endpoint=STUDENT, name="student", temperature=1.0, samples=s.samples or 2)
            pref.candidates.append(student)
    else:
        old = pref.policy
        pref.policy = AgentConfig(endpoint=STUDENT, temperature=old.temperature if old else 1.0,
                                  max_tokens=old.max_tokens if old else None)  # fmt: skip
        if s.samples:
            pref.samples = s.samples
    if pref.scorer.kind != "reward_model" and not pref.scorer.judges:
        judge = moa.sft.aggregator or moa.sft.proposers[0]
        pref.scorer.judges = [AgentConfig(endpoint=judge.endpoint, temperature=0.0)]
    return config


def run_round(s: LoopSettings, steps: LoopSteps, base: MoaaConfig, round_: int, student: str,
              previous_eval: dict[str, Any] | None) -> dict[str, Any]:  # fmt: skip
    """One round; returns its record (artifacts with their parents, win rate, gain)."""
    runs = s.runs_root
    data_root = base.output.root
    moa = moa_config(base, s, round_, student)
    moa_data = steps.make_data(moa)["version_path"]
    moa_ref = f"{Path(moa_data).parent.name}@{Path(moa_data).name}"
    extra = [previous_eval] if previous_eval else []
    sft = steps.sft(data=moa_ref, model=student, config=s.sft_config, overrides=s.sft_overrides,
                    data_root=data_root, runs_root=runs, extra_parents=extra)  # fmt: skip
    sft_ref = str(sft.output.resolve())
    pairs_data = steps.make_data(pairs_config(moa, s, sft_ref))["version_path"]
    pairs_ref = f"{Path(pairs_data).parent.name}@{Path(pairs_data).name}"
    model, dpo = sft_ref, None
    try:
        dpo = steps.dpo(data=pairs_ref, model=sft_ref, config=s.dpo_config, overrides=s.dpo_overrides,
                        data_root=data_root, runs_root=runs)  # fmt: skip
        model = str(dpo.output.resolve())
    except InputError as exc:  # no pair survived the judge: keep the SFT model this round
        log.warning("round %d: no DPO (%s); the round's model is the SFT model", round_, exc)
    record: dict[str, Any] = {
        "round": round_, "start_model": student, "model": model, "dataset": moa_ref, "pairs": pairs_ref,
        "sft": sft_ref, "dpo": str(dpo.output.resolve()) if dpo else None,
        "artifacts": [
            {"kind": "dataset", "ref": moa_ref, "path": moa_data,
             "parents": [{"kind": "model", "ref": student, "role": "proposer"}] if s.student_proposer else []},
            {"kind": "sft", "path": sft_ref, "parents": [{"kind": "dataset", "ref": moa_ref},
                                                        {"kind": "model", "ref": student}, *extra]},
            {"kind": "dataset", "ref": pairs_ref, "path": pairs_data,
             "parents": [{"kind": "dataset", "ref": moa_ref}, {"kind": "model", "ref": sft_ref, "role": "policy"}]},
        ],
    }  # fmt: skip
    if dpo:
        record["artifacts"].append({"kind": "dpo", "path": record["dpo"], "parents": [
            {"kind": "dataset", "ref": pairs_ref}, {"kind": "model", "ref": sft_ref}]})  # fmt: skip
    try:
        result = steps.evaluate(model=model, baseline=student, data=pairs_ref, config=s.eval_config,
                                overrides=s.eval_overrides, data_root=data_root, runs_root=runs)  # fmt: skip
    except InputError as exc:
        log.warning("round %d: no eval (%s)", round_, exc)
        return record | {"eval": None, "win_rate": None, "gain": None, "eval_error": str(exc)}
    numbers = result.results
    record["artifacts"].append(
        {
            "kind": "eval",
            "path": str(result.output.resolve()),
            "parents": [
                {"kind": "dataset", "ref": pairs_ref},
                {"kind": "model", "ref": model},
                {"kind": "model", "ref": student},
            ],
        }
    )
    return record | {
        "eval": str(result.output.resolve()), "win_rate": numbers["win_rate"], "lc_win_rate": numbers["lc_win_rate"],
        "ci": numbers["ci"], "counts": {k: numbers[k] for k in ("win", "tie", "loss")},
        "gain": numbers["win_rate"] - 0.5,
    }  # fmt: skip


def stop_reason(record: dict[str, Any], s: LoopSettings) -> str | None:
    """Why the loop stops after this round (None: go on)."""
    if record.get("gain") is None:
        return f"round {record['round']} could not be evaluated ({record.get('eval_error', 'no eval')})"
    if record["gain"] < s.min_gain:
        return f"round {record['round']} gained {record['gain']:+.3f} win rate over the previous (< {s.min_gain})"
    if record["round"] >= s.rounds:
        return f"{s.rounds} round(s) done"
    return None


def run_loop(s: LoopSettings, steps: LoopSteps) -> dict[str, Any]:
    """Rounds until a stop reason; writes runs/loop/<name>-<ts>/{lineage.json, README.md}."""
    from moaa.models.student import resolve_model

    base = load_config(s.data_config, s.data_overrides)
    folder = new_run_dir("loop", s.name, s.runs_root)
    student = resolve_model(s.student)
    rounds: list[dict[str, Any]] = []
    previous_eval, stopped = None, None
    while stopped is None:
        log.info("loop %s: round %d from %s", s.name, len(rounds) + 1, student)
        record = run_round(s, steps, base, len(rounds) + 1, student, previous_eval)
        rounds.append(record)
        stopped = stop_reason(record, s)
        student = record["model"]
        previous_eval = run_parent(record["eval"]) if record.get("eval") else None
        _write_loop(folder, s, rounds, stopped or "running")
    log.info("loop %s stopped: %s", s.name, stopped)
    return {"folder": str(folder), "rounds": rounds, "stopped": stopped, "final_model": student,
            "table": format_rounds_table(rounds), "lineage": str(folder / "lineage.json")}  # fmt: skip


def _write_loop(folder: Path, s: LoopSettings, rounds: list[dict[str, Any]], stopped: str) -> None:
    table = format_rounds_table(rounds)
    (folder / "README.md").write_text(f"# Self-improvement loop {folder.name}\n\n{table}\n\nStatus: {stopped}\n")
    parents = [a for r in rounds for a in r["artifacts"]]
    write_lineage(folder, "loop", parents, settings=s.model_dump(), rounds=rounds, stopped=stopped)
