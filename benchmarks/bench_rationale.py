"""Benchmark: does the embedded 0.5B judge rank answers better when it writes a rationale first?

Usage: python benchmarks/bench_rationale.py [--samples 6] [--n N] [--base-url URL --model NAME] [--candidates JSON]
       make bench ARGS="--only rationale"            # the same, samples 6 (--quick: 4 on 8 prompts)

Ground truth from moaa.verify: the prompts of configs/prompts/default.jsonl that carry a reference
(final answers, tests, SQL fixtures) are answered `--samples` times by the preset's policy
(configs/local.yaml's `preference.policy`, moaa.preference.candidates.sample_candidates), and each
distinct answer is checked by the preset's Verifier, as the preference stage checks candidates.
Prompts with at least one passing and one failing answer are kept; on them the preset's pointwise
judge (its ScorerConfig, kind pointwise so that the judge itself ranks; built by
moaa.preference.stage.build_scorer) scores the same candidates in three settings: `rationales: false`
(the preset before), `rationales: true` at that preset's judge budget (max_tokens 48) and with
max_tokens 256 (room for the rationale: the preset now), the setting that goes first rotating per prompt, on the
same server. `--candidates` judges an earlier run's checked candidates again, skipping the sampling.
For each setting: over every (passing, failing) pair, the share where the passing answer scores higher, ties
and the share where the failing one scores higher, by the digits the judge wrote and by the
probability-weighted ratings; verdicts unparsed (after the judge's re-asks); output tokens and wall
seconds per verdict. The pairwise judge is not run: K(K-1) calls per prompt, too slow here.

Starts the config's embedded model (moaa.models.session.local_endpoints, as `verified` does) unless
--base-url names a running OpenAI-compatible server. Prints a table and writes JSON to bench_results/
(while it runs, rationale-<time>.partial.json holds what is measured so far).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.bench_verified import bench_config  # noqa: E402
from benchmarks.common import figure, load_prompt_file  # noqa: E402
from moaa.config import MoaaConfig  # noqa: E402
from moaa.rows import Prompt  # noqa: E402

NAME = "rationale"
PROMPTS = ROOT / "configs/prompts/default.jsonl"
# name: (rationales, the judges' max_tokens; None: the preset's own). 48 was the preset's budget for a bare
# verdict, which cuts most rationales; 256 leaves a rationale room (the preset's budget since this measurement).
SETTINGS = {"rationales false": (False, None), "rationales true, max_tokens 48": (True, 48),
            "rationales true, max_tokens 256": (True, 256)}  # fmt: skip
READINGS = ("digits", "weighted")


@dataclass
class Sampled:
    """One prompt's distinct policy answers and whether each passed its check (None: no verdict)."""

    prompt: Prompt
    texts: list[str]
    passed: list[bool | None]

    @property
    def mixed(self) -> bool:
        return True in self.passed and False in self.passed


@dataclass
class Judged:
    """One setting's scores of one prompt's candidates: by the digits written and by weighted ratings."""

    digits: list[float | None]
    weighted: list[float | None]
    verdicts: int
    unparsed: int  # candidates left without a score after the judge's re-asks
    weighed: int  # verdicts whose weighted reading applied (the tokens lined up with the digits)
    calls: int
    completion_tokens: int
    seconds: float


@dataclass
class PairCounts:
    """(passing, failing) pairs: the passing one higher (right), equal (tie), lower (wrong), or unscored."""

    right: int = 0
    tie: int = 0
    wrong: int = 0
    unscored: int = 0

    @property
    def pairs(self) -> int:
        return self.right + self.tie + self.wrong + self.unscored

    def add(self, other: PairCounts) -> None:
        self.right, self.tie = self.right + other.right, self.tie + other.tie
        self.wrong, self.unscored = self.wrong + other.wrong, self.unscored + other.unscored

    def shares(self) -> dict[str, float]:
        n = self.pairs or 1
        return {"accuracy": self.right / n, "tie_share": self.tie / n, "wrong_share": self.wrong / n}


