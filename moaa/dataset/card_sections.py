"""The body sections of a dataset card, each a list of markdown lines built from the manifest and statistics.

    lines = made_section(manifest, stats) + cost_section(manifest) + bias_section(manifest) + ...

Every section reads what the version's manifest already records (moaa.dataset.manifest: config, endpoint
stats, counts, the preference stage's bias report) and the statistics of its rows
(moaa.dataset.card_stats), so the card can be rendered again at publish time for its destination.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from moaa.dataset.card_stats import sample_rows

CONFIG_DOCS = {
    "sft": "`messages` [{role, content}] (the final answers as assistant turns), `prompt_id`, `source`, "
    "`method`, `models` [str], `category`. For `trl sft`.",
    "dpo": "`prompt` [{role, content}], `chosen` / `rejected` [one assistant message each], `score_chosen`, "
    "`score_rejected`, `chosen_model`, `rejected_model`, `chosen_agent` / `rejected_agent` (the pool label of "
    "the agent that wrote each side; `mixture`: the SFT answer), `prompt_id`. For `trl dpo`.",
    "trace": "every intermediate answer and judge verdict: `prompt_id`, `stage`, `kind`, `text`, `agent`, "
    "`model`, `role`, `turn`, `layer`, `index`, `selected`, `prompt_tokens`, `completion_tokens`, "
    "`latency_s`, `finish_reason`, `cached`, `score`, `meta` (JSON text).",
    "prompts": "the prompts the instruction stage synthesized (Ensemble-Instruct), where the run made its own: "
    "`prompt_id`, `prompt`, `instruction`, `input`, `category`, `seeds` (the seed tasks shown), `batch`, `round`, "
    "`writer`, `answerers`, `answers`, `measure`, `agreement`, `exact_match`, `consensus_agent`, `reference` (the "
    "agreed final answer of a with-answer task, or the IFEval constraint appended to a task, JSON), "
    "`consensus_answer`. One `train` split.",
    "failures": "prompts that produced no row: `prompt_id`, `stage`, `reason`, `error`. One `train` split "
    "(not split by prompt).",
}
Rows = dict[str, dict[str, int]]


def endpoint_stats(manifest: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """{endpoint: counters} from the manifest's stats (flat, or under "endpoints")."""
    stats = manifest.get("stats") or {}
    found = stats.get("endpoints", stats) if isinstance(stats, dict) else {}
    return {name: c for name, c in found.items() if isinstance(c, dict)}


def methods_text(manifest: dict[str, Any], stats: dict[str, Any]) -> str:
    """The manifest's methods (a list, or a dict like {sft: moa, scorer: judge}), else the rows' methods."""
    methods = manifest.get("methods")
    if isinstance(methods, dict):
        return ", ".join(f"{k}: {v}" for k, v in methods.items() if v) or "-"
    return ", ".join(map(str, methods or [m for m, _ in stats.get("methods", [])])) or "-"


def generating_models(manifest: dict[str, Any], stats: dict[str, Any]) -> list[str]:
    """The models that wrote the data, as served (the SFT rows' models, else every endpoint's)."""
    named = stats.get("models") or [e.get("model") for e in (manifest.get("endpoints") or {}).values()]
    return sorted({str(m) for m in named if m})


def summary_sentence(rows: Rows, manifest: dict[str, Any], stats: dict[str, Any]) -> str:
    """What the run did, in one sentence (the manifest's summary when the pipeline gave one)."""
    if manifest.get("summary"):
        return str(manifest["summary"])
    total = lambda cfg: sum(rows.get(cfg, {}).values())  # noqa: E731
    source = (manifest.get("prompt_source") or {}).get("label", "the configured prompts")
    models = ", ".join(generating_models(manifest, stats)) or "the configured models"
    return (
        f"Prompts from {source} answered with {methods_text(manifest, stats)} by {models}: {total('sft')} SFT "
        f"rows, {total('dpo')} DPO pairs, {total('failures')} failed prompts."
    )


def _flatten(data: dict[str, Any], prefix: str = "") -> list[list[Any]]:
    """[[dotted key, number]] of a nested counts dict."""
    out: list[list[Any]] = []
    for key, value in data.items():
        if isinstance(value, dict):
            out += _flatten(value, f"{prefix}{key}.")
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            out.append([f"{prefix}{key}", value])
    return out


def table(headers: list[str], rows: list[list[Any]]) -> list[str]:
    fmt = lambda v: "–" if v is None else f"{v:,.4f}".rstrip("0").rstrip(".") if isinstance(v, float) else str(v)  # noqa: E731
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    return lines + ["| " + " | ".join(fmt(v) for v in row) + " |" for row in rows] + [""]


