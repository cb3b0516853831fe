"""The model card (README.md) of a training run: what it was trained on, from what, how, and how it went.

Its YAML header is what the Hub reads (library, base model, tags); the body names the data set
version with its manifest hash, the base model, every resolved setting, the loss curve and final
metrics, and how to load or serve the result.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

TRAINERS = {"sft": "SFTTrainer", "dpo": "DPOTrainer"}
_MAX_LOG_ROWS = 40  # the loss table is thinned to about this many rows
_METRIC_KEYS = ("loss", "learning_rate", "grad_norm", "rewards/accuracies", "rewards/margins", "mean_token_accuracy")


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def loss_table(log_history: list[dict[str, Any]]) -> str:
    """A markdown table of the logged steps (thinned; the last step always kept)."""
    steps = [row for row in log_history if "loss" in row]
    if not steps:
        return "_no training step was logged_"
    stride = max(1, -(-len(steps) // _MAX_LOG_ROWS))
    shown = steps[::stride] + ([steps[-1]] if (len(steps) - 1) % stride else [])
    keys = [k for k in _METRIC_KEYS if any(k in row for row in shown)]
    lines = ["| step | " + " | ".join(keys) + " |", "|---" * (len(keys) + 1) + "|"]
    for row in shown:
        lines.append(f"| {row.get('step', '')} | " + " | ".join(_fmt(row.get(k, "")) for k in keys) + " |")
    return "\n".join(lines)


def render_model_card(
    *, name: str, kind: str, dataset: dict[str, Any], rows: int, base: dict[str, Any], settings: dict[str, Any],
    metrics: dict[str, Any], log_history: list[dict[str, Any]], adapter: bool, output: Path,
) -> str:  # fmt: skip
    """The README.md text of a run folder."""
    base_ref = base.get("ref", "")
    header = {
        "library_name": "peft" if adapter else "transformers",
        "base_model": base_ref,
        "tags": ["moaa", "trl", kind] + (["lora"] if adapter else []),
        "pipeline_tag": "text-generation",
    }
    peft = settings["model"]
    method = f"LoRA (r={peft.get('lora_r', 16)}, alpha={peft.get('lora_alpha', 32)})" if adapter else "full fine-tuning"
    final = {k: v for k, v in metrics.items() if not isinstance(v, (list, dict))}
    body = [
        f"# {name}",
        "",
        f"{kind.upper()} of `{base_ref}` with TRL's `{TRAINERS[kind]}` ({method}) on the `{kind}` config "
        f"of data set **{dataset['ref']}** ({rows} training rows, `train` split; the `test` split is held out).",
        "",
        "## Data",
        "",
        "| data set version | config / split | rows | manifest sha256 | path |",
        "|---|---|---|---|---|",
        f"| {dataset['ref']} | {kind} / train | {rows} | `{dataset.get('manifest_sha256')}` "
        f"| `{dataset.get('path')}` |",
        "",
        "## Base model",
        "",
        f"`{base_ref}`" + (f" (an adapter on `{base['base']}`, merged before training)" if base.get("adapter") else ""),
        "",
        "## Settings",
        "",
        f"From `{settings['source']}` with command-line overrides (TRL field names).",
        "",
        "```yaml",
        yaml.safe_dump(settings["model"] | settings["trainer"], sort_keys=True).rstrip(),
        "```",
        "",
        "## Training metrics",
        "",
        "\n".join(f"- {k}: {_fmt(v)}" for k, v in sorted(final.items())) or "_none_",
        "",
        loss_table(log_history),
        "",
        "## Use",
        "",
        "Sample from it in-process through moaa's chat-client seam (small models):",
        "",
        "```yaml",
        "endpoints:",
        f"  student: {{backend: transformers, model: {output.resolve()}}}",
        "```",
        "",
        "For real workloads, merge it (`moaa train sft|dpo --merge`, or `moaa.models.student.save_merged`) and serve",
        "it with an OpenAI-compatible server (vLLM, llama.cpp), then name that server's `base_url`.",
        "Lineage (data set, parent model) is in `lineage.json`.",
    ]
    return "---\n" + yaml.safe_dump(header, sort_keys=False) + "---\n\n" + "\n".join(body) + "\n"


def write_model_card(folder: Path, **fields: Any) -> Path:
    path = Path(folder) / "README.md"
    path.write_text(render_model_card(output=Path(folder), **fields), encoding="utf-8")
    return path
