"""One training run, whatever the algorithm: settings, data, model, TRL trainer, run folder.

`moaa.train.sft` and `moaa.train.dpo` pass the piece that differs (how to build the TRL trainer,
which model to start from); this module reads the data set version, loads the student, trains,
and writes the run folder: the weights (or LoRA adapter) with the tokenizer, README.md (model
card), `train_settings.json`, `metrics.json` (final metrics and every logged step), and last
`lineage.json` (data set version + parent model), which marks the run finished.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from moaa.errors import InputError
from moaa.models.student import describe_model, load_model, load_tokenizer, pin_adapter_base, resolve_model, save_merged
from moaa.train.data import DEFAULT_ROOT, DatasetVersion, find_dataset, load_rows
from moaa.train.model_card import write_model_card
from moaa.train.runs import DEFAULT_RUNS, new_run_dir, write_lineage
from moaa.train.settings import TrainSettings, build_peft_config, build_trainer_config, load_settings

log = logging.getLogger(__name__)

# (model, args, train_rows, tokenizer, peft_config) -> a TRL trainer
BuildTrainer = Callable[[Any, Any, Any, Any, Any], Any]


@dataclass
class TrainResult:
    kind: str
    output: Path
    dataset: DatasetVersion
    base: dict[str, Any]
    rows: int
    metrics: dict[str, Any]
    log_history: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0

    def summary(self) -> str:
        loss = self.metrics.get("train_loss")
        steps = self.metrics.get("global_step")
        per_step = self.metrics.get("train_runtime", 0.0) / steps if steps else 0.0
        return (
            f"{self.kind}: {self.rows} rows of {self.dataset.ref}, {steps} steps ({per_step:.1f} s/step), "
            f"train_loss {loss:.4f}, {self.seconds:.0f} s in all -> {self.output}"
            if loss is not None
            else f"{self.kind}: finished -> {self.output}"
        )


def prepare_output(output: str | Path | None, kind: str, dataset: DatasetVersion, runs_root: str | Path) -> Path:
    if output is None:
        return new_run_dir(kind, f"{dataset.name}-{dataset.version}", runs_root)
    out = Path(output)
    if out.exists() and any(out.iterdir()):
        raise InputError(f"{out} already exists and is not empty; pass a new --output folder")
    out.mkdir(parents=True, exist_ok=True)
    return out


def train(
    kind: str,
    build: BuildTrainer,
    *,
    data: str | None = None,
    model: str | None = None,
    config: str | Path | None = None,
    overrides: list[str] | None = None,
    output: str | Path | None = None,
    data_root: str | Path = DEFAULT_ROOT,
    runs_root: str | Path = DEFAULT_RUNS,
    default_model: Callable[[DatasetVersion], str | None] = lambda dataset: None,
    merge: bool = False,
    extra_parents: list[dict[str, Any]] | None = None,
) -> TrainResult:
    """Train `kind` ('sft'/'dpo') on the train split of a data set version; returns the run folder + metrics."""
    started = time.time()
    settings = load_settings(kind, config, overrides)  # fail fast on a bad key, before loading anything
    dataset = find_dataset(data, data_root, config=kind)
    rows = load_rows(dataset, kind, "train")
    ref = resolve_model(model or settings.model.get("model_name_or_path") or default_model(dataset))
    base = describe_model(ref)
    out = prepare_output(output, kind, dataset, runs_root)
    log.info("%s: %s on %s (%d rows) -> %s", kind, ref, dataset.ref, len(rows), out)
    tokenizer, net = load_tokenizer(ref), load_model(ref)
    args = build_trainer_config(settings, out)
    peft_config = build_peft_config(settings)
    trainer = build(net, args, rows, tokenizer, peft_config)
    result = trainer.train()
    trainer.save_model(str(out))
    tokenizer.save_pretrained(str(out))
    if peft_config is not None:
        pin_adapter_base(out, ref)
    metrics = dict(result.metrics) | {"global_step": result.global_step}
    history = list(trainer.state.log_history)
    _write_records(out, settings, metrics, history)
    write_model_card(
        out, name=out.name, kind=kind, dataset=dataset.to_dict(), rows=len(rows), base=base,
        settings=settings.as_dict(), metrics=metrics, log_history=history, adapter=peft_config is not None,
    )  # fmt: skip
    if merge:
        save_merged(str(out), out / "merged")
    del trainer, net
    lineage_extra = {"base_model": base, "settings": settings.as_dict(), "metrics": metrics}
    write_lineage(out, kind, [dataset.to_dict(), base, *(extra_parents or [])], **lineage_extra)
    res = TrainResult(kind, out, dataset, base, len(rows), metrics, history, time.time() - started)
    log.info("%s", res.summary())
    return res


def _write_records(out: Path, settings: TrainSettings, metrics: dict[str, Any], history: list[dict[str, Any]]) -> None:
    (out / "train_settings.json").write_text(json.dumps(settings.as_dict(), indent=2, default=str) + "\n")
    (out / "metrics.json").write_text(json.dumps({"final": metrics, "log_history": history}, indent=2) + "\n")