def made_section(manifest: dict[str, Any], stats: dict[str, Any]) -> list[str]:
    source = manifest.get("prompt_source") or {}
    endpoints = manifest.get("endpoints") or {}
    lines = ["## How it was made", "", f"- Methods: {methods_text(manifest, stats)}"]
    lines.append("- Models: " + (", ".join(f"`{n}` ({e.get('model')})" for n, e in endpoints.items()) or "–"))
    if stats.get("models"):
        lines.append(f"- Models named in SFT rows: {', '.join(stats['models'])}")
    lines.append(f"- Prompt source: {source.get('label', '–')} (fingerprint `{source.get('fingerprint', '–')}`)")
    made = ((manifest.get("run") or {}).get("summary") or {}).get("instructions")
    if made:
        lines.append(instructions_text(made))
    lines.append(f"- Parent version: {manifest.get('parent') or 'none'}")
    return lines + ["", "The resolved config, package versions and file hashes are in `moaa_manifest.json`.", ""]


def instructions_text(made: dict[str, Any]) -> str:
    """The card's line on prompts the instruction stage wrote (a run summary's `instructions`)."""
    drops = ", ".join(f"{k} {v}" for k, v in made["dropped"].items()) or "none"
    last = made.get("this_batch") or {}
    mean = last.get("mean_agreement")
    agreement = f", mean agreement {mean:.2f} (batch {last['batch']})" if mean is not None else ""
    return (
        "- Prompts synthesized by the instruction stage (Ensemble-Instruct: writers from seed tasks, kept where the "
        f"answerers agree): {made['kept']} kept of {made['written']} written in {made['batches']} batch(es)"
        f"{agreement}; dropped: {drops} (config `failures`, stage instructions); each prompt with its seeds, writer "
        "and agreement in config `prompts`"
    )


def counts_section(rows: Rows, manifest: dict[str, Any]) -> list[str]:
    lines = [
        "## Rows",
        "",
        *table(["config", "train", "test"], [[c, s.get("train", 0), s.get("test", 0)] for c, s in rows.items()]),
    ]
    counts = {k: v for k, v in (manifest.get("counts") or {}).items() if k != "rows"}
    flat = _flatten(counts)
    return lines + (["Run counts:", "", *table(["count", "value"], flat)] if flat else [])


def cost_section(manifest: dict[str, Any]) -> list[str]:
    """Token use per endpoint; the cost to make the data (answers from cache at what they cost when
    first asked) and, apart, what the run that wrote this version spent."""
    per_endpoint = endpoint_stats(manifest)
    if not per_endpoint:
        return []
    rows = [
        [
            name,
            (manifest.get("endpoints") or {}).get(name, {}).get("model", "–"),
            c.get("calls"),
            c.get("cache_hits"),
            c.get("retries"),
            c.get("failures"),
            c.get("prompt_tokens"),
            c.get("completion_tokens"),
            float(c.get("cost") or 0.0) + float(c.get("cached_cost") or 0.0),
            (c.get("latency") or {}).get("p50"),
        ]
        for name, c in per_endpoint.items()
    ]
    headers = ["endpoint", "model", "calls", "cache hits", "retries", "failures", "prompt tokens",
               "completion tokens", "cost to make ($)", "p50 latency (s)"]  # fmt: skip
    total = sum(r[8] for r in rows)
    lines = ["## Token use and cost", "", *table(headers, rows)]
    lines.append(f"Cost to make: ${total:.4f} (every call at its endpoint's prices, answers from cache included).")
    this_run = ((manifest.get("run") or {}).get("summary") or {}).get("this_run")
    if this_run:
        lines.append(
            f"This run spent: ${float(this_run.get('cost') or 0):.4f} on {this_run.get('calls', 0)} calls sent; "
            f"{this_run.get('cache_hits', 0)} answers came from the request cache."
        )
    return lines + [""]


def stats_section(stats: dict[str, Any]) -> list[str]:
    lines = ["## Statistics", ""]
    for cfg in ("sft", "dpo"):
        if cfg in stats:
            described = [[k, v["mean"], v["median"], v["p95"], v["min"], v["max"]] for k, v in stats[cfg].items()]
            lines += [f"{cfg}:", "", *table(["", "mean", "median", "p95", "min", "max"], described)]
    if "methods" in stats:
        lines += table(["method", "sft rows"], [list(r) for r in stats["methods"]])
    if "trace" in stats:
        lines += table(["stage", "kind", "steps", "mean score", "completion tokens"], [list(r) for r in stats["trace"]])
    if "failures" in stats:
        lines += table(["stage", "reason", "failed prompts"], [list(r) for r in stats["failures"]])
    return lines


