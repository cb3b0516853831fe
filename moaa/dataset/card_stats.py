"""Statistics a dataset card shows, read from a version's parquet shards with pyarrow.

    stats = compute_stats(Path("data/local-moa/v3"), {"sft": {"train": 90, "test": 10}})

Length and score statistics (a row group at a time, only the columns needed, so a 100k-prompt
version is summarised without loading it whole: moaa.dataset.columns), methods and models named
in the SFT rows, trace steps per stage and kind, truncated answers (finish_reason "length") per
stage, and failures by stage and reason.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from moaa.dataset.columns import GroupSums, Values, head, message_lengths, pylists, read_batches

SAMPLE_CHARS = 400  # sample rows are cut here so the card stays readable


def compute_stats(folder: Path, rows: dict[str, dict[str, int]]) -> dict[str, Any]:
    """Length and score statistics, methods, models and failure reasons, read from the shards."""
    import pyarrow.compute as pc

    stats: dict[str, Any] = {}
    if "sft" in rows:
        answers, turns, methods, models = Values(), Values(), GroupSums(["method"]), set()
        for batch in read_batches(folder, "sft", ["messages", "method", "models"]):
            answers.add(message_lengths(batch.column("messages"), -1))  # none for a row with no messages
            turns.add(pc.list_value_length(batch.column("messages")).to_pylist())
            methods.add(pylists(batch, ["method"]))
            models.update(m for m in pc.unique(pc.list_flatten(batch.column("models"))).to_pylist() if m is not None)
        stats["sft"] = {"answer chars": answers.describe(), "turns": turns.describe()}
        stats["methods"] = [(*key, t["rows"]) for key, t in methods.sorted()]
        stats["models"] = sorted(models)
    if "dpo" in rows:
        names = ("chosen chars", "rejected chars", "score_chosen", "score_rejected", "margin")
        found = {name: Values() for name in names}
        for batch in read_batches(folder, "dpo", ["chosen", "rejected", "score_chosen", "score_rejected"]):
            scores = pylists(batch, ["score_chosen", "score_rejected"])
            found["chosen chars"].add(message_lengths(batch.column("chosen"), 0))
            found["rejected chars"].add(message_lengths(batch.column("rejected"), 0))
            found["score_chosen"].add(scores["score_chosen"])
            found["score_rejected"].add(scores["score_rejected"])
            pairs = zip(scores["score_chosen"], scores["score_rejected"], strict=True)
            found["margin"].add([None if c is None or r is None else c - r for c, r in pairs])
        stats["dpo"] = {name: values.describe() for name, values in found.items()}
    if "trace" in rows:
        steps, truncated = GroupSums(["stage", "kind"], ("score", "completion_tokens")), GroupSums(["stage"])
        names = ["stage", "kind", "score", "completion_tokens", "finish_reason"]
        for batch in read_batches(folder, "trace", names):
            columns = pylists(batch, names)
            steps.add(columns)
            reasons = zip(columns["stage"], columns["finish_reason"], strict=True)
            truncated.add({"stage": [stage for stage, reason in reasons if reason == "length"]})
        stats["trace"] = [
            (*key, t["rows"], steps.mean(t, "score"), t["completion_tokens_sum"]) for key, t in steps.sorted()
        ]
        stats["truncated"] = [(*key, t["rows"]) for key, t in truncated.sorted()]
    if "failures" in rows:
        failures = GroupSums(["stage", "reason"])
        for batch in read_batches(folder, "failures", ["stage", "reason"]):
            failures.add(pylists(batch, ["stage", "reason"]))
        stats["failures"] = [(*key, t["rows"]) for key, t in failures.sorted()]
    return stats


def sample_rows(folder: Path, cfg: str, n: int = 2) -> list[dict[str, Any]]:
    """The first n rows of a config with long texts cut to SAMPLE_CHARS."""
    return [_cut(r) for r in head(folder, cfg, n)]


def _cut(value: Any) -> Any:
    if isinstance(value, str):
        return value if len(value) <= SAMPLE_CHARS else value[:SAMPLE_CHARS] + " …"
    if isinstance(value, list):
        return [_cut(v) for v in value]
    if isinstance(value, dict):
        return {k: _cut(v) for k, v in value.items()}
    return value
