"""Direct preference optimisation of the student on the `dpo` config of a data set version (TRL DPOTrainer).

Usage: moaa train dpo [--data NAME[@vN]] [--model PATH|HUB_ID] [--config configs/train/dpo.yaml]
       [--set beta=0.1 ...] [--output DIR]

Rows are `prompt` / `chosen` / `rejected` (conversational; TRL applies the chat template). The
starting model is by default the latest finished SFT run trained on the same data set (a DPO run
never silently continues an SFT run made from other data; `--model RUN` chooses one explicitly);
with an SFT LoRA adapter, the adapter is merged into its base first, so the reference model of DPO
is the SFT model (with LoRA, the reference is the same network with the new adapter disabled: no
second copy in memory). The DPO adapter saved records the SFT run as its base, so loading it rebuilds base + SFT + DPO.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from moaa.train.runs import DEFAULT_RUNS, latest_run
from moaa.train.trainer import TrainResult, train

DEFAULT_CONFIG = "configs/train/dpo.yaml"


def build_dpo_trainer(model: Any, args: Any, rows: Any, tokenizer: Any, peft_config: Any) -> Any:
    from trl import DPOTrainer

    return DPOTrainer(model=model, args=args, train_dataset=rows, processing_class=tokenizer, peft_config=peft_config)


def run_dpo(**kwargs: Any) -> TrainResult:
    """Train with DPO; keywords as `moaa.train.trainer.train`. No model: the latest SFT run trained on
    the same data set (never silently one trained on another: that is an error naming both)."""
    kwargs.setdefault("config", DEFAULT_CONFIG)
    runs_root = Path(kwargs.get("runs_root") or DEFAULT_RUNS)
    kwargs.setdefault("default_model", lambda dataset: str(latest_run("sft", runs_root, dataset=dataset.name)))
    return train("dpo", build_dpo_trainer, **kwargs)
