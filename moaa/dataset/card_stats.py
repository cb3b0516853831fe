"""Statistics a dataset card shows, read lazily from a version's parquet shards with polars.

    stats = compute_stats(Path("data/local-moa/v3"), {"sft": {"train": 90, "test": 10}})

Length and score statistics (streaming engine, so a 100k-prompt version is summarised without
loading it whole), methods and models named in the SFT rows, trace steps per stage and kind,
truncated answers (finish_reason "length") per stage, and failures by stage and reason.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from moaa.dataset.files import scan_config

SAMPLE_CHARS = 400  # sample rows are cut here so the card stays readable


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

    def content(col: str, pick: int) -> Any:  # null for a row with no messages
        return pl.col(col).list.eval(pl.element().struct.field("content")).list.get(pick, null_on_oob=True)

    stats: dict[str, Any] = {}
    if "sft" in rows:
        lf = scan_config(folder, "sft")
        stats["sft"] = _describe(
            lf, {"answer chars": content("messages", -1).str.len_chars(), "turns": pl.col("messages").list.len()}
        )
        stats["methods"] = lf.group_by("method").len().sort("method").collect().rows()
        stats["models"] = (
            lf.select(pl.col("models").explode().drop_nulls().unique().sort()).collect().to_series().to_list()
        )
    if "dpo" in rows:
        stats["dpo"] = _describe(
            scan_config(folder, "dpo"),
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
            scan_config(folder, "trace")
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
    if "trace" in rows:
        stats["truncated"] = (
            scan_config(folder, "trace")
            .filter(pl.col("finish_reason") == "length")
            .group_by("stage")
            .len()
            .sort("stage")
            .collect()
            .rows()
        )
    if "failures" in rows:
        stats["failures"] = (
            scan_config(folder, "failures").group_by("stage", "reason").len().sort("stage", "reason").collect().rows()
        )
    return stats


def sample_rows(folder: Path, cfg: str, n: int = 2) -> list[dict[str, Any]]:
    """The first n rows of a config with long texts cut to SAMPLE_CHARS."""
    return [_cut(r) for r in scan_config(folder, cfg).head(n).collect().to_dicts()]


def _cut(value: Any) -> Any:
    if isinstance(value, str):
        return value if len(value) <= SAMPLE_CHARS else value[:SAMPLE_CHARS] + " …"
    if isinstance(value, list):
        return [_cut(v) for v in value]
    if isinstance(value, dict):
        return {k: _cut(v) for k, v in value.items()}
    return value