def count_pairs(passed: list[bool | None], scores: list[float | None]) -> PairCounts:
    """Every (passing, failing) pair of one prompt's candidates, counted by how `scores` order it."""
    counts = PairCounts()
    for good, good_score in zip(passed, scores, strict=True):
        if good is not True:
            continue
        for bad, bad_score in zip(passed, scores, strict=True):
            if bad is not False:
                continue
            if good_score is None or bad_score is None:
                counts.unscored += 1
            elif good_score > bad_score:
                counts.right += 1
            elif good_score == bad_score:
                counts.tie += 1
            else:
                counts.wrong += 1
    return counts


def outcome(verdict: Any) -> bool | None:
    """True for a pass, False for a fail, None for no verdict (no check applies, or it could not run)."""
    if verdict is None:
        return None
    return True if verdict.passed else (False if verdict.failed else None)


def load_checked(limit: int | None) -> list[Prompt]:
    """The prompts of default.jsonl that carry a reference (the first `limit` of them)."""
    return load_prompt_file(PROMPTS, limit, checked_only=True)


async def sample(config: MoaaConfig, clients: dict[str, Any], prompts: list[Prompt], samples: int) -> list[Sampled]:
    """The policy's distinct answers to every prompt, each checked by the config's Verifier."""
    from moaa.preference.candidates import conversation_of, sample_candidates
    from moaa.verify import Verifier

    pref, verifier = config.preference, Verifier(config.verify)
    client = clients[pref.policy.endpoint]
    slots = asyncio.Semaphore(max(1, config.endpoints[pref.policy.endpoint].max_concurrency))

    async def one(prompt: Prompt) -> Sampled:
        async with slots:
            got = await sample_candidates(conversation_of(prompt.messages), prompt.prompt_id, pref.policy, client,
                                          samples, config.answers)  # fmt: skip
        texts = [c.text for c in got.candidates]
        verdicts = await asyncio.gather(*(verifier.check(prompt, t) for t in texts))
        return Sampled(prompt, texts, [outcome(v) for v in verdicts])

    return list(await asyncio.gather(*(one(p) for p in prompts)))


async def judge(scorer: Any, sampled: Sampled) -> Judged:
    """One setting's scores of the candidates, timed as a whole (the candidates go out together)."""
    from moaa.preference.candidates import Candidate

    candidates = [Candidate(i, t, "") for i, t in enumerate(sampled.texts)]
    started = time.perf_counter()
    scores = await scorer.score(sampled.prompt, candidates)
    seconds = time.perf_counter() - started
    usages = [s.details.usage for s in scores if s.details.usage is not None]
    weighed = sum(r.weighted for s in scores for r in (s.details.judges or []))
    return Judged(
        digits=[s.score if s.details.hard_score is None else s.details.hard_score for s in scores],
        weighted=[s.score for s in scores], verdicts=len(scores), unparsed=sum(s.score is None for s in scores),
        weighed=weighed, calls=sum(u.calls for u in usages), completion_tokens=sum(u.completion_tokens for u in usages),
        seconds=seconds,
    )  # fmt: skip


def scorers(config: MoaaConfig, clients: dict[str, Any]) -> dict[str, Any]:
    """The preset's judge, as a pointwise scorer, once per setting."""
    from moaa.preference.stage import build_scorer

    base, out = config.preference.scorer, {}
    for name, (on, budget) in SETTINGS.items():
        judges = [j.model_copy(update={"max_tokens": budget}) if budget else j for j in base.judges]
        out[name] = build_scorer(base.model_copy(update={"kind": "pointwise", "rationales": on, "judges": judges}),
                                 clients)  # fmt: skip
    return out


def load_candidates(path: Path, prompts: list[Prompt]) -> list[Sampled]:
    """The checked candidates of an earlier run's JSON (or its .partial.json), to judge them again."""
    by_id = {p.prompt_id: p for p in prompts}
    results = json.loads(path.read_text(encoding="utf-8"))["results"]
    return [Sampled(by_id[r["prompt_id"]], r["candidates"], r["passed"]) for r in results]


