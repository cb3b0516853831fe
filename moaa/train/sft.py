"""Supervised fine-tuning of the student on the `sft` config of a data set version (TRL SFTTrainer).

Usage: moaa train sft [--data NAME[@vN]] [--model PATH|HUB_ID] [--config configs/train/sft.yaml]
       [--set max_steps=60 ...] [--output DIR]

Rows are the `messages` column (the conversation with the MoA answer as the last assistant turn);
SFTTrainer applies the student's chat template. The default student is the embedded local model.
"""

from __future__ import annotations

from typing import Any

from moaa.train.trainer import TrainResult, train

DEFAULT_CONFIG = "configs/train/sft.yaml"


def build_sft_trainer(model: Any, args: Any, rows: Any, tokenizer: Any, peft_config: Any) -> Any:
    from trl import SFTTrainer

    return SFTTrainer(model=model, args=args, train_dataset=rows, processing_class=tokenizer, peft_config=peft_config)


def run_sft(**kwargs: Any) -> TrainResult:
    """Train with SFT; keywords as `moaa.train.trainer.train` (data, model, config, overrides, output...)."""
    kwargs.setdefault("config", DEFAULT_CONFIG)
    return train("sft", build_sft_trainer, **kwargs)
