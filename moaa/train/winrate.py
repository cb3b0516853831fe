"""Win-rate statistics of a pairwise comparison: Wilson and bootstrap intervals, length-controlled win rate.

An outcome is the model's score on one prompt: 1 (win), 0.5 (tie) or 0 (loss). The win rate is
their mean (a tie counts half). The length-controlled win rate follows AlpacaEval 2 (Dubois et al.
2024) in its simplest form: a logistic regression of the outcome on the normalised length
difference, logit P(win) = a + b * tanh((len_model - len_baseline) / sd), read off at zero length
difference, sigmoid(a). A verbose model no longer wins by being longer. (AlpacaEval also fits
per-instruction terms over many models; with one model pair there is nothing to fit them from.)
"""

from __future__ import annotations

import math
import random
import statistics
from collections.abc import Callable, Sequence

RIDGE = 1e-2  # a small penalty keeps the fit finite when one side wins every prompt


def z_value(confidence: float) -> float:
    return statistics.NormalDist().inv_cdf(0.5 + confidence / 2)


def win_rate(outcomes: Sequence[float]) -> float:
    return sum(outcomes) / len(outcomes) if outcomes else float("nan")


def wilson_interval(successes: float, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of a proportion (ties counted as half a success)."""
    if n == 0:
        return (float("nan"), float("nan"))
    z, p = z_value(confidence), successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (max(0.0, centre - half), min(1.0, centre + half))


def bootstrap_interval(
    outcomes: Sequence[float],
    statistic: Callable[[list[int]], float],
    samples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile interval of `statistic(indices)` over resamples of the prompts (with replacement)."""
    n = len(outcomes)
    if n == 0:
        return (float("nan"), float("nan"))
    rng = random.Random(seed)
    values = sorted(statistic([rng.randrange(n) for _ in range(n)]) for _ in range(samples))
    lo = values[int((1 - confidence) / 2 * (samples - 1))]
    hi = values[int((1 + confidence) / 2 * (samples - 1))]
    return (lo, hi)


def length_feature(model_lengths: Sequence[float], baseline_lengths: Sequence[float]) -> list[float]:
    """tanh of the length difference over its standard deviation (0 everywhere when it does not vary)."""
    diffs = [m - b for m, b in zip(model_lengths, baseline_lengths, strict=True)]
    sd = statistics.pstdev(diffs) if len(diffs) > 1 else 0.0
    return [math.tanh(d / sd) if sd > 0 else 0.0 for d in diffs]


def fit_logistic(x: Sequence[float], y: Sequence[float], ridge: float = RIDGE, steps: int = 50) -> tuple[float, float]:
    """(a, b) of logit P(y) = a + b x by Newton's method; y may be fractional (a tie is 0.5)."""
    a = b = 0.0
    for _ in range(steps):
        ga, gb, haa, hab, hbb = ridge * a, ridge * b, ridge, 0.0, ridge
        for xi, yi in zip(x, y, strict=True):
            p = 1 / (1 + math.exp(-(a + b * xi)))
            w = p * (1 - p)
            ga += p - yi
            gb += (p - yi) * xi
            haa, hab, hbb = haa + w, hab + w * xi, hbb + w * xi * xi
        det = haa * hbb - hab * hab
        da, db = (hbb * ga - hab * gb) / det, (haa * gb - hab * ga) / det
        a, b = a - da, b - db
        if abs(da) + abs(db) < 1e-10:
            break
    return a, b


def lc_win_rate(outcomes: Sequence[float], feature: Sequence[float]) -> float:
    """The predicted win rate at zero length difference (see the module docstring)."""
    if not outcomes:
        return float("nan")
    a, _ = fit_logistic(feature, outcomes)
    return 1 / (1 + math.exp(-a))


def summarize(
    outcomes: Sequence[float],
    model_lengths: Sequence[float],
    baseline_lengths: Sequence[float],
    *,
    confidence: float = 0.95,
    method: str = "wilson",
    samples: int = 1000,
    seed: int = 0,
) -> dict[str, object]:
    """Counts, win rate with its interval, LC win rate (bootstrap interval with method='bootstrap')."""
    n = len(outcomes)
    feature = length_feature(model_lengths, baseline_lengths)
    out: dict[str, object] = {
        "n": n,
        "win": sum(1 for o in outcomes if o == 1),
        "tie": sum(1 for o in outcomes if o == 0.5),
        "loss": sum(1 for o in outcomes if o == 0),
        "win_rate": win_rate(outcomes),
        "lc_win_rate": lc_win_rate(outcomes, feature),
        "ci_method": method,
        "confidence": confidence,
    }
    if method == "bootstrap":
        pick = lambda idx: [outcomes[i] for i in idx]  # noqa: E731
        out["ci"] = bootstrap_interval(outcomes, lambda idx: win_rate(pick(idx)), samples, confidence, seed)
        out["lc_ci"] = bootstrap_interval(
            outcomes, lambda idx: lc_win_rate(pick(idx), [feature[i] for i in idx]), samples, confidence, seed
        )
    else:
        out["ci"] = wilson_interval(sum(outcomes), n, confidence)
    return out