async def measure(config: MoaaConfig, prompts: list[Prompt], samples: int, partial: Path | None,
                  reuse: list[Sampled] | None = None) -> dict[str, Any]:  # fmt: skip
    """Sample and check every prompt (or take `reuse`'s candidates), then judge the mixed ones in every
    setting, the one that goes first rotating from prompt to prompt."""
    from moaa.models.session import build_clients
    from moaa.models.stats import RunStats

    no_cache = config.model_copy(update={"cache": config.cache.model_copy(update={"enabled": False})})
    clients = build_clients(no_cache, RunStats())
    results: list[dict[str, Any]] = []
    try:
        started = time.perf_counter()
        sampled = reuse if reuse is not None else await sample(config, clients, prompts, samples)
        sample_seconds = time.perf_counter() - started
        mixed = [s for s in sampled if s.mixed]
        how = "taken from an earlier run" if reuse is not None else f"sampled in {sample_seconds:.0f} s"
        print(f"   {len(sampled)} prompts {how}; {len(mixed)} mixed", file=sys.stderr, flush=True)
        judges = scorers(config, clients)
        for i, s in enumerate(mixed):
            names = list(SETTINGS)
            order = names[i % len(names) :] + names[: i % len(names)]
            judged = {name: await judge(judges[name], s) for name in order}
            results.append({"prompt_id": s.prompt.prompt_id, "passed": s.passed, "candidates": s.texts,
                            "judged": {n: asdict(j) for n, j in judged.items()}})  # fmt: skip
            if partial is not None:
                partial.write_text(json.dumps({"samples": samples, "results": results}, ensure_ascii=False))
            print(f"   [{i + 1}/{len(mixed)}] {s.prompt.prompt_id}: passed {s.passed}; "
                  + "; ".join(f"{n} {j.weighted} in {j.seconds:.0f} s" for n, j in judged.items()),
                  file=sys.stderr, flush=True)  # fmt: skip
    finally:
        for client in clients.values():
            if hasattr(client, "aclose"):
                await client.aclose()
    outcomes = [p for s in sampled for p in s.passed]
    return {"prompts": len(sampled), "mixed": len(mixed), "sample_seconds": round(sample_seconds, 1),
            "candidates": len(outcomes), "passed": outcomes.count(True), "failed": outcomes.count(False),
            "results": results}  # fmt: skip


