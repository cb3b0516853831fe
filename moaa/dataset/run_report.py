"""The run report of a data set version: `report.md` and `report/*.png`, written with every version.

    from moaa.dataset.run_report import write_report
    write_report(Path("data/local-moa/v3"), Path("out"))   # -> out/report.md (a version already has its own)

Sections: Summary (rows, prompts, calls/tokens/cost per endpoint from `moaa_manifest.json`), Scores
(chosen vs rejected), Lengths (SFT answers, chosen, rejected), Calls and tokens (trace steps and
tokens per prompt by stage, kind and model), Failures (by stage and reason), Judge consistency
(pairwise position-swap disagreement), Examples (a prompt with its proposers' answers and the
final answer; a DPO pair with its scores). Statistics are computed lazily over the parquet shards
with polars; a plot whose config is absent is skipped. Plots (moaa.dataset.report_plots) use
matplotlib's Agg canvas (no display, no global pyplot state). moaa.dataset.versions writes the report into the version's
staging folder (`stage_report`), before the manifest: its files are hashed with every other file,
and the manifest records a digest of what the plots are drawn from (`report_plots`). When the
parent version's report records the same digest (a re-run of a finished config), its verified PNGs
are copied instead of drawn. The markdown is always rendered.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from moaa.dataset.files import scan_config
from moaa.dataset.report_plots import IMAGE_DIR, draw_plots, parent_plots, plots_digest

log = logging.getLogger(__name__)

REPORT_NAME = "report.md"
SECTIONS = ("Summary", "Scores", "Lengths", "Calls and tokens", "Failures", "Judge consistency", "Examples")
EXAMPLE_CHARS = 600  # texts in examples are cut here


def stage_report(staging: Path, manifest: dict[str, Any]) -> dict[str, Any]:
    """Write `report.md` and `report/*.png` into a version's staging folder, whose `manifest` is not yet
    written (moaa.dataset.versions hashes the report with every other file, then renames the folder).

    Returns the manifest's `report_plots`: {digest, files}, what the plots were drawn from."""
    # The report reads the manifest as its readers will: through JSON.
    manifest = json.loads(json.dumps(manifest, ensure_ascii=False, default=str))
    _, plots, digest = _render(staging, staging, manifest)
    return {"digest": digest, "files": {k: p.relative_to(staging).as_posix() for k, p in plots.items()}}


def write_report(version_dir: Path, out_dir: Path) -> Path:
    """Write a finished version's `report.md` and `report/*.png` into `out_dir` (never into the version:
    it is complete once renamed into place); returns report.md."""
    from moaa.dataset.manifest import read_manifest

    version_dir = Path(version_dir)
    return _render(version_dir, Path(out_dir), read_manifest(version_dir))[0]


def _render(version_dir: Path, target: Path, manifest: dict[str, Any]) -> tuple[Path, dict[str, Path], str]:
    """report.md and its plots in `target`: (its path, {plot: png path}, the plots' digest)."""
    images = target / IMAGE_DIR
    images.mkdir(parents=True, exist_ok=True)
    for old in images.glob("*.png"):
        old.unlink()
    data = collect_report(version_dir, manifest)
    digest = plots_digest(data)
    plots = parent_plots(version_dir, manifest, digest, target)
    if plots is None:
        plots = draw_plots(data, images)
    path = target / REPORT_NAME
    path.write_text(render_markdown(data, {k: f"{IMAGE_DIR}/{p.name}" for k, p in plots.items()}), encoding="utf-8")
    log.info("wrote the run report %s (%d plots)", path, len(plots))
    return path, plots, digest


def report_markdown_for_artifact(version_dir: Path) -> str:
    """The report as markdown for a Prefect artifact, its plots embedded as `data:image/png;base64`
    URIs: the Prefect UI runs in a browser that cannot read the flow's disk, so a file path would
    show a broken image, while an embedded PNG (tens of KB each) renders wherever the UI is opened."""
    import base64

    version_dir = Path(version_dir)
    images = {
        p.stem: "data:image/png;base64," + base64.b64encode(p.read_bytes()).decode("ascii")
        for p in sorted((version_dir / IMAGE_DIR).glob("*.png"))
    }
    return render_markdown(collect_report(version_dir), images)


# ---------------------------------------------------------------- data


def _last_content(column: str) -> Any:
    import polars as pl

    return pl.col(column).list.last().struct.field("content").fill_null("").str.len_chars()