BIAS_ROWS = (
    ("length_ratio_mean", "chosen / rejected length, mean"),
    ("length_ratio_median", "chosen / rejected length, median"),
    ("chosen_longer_share", "pairs whose chosen answer is the longer"),
    ("score_length_pearson", "score vs length correlation (Pearson, scored candidates)"),
    ("scored_candidates", "scored candidates"),
    ("pairs_judged", "pairwise judgements in both orders"),
    ("swap_disagreement_rate", "position-swap disagreement (counted as ties)"),
    ("pair_tie_rate", "pairwise judgements that are ties, by the written letters"),
    ("weighted_tie_rate", "the same, by log-probabilities (weighted_ratings)"),
    ("tie_drop_share", "prompts dropped as ties"),
)


def pool_section(manifest: dict[str, Any]) -> list[str]:
    """The preference stage's candidate pool (moaa.config.pools): each agent, its samples, the pairing rule."""
    from moaa.config import PreferenceConfig

    raw = (manifest.get("config") or {}).get("preference") or {}
    if not raw.get("enabled"):
        return []
    try:
        pref = PreferenceConfig.model_validate(raw)
    except ValueError:  # a version written by another moaa: its card goes without the section
        return []
    endpoints = (manifest.get("endpoints") or {}) | ((manifest.get("config") or {}).get("endpoints") or {})
    rows = []
    for m in pref.pool():
        if m.agent is None:
            source = pref.include_sft_answer if isinstance(pref.include_sft_answer, str) else "this run"
            rows.append([m.label, f"{source}'s SFT answer", "–", "–", m.samples])
        else:
            model = (endpoints.get(m.agent.endpoint) or {}).get("model", "–")
            rows.append([m.label, m.agent.endpoint, model, m.agent.temperature, m.samples])
    lines = ["## Preference pool", "", *table(["agent", "endpoint", "model", "temperature", "samples"], rows)]
    return lines + [f"Pairs: {pref.pairing.describe()}; `chosen_agent` / `rejected_agent` name each side's agent.", ""]


def bias_section(manifest: dict[str, Any]) -> list[str]:
    """The preference stage's bias report: does the scorer prefer length, or the first position?"""
    bias = (manifest.get("run") or {}).get("bias")
    if not isinstance(bias, dict):
        return []
    lines = ["## Bias report", "", *table(["measure", "value"], [[text, bias.get(k)] for k, text in BIAS_ROWS])]
    dropped = ", ".join(f"{k} {v}" for k, v in (bias.get("dropped") or {}).items()) or "none"
    return lines + [f"Prompts without a pair, by reason: {dropped}.", ""]


def quality_section(manifest: dict[str, Any], stats: dict[str, Any]) -> list[str]:
    """Truncated and empty replies per endpoint, truncated trace steps per stage, aggregates the
    quality gates rejected, filtered prompts."""
    per_endpoint = endpoint_stats(manifest)
    lines = ["## Quality", ""]
    rows = [[n, c.get("truncated"), c.get("empty"), c.get("failures")] for n, c in per_endpoint.items()]
    if rows:
        lines += table(["endpoint", "truncated replies (length)", "empty replies", "failed calls"], rows)
    if stats.get("truncated") is not None:
        kept = ", ".join(f"{stage} {n}" for stage, n in stats["truncated"]) or "none"
        lines += [f"Trace steps cut at max_tokens (finish_reason `length`), by stage: {kept}.", ""]
    sft = (((manifest.get("counts") or {}).get("stages") or {}).get("sft") or {}).get("counters")
    if sft is not None:
        from moaa.engine.quality import gate_summary

        lines += [f"SFT answers: {gate_summary(sft)}; a dropped prompt is a failure of reason quality_*.", ""]
        if sft.get("degraded"):
            lines += [
                f"Rows made by fewer answers than a layer asked for (`sft.min_answers` allowed it; each row's "
                f"final trace step lists its layers under `degraded`): {sft['degraded']}.",
                "",
            ]
    lines += _truncation_lines(manifest)
    prompts = ((manifest.get("counts") or {}).get("prompts") or {}).get("dropped") or {}
    if prompts:
        lines += [f"Prompts dropped by filters: {', '.join(f'{k} {v}' for k, v in prompts.items())}.", ""]
    return lines if len(lines) > 2 else []


def verification_section(manifest: dict[str, Any]) -> list[str]:
    """Verified, failed and unverifiable answers per stage, and the verified yield (moaa.verify.report)."""
    from moaa.verify.report import verification_lines

    stages = (manifest.get("counts") or {}).get("stages") or {}
    methods = manifest.get("methods")
    method = (methods.get("sft") if isinstance(methods, dict) else None) or "sft"
    found = verification_lines(stages, method)
    if not found:
        return []
    lines = ["## Verification", ""]
    lines += [f"- {stage}: {text}" for stage, text in found]
    lines += ["", "Each row's `verification` column holds its answer's verdict (status, reason, score, checks); "
              "the trace's `verification` steps hold every verdict with its details.", ""]  # fmt: skip
    return lines