def summarise(results: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per setting: the pair counts by each reading, verdicts, unparsed, tokens and seconds per verdict."""
    out = {}
    for name in SETTINGS:
        judged = [(r["passed"], Judged(**r["judged"][name])) for r in results]
        counts = {reading: PairCounts() for reading in READINGS}
        for passed, j in judged:
            for reading in READINGS:
                counts[reading].add(count_pairs(passed, getattr(j, reading)))
        verdicts = sum(j.verdicts for _, j in judged) or 1
        out[name] = {
            "pairs": counts["digits"].pairs,
            **{reading: asdict(c) | c.shares() for reading, c in counts.items()},
            "verdicts": sum(j.verdicts for _, j in judged), "unparsed": sum(j.unparsed for _, j in judged),
            "weighed": sum(j.weighed for _, j in judged), "calls": sum(j.calls for _, j in judged),
            "tokens_per_verdict": sum(j.completion_tokens for _, j in judged) / verdicts,
            "seconds_per_verdict": sum(j.seconds for _, j in judged) / verdicts,
        }  # fmt: skip
    return out


def format_table(summary: dict[str, dict[str, Any]]) -> str:
    head = ["setting", "reading", "pairs", "pass higher", "ties", "fail higher", "unscored", "weighted",
            "unparsed", "tokens/verdict", "s/verdict"]  # fmt: skip
    rows = [head]
    for name, s in summary.items():
        for reading in READINGS:
            c = s[reading]
            rows.append([name, reading, str(c["right"] + c["tie"] + c["wrong"] + c["unscored"]),
                         f"{c['accuracy']:.3f} ({c['right']})", f"{c['tie_share']:.3f} ({c['tie']})",
                         f"{c['wrong_share']:.3f} ({c['wrong']})", str(c["unscored"]),
                         f"{s['weighed']}/{s['verdicts']}", str(s["unparsed"]), f"{s['tokens_per_verdict']:.1f}",
                         f"{s['seconds_per_verdict']:.2f}"])  # fmt: skip
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    return "\n".join([lines[0], "  ".join("-" * w for w in widths), *lines[1:]])


def report(config: MoaaConfig, prompts: list[Prompt], samples: int, partial: Path | None = None,
           reuse: list[Sampled] | None = None) -> dict[str, Any]:  # fmt: skip
    """Measure and summarise: the JSON report (its `summary` per setting)."""
    started = time.perf_counter()
    measured = asyncio.run(measure(config, prompts, samples, partial, reuse))
    model = ", ".join(sorted({ep.model for ep in config.endpoints.values()}))
    return {"benchmark": NAME, "model": model, "samples": samples, "seconds": round(time.perf_counter() - started, 1),
            "summary": summarise(measured["results"])} | measured  # fmt: skip


def headline(rep: dict[str, Any]) -> str:
    pairs = next(iter(rep["summary"].values()))["pairs"]
    return (f"rationale: model {rep['model']}, {rep['prompts']} checked prompts x {rep['samples']} samples: "
            f"{rep['candidates']} distinct answers ({rep['passed']} pass, {rep['failed']} fail), {rep['mixed']} "
            f"prompts with both, {pairs} (pass, fail) pairs; {rep['seconds']:.0f} s")  # fmt: skip


def figures(rep: dict[str, Any]) -> list:
    out = []
    for name, s in rep["summary"].items():
        for reading in READINGS:
            c = s[reading]
            out.append(figure(NAME, f"{name}: pass ranked higher, by {reading}", c["accuracy"], "",
                              note=f"{c['right']}/{s['pairs']} pairs, ties {c['tie']}, fail higher {c['wrong']}, "
                              f"unscored {c['unscored']}", **c))  # fmt: skip
        out.append(figure(NAME, f"{name}: output tokens per verdict", s["tokens_per_verdict"], "tokens",
                          note=f"{s['verdicts']} verdicts, {s['unparsed']} unparsed, "
                          f"{s['weighed']} read by weights"))  # fmt: skip
        out.append(figure(NAME, f"{name}: seconds per verdict", s["seconds_per_verdict"], "s"))
    return out


def run(work: Path, quick: bool, prompts: int | None = None, base_url: str | None = None, model: str | None = None,
        config: str | None = None, **_: Any) -> list:  # fmt: skip
    """`python -m benchmarks --only rationale`: samples 6 on every checked prompt (--quick: 4 on 8)."""
    from moaa.models.session import local_endpoints

    samples = 4 if quick else 6
    chosen = load_checked(prompts or (8 if quick else None))
    cfg = bench_config(work, base_url, model, Path(config) if config else ROOT / "configs/local.yaml")
    work.mkdir(parents=True, exist_ok=True)
    with local_endpoints(cfg, work) as served:
        rep = report(served, chosen, samples)
    print("   " + headline(rep) + "\n" + "\n".join("   " + line for line in format_table(rep["summary"]).splitlines()))
    return figures(rep)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=6, help="policy samples per prompt")
    parser.add_argument("--n", type=int, default=None, help="the first n checked prompts (default: all 23)")
    parser.add_argument("--config", default=str(ROOT / "configs/local.yaml"), help="the preset measured")
    parser.add_argument("--base-url", default=None, help="an already running OpenAI-compatible server")
    parser.add_argument("--model", default=None, help="model name at --base-url (default: the config's)")
    parser.add_argument("--candidates", type=Path, default=None, metavar="JSON",
                        help="judge the checked candidates of an earlier run's rationale-*.json (or its "
                        ".partial.json) instead of sampling")  # fmt: skip
    parser.add_argument("--out", default=str(ROOT / "bench_results"))
    args = parser.parse_args(argv)
    from moaa.errors import MoaaError
    from moaa.models.session import local_endpoints

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    partial = out / f"rationale-{stamp}.partial.json"
    with tempfile.TemporaryDirectory(prefix="moaa-rationale-") as tmp:
        cfg = bench_config(Path(tmp), args.base_url, args.model, Path(args.config))
        try:
            with local_endpoints(cfg, Path(tmp)) as served:
                prompts = load_checked(args.n)
                reuse = load_candidates(args.candidates, prompts) if args.candidates else None
                samples = json.loads(args.candidates.read_text())["samples"] if args.candidates else args.samples
                rep = report(served, prompts, samples, partial, reuse)
        except MoaaError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
    print(headline(rep) + (f" (the mixed prompts' candidates of {args.candidates})" if args.candidates else ""))
    print(format_table(rep["summary"]))
    path = out / f"rationale-{stamp}.json"
    path.write_text(json.dumps(rep, indent=2, ensure_ascii=False))
    partial.unlink(missing_ok=True)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