def collect_report(version_dir: Path, manifest: dict[str, Any] | None = None) -> dict[str, Any]:
    """Every number and example the report shows; a key is None when its config is absent.
    `manifest`: the version's (read from the folder when not given)."""
    from moaa.dataset.manifest import read_manifest

    manifest = read_manifest(version_dir) if manifest is None else manifest
    sft, dpo, trace, fails = (scan_config(version_dir, c) for c in ("sft", "dpo", "trace", "failures"))
    data: dict[str, Any] = {
        "manifest": manifest,
        "sft_lengths": None,
        "dpo": None,
        "steps": None,
        "failures": None,
        "swap": None,
        "examples": [],
        "pairs": [],
    }
    if sft is not None:
        data["sft_lengths"] = sft.select(_last_content("messages")).collect().to_series().to_list()
    if dpo is not None:
        frame = dpo.select(
            "score_chosen", "score_rejected", chosen_len=_last_content("chosen"), rejected_len=_last_content("rejected")
        ).collect()
        data["dpo"] = frame.to_dict(as_series=False)
        data["pairs"] = dpo.head(2).collect().to_dicts()
    if trace is not None:
        data["steps"] = _steps(trace)
        data["swap"] = _swap(trace)
    if fails is not None:
        # Ties in a stable order: the failures plot (and its digest) must not change between runs.
        grouped = fails.group_by("stage", "reason").len()
        counts = grouped.sort(["len", "stage", "reason"], descending=[True, False, False]).collect()
        data["failures"] = {f"{r['stage']}:{r['reason']}": r["len"] for r in counts.to_dicts()}
    if sft is not None:
        data["examples"] = _examples(sft, trace, 2)
    return data


def _steps(trace: Any) -> list[dict[str, Any]]:
    """Per (stage, kind, model): trace steps and tokens per prompt of that stage."""
    import polars as pl

    per_stage = trace.group_by("stage").agg(stage_prompts=pl.col("prompt_id").n_unique())
    grouped = trace.group_by("stage", "kind", "model").agg(
        steps=pl.len(), tokens=(pl.col("prompt_tokens") + pl.col("completion_tokens")).sum()
    )
    joined = grouped.join(per_stage, on="stage").with_columns(
        steps_per_prompt=pl.col("steps") / pl.col("stage_prompts"),
        tokens_per_prompt=pl.col("tokens") / pl.col("stage_prompts"),
    )
    return joined.sort("stage", "kind", "model").collect().to_dicts()


def _swap(trace: Any) -> dict[str, int] | None:
    """Pairwise judgements that agree / disagree across the two orders, or None without any."""
    import polars as pl

    meta = pl.col("meta").fill_null("")
    counts = (
        trace.filter(pl.col("kind") == "verdict")
        .select(
            agree=meta.str.count_matches(r'"agree":\s*true').sum(),
            disagree=meta.str.count_matches(r'"agree":\s*false').sum(),
        )
        .collect()
        .to_dicts()
    )
    got = counts[0] if counts else {"agree": 0, "disagree": 0}
    total = (got["agree"] or 0) + (got["disagree"] or 0)
    return {"judged": total, "disagree": got["disagree"] or 0} if total else None


def _examples(sft: Any, trace: Any, n: int) -> list[dict[str, Any]]:
    import polars as pl

    rows = sft.head(n).collect().to_dicts()
    ids = [r["prompt_id"] for r in rows]
    steps: list[dict[str, Any]] = []
    if trace is not None:
        wanted = pl.col("prompt_id").is_in(ids) & (pl.col("stage") == "sft")
        steps = trace.filter(wanted).sort("turn", "layer", "index").collect().to_dicts()
    return [{"row": r, "steps": [s for s in steps if s["prompt_id"] == r["prompt_id"]]} for r in rows]


# ---------------------------------------------------------------- plots


# ---------------------------------------------------------------- markdown


def render_markdown(data: dict[str, Any], images: dict[str, str]) -> str:
    """The report's markdown; `images` maps plot names (scores, lengths, calls, failures) to paths."""
    m = data["manifest"]
    lines = [f"# Run report: {m.get('name')}@{m.get('version')}", ""]
    for title, body in zip(SECTIONS, _sections(data), strict=True):
        key = {"Scores": "scores", "Lengths": "lengths", "Calls and tokens": "calls", "Failures": "failures"}.get(title)
        lines += [f"## {title}", "", *body]
        if key in images:
            lines += ["", f"![{title}]({images[key]})"]
        lines.append("")
    return "\n".join(lines)


def _sections(data: dict[str, Any]) -> list[list[str]]:
    return [
        _summary(data["manifest"]),
        _scores(data["dpo"]),
        _lengths(data),
        _calls(data["steps"]),
        _failures(data["failures"]),
        _consistency(data["swap"]),
        _example_lines(data),
    ]


