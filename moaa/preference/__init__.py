"""The preference (DPO) stage: a policy (or a pool of agents) answers, a scorer ranks, a pairing rule pairs.

The pool and its pairing rules (best vs worst, one side from an agent, delta: moaa.config.pools) are
moaa.preference.pool; the mixture's own SFT answer can join it (include_sft_answer).

Scorers (ALGORITHMS.md sections 2, 7 and 10): a reward model, a pointwise or pairwise LLM judge,
the MoA judge, or the verifier (moaa.preference.verified_pairs: verdicts against the prompt's reference,
a judge breaking ties). Entry points mirror the engine: `judge_prompt`, `run_preference_prompts`,
`calls_per_prompt`; `bias_report` summarises length/position/tie bias of the written data.
"""

from moaa.preference.bias import bias_report
from moaa.preference.call_counts import calls_per_prompt
from moaa.preference.pairs import DROP_REASONS, PairChoice, choose_pair
from moaa.preference.scoring import Score, Scorer
from moaa.preference.stage import (
    PreferenceResult,
    build_scorer,
    judge_prompt,
    run_preference_prompts,
)

__all__ = [
    "DROP_REASONS",
    "PairChoice",
    "PreferenceResult",
    "Score",
    "Scorer",
    "bias_report",
    "build_scorer",
    "calls_per_prompt",
    "choose_pair",
    "judge_prompt",
    "run_preference_prompts",
]
