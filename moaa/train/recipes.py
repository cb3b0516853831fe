"""`moaa compare` of two preference recipes (moaa.train.comparison, `preference_a` / `preference_b`): the
arms' run configs, which differ only in `preference`, a recipe in one line, and the run: both arms' data,
one SFT of the student on arm A's rows, then DPO on each arm's pairs from that SFT model.

A recipe is a `preference` block laid over the run config's (`merged`: mappings key by key, lists and
other values replaced), read from a YAML file by `read_recipe` (--preference-a / --preference-b).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from moaa.config import MoaaConfig, dump_config, parse_config
from moaa.errors import ConfigError, InputError
from moaa.train.comparison import Arm, CompareSettings, CompareSteps, arm_data


def read_recipe(path: str | Path) -> dict[str, Any]:
    """A preference recipe file (--preference-a / --preference-b): a YAML mapping of `preference` keys, bare
    or under a top-level `preference:`."""
    file = Path(path)
    if not file.is_file():
        raise ConfigError(f"{path}: preference recipe file not found; write a YAML mapping of preference keys there")
    try:
        raw = yaml.safe_load(file.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not valid YAML ({str(exc).splitlines()[0]}); fix the file") from None
    if isinstance(raw, dict) and set(raw) == {"preference"}:
        raw = raw["preference"]
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: a preference recipe is a mapping of preference keys (policy, candidates, "
                          f"include_sft_answer, pairing, scorer, ...), not {type(raw).__name__}")  # fmt: skip
    return raw


def merged(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """`over` laid over `base`: mappings merged key by key, anything else (lists included) replaced."""
    out = dict(base)
    for key, value in over.items():
        out[key] = merged(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def recipe_arms(base: MoaaConfig, s: CompareSettings, name: str) -> list[Arm]:
    """Arms A and B of a preference-recipe compare: the run config with each arm's preference block."""
    raw = dump_config(base)
    arms = []
    for label, recipe in (("A", s.preference_a), ("B", s.preference_b)):
        arm = merged(raw, {"name": f"{name}-{label}", "preference": {**(recipe or {}), "enabled": True}})
        arms.append(Arm(label, parse_config(arm, source=f"arm {label} (preference_{label.lower()}) of {base.name}"),
                        recipe=True))  # fmt: skip
    if arms[0].config.preference == arms[1].config.preference:
        raise InputError(
            f"arms A and B would make the same pairs ({arms[0].describe()}); give preference_b (--preference-b "
            "FILE) a different pool, pairing rule or scorer"
        )
    return arms


def describe_recipe(config: MoaaConfig) -> str:
    """A preference recipe in one line: its pool (label x samples), pairing rule and scorer."""
    pref = config.preference
    pool = " + ".join(m.label if m.agent is None else f"{m.label} x{m.samples}" for m in pref.pool())
    scorer = pref.scorer.kind + (f"+{pref.scorer.judged_kind()}" if pref.scorer.kind == "verifier" else "")
    return f"pool {pool}, {pairing_of(config)}, {scorer}"


def pairing_of(config: MoaaConfig) -> str:
    """The pairing rule in a few words: best_worst, one_side_from LABEL, delta STRONGER>WEAKER."""
    pairing = config.preference.pairing
    if pairing.delta is not None:
        return f"delta {pairing.delta.stronger}>{pairing.delta.weaker}"
    return f"one_side_from {pairing.one_side_from}" if pairing.one_side_from else "best_worst"


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