def _summary(m: dict[str, Any]) -> list[str]:
    counts, methods = m.get("counts") or {}, m.get("methods") or {}
    rows = "; ".join(
        f"{c} " + ", ".join(f"{s} {n}" for s, n in sp.items()) for c, sp in (counts.get("rows") or {}).items()
    )
    prompts = counts.get("prompts") or {}
    dropped = ", ".join(f"{k} {v}" for k, v in (prompts.get("dropped") or {}).items() if v) or "none"
    lines = [
        f"- created: {m.get('created_at')}; method: {methods.get('sft')}; scorer: {methods.get('scorer') or 'none'}",
        f"- rows: {rows or 'none'}",
        f"- prompts: read {prompts.get('read', 'n/a')}, kept {prompts.get('kept', 'n/a')} (dropped: {dropped})",
        f"- time: {(m.get('timings') or {}).get('seconds', 'n/a')} s",
        "",
        "| endpoint | calls | cache hits | retries | failures | input tokens | output tokens | cost ($) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, s in (m.get("stats") or {}).items():
        lines.append(
            f"| {name} | {s.get('calls', 0)} | {s.get('cache_hits', 0)} | {s.get('retries', 0)} | "
            f"{s.get('failures', 0)} | {s.get('prompt_tokens', 0)} | {s.get('completion_tokens', 0)} | "
            f"{s.get('cost', 0.0):.4f} |"
        )
    return lines


def _stats(values: list[float]) -> str:
    import statistics

    if not values:
        return "n/a"
    mean, median = statistics.fmean(values), statistics.median(values)
    return f"mean {mean:.2f}, median {median:.2f}, min {min(values):.2f}, max {max(values):.2f}"


def _scores(dpo: dict[str, list] | None) -> list[str]:
    if not dpo or not dpo["score_chosen"]:
        return ["n/a (no dpo config in this version)"]
    margins = [c - r for c, r in zip(dpo["score_chosen"], dpo["score_rejected"], strict=True)]
    return [
        f"- pairs: {len(margins)}",
        f"- chosen: {_stats(dpo['score_chosen'])}",
        f"- rejected: {_stats(dpo['score_rejected'])}",
        f"- margin: {_stats(margins)}",
    ]


def _lengths(data: dict[str, Any]) -> list[str]:
    dpo = data["dpo"] or {}
    found = {"SFT answers": data["sft_lengths"], "chosen": dpo.get("chosen_len"), "rejected": dpo.get("rejected_len")}
    lines = [f"- {name} (characters): {_stats(values)}" for name, values in found.items() if values]
    return lines or ["n/a (no sft or dpo config in this version)"]


def _calls(steps: list[dict[str, Any]] | None) -> list[str]:
    if not steps:
        return ["n/a (no trace config in this version)"]
    lines = ["| stage | kind | model | steps per prompt | tokens per prompt |", "|---|---|---|---|---|"]
    lines += [
        f"| {s['stage']} | {s['kind']} | {s['model']} | {s['steps_per_prompt']:.2f} | {s['tokens_per_prompt']:.0f} |"
        for s in steps
    ]
    return lines + ["", "A step is one answer or verdict in the trace: an n=K sampling call gives K steps."]


def _failures(failures: dict[str, int] | None) -> list[str]:
    if not failures:
        return ["none (every prompt produced a row or was dropped by a filter)"]
    return [f"- {reason}: {n}" for reason, n in failures.items()]


def _consistency(swap: dict[str, int] | None) -> list[str]:
    if not swap:
        return ["position-swap disagreement: n/a (no pairwise verdicts in the trace)"]
    rate = swap["disagree"] / swap["judged"]
    return [
        f"position-swap disagreement: {rate:.1%} ({swap['disagree']} of {swap['judged']} pairwise judgements "
        "changed when the answers swapped places; those count as ties)"
    ]


def _cut(text: Any) -> str:
    text = str(text or "").strip()
    return text if len(text) <= EXAMPLE_CHARS else text[:EXAMPLE_CHARS] + " [...]"


def _quote(text: Any) -> list[str]:
    return ["> " + line for line in _cut(text).splitlines()] or ["> "]


def _example_lines(data: dict[str, Any]) -> list[str]:
    lines: list[str] = []
    for i, ex in enumerate(data["examples"], 1):
        messages = ex["row"]["messages"]
        lines += [f"### SFT example {i} ({ex['row']['prompt_id']})", "", "**Prompt**", ""]
        for msg in messages[:-1]:
            lines += [f"*{msg['role']}*", "", *_quote(msg["content"]), ""]
        for s in (s for s in ex["steps"] if s["kind"] in ("proposal", "sample", "answer")):
            mark = "selected" if s["selected"] else "not selected"
            lines += [
                f"**{s['kind']} {s['agent'] or s['model']}** (layer {s['layer']}, {s['model']}, {mark})",
                "",
                *_quote(s["text"]),
                "",
            ]
        lines += ["**Final answer**", "", *_quote(messages[-1]["content"]), ""]
    for i, pair in enumerate(data["pairs"], 1):
        lines += [
            f"### DPO pair {i} ({pair['prompt_id']})",
            "",
            "**Prompt**",
            "",
            *_quote(pair["prompt"][-1]["content"]),
            "",
            f"**Chosen** (score {pair['score_chosen']:.3g}, {pair['chosen_model']})",
            "",
            *_quote(pair["chosen"][-1]["content"]),
            "",
            f"**Rejected** (score {pair['score_rejected']:.3g}, {pair['rejected_model']})",
            "",
            *_quote(pair["rejected"][-1]["content"]),
            "",
        ]
    return lines or ["n/a (no sft or dpo rows)"]
