"""The run report of a data set version: `report.md` and `report/*.png`, written with every version.

    from moaa.dataset.run_report import write_report
    write_report(Path("data/local-moa/v3"), Path("out"))   # -> out/report.md (a version already has its own)

Sections: Summary (rows, prompts, calls/tokens/cost per endpoint from `moaa_manifest.json`), Scores
(chosen vs rejected), Lengths (SFT answers, chosen, rejected), Calls and tokens (trace steps and
tokens per prompt by stage, kind and model), Failures (by stage and reason), Judge consistency
(pairwise position-swap disagreement), Examples (a prompt with its proposers' answers and the
final answer; a DPO pair with its scores). Statistics are read from the parquet shards a row
group at a time with pyarrow (moaa.dataset.columns); a plot whose config is absent is skipped.
Plots (moaa.dataset.report_plots) use matplotlib's Agg canvas (no display, no global pyplot
state). moaa.dataset.versions writes the report into the version's staging folder
(`stage_report`), before the manifest: its files are hashed with every other file, and the
manifest records a digest of what the plots are drawn from (`report_plots`). When the
parent version's report records the same digest (a re-run of a finished config), its verified PNGs
are copied instead of drawn. The markdown is always rendered.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Any

from moaa.dataset.columns import GroupSums, head, message_lengths, pylists, read_batches, shard_files
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


def collect_report(version_dir: Path, manifest: dict[str, Any] | None = None) -> dict[str, Any]:
    """Every number and example the report shows; a key is None when its config is absent.
    `manifest`: the version's (read from the folder when not given)."""
    from moaa.dataset.manifest import read_manifest

    manifest = read_manifest(version_dir) if manifest is None else manifest
    has = {c: bool(shard_files(version_dir, c)) for c in ("sft", "dpo", "trace", "failures")}
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
    if has["sft"]:
        batches = read_batches(version_dir, "sft", ["messages"])
        data["sft_lengths"] = [n for b in batches for n in message_lengths(b.column("messages"), -1, missing=0)]
    if has["dpo"]:
        dpo: dict[str, list] = {"score_chosen": [], "score_rejected": [], "chosen_len": [], "rejected_len": []}
        for batch in read_batches(version_dir, "dpo", ["score_chosen", "score_rejected", "chosen", "rejected"]):
            dpo["score_chosen"] += batch.column("score_chosen").to_pylist()
            dpo["score_rejected"] += batch.column("score_rejected").to_pylist()
            dpo["chosen_len"] += message_lengths(batch.column("chosen"), -1, missing=0)
            dpo["rejected_len"] += message_lengths(batch.column("rejected"), -1, missing=0)
        data["dpo"] = dpo
        data["pairs"] = head(version_dir, "dpo", 2)
    if has["trace"]:
        data["steps"] = _steps(version_dir)
        data["swap"] = _swap(version_dir)
    if has["failures"]:
        grouped = GroupSums(["stage", "reason"])
        for batch in read_batches(version_dir, "failures", ["stage", "reason"]):
            grouped.add(pylists(batch, ["stage", "reason"]))
        # Ties in a stable order: the failures plot (and its digest) must not change between runs.
        counts = sorted(grouped.sorted(), key=lambda group: -group[1]["rows"])
        data["failures"] = {f"{stage}:{reason}": t["rows"] for (stage, reason), t in counts}
    if has["sft"]:
        data["examples"] = _examples(version_dir, has["trace"], 2)
    return data


def _steps(version_dir: Path) -> list[dict[str, Any]]:
    """Per (stage, kind, model): trace steps and tokens per prompt of that stage."""
    grouped = GroupSums(["stage", "kind", "model"], ("tokens",))
    prompts: dict[Any, set[str]] = {}  # the prompts of each stage: ~70 bytes each, freed on return
    names = ["stage", "kind", "model", "prompt_id", "prompt_tokens", "completion_tokens"]
    for batch in read_batches(version_dir, "trace", names):
        columns = pylists(batch, names)
        pairs = zip(columns["prompt_tokens"], columns["completion_tokens"], strict=True)
        columns["tokens"] = [None if p is None or c is None else p + c for p, c in pairs]
        grouped.add(columns)
        for stage, prompt_id in zip(columns["stage"], columns["prompt_id"], strict=True):
            prompts.setdefault(stage, set()).add(prompt_id)
    out = []
    for (stage, kind, model), totals in grouped.sorted():
        steps, tokens, stage_prompts = totals["rows"], totals["tokens_sum"], len(prompts[stage])
        out.append({"stage": stage, "kind": kind, "model": model, "steps": steps, "tokens": tokens,
                    "stage_prompts": stage_prompts, "steps_per_prompt": steps / stage_prompts,
                    "tokens_per_prompt": tokens / stage_prompts})  # fmt: skip
    return out


_AGREE = re.compile(r'"agree":\s*(true|false)')


def _swap(version_dir: Path) -> dict[str, int] | None:
    """Pairwise judgements that agree / disagree across the two orders, or None without any."""
    found = {"true": 0, "false": 0}
    for batch in read_batches(version_dir, "trace", ["kind", "meta"]):
        columns = pylists(batch, ["kind", "meta"])
        for kind, meta in zip(columns["kind"], columns["meta"], strict=True):
            if kind == "verdict" and meta:
                for agree in _AGREE.findall(meta):
                    found[agree] += 1
    total = found["true"] + found["false"]
    return {"judged": total, "disagree": found["false"]} if total else None


def _examples(version_dir: Path, has_trace: bool, n: int) -> list[dict[str, Any]]:
    rows = head(version_dir, "sft", n)
    ids = {r["prompt_id"] for r in rows}
    steps: list[dict[str, Any]] = []
    if has_trace:
        for batch in read_batches(version_dir, "trace"):
            columns = pylists(batch, ["prompt_id", "stage"])
            for row, (prompt_id, stage) in enumerate(zip(columns["prompt_id"], columns["stage"], strict=True)):
                if prompt_id in ids and stage == "sft":
                    steps += batch.slice(row, 1).to_pylist()
        steps.sort(key=lambda s: tuple((s[k] is not None, s[k] or 0) for k in ("turn", "layer", "index")))
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
        *_instructions(((m.get("run") or {}).get("summary") or {}).get("instructions")),
        f"- time: {(m.get('timings') or {}).get('seconds', 'n/a')} s",
        *_verification(counts.get("stages") or {}, methods),
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


def _instructions(made: dict[str, Any] | None) -> list[str]:
    """The instruction stage's counts, where the run synthesized its prompts."""
    if not made:
        return []
    drops = ", ".join(f"{k} {v}" for k, v in made["dropped"].items()) or "none"
    return [
        f"- instructions (synthesized prompts): {made['batches']} batch(es), written {made['written']}, "
        f"answered {made['answered']}, kept {made['kept']} (dropped: {drops})"
    ]


def _verification(stages: dict[str, Any], methods: Any) -> list[str]:
    from moaa.verify.report import verification_lines

    method = (methods.get("sft") if isinstance(methods, dict) else None) or "sft"
    return [f"- verification ({stage}): {text}" for stage, text in verification_lines(stages, method)]


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
