"""The run report's plots: drawn off-screen with matplotlib's Agg canvas, or copied from the parent
version when what they are drawn from is the same (`plots_digest`, recorded as `report_plots`).

    from moaa.dataset.report_plots import draw_plots, new_figure
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

IMAGE_DIR = "report"

log = logging.getLogger(__name__)


PLOT_INPUTS = ("dpo", "sft_lengths", "steps", "failures")  # what draw_plots reads of collect_report's data


PLOTS_FORMAT = "moaa-plots-1"  # change with any change to how draw_plots draws


def plots_digest(data: dict[str, Any]) -> str:
    """sha256 of everything draw_plots draws from (plus the drawing code's and matplotlib's version)."""
    import importlib.metadata

    inputs = {key: data[key] for key in PLOT_INPUTS}
    head = {"format": PLOTS_FORMAT, "matplotlib": importlib.metadata.version("matplotlib")}
    return hashlib.sha256(json.dumps([head, inputs], default=str).encode()).hexdigest()


def parent_plots(version_dir: Path, manifest: dict[str, Any], digest: str, target: Path) -> dict[str, Path] | None:
    """The parent version's PNGs copied (verified) into `target/report/` when drawn from equal inputs; else None."""
    from moaa.dataset.manifest import copy_verified, read_manifest
    from moaa.dataset.version_refs import resolve_version
    from moaa.errors import MoaaError

    if not manifest.get("parent"):
        return None
    try:
        parent_dir = resolve_version(version_dir.resolve().parent.parent, manifest["parent"])
        parent = read_manifest(parent_dir)
        recorded = parent["report_plots"]
        if recorded["digest"] != digest:
            return None
        names = {name: rel for name, rel in recorded["files"].items() if rel.startswith(f"{IMAGE_DIR}/")}
        files = {rel: parent["files"][rel] for rel in names.values()}
    except (MoaaError, KeyError, TypeError, AttributeError):
        return None
    if len(names) != len(recorded["files"]) or not copy_verified(parent_dir, target, files):
        log.warning("the plots of %s do not match its manifest; drawing them anew", manifest["parent"])
        return None
    return {name: target / rel for name, rel in names.items()}


def new_figure(width: float = 7.0, height: float = 4.0) -> Any:
    """A matplotlib Figure drawn off-screen (Agg), no pyplot state; the run and compare reports share it."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def draw_plots(data: dict[str, Any], folder: Path) -> dict[str, Path]:
    """The report's PNGs: {name: path}; a plot without data is skipped."""
    out = {}
    dpo, lengths = data["dpo"], {}
    if dpo and dpo["score_chosen"]:
        fig = new_figure()
        ax = fig.add_subplot()
        ax.hist([dpo["score_chosen"], dpo["score_rejected"]], bins=20, label=["chosen", "rejected"])
        ax.set(title="Scores: chosen vs rejected", xlabel="score", ylabel="pairs")
        ax.legend()
        out["scores"] = _save(fig, folder / "scores.png")
    if data["sft_lengths"]:
        lengths["SFT answers"] = data["sft_lengths"]
    if dpo and dpo["chosen_len"]:
        lengths |= {"chosen": dpo["chosen_len"], "rejected": dpo["rejected_len"]}
    if lengths:
        fig = new_figure()
        ax = fig.add_subplot()
        ax.hist(list(lengths.values()), bins=20, label=list(lengths), histtype="step", linewidth=2)
        ax.set(title="Answer lengths", xlabel="characters", ylabel="answers")
        ax.legend()
        out["lengths"] = _save(fig, folder / "lengths.png")
    if data["steps"]:
        out["calls"] = _save(_calls_figure(data["steps"]), folder / "calls.png")
    if data["failures"]:
        fig = new_figure()
        ax = fig.add_subplot()
        ax.barh(list(data["failures"]), list(data["failures"].values()), color="tab:red")
        ax.set(title="Failures by stage and reason", xlabel="prompts")
        fig.tight_layout()
        out["failures"] = _save(fig, folder / "failures.png")
    return out


def _calls_figure(steps: list[dict[str, Any]]) -> Any:
    labels = [f"{s['stage']}/{s['kind']}\n{s['model']}" for s in steps]
    fig = new_figure(10, 1.5 + 0.45 * len(steps))
    left, right = fig.subplots(1, 2, sharey=True)
    left.barh(labels, [s["steps_per_prompt"] for s in steps])
    left.set(title="Trace steps per prompt", xlabel="steps (an n=K call gives K)")
    left.invert_yaxis()
    right.barh(labels, [s["tokens_per_prompt"] for s in steps], color="tab:orange")
    right.set(title="Tokens per prompt", xlabel="prompt + completion tokens")
    fig.tight_layout()
    return fig


def _save(fig: Any, path: Path) -> Path:
    from matplotlib.ticker import MaxNLocator

    for ax in fig.axes:  # counts are whole numbers
        axis = ax.xaxis if ax.get_xlabel() in ("prompts",) else ax.yaxis
        if ax.get_ylabel() in ("pairs", "answers") or axis is ax.xaxis:
            axis.set_major_locator(MaxNLocator(integer=True))
    fig.savefig(path, format="png")
    return path
