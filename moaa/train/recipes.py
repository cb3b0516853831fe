"""`moaa compare` of two preference recipes (moaa.train.comparison, `preference_a` / `preference_b`): the
arms' run configs, which differ only in `preference`, and a recipe in one line. The run itself (one SFT of
the student on arm A's rows, then DPO on each arm's pairs from it) is moaa.train.comparison.run_recipes.

A recipe is a `preference` block laid over the run config's with moaa.config's `deep_merge` (mappings
key by key, lists and other values replaced), read from a YAML file by `read_recipe` (--preference-a /
--preference-b).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from moaa.config import MoaaConfig, deep_merge, dump_config, parse_config
from moaa.errors import ConfigError, InputError


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


def recipe_configs(base: MoaaConfig, recipes: tuple[dict[str, Any] | None, ...], name: str) -> list[MoaaConfig]:
    """The run configs of arms A and B of a preference-recipe compare: the run config with each arm's
    preference block laid over its own (enabled); recipes that would make the same pairs are an error."""
    raw = dump_config(base)
    configs = []
    for label, recipe in zip("AB", recipes, strict=True):
        arm = deep_merge(raw, {"name": f"{name}-{label}", "preference": {**(recipe or {}), "enabled": True}})
        configs.append(parse_config(arm, source=f"arm {label} (preference_{label.lower()}) of {base.name}"))
    if configs[0].preference == configs[1].preference:
        raise InputError(
            f"arms A and B would make the same pairs ({describe_recipe(configs[0])}); give preference_b "
            "(--preference-b FILE) a different pool, pairing rule or scorer"
        )
    return configs


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
