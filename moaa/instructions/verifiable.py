"""Verifiable constraints for synthesized tasks (`instructions.constraint_share`): a task kept by the
writers' filters may get one IFEval instruction appended, so the prompt carries a reference that
moaa.verify checks (its `instructions` / `kwargs`), as Tulu 3 made its verifiable instruction-following
data: constraints drawn from IFEval's taxonomy and added to prompts.

The constraint and its arguments are drawn by the caller's seeded RNG from CATALOG, a subset of IFEval
whose check needs nothing from the task (no keyword, language or section name that must fit its
topic); its words are IFEval's own (`build_description` of if-verifiable's instruction class, the
checker the verifier runs), so the text the model reads and the check it faces are one definition.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

_ENDINGS = ("Is there anything else I can help with?", "Let me know if you have additional questions.")

CATALOG: tuple[tuple[str, Callable[[random.Random], dict[str, Any]]], ...] = (
    ("punctuation:no_comma", lambda rng: {}),
    ("change_case:english_lowercase", lambda rng: {}),
    ("detectable_format:title", lambda rng: {}),
    ("length_constraints:number_words",
     lambda rng: {"num_words": rng.choice((50, 80, 120)), "relation": rng.choice(("less than", "at least"))}),
    ("detectable_format:number_bullet_lists", lambda rng: {"num_bullets": rng.randint(2, 5)}),
    ("startend:end_checker", lambda rng: {"end_phrase": rng.choice(_ENDINGS)}),
    ("detectable_content:postscript", lambda rng: {"postscript_marker": rng.choice(("P.S.", "P.P.S"))}),
)  # fmt: skip


@dataclass(frozen=True)
class Constraint:
    """One IFEval instruction: its id, its arguments, and the sentence the prompt gets."""

    id: str
    kwargs: dict[str, Any]
    text: str


def draw_constraint(rng: random.Random) -> Constraint:
    """A constraint of CATALOG and its arguments, drawn by `rng`, with IFEval's words for them."""
    cid, make = CATALOG[rng.randrange(len(CATALOG))]
    kwargs = make(rng)
    return Constraint(cid, kwargs, description(cid, kwargs))


def description(cid: str, kwargs: dict[str, Any]) -> str:
    """IFEval's sentence for instruction `cid` with these arguments (its own build_description)."""
    from if_verifiable.ifeval.instructions_registry import INSTRUCTION_DICT

    return " ".join(INSTRUCTION_DICT[cid](cid).build_description(**kwargs).split())
