"""The preference stage, prompt by prompt: the pool's agents answer, a scorer ranks, the pairing rule pairs.

Mirrors the engine's API (moaa.engine): `judge_prompt` (one prompt), `run_preference_prompts` (a
lazily consumed stream, bounded in flight), `calls_per_prompt` (dry-run call counts). A prompt
ends in one of three ways: a PreferenceRow; a drop with a reason (moaa.preference.pairs:
ties, near-ties, length ratio, too few candidates) that is a property of the data, not an error;
or a Failure (an agent's call failed, every answer empty, every candidate unscored). EndpointError
and ConfigError propagate and stop the run. The pool and the pairing rules: moaa.preference.pool; the
trace steps a prompt leaves: moaa.preference.stage_trace.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from moaa.config import AnswersConfig, PreferenceConfig, ScorerConfig
from moaa.errors import ConfigError
from moaa.fanout import fan_out
from moaa.models.agent_calls import client_for
from moaa.models.client import CallError, ChatClient
from moaa.preference.candidates import CandidateSet, conversation_of
from moaa.preference.pair_audit import audit_pair, wrong_rejected
from moaa.preference.pairs import PairChoice, build_row, choose_pair
from moaa.preference.pairwise_judge import PairwiseJudge
from moaa.preference.pool import SFTAnswer, sample_pool, sides_of
from moaa.preference.score_details import Usage
from moaa.preference.scoring import Score, Scorer
from moaa.preference.stage_trace import STAGE, cut_steps, sample_steps, verdict_steps
from moaa.prompts.criteria import ASPECTS, MOAA_CRITERIA, criterion_of
from moaa.rows import Failure, PreferenceRow, Prompt, TraceStep
from moaa.verify import Verifier

log = logging.getLogger(__name__)


@dataclass
class PreferenceResult:
    """One prompt's outcome: a row, or a drop reason, or a failure; the trace; counters.

    counters: samples, empty_answers, duplicates, truncated_dropped / truncated_kept /
    truncated_reasked (samples cut at max_tokens, per `answers.truncated`), content_filtered,
    unscored (of which missing_judge: left out for a judge's missing verdict), unparsed (judge
    answers re-asked or given up on), judge_calls; pairwise judges add pairs_judged,
    swap_disagreements and pair_ties (by the letters), and with weighted_ratings pairs_weighted and
    pair_ties_weighted (the same comparisons by their log-probabilities).
    """

    prompt: Prompt
    row: PreferenceRow | None
    trace: list[TraceStep]
    failure: Failure | None
    dropped: str | None = None
    counters: dict[str, int] = field(default_factory=dict)


def build_scorer(cfg: ScorerConfig, clients: dict[str, ChatClient], verifier: Verifier | None = None) -> Scorer:
    """The scorer `cfg.kind` names, its judges bound to their clients (the verifier's tie-breaker too).

    What each kind needs (a reward model, judges, an aggregator) is PreferenceConfig's rule, checked
    when the config loads; here the scorer is only built.
    """
    from moaa.preference.judges import MoAJudge, PointwiseJudge

    if cfg.kind == "verifier":
        from moaa.config import VerifyConfig
        from moaa.preference.verified_pairs import VerifierScorer

        breaker = cfg.judged_kind()
        tie = build_scorer(cfg.model_copy(update={"kind": breaker}), clients) if breaker != "none" else None
        return VerifierScorer(verifier or Verifier(VerifyConfig()), tie, cfg.verifier)
    if cfg.kind == "reward_model":
        from moaa.preference.reward_model import RewardModelScorer

        assert cfg.reward_model  # PreferenceConfig requires one for this kind
        return RewardModelScorer(cfg.reward_model, cfg.device, cfg.batch_size, cfg.trust_remote_code)
    judges = [(a, client_for(a, clients, f"preference.scorer.judges[{i}]")) for i, a in enumerate(cfg.judges)]
    names = criteria_names(cfg)
    criteria = [criterion_of(n) for n in names] if names else list(ASPECTS)
    if cfg.kind == "pointwise":
        return PointwiseJudge(judges, criteria, cfg.max_attempts, cfg.weighted_ratings, cfg.rationales)
    if cfg.kind == "pairwise":
        return PairwiseJudge(
            judges, criteria, cfg.max_attempts, cfg.weighted_ratings, cfg.rationales, tie_threshold=cfg.tie_threshold
        )
    assert cfg.aggregator is not None  # PreferenceConfig requires one for moa_judge
    aggregator = (cfg.aggregator, client_for(cfg.aggregator, clients, "preference.scorer.aggregator"))
    return MoAJudge(judges, aggregator, names, cfg.num_criteria, cfg.max_attempts)


def build_audit(cfg: ScorerConfig, clients: dict[str, ChatClient]) -> PairwiseJudge:
    """preference.pair_audit's judge: the scorer's judges as a pairwise judge reading log-probabilities
    beside the letters, a verdict without a rationale."""
    audit = cfg.model_copy(update={"kind": "pairwise", "weighted_ratings": True, "rationales": False})
    judge = build_scorer(audit, clients)
    assert isinstance(judge, PairwiseJudge)
    return judge


def criteria_names(cfg: ScorerConfig) -> list[str] | None:
    """The criteria the judges rate on: `criteria`, else for moa_judge MoAA's list (criteria.MOAA_CRITERIA,
    from which num_criteria are picked per prompt), else None (UltraFeedback's four aspects)."""
    if cfg.criteria:
        return list(cfg.criteria)
    return [c.name for c in MOAA_CRITERIA] if cfg.kind == "moa_judge" else None


async def judge_prompt(
    prompt: Prompt,
    pref: PreferenceConfig,
    clients: dict[str, ChatClient],
    *,
    scorer: Scorer | None = None,
    answers: AnswersConfig | None = None,
    verifier: Verifier | None = None,
    sft_answers: Mapping[str, SFTAnswer] | None = None,
    audit: PairwiseJudge | None = None,
) -> PreferenceResult:
    """Ask the pool's agents (`pref.pool()`) for their samples, score them, and pair as `pref.pairing` says.

    Row columns (TRL preference format with an explicit prompt): prompt_id, prompt (the
    conversation up to its last user turn), chosen, rejected (one assistant message each),
    score_chosen, score_rejected, chosen_model, rejected_model, chosen_agent, rejected_agent (the pool
    labels). `sft_answers` (include_sft_answer): the mixture's answers by prompt id, one more candidate
    (a prompt without one is counted as sft_answer_missing). Trace: one "sample" step per distinct
    candidate (agent: its label; score, count) and one "verdict" step per scored candidate (meta: JSON of
    ratings, rationales, raw judge answers, pairwise outcomes). Chosen and rejected are complete
    answers unless `answers.truncated` is keep; a prompt left with fewer than two because answers
    were cut is a `truncated` failure (transient: a re-run asks again). Where the prompt has a check
    (moaa.preference.verified_pairs): the `verifier` scorer pairs a passing answer with a failing one; with
    another scorer, `verifier` (preference.verify not off) checks its pair, which is dropped as
    chosen_failed under require when its chosen answer fails; the row's `verification` holds both verdicts.
    `audit` (preference.pair_audit): the written pair compared head to head (moaa.preference.pair_audit).
    """
    members = pref.pool()
    if not any(m.agent is not None for m in members):
        raise ConfigError("preference.policy: not set; name the agent whose answers become chosen/rejected")
    scorer = scorer or build_scorer(pref.scorer, clients, verifier)
    audit = audit or (build_audit(pref.scorer, clients) if pref.pair_audit else None)
    convo = conversation_of(prompt.messages)
    result = PreferenceResult(prompt, None, [], None)
    if not convo or convo[-1]["role"] != "user":
        result.failure = Failure(prompt.prompt_id, STAGE, "no_user_turn", "the prompt has no user message to answer")
        return result
    mixture = (sft_answers or {}).get(prompt.prompt_id) if pref.include_sft_answer else None
    try:
        got = await sample_pool(convo, prompt.prompt_id, members, clients, answers, mixture)
    except CallError as exc:
        result.failure = Failure(prompt.prompt_id, STAGE, "policy_failed", str(exc), exc.transient)
        return result
    result.counters = {"samples": got.sampled, "empty_answers": got.empty, "duplicates": got.duplicates}
    if pref.include_sft_answer:
        result.counters["sft_answer_missing" if mixture is None else "sft_answers"] = 1
    for key in ("truncated_dropped", "truncated_kept", "truncated_reasked", "content_filtered"):
        if getattr(got, key):
            result.counters[key] = getattr(got, key)
    result.trace = cut_steps(prompt, got)
    if len(got.candidates) < 2 and got.truncated_dropped:
        cut = [f"{p.agent} ({p.model})" for p in got.parts if p.truncated_dropped]
        where = f"policy sample (endpoint {members[0].agent.endpoint}, {got.model})" if len(got.parts) == 1 else (
            f"pool samples of {', '.join(cut)}")  # fmt: skip
        error = f"{where}: {got.truncated_dropped} of {got.sampled} answers cut at max_tokens"
        result.failure = Failure(prompt.prompt_id, STAGE, "truncated", error, True)
        return result
    if not got.candidates:
        reason, transient = ("content_filter", False) if got.content_filtered else ("no_candidates", True)
        result.failure = Failure(prompt.prompt_id, STAGE, reason, f"no usable answer of {got.sampled}", transient)
        return result
    if len(got.candidates) < 2:
        result.trace += sample_steps(prompt, got, [None], PairChoice())
        result.dropped = "too_few_candidates"
        return result
    scores = await scorer.score(prompt, got.candidates)
    _count(result.counters, scores)
    _count_ties(result.counters, scores, pref.margin())
    values = [s.score for s in scores]
    texts = [c.text for c in got.candidates]
    choose = getattr(scorer, "choose", None)  # the verifier scorer's own rule (moaa.preference.verified_pairs)
    sides = sides_of(pref.pairing, got.candidates)
    choice = (
        choose(texts, scores, pref, sides)
        if choose
        else choose_pair(texts, values, pref.margin(), pref.max_length_ratio, sides)
    )
    result.trace += sample_steps(prompt, got, values, choice) + verdict_steps(prompt, scorer, scores)
    if choose is not None:  # the verifier scorer: each candidate's verdict in the trace
        from moaa.preference.verified_pairs import verdict_of, verdict_trace

        result.trace += verdict_trace(prompt, [("candidate", i, verdict_of(s)) for i, s in enumerate(scores)])
    if choose is None and all(v is None for v in values):
        error = next((s.details.error for s in scores if s.details.error), "no candidate could be scored")
        result.failure = Failure(prompt.prompt_id, STAGE, "all_unscored", error)
    elif choice.reason is not None:
        result.dropped = choice.reason
    else:
        await _pair(result, prompt, pref, convo, got, scorer, scores, choice, verifier)
        if result.row is not None and audit is not None:  # the written pair compared head to head
            best, worst = got.candidates[choice.chosen], got.candidates[choice.rejected]
            counters, step = await audit_pair(audit, prompt, best, worst, wrong_rejected(result.row))
            result.counters |= {key: result.counters.get(key, 0) + n for key, n in counters.items()}
            result.trace.append(step)
    return result


async def _pair(
    result: PreferenceResult, prompt: Prompt, pref: PreferenceConfig, convo: list, got: CandidateSet,
    scorer: Scorer, scores: list[Score], choice: PairChoice, verifier: Verifier | None,
) -> None:  # fmt: skip
    """The row of the chosen pair, its verdicts in `verification`; or the drop chosen_failed."""
    from moaa.preference.verified_pairs import (
        VerifierScorer,
        count_pair,
        count_verdicts,
        pair_verdicts,
        verdict_trace,
    )

    assert choice.chosen is not None and choice.rejected is not None
    texts = [c.text for c in got.candidates]
    chosen, rejected = await pair_verdicts(scorer, scores, choice, prompt, texts, verifier)
    if verifier is not None and not isinstance(scorer, VerifierScorer):  # the guard checked this pair now
        count_verdicts(result.counters, [chosen, rejected], chosen is not None)
        pair = [("chosen", choice.chosen, chosen), ("rejected", choice.rejected, rejected)]
        result.trace += verdict_trace(prompt, pair)
    count_pair(result.counters, chosen, rejected)
    if chosen is not None and chosen.failed and pref.verify == "require":
        result.dropped = "chosen_failed"
        return
    best, worst = got.candidates[choice.chosen], got.candidates[choice.rejected]
    pair_scores = getattr(scorer, "pair_scores", None)
    score_chosen, score_rejected = (
        pair_scores(scores, choice) if pair_scores else (scores[choice.chosen].score, scores[choice.rejected].score)
    )
    result.row = build_row(
        prompt.prompt_id, convo, best.text, worst.text, score_chosen, score_rejected, best.model, worst.model,
        best.agent, worst.agent,
    )  # fmt: skip
    if chosen is not None and rejected is not None:
        result.row.verification = {"chosen": chosen.column(), "rejected": rejected.column()}
    if prompt.reference is not None:
        result.row.reference = prompt.reference.to_json()


def _count(counters: dict[str, int], scores: list[Score]) -> None:
    # the verifier scorer's candidate without a verdict (its prompt has no check) is scored by the
    # tie-breaker's judge: unscored only where that judge gave nothing either
    counters["unscored"] = sum(1 for s in scores if s.score is None and s.details.tie_break is None)
    left_out = sum(1 for s in scores if s.details.left_out == "missing_judge")
    if left_out:  # unscored so that every scored candidate has the same judges
        counters["missing_judge"] = left_out
    spent = [s.details.usage or Usage() for s in scores]
    counters["unparsed"] = sum(u.unparsed for u in spent)
    counters["judge_calls"] = sum(u.calls for u in spent)
    verdicts = [s.details.verdict for s in scores if s.details.verified]  # the verifier scorer's
    if verdicts:
        for verdict in verdicts:
            if verdict is not None:
                counters[f"candidates_{verdict['status']}"] = counters.get(f"candidates_{verdict['status']}", 0) + 1
        if all(v is None for v in verdicts):
            counters["verify_none"] = 1
    pairs = [p for s in scores for p in s.details.pairs or [] if p.agree is not None]
    if pairs:  # pairwise judges: how often the verdict flipped with the order, and the ties
        counters["pairs_judged"] = len(pairs)
        counters["swap_disagreements"] = sum(1 for p in pairs if not p.agree)
        counters["pair_ties"] = sum(1 for p in pairs if p.outcome == "tie")
        weighted = [p for p in pairs if p.orders is not None]
        if weighted:  # the same comparisons read from log-probabilities
            counters["pairs_weighted"] = len(weighted)
            counters["pair_ties_weighted"] = sum(1 for p in weighted if p.weighted_outcome == "tie")


def _count_ties(counters: dict[str, int], scores: list[Score], margin: float) -> None:
    """A prompt whose candidates a pointwise judge rated with weighted ratings: judged_weighted, and
    ties_hard / ties_weighted where its best and worst are within `margin` by the digits the judge
    wrote / by their probability-weighted means (the verifier's tie-breaker counts too)."""
    both = []
    for s in scores:
        breaker = s.details.judge  # the verifier's tie-breaker: its details and its score (tie_break)
        hard, weighted = (breaker.hard_score, s.details.tie_break) if breaker else (s.details.hard_score, s.score)
        if hard is not None and weighted is not None:
            both.append((float(hard), float(weighted)))
    if len(both) < 2:
        return
    counters["judged_weighted"] = 1
    for key, values in (("ties_hard", [h for h, _ in both]), ("ties_weighted", [w for _, w in both])):
        if max(values) - min(values) < margin:
            counters[key] = 1


async def run_preference_prompts(
    prompts: Iterable[Prompt],
    pref: PreferenceConfig,
    clients: dict[str, ChatClient],
    *,
    on_result: Callable[[PreferenceResult], None],
    max_in_flight: int = 32,
    answers: AnswersConfig | None = None,
    verifier: Verifier | None = None,
    sft_answers: Mapping[str, SFTAnswer] | None = None,
) -> None:
    """Judge `prompts` with at most `max_in_flight` in flight, calling `on_result` as each finishes.

    The iterable is consumed lazily. The first exception (EndpointError, ConfigError, or one raised
    by `on_result` or the iterable) cancels the rest and propagates.
    """
    scorer = build_scorer(pref.scorer, clients, verifier)
    audit = build_audit(pref.scorer, clients) if pref.pair_audit else None

    async def judge(prompt: Prompt) -> PreferenceResult:
        return await judge_prompt(
            prompt, pref, clients, scorer=scorer, answers=answers, verifier=verifier, sft_answers=sft_answers,
            audit=audit,
        )  # fmt: skip

    await fan_out(prompts, judge, on_result, max_in_flight)
