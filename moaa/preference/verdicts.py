"""Tolerant parsers for what judges answer: ratings per criterion, a pairwise winner, chosen criteria.

Judges are asked for JSON (with a json_schema response format where the endpoint allows it), but
small and local models wrap it in code fences, add prose, or answer in lines such as
`Helpfulness: 4/5`. Each parser returns None when it cannot read a complete, valid verdict, and
the caller asks again (`ratings_problem` says what was wrong, for the re-ask).

Ratings are read on their own scale: "8/10" or "4 out of 5" is mapped linearly from 1..N onto the
judge's 1-5 scale (8/10 -> 4.11), never read as its numerator; a bare number or a fraction outside
its scale (7, 6/5, 0/10) is rejected, not clipped.
"""

from __future__ import annotations

import math
import re
from typing import Any

from moaa.json_text import json_objects
from moaa.prompts.criteria import Criterion, slug

# A rating with an optional scale: "4", "4.5", "8/10", "4 out of 5", "3 of 5".
_RATING_TEXT = r"([0-9]+(?:\.[0-9]+)?)(?:\s*(?:/|out\s+of|of)\s*([0-9]+))?"
_NUMBER_RE = re.compile(rf"^\s*\**\s*{_RATING_TEXT}\s*\**\s*$", re.IGNORECASE)
LOW, HIGH = 1, 5  # the judging prompts' scale (prompts.criteria anchors five levels)
_RATING_KEYS = ("rating", "score", "value", "grade")
_RATIONALE_KEYS = ("rationale", "reason", "reasoning", "explanation", "justification")


def on_scale(number: float, out_of: float | None, low: int = LOW, high: int = HIGH) -> float | None:
    """`number` (on 1..`out_of`, or on low..high when no scale was written) on low..high; None
    when it lies outside its own scale."""
    if out_of is None or out_of == high:
        return float(number) if low <= number <= high else None
    if out_of <= 1 or not 1 <= number <= out_of:
        return None
    return round(low + (number - 1) * (high - low) / (out_of - 1), 4)


def as_rating(value: Any) -> float | None:
    """A 1-5 rating from a number, "4", "4/5", "8/10", or {"rating": 4}; None when absent or out of range."""
    if isinstance(value, dict):
        value = next((value[k] for k in value if slug(k) in _RATING_KEYS), None)
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, str):
        match = _NUMBER_RE.match(value)
        if match is None:
            return None
        return on_scale(float(match.group(1)), float(match.group(2)) if match.group(2) else None)
    if isinstance(value, (int, float)):
        return on_scale(float(value), None)
    return None


def parse_ratings(text: str, criteria: list[Criterion]) -> tuple[dict[str, float], dict[str, str]] | None:
    """(ratings, rationales) keyed by criterion key, or None unless every criterion has a valid rating."""
    for obj in json_objects(text):
        got = _ratings_from_json(obj, criteria)
        if got is not None:
            return got
    return _ratings_from_lines(text, criteria)


def _ratings_from_json(obj: Any, criteria: list[Criterion]) -> tuple[dict[str, float], dict[str, str]] | None:
    if not isinstance(obj, dict):
        return None
    by_slug = {slug(k): v for k, v in obj.items()}
    ratings, rationales = {}, {}
    for c in criteria:
        value = by_slug.get(c.key, by_slug.get(slug(c.name)))
        rating = as_rating(value)
        if rating is None:
            nested = [v for v in obj.values() if isinstance(v, dict)]  # {"ratings": {...}}
            for inner in nested:
                got = _ratings_from_json(inner, criteria)
                if got is not None:
                    return got
            return None
        ratings[c.key] = rating
        if isinstance(value, dict):
            rationales[c.key] = str(next((value[k] for k in value if slug(k) in _RATIONALE_KEYS), ""))
    return ratings, rationales


def _ratings_from_lines(text: str, criteria: list[Criterion]) -> tuple[dict[str, float], dict[str, str]] | None:
    ratings = {}
    for c in criteria:
        words = [w for w in re.split(r"[\s_-]+", c.name) if w]
        name = r"[\s_-]+".join(map(re.escape, words))
        pattern = (
            rf"(?im)^[\s>*#-]*\**\s*(?:{name}|{re.escape(c.key)})\s*\**\s*(?:\([^)\n]*\))?\s*\**"
            rf"\s*(?:[:\-–]\s*)?(?:rating|score)?\s*[:=\-–]\s*\**\s*{_RATING_TEXT}(?![0-9])"
        )
        match = re.search(pattern, text)
        if match is None:
            return None
        rating = on_scale(float(match.group(1)), float(match.group(2)) if match.group(2) else None)
        if rating is None:
            return None
        ratings[c.key] = rating
    return ratings, {}


def ratings_problem(text: str, criteria: list[Criterion]) -> str:
    """Why `text` is not a complete verdict, in a line the judge can act on (for the re-ask)."""
    if not text.strip():
        return "the answer was empty"
    obj = next((o for o in json_objects(text) if isinstance(o, dict)), None)
    if obj is None:
        return "it held no JSON object"
    if len(obj) == 1 and isinstance(next(iter(obj.values())), dict):
        obj = next(iter(obj.values()))  # {"ratings": {...}}
    by_slug = {slug(k): v for k, v in obj.items()}
    values = {c.key: by_slug.get(c.key, by_slug.get(slug(c.name))) for c in criteria}
    missing = [k for k, v in values.items() if v is None]
    if missing:
        return f"it gave no rating for {', '.join(missing)}"
    bad = [f"{k} ({v!r})" for k, v in values.items() if as_rating(v) is None]
    if bad:
        return f"these ratings are not numbers from {LOW} to {HIGH}: {', '.join(bad)}"
    return "it could not be read"