TRUNCATION_COUNTERS = (
    ("truncated_dropped", "dropped"),
    ("truncated_reasked", "re-asked"),
    ("truncated_kept", "kept"),
    ("truncated_references", "kept as references"),
)


def truncation_counts(counters: dict[str, int]) -> str:
    """What answers.truncated did with the stage's cut answers: 'dropped 3, re-asked 1, kept 0, ...'."""
    return ", ".join(f"{label} {counters.get(key, 0)}" for key, label in TRUNCATION_COUNTERS)


def _truncation_lines(manifest: dict[str, Any]) -> list[str]:
    """What `answers.truncated` did with cut answers, per stage (from the run's counters)."""
    stages = ((manifest.get("counts") or {}).get("stages")) or {}
    rule = (((manifest.get("config") or {}).get("answers")) or {}).get("truncated", "drop")
    done = [f"{stage}: {truncation_counts(agg.get('counters') or {})}" for stage, agg in stages.items()]
    if not done:
        return []
    return [
        f"Answers cut at max_tokens (`answers.truncated: {rule}`; a final SFT answer or DPO side is complete "
        f"unless it is `keep`): {'; '.join(done)}.",
        "",
    ]


def samples_section(folder: Path, rows: Rows) -> list[str]:
    lines = ["## Sample rows", ""]
    for cfg in (c for c in ("sft", "dpo") if c in rows):
        sample = json.dumps(sample_rows(folder, cfg, 1), indent=2, ensure_ascii=False)
        lines += [f"{cfg}:", "", "```json", sample, "```", ""]
    return lines


CPU_FLAGS = "--use_cpu --bf16 false"  # what TRL's CLI needs on a machine without a GPU


def load_section(name: str, version: str, rows: Rows, where: str, repo_id: str | None) -> list[str]:
    """How to load and train: `repo_id` pinned to the version's tag on the Hub, else the folder `where`."""
    first = next(iter(rows))
    target = repo_id or where
    load = (
        f'ds = load_dataset("{repo_id}", "{first}", revision="{version}")  # pinned to this version'
        if repo_id
        else f'ds = load_dataset("{where}", "{first}")  # this folder, offline'
    )
    lines = ["## Load it", "", "```python", "from datasets import load_dataset", "", load, "```", ""]
    # TRL's CLI takes no revision: on the Hub it reads `main`, which is this version until a newer one is published
    lines += [
        f"Train with TRL's CLI. On a CPU (no GPU) keep `{CPU_FLAGS}`: TRL trains in bf16 by default, which "
        'needs a GPU, and without them stops with "Your setup doesn\'t support bf16/gpu". On a GPU, leave '
        "them out.",
        "",
        "```bash",
    ]
    for cfg in (c for c in ("sft", "dpo") if c in rows):
        lines.append(
            f"trl {cfg} --model_name_or_path MODEL --dataset_name {target} --dataset_config {cfg} "
            f"--output_dir runs/{name}-{version}-{cfg} {CPU_FLAGS}"
        )
    return lines + ["```", ""]


def configs_section(rows: Rows) -> list[str]:
    return [
        "## Configs and columns",
        "",
        *(f"- **{cfg}**: {CONFIG_DOCS[cfg]}" for cfg in rows),
        "",
        "Train/test is assigned per `prompt_id`, so a prompt is in the same split in every config and "
        "test prompts are never trained on. A config or split without rows is absent.",
        "",
    ]


def derived_section(manifest: dict[str, Any]) -> list[str]:
    """How a version made from another came to be: for a person's review (moaa.view), the rows it
    removed, edited, flagged and accepted per config, and the review file with its hash."""
    derived = manifest.get("derived")
    if not isinstance(derived, dict) or derived.get("kind") != "review":
        return []
    counted = ("removed", "edited", "flagged", "accepted")
    configs = sorted({cfg for key in counted for cfg in derived.get(key) or {}})
    rows = [[cfg, *((derived.get(key) or {}).get(cfg, 0) for key in counted)] for cfg in configs]
    total = lambda key: sum((derived.get(key) or {}).values())  # noqa: E731
    return [
        "## Review",
        "",
        f"A person reviewed {derived.get('from')}: removed {_rows_word(total('removed'))}, edited "
        f"{_rows_word(total('edited'))} and flagged {_rows_word(total('flagged'))} with a note (kept). "
        f"Everything else is as in {derived.get('from')}.",
        "",
        *table(["config", "removed", "edited", "flagged (kept)", "accepted"], rows),
        f"The decisions are `{derived.get('file')}` in this version (sha256 `{derived.get('sha256')}`, "
        f"{derived.get('decisions', 0)} decisions); an edited row's `verification` verdict, if any, is cleared "
        "(it judged the text before the edit).",
        "",
    ]


def _rows_word(n: int) -> str:
    return f"{n} row" if n == 1 else f"{n} rows"
