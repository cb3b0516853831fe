"""`moaa compare` runs for the viewer: the arms, the matchups, and every held-out prompt with the
answers of students A, B and the base student side by side and the judge's verdicts in both orders.

    runs = list_runs(Path("runs"))                       # runs/compare/<name>-<ts>/results.json, newest first
    run = load_run(Path("runs"), "local-moa-20261201-120000")
    seen = prompt_arms(run, "3fa2...", data_root=Path("data"))

A compare run (moaa.train.comparison) writes results.json (arms, matchups, held-out prompt ids) and
one eval folder per matchup, `eval-A-vs-B/results.json`, whose `per_prompt` records hold both
answers and both orders' winners (`model_first`: the matchup's model shown first). The prompt's text
comes from arm A's data set version (the held-out prompts are its test split).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from moaa.errors import InputError

_RUN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def _read(path: Path) -> dict[str, Any] | None:
    try:
        found = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    return found if isinstance(found, dict) else None


def list_runs(runs_root: Path) -> list[dict[str, Any]]:
    """Every compare run under runs_root/compare with a readable results.json, newest first."""
    folder = Path(runs_root) / "compare"
    out = []
    for results in sorted(folder.glob("*/results.json"), key=lambda p: p.parent.name, reverse=True):
        data = _read(results)
        if data is None:
            continue
        head = (data.get("matchups") or {}).get("A vs B") or {}
        out.append({"run": results.parent.name, "name": data.get("name"), "arms": data.get("arms") or {},
                    "held_out": (data.get("held_out") or {}).get("n"), "win_rate": head.get("win_rate"),
                    "ci": head.get("ci"), "seconds": data.get("seconds")})  # fmt: skip
    return out


def load_run(runs_root: Path, run: str) -> dict[str, Any]:
    """A compare run's results.json, with each matchup's per-prompt records under `per_prompt`."""
    if not _RUN.match(run):
        raise InputError(f"no compare run named {run!r}")
    folder = Path(runs_root) / "compare" / run
    data = _read(folder / "results.json")
    if data is None:
        raise InputError(f"{folder / 'results.json'} is missing or unreadable; see `ls {Path(runs_root) / 'compare'}`")
    for key, matchup in (data.get("matchups") or {}).items():
        model, _, baseline = key.partition(" vs ")
        where = [Path(matchup["eval"])] if matchup.get("eval") else []
        where.append(folder / f"eval-{model}-vs-{baseline}")  # the run folder moved: its own copy
        found = next((d for d in (_read(w / "results.json") for w in where) if d), None) or {}
        matchup["per_prompt"] = {r["prompt_id"]: r for r in found.get("per_prompt") or [] if "prompt_id" in r}
    data["run"] = run
    return data


def prompt_arms(run: dict[str, Any], prompt_id: str, data_root: Path) -> dict[str, Any]:
    """One held-out prompt: its conversation, each student's answer, and each matchup's verdicts."""
    answers: dict[str, str] = {}
    verdicts = []
    for key, matchup in (run.get("matchups") or {}).items():
        record = matchup.get("per_prompt", {}).get(prompt_id)
        if record is None:
            continue
        model, _, baseline = key.partition(" vs ")
        answers.setdefault(model, record.get("model_answer") or "")
        answers.setdefault(baseline, record.get("baseline_answer") or "")
        score = record.get("score")
        verdicts.append({
            "matchup": key, "model": model, "baseline": baseline,
            "model_first": _winner(record.get("model_first"), model, baseline),
            "baseline_first": _winner(record.get("baseline_first"), baseline, model),
            "agree": record.get("agree"), "error": record.get("error"),
            "outcome": {1.0: f"{model} wins", 0.5: "tie", 0.0: f"{baseline} wins"}.get(score, "unjudged"),
        })  # fmt: skip
    if not verdicts:
        raise InputError(f"prompt {prompt_id!r} is not among the held-out prompts of compare run {run.get('run')}")
    return {"prompt_id": prompt_id, "conversation": _conversation(run, prompt_id, data_root),
            "answers": answers, "verdicts": verdicts}  # fmt: skip


def _winner(said: str | None, first: str, second: str) -> str:
    """A verdict ("A": the answer shown first won) as the label of the student it names."""
    return {"A": first, "B": second, "tie": "tie"}.get(said or "", "no verdict")


def _conversation(run: dict[str, Any], prompt_id: str, data_root: Path) -> list[dict[str, Any]]:
    """The prompt as arm A's data set has it (its test split), without the final answer."""
    from moaa.view.paging import config_table, find_row

    arm = (run.get("arms") or {}).get("A") or {}
    for where in (arm.get("dataset_path"), _ref_path(arm.get("dataset"), data_root)):
        if where and Path(where).is_dir():
            found = find_row(config_table(Path(where), "sft"), prompt_id)
            if found:
                messages = found[1].get("messages") or []
                return messages[:-1] if messages and messages[-1].get("role") == "assistant" else messages
    return []


def _ref_path(ref: str | None, data_root: Path) -> Path | None:
    if not ref or "@" not in ref:
        return None
    name, _, version = ref.partition("@")
    return Path(data_root) / name / version