_WINNERS = {
    "a": "A",
    "b": "B",
    "tie": "tie",
    "c": "tie",
    "draw": "tie",
    "equal": "tie",
    "neither": "tie",
    "both": "tie",
}


def parse_winner(text: str) -> str | None:
    """ "A", "B" or "tie" from JSON `winner`, MT-Bench's `[[A]]`, or a `Winner: B` line; else None."""
    for obj in json_objects(text):
        if isinstance(obj, dict):
            value = next((v for k, v in obj.items() if slug(k) in ("winner", "verdict", "better")), None)
            if isinstance(value, str) and value.strip().strip("[]*\"'").lower() in _WINNERS:
                return _WINNERS[value.strip().strip("[]*\"'").lower()]
    brackets = re.findall(r"\[\[\s*(A|B|C|tie)\s*\]\]", text, re.IGNORECASE)
    if len(set(b.lower() for b in brackets)) == 1:
        return _WINNERS[brackets[0].lower()]
    match = _WINNER_LINE.search(text)
    return _WINNERS[match.group(1).lower()] if match else None


# A `Winner: B` / `Verdict: tie` line. The letter is a capital, or a lower-case one standing alone
# ("winner: b."): "Verdict: a tie" and "Verdict: a clear win for B" open with the article "a".
_WINNER_LINE = re.compile(
    r"(?im)^[\s>*#-]*\**\s*(?:winner|verdict)\s*\**\s*[:=]\s*\**\s*[\"']?(?:(?:a|an|the)\s+(?=tie\b))?"
    r"((?-i:A|B)\b|[ab](?=[\s\"'*.,;)]*$)|tie\b)"
)


def parse_criteria(text: str, names: list[str], n: int) -> list[str] | None:
    """Up to `n` of `names` that the answer picked (JSON list, or names mentioned), in its order; None if none."""
    by_slug = {slug(name): name for name in names}
    picked: list[str] = []
    for obj in json_objects(text):
        items = obj.get("criteria") if isinstance(obj, dict) else obj
        if isinstance(items, list):
            picked = [by_slug[slug(str(x))] for x in items if slug(str(x)) in by_slug]
            if picked:
                break
    if not picked:  # names mentioned in prose, in the order they appear
        spots = [(m.start(), name) for name in names if (m := re.search(rf"\b{re.escape(name)}\b", text, re.I))]
        picked = [name for _, name in sorted(spots)]
    unique = list(dict.fromkeys(picked))[:n]
    return unique or None


_RATING_AT_END = re.compile(r'"(?:rating|score)"\s*:\s*$')


def weighted_ratings(logprobs: list[dict[str, Any]], low: int = 1, high: int = 5) -> list[tuple[int, float]]:
    """(the digit written, its probability-weighted rating) at each `"rating": <digit>` of a JSON
    verdict, in order.

    G-Eval (Liu et al. 2023): the expectation of the rating under the judge's own distribution
    over the digits low..high (renormalised over those among its top log-probabilities) is a finer
    score than the sampled digit, which a small judge gives alike to most answers (a 0.5B judge
    rated 12 of 12 different answers 4 of 5). `logprobs` is Completion.logprobs.
    """
    out, text = [], ""
    for step in logprobs:
        token = step["token"]
        digit = token.strip()
        if digit.isdigit() and _RATING_AT_END.search(text):
            probs: dict[int, float] = {}
            for t, lp in step["top"].items():  # "4" and " 4" are two spellings of one rating: their mass adds
                if t.strip().isdigit() and low <= int(t.strip()) <= high:
                    probs[int(t.strip())] = probs.get(int(t.strip()), 0.0) + math.exp(lp)
            total = sum(probs.values())
            out.append((int(digit), sum(r * p for r, p in probs.items()) / total if total else float(digit)))
        text += token
    return out


_WINNER_AT_END = re.compile(r'"winner"\s*:\s*"?\s*$')
_LETTER_TOKEN = re.compile(r'^[\s"]*(A|B|t|ti|tie)(?![A-Za-z0-9])')


def _letter(token: str) -> str | None:
    """ "A", "B" or "tie" for a token that writes one (`A`, ` "B`, `A",`, `t`, `tie`), else None."""
    match = _LETTER_TOKEN.match(token)
    if match is None:
        return None
    return match.group(1) if match.group(1) in ("A", "B") else "tie"


def winner_probabilities(logprobs: list[dict[str, Any]]) -> tuple[str, dict[str, float]] | None:
    """(the letter written, its probability mass on "A", "B" and "tie", summing to 1) at the `"winner":`
    value of a JSON verdict; None when no such token, or no mass on any letter, is found.

    AlpacaEval 2's weighted judge reads the probability of each answer's token instead of the
    sampled one: a judge that writes "A" with probability 0.55 and "B" with 0.45 is nearly undecided,
    which the letter alone hides. Spellings of one letter (`A`, ` A`, `"A`) add up."""
    text = ""
    for step in logprobs:
        written = _letter(step["token"])
        if written is not None and _WINNER_AT_END.search(text):
            mass = {"A": 0.0, "B": 0.0, "tie": 0.0}
            for token, lp in step["top"].items():
                letter = _letter(token)
                if letter is not None:
                    mass[letter] += math.exp(lp)
            total = sum(mass.values())
            return (written, {k: v / total for k, v in mass.items()}) if total else None
        text += step["token"]
    return None
