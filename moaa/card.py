"""The dataset card (README.md) of a version, written from its data with polars.

Its YAML header is what the Hub and `datasets.load_dataset` read (license, tags, `configs:` with
data_files per split); the body says what the run did, with which methods and models, the row
counts, token use and cost per endpoint, length and score statistics, sample rows, and how to
load and train on it. Statistics are computed lazily over the parquet shards (streaming engine),
so a 100k-prompt version is summarised without loading it whole.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

SAMPLE_CHARS = 400  # sample rows are cut here so the card stays readable
CONFIG_DOCS = {
    "sft": "`messages` [{role, content}] (the final answers as assistant turns), `prompt_id`, `source`, "
    "`method`, `models` [str], `category`. For `trl sft`.",
    "dpo": "`prompt` [{role, content}], `chosen` / `rejected` [one assistant message each], `score_chosen`, "
    "`score_rejected`, `chosen_model`, `rejected_model`, `prompt_id`. For `trl dpo`.",
    "trace": "every intermediate answer and judge verdict: `prompt_id`, `stage`, `kind`, `text`, `agent`, "
    "`model`, `role`, `turn`, `layer`, `index`, `selected`, `prompt_tokens`, `completion_tokens`, "
    "`latency_s`, `finish_reason`, `cached`, `score`, `meta` (JSON text).",
    "failures": "prompts that produced no row: `prompt_id`, `stage`, `reason`, `error`. One `train` split "
    "(not split by prompt).",
}


def write_card(
    folder: Path,
    info: Any,
    *,
    rows: dict[str, dict[str, int]],
    config: dict[str, Any],
    run_info: dict[str, Any],
    license: str,
    tags: list[str],
    parent: str | None,
) -> dict[str, Any]:
    """Write `folder/README.md` for version `info` (name, version, path) whose data is in folder.

    `config` and `run_info` must already be scrubbed of secrets (write_version does it).
    Returns the statistics shown (see compute_stats); the manifest records some of them."""
    stats = compute_stats(folder, rows)
    repo_id = (config.get("output") or {}).get("publish_repo_id")
    body = [
        f"# {info.name} {info.version}",
        "",
        summary_sentence(rows, config, run_info, stats),
        "",
        *_made_section(config, run_info, stats, parent),
        *_counts_section(rows, run_info),
        *_cost_section(config, run_info.get("stats") or {}),
        *_stats_section(stats),
        *_samples_section(folder, rows),
        *_load_section(info, rows, repo_id),
        "## Configs and columns",
        "",
        *(f"- **{cfg}**: {CONFIG_DOCS[cfg]}" for cfg in rows),
        "",
        "Train/test is assigned per `prompt_id`, so a prompt is in the same split in every config and "
        "test prompts are never trained on. A config or split without rows is absent.",
        "",
    ]
    path = folder / "README.md"
    path.write_text(_yaml_header(folder, info.name, rows, license, tags) + "\n".join(body), encoding="utf-8")
    return stats


def _yaml_header(folder: Path, name: str, rows: dict[str, dict[str, int]], license: str, tags: list[str]) -> str:
    import yaml

    configs = []
    for cfg, splits in rows.items():
        entry: dict[str, Any] = {"config_name": cfg}
        # Exact file names (they carry a content hash), not a glob: datasets' cache key then
        # differs between versions, so `load_dataset(DIR, CONFIG)` never returns another version's rows.
        entry["data_files"] = [{"split": s, "path": _files(folder, cfg, s)} for s in splits]
        if cfg == next(iter(rows)):
            entry["default"] = True
        configs.append(entry)
    meta = {
        "license": license,
        "tags": list(dict.fromkeys(["moaa", "synthetic", "mixture-of-agents", *tags])),
        "task_categories": ["text-generation"],
        "pretty_name": name,
        "size_categories": [_size_category(max(sum(s.values()) for s in rows.values()))],
        "configs": configs,
    }
    return "---\n" + yaml.safe_dump(meta, sort_keys=False, allow_unicode=True) + "---\n\n"


def _files(folder: Path, cfg: str, split: str) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in (folder / "data" / cfg).glob(f"{split}-*.parquet"))


def _size_category(n: int) -> str:
    bounds = [(1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M")]
    return next((label for bound, label in bounds if n < bound), "1M<n<10M")


def _scan(folder: Path, cfg: str):
    import polars as pl

    return pl.scan_parquet(str(folder / "data" / cfg / "*.parquet"))


def _describe(lf: Any, columns: dict[str, Any]) -> dict[str, dict[str, float | None]]:
    """{name: {mean, median, p95, min, max}} of each expression, in one streaming pass."""
    aggs = []
    for name, expr in columns.items():
        aggs += [
            expr.mean().alias(f"{name}|mean"),
            expr.median().alias(f"{name}|median"),
            expr.quantile(0.95).alias(f"{name}|p95"),
            expr.min().alias(f"{name}|min"),
            expr.max().alias(f"{name}|max"),
        ]
    got = lf.select(aggs).collect(engine="streaming").to_dicts()[0]
    out: dict[str, dict[str, float | None]] = {}
    for key, value in got.items():
        name, stat = key.split("|")
        out.setdefault(name, {})[stat] = None if value is None else float(value)
    return out


def compute_stats(folder: Path, rows: dict[str, dict[str, int]]) -> dict[str, Any]:
    """Length and score statistics, methods, models and failure reasons, read from the shards."""
    import polars as pl

    content = lambda col, pick: pl.col(col).list.eval(pl.element().struct.field("content")).list.get(pick)  # noqa: E731
    stats: dict[str, Any] = {}
    if "sft" in rows:
        lf = _scan(folder, "sft")
        stats["sft"] = _describe(
            lf, {"answer chars": content("messages", -1).str.len_chars(), "turns": pl.col("messages").list.len()}
        )
        stats["methods"] = lf.group_by("method").len().sort("method").collect().rows()
        stats["models"] = (
            lf.select(pl.col("models").explode().drop_nulls().unique().sort()).collect().to_series().to_list()
        )
    if "dpo" in rows:
        stats["dpo"] = _describe(
            _scan(folder, "dpo"),
            {
                "chosen chars": content("chosen", 0).str.len_chars(),
                "rejected chars": content("rejected", 0).str.len_chars(),
                "score_chosen": pl.col("score_chosen"),
                "score_rejected": pl.col("score_rejected"),
                "margin": pl.col("score_chosen") - pl.col("score_rejected"),
            },
        )
    if "trace" in rows:
        stats["trace"] = (
            _scan(folder, "trace")
            .group_by("stage", "kind")
            .agg(
                pl.len().alias("steps"),
                pl.col("score").mean().alias("mean score"),
                pl.col("completion_tokens").sum().alias("completion tokens"),
            )
            .sort("stage", "kind")
            .collect()
            .rows()
        )
    if "failures" in rows:
        stats["failures"] = (
            _scan(folder, "failures").group_by("stage", "reason").len().sort("stage", "reason").collect().rows()
        )
    return stats


def summary_sentence(
    rows: dict[str, dict[str, int]], config: dict[str, Any], run_info: dict[str, Any], stats: dict[str, Any]
) -> str:
    """What the run did, in one sentence (run_info's summary_text when the pipeline gave one)."""
    if run_info.get("summary_text"):
        return str(run_info["summary_text"])
    total = lambda cfg: sum(rows.get(cfg, {}).values())  # noqa: E731
    source = (run_info.get("prompt_source") or {}).get("label", "the configured prompts")
    models = stats.get("models") or [e.get("model") for e in (config.get("endpoints") or {}).values()]
    return (
        f"Prompts from {source} answered with {methods_text(run_info, stats)} by "
        f"{', '.join(map(str, models)) or 'the configured models'}: {total('sft')} SFT rows, "
        f"{total('dpo')} DPO pairs, {total('failures')} failed prompts."
    )


def methods_text(run_info: dict[str, Any], stats: dict[str, Any]) -> str:
    """run_info's methods (a list, or a dict like {sft: moa, scorer: judge}), else the rows' methods."""
    methods = run_info.get("methods")
    if isinstance(methods, dict):
        return ", ".join(f"{k}: {v}" for k, v in methods.items() if v) or "-"
    return ", ".join(map(str, methods or [m for m, _ in stats.get("methods", [])])) or "-"


def _flatten(data: dict[str, Any], prefix: str = "") -> list[list[Any]]:
    """[[dotted key, number]] of a nested counts dict."""
    out: list[list[Any]] = []
    for key, value in data.items():
        if isinstance(value, dict):
            out += _flatten(value, f"{prefix}{key}.")
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            out.append([f"{prefix}{key}", value])
    return out


def _table(headers: list[str], rows: list[list[Any]]) -> list[str]:
    fmt = lambda v: "–" if v is None else f"{v:,.3f}".rstrip("0").rstrip(".") if isinstance(v, float) else str(v)  # noqa: E731
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    return lines + ["| " + " | ".join(fmt(v) for v in row) + " |" for row in rows] + [""]


def _made_section(config: dict, run_info: dict, stats: dict, parent: str | None) -> list[str]:
    source = run_info.get("prompt_source") or {}
    endpoints = config.get("endpoints") or {}
    lines = ["## How it was made", ""]
    lines.append(f"- Methods: {methods_text(run_info, stats)}")
    lines.append("- Models: " + (", ".join(f"`{n}` ({e.get('model')})" for n, e in endpoints.items()) or "–"))
    if stats.get("models"):
        lines.append(f"- Models named in SFT rows: {', '.join(stats['models'])}")
    lines.append(f"- Prompt source: {source.get('label', '–')} (fingerprint `{source.get('fingerprint', '–')}`)")
    lines.append(f"- Parent version: {parent or 'none'}")
    return lines + ["", "The resolved config, package versions and file hashes are in `moaa_manifest.json`.", ""]


def _counts_section(rows: dict[str, dict[str, int]], run_info: dict) -> list[str]:
    lines = [
        "## Rows",
        "",
        *_table(["config", "train", "test"], [[c, s.get("train", 0), s.get("test", 0)] for c, s in rows.items()]),
    ]
    flat = _flatten(run_info.get("counts") or {})
    return lines + (["Run counts:", "", *_table(["count", "value"], flat)] if flat else [])


def _cost_section(config: dict, stats: dict) -> list[str]:
    per_endpoint = stats.get("endpoints", stats) if isinstance(stats, dict) else {}
    endpoints = config.get("endpoints") or {}
    rows = []
    for name, c in per_endpoint.items():
        if not isinstance(c, dict):
            continue
        latency = c.get("latency") or {}
        rows.append(
            [
                name,
                (endpoints.get(name) or {}).get("model", "–"),
                c.get("calls"),
                c.get("requests"),
                c.get("retries"),
                c.get("failures"),
                c.get("cache_hits"),
                c.get("prompt_tokens"),
                c.get("completion_tokens"),
                c.get("cost"),
                latency.get("p50"),
                latency.get("p90"),
            ]
        )
    if not rows:
        return []
    headers = [
        "endpoint",
        "model",
        "calls",
        "requests",
        "retries",
        "failures",
        "cache hits",
        "prompt tokens",
        "completion tokens",
        "cost ($)",
        "p50 latency (s)",
        "p90 latency (s)",
    ]
    return ["## Token use and cost", "", *_table(headers, rows)]


def _stats_section(stats: dict) -> list[str]:
    lines = ["## Statistics", ""]
    for cfg in ("sft", "dpo"):
        if cfg in stats:
            lines += [
                f"{cfg}:",
                "",
                *_table(
                    ["", "mean", "median", "p95", "min", "max"],
                    [[k, v["mean"], v["median"], v["p95"], v["min"], v["max"]] for k, v in stats[cfg].items()],
                ),
            ]
    if "methods" in stats:
        lines += _table(["method", "sft rows"], [list(r) for r in stats["methods"]])
    if "trace" in stats:
        lines += _table(
            ["stage", "kind", "steps", "mean score", "completion tokens"], [list(r) for r in stats["trace"]]
        )
    if "failures" in stats:
        lines += _table(["stage", "reason", "failed prompts"], [list(r) for r in stats["failures"]])
    return lines


def sample_rows(folder: Path, cfg: str, n: int = 2) -> list[dict[str, Any]]:
    """The first n rows of a config with long texts cut to SAMPLE_CHARS."""
    return [_cut(r) for r in _scan(folder, cfg).head(n).collect().to_dicts()]


def _cut(value: Any) -> Any:
    if isinstance(value, str):
        return value if len(value) <= SAMPLE_CHARS else value[:SAMPLE_CHARS] + " …"
    if isinstance(value, list):
        return [_cut(v) for v in value]
    if isinstance(value, dict):
        return {k: _cut(v) for k, v in value.items()}
    return value


def _samples_section(folder: Path, rows: dict) -> list[str]:
    lines = ["## Sample rows", ""]
    for cfg in (c for c in ("sft", "dpo") if c in rows):
        sample = json.dumps(sample_rows(folder, cfg, 1), indent=2, ensure_ascii=False)
        lines += [f"{cfg}:", "", "```json", sample, "```", ""]
    return lines


def _load_section(info: Any, rows: dict, repo_id: str | None) -> list[str]:
    local = Path(info.path).as_posix()
    first = next(iter(rows))
    lines = [
        "## Load it",
        "",
        "```python",
        "from datasets import load_dataset",
        "",
        f'ds = load_dataset("{local}", "{first}")  # this folder, offline',
    ]
    if repo_id:
        lines.append(f'ds = load_dataset("{repo_id}", "{first}", revision="{info.version}")  # pinned on the Hub')
    lines += ["```", "", "Train with TRL's CLI:", "", "```bash"]
    for cfg in (c for c in ("sft", "dpo") if c in rows):
        lines.append(
            f"trl {cfg} --model_name_or_path MODEL --dataset_name {repo_id or local} --dataset_config {cfg} "
            f"--output_dir runs/{info.name}-{info.version}-{cfg}"
        )
    return lines + ["```", ""]
