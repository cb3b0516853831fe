"""The dataset card (README.md) of a version, rendered from its manifest and its data.

    write_card(folder, manifest)                           # the local card, written with the version
    render_card(folder, manifest, repo_id="org/name")      # the card as published (moaa.dataset.hub)

Its YAML header is built with huggingface_hub's DatasetCardData, so it follows the Hub's dataset
card spec: license, language, task categories, tags (`sft`, `dpo`, `synthetic`, ...), size
category from the SFT and DPO rows (trace rows are bookkeeping, not examples), `configs` with the
exact data files of each split, pretty name and the generating models (as served). The body says
how the data was made, rows, token use and cost (to make, and spent by this run), statistics,
quality counts, the preference stage's bias report, samples, and how to load it: from the folder
locally, or `load_dataset("ORG/NAME", CONFIG, revision="vN")` in the card rendered for the Hub.
Everything comes from the manifest, so publishing can render the card again for its destination.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from moaa.dataset import card_sections
from moaa.dataset.card_stats import compute_stats

CARD_NAME = "README.md"
BASE_TAGS = ("moaa", "synthetic", "mixture-of-agents")
SIZE_BOUNDS = ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M"),
               (10_000_000, "1M<n<10M"))  # fmt: skip


def write_card(folder: Path, manifest: dict[str, Any], where: str | None = None) -> dict[str, Any]:
    """Write `folder/README.md` (the local card; `where` is the folder as its load snippet names it).

    Returns the statistics shown (see compute_stats); the manifest records some of them."""
    stats = compute_stats(folder, _rows(manifest))
    text = render_card(folder, manifest, stats=stats, where=where or folder.as_posix())
    (folder / CARD_NAME).write_text(text, encoding="utf-8")
    return stats


def render_card(
    folder: Path,
    manifest: dict[str, Any],
    *,
    repo_id: str | None = None,
    stats: dict[str, Any] | None = None,
    where: str | None = None,
) -> str:
    """The card's text: for the Hub repo `repo_id` when given, else for the folder `where`."""
    rows = _rows(manifest)
    stats = compute_stats(folder, rows) if stats is None else stats
    name, version = str(manifest.get("name")), str(manifest.get("version"))
    body = [
        f"# {name} {version}",
        "",
        card_sections.summary_sentence(rows, manifest, stats),
        "",
        *card_sections.made_section(manifest, stats),
        *card_sections.counts_section(rows, manifest),
        *card_sections.derived_section(manifest),
        *card_sections.cost_section(manifest),
        *card_sections.stats_section(stats),
        *card_sections.quality_section(manifest, stats),
        *card_sections.verification_section(manifest),
        *card_sections.pool_section(manifest),
        *card_sections.bias_section(manifest),
        *card_sections.samples_section(folder, rows),
        *card_sections.load_section(name, version, rows, where or f"{name}/{version}", repo_id),
        *card_sections.configs_section(rows),
    ]
    return f"---\n{card_data(folder, manifest, stats).to_yaml()}\n---\n\n" + "\n".join(body)


def card_data(folder: Path, manifest: dict[str, Any], stats: dict[str, Any]) -> Any:
    """The card's metadata as huggingface_hub's DatasetCardData."""
    from huggingface_hub import DatasetCardData

    rows = _rows(manifest)
    card = manifest.get("card") or {}
    tags = list(dict.fromkeys([*BASE_TAGS, *(c for c in ("sft", "dpo") if c in rows), *card.get("tags", [])]))
    configs = [
        {"config_name": cfg, "data_files": [{"split": s, "path": _files(folder, cfg, s)} for s in splits]}
        | ({"default": True} if i == 0 else {})
        for i, (cfg, splits) in enumerate(rows.items())
    ]
    examples = sum(sum(rows.get(cfg, {}).values()) for cfg in ("sft", "dpo"))
    return DatasetCardData(
        license=card.get("license", "apache-2.0"),
        language=list(card.get("language") or ["en"]),
        task_categories=["text-generation"],
        annotations_creators=["machine-generated"],
        language_creators=["machine-generated"],
        tags=tags,
        size_categories=[size_category(examples)],
        pretty_name=name_of(manifest),
        configs=configs,
        generating_models=card_sections.generating_models(manifest, stats),  # not a Hub field: kept as given
    )


def name_of(manifest: dict[str, Any]) -> str:
    return f"{manifest.get('name')} {manifest.get('version')}"


def size_category(n: int) -> str:
    """The Hub's size bucket for n examples."""
    return next((label for bound, label in SIZE_BOUNDS if n < bound), "10M<n<100M")


def _rows(manifest: dict[str, Any]) -> dict[str, dict[str, int]]:
    return (manifest.get("counts") or {}).get("rows") or {}


def _files(folder: Path, cfg: str, split: str) -> list[str]:
    # Exact file names (they carry a content hash), not a glob: datasets' cache key then differs
    # between versions, so `load_dataset(DIR, CONFIG)` never returns another version's rows.
    return sorted(p.relative_to(folder).as_posix() for p in (folder / "data" / cfg).glob(f"{split}-*.parquet"))
