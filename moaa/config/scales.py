"""What each preference scorer's scores mean, and `preference.min_margin` in those units.

A margin of 0.5 is half a rating step on a 1-5 judge, half the whole range of a pairwise win
share, and several times the whole spread of a reward model's scores for one prompt (ArmoRM's lie
in about [0, 1]; five samples of one prompt sat at [0.12, 0.15, 0.09, 0.18, 0.11]). So each scorer
kind declares its scale here, with the default margin that keeps near-ties out without dropping
real preferences, and `min_margin` can be given in the scorer's units, as a share of its scale
("10%"), or per kind ({pointwise: 0.5, pairwise: 10%}).

Defaults, and why:
- pointwise, moa_judge (mean rating, 1-5): 0.5, an eighth of the scale: two steps of a 4-aspect
  mean of whole ratings, or half a step of one rating.
- pairwise (mean preference, 0-1): 0.1: with 5 candidates one comparison moves a score by 0.125,
  so any strict difference of whole verdicts is kept, while a weighted pair of two candidates needs
  a preference of 0.55 or more, the tie_threshold's 0.05 either side of 0.5.
- reward_model (the model's own units, no fixed scale): 0, best vs worst whatever the gap, as
  SimPO's ArmoRM-labelled pairs do; only exact ties are dropped.
A kind not listed here (a scorer added later) takes its margin in its own units, default 0.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_PERCENT = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*%\s*$")

Margin = float | str  # a number in the scorer's units, or "N%" of its scale


@dataclass(frozen=True)
class Scale:
    """A scorer kind's scores: their range (None: unbounded), what they are, its default margin."""

    low: float | None
    high: float | None
    unit: str
    default_margin: float

    @property
    def span(self) -> float | None:
        return None if self.low is None or self.high is None else self.high - self.low

    def describe(self) -> str:
        where = f"{self.low:g}-{self.high:g}" if self.span is not None else "no fixed scale"
        return f"{self.unit}, {where}"


SCALES = {
    "pointwise": Scale(1, 5, "mean rating", 0.5),
    "moa_judge": Scale(1, 5, "mean rating", 0.5),
    "pairwise": Scale(0, 1, "share of comparisons won", 0.1),
    "reward_model": Scale(None, None, "reward in the model's own units", 0.0),
}
_OWN_UNITS = Scale(None, None, "score in the scorer's own units", 0.0)


def scale_of(kind: str) -> Scale:
    return SCALES.get(kind, _OWN_UNITS)


def check_margin(value: Margin, kind: str, where: str = "min_margin") -> None:
    """Raise ValueError (naming `where`) for a percentage that is not one, or one of a scale-less kind."""
    if isinstance(value, (int, float)):
        if value < 0:
            raise ValueError(f"{where}: {value} is negative; give 0 or more")
        return
    match = _PERCENT.match(value)
    if match is None:
        raise ValueError(f"{where}: {value!r} is neither a number nor a percentage such as '10%'")
    if scale_of(kind).span is None:
        raise ValueError(
            f"{where}: {value!r} is a share of the scale, but {kind} scores have no fixed scale; give it in "
            f"the scorer's own units (e.g. 0.02 for ArmoRM's rewards) or leave it unset for the default"
        )


def margin_for(setting: Margin | dict[str, Margin] | None, kind: str) -> tuple[float, str]:
    """(the margin in `kind`'s units, where it came from: "default", "set" or "N% of the scale")."""
    value = setting.get(kind) if isinstance(setting, dict) else setting
    scale = scale_of(kind)
    if value is None:
        return scale.default_margin, "default"
    if isinstance(value, str):
        match = _PERCENT.match(value)
        assert match is not None and scale.span is not None  # check_margin ran when the config loaded
        return round(float(match.group(1)) / 100 * scale.span, 6), f"{match.group(1)}% of the scale"
    return float(value), "set"


def describe_margin(setting: Margin | dict[str, Margin] | None, kind: str) -> str:
    """The margin in words, for the dry run: its value, where it came from, its units and share of the scale."""
    margin, source = margin_for(setting, kind)
    scale = scale_of(kind)
    origin = {"default": f"the {kind} default", "set": "as set"}.get(source, source)
    if scale.span and not source.endswith("of the scale"):
        origin += f", {margin / scale.span:.1%} of the scale"
    drop = "only exact ties are dropped" if margin == 0 else "a pair whose best and worst differ by less is a near_tie"
    return f"min_margin {margin:g} ({origin}) on {kind} scores ({scale.describe()}): {drop}"
