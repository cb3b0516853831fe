"""The mixture's SFT answers of this run, read for the preference stage (preference.include_sft_answer).

The SFT stage runs first in the same run (moaa.work.stage_shard.STAGES) and writes its rows to
`WORK/sft/shard-NNNNN/rows.jsonl`; the preference shards of the same prompts have the same numbers
when they split the same prompts (prompts.schedule all: the preference prompts are the first
`preference.limit` of the SFT's). So a preference shard reads its namesake's rows, and scans every
SFT shard only when its prompts are not all in that namesake's input (a scheduled run's shards).
A prompt whose SFT stage failed or was dropped has no answer here: the pool goes without it.
`include_sft_answer: NAME@vN` reads that version's `sft` rows instead (a pinned version: never edited).
"""

from __future__ import annotations

import json
from pathlib import Path

from moaa.config import MoaaConfig
from moaa.preference.pool import SFTAnswer
from moaa.rows import Prompt
from moaa.work.shards import read_jsonl


def read_sft_answers(config: MoaaConfig, out_dir: Path, prompts: list[Prompt]) -> dict[str, SFTAnswer]:
    """{prompt id: the SFT row's last assistant message} for `prompts`, from the run's SFT shards (or
    the version `include_sft_answer` names)."""
    wanted = {p.prompt_id for p in prompts}
    ref = config.preference.include_sft_answer
    if isinstance(ref, str):
        return _from_version(Path(config.output.root), ref, wanted)
    sft = out_dir.parent.parent / "sft"
    namesake = {r.get("prompt_id") for r in read_jsonl(sft / "inputs" / f"{out_dir.name}.jsonl")}
    folders = [sft / out_dir.name] if wanted <= namesake else sorted(sft.glob("shard-*"))
    model = mixture_model(config)
    found: dict[str, SFTAnswer] = {}
    for folder in folders:
        for row in read_jsonl(folder / "rows.jsonl"):
            if row.get("prompt_id") in wanted and (text := _last_answer(row)) is not None:
                found[row["prompt_id"]] = SFTAnswer(text, model)
    return found


def _from_version(root: Path, ref: str, wanted: set[str]) -> dict[str, SFTAnswer]:
    """The same from a written version's `sft` config (its parquet shards, a row group at a time)."""
    from moaa.dataset.columns import read_batches
    from moaa.dataset.versions import resolve_version

    folder = resolve_version(root, ref)
    manifest = json.loads((folder / "moaa_manifest.json").read_text(encoding="utf-8"))
    model = _writer_model(manifest.get("config") or {}) or ref
    found: dict[str, SFTAnswer] = {}
    for batch in read_batches(folder, "sft", ["prompt_id", "messages"]):
        for row in batch.to_pylist():
            if row.get("prompt_id") in wanted and (text := _last_answer(row)) is not None:
                found[row["prompt_id"]] = SFTAnswer(text, model)
    return found


def _last_answer(row: dict) -> str | None:
    """An SFT row's final answer: its last assistant message, exactly as written."""
    answer = next((m for m in reversed(row.get("messages") or []) if m.get("role") == "assistant"), None)
    return answer["content"] if answer is not None and isinstance(answer.get("content"), str) else None


def _writer_model(config: dict) -> str | None:
    """A version's recorded config: the model of its aggregator (or first proposer), if it names one."""
    sft = config.get("sft") or {}
    writer = sft.get("aggregator") or (sft.get("proposers") or [None])[0] or {}
    return ((config.get("endpoints") or {}).get(writer.get("endpoint")) or {}).get("model")


def mixture_model(config: MoaaConfig) -> str:
    """The model that writes the mixture's final text: the aggregator's, or a single model's."""
    writer = config.sft.aggregator or config.sft.proposers[0]
    return config.endpoints[writer.endpoint].model
