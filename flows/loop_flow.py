"""The self-improvement loop as one Prefect flow: per round, MoA data (a sub-flow running the pipeline),
SFT, student-sampled judged pairs (the pipeline again), DPO and eval (tasks). The logic, stop rule
and lineage live in moaa.train.loop; this module only orchestrates.

Usage: moaa train loop [--data-config configs/local.yaml] [--rounds 2] [--min-gain 0.05] ...
   or: python -c "from flows.loop_flow import self_improvement_loop; self_improvement_loop({'rounds': 1})"
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow, task
from prefect.cache_policies import NONE

from moaa.config import MoaaConfig, dump_config, parse_config
from moaa.train.loop import LoopSettings, LoopSteps, run_loop


@flow(name="moaa-loop-data", log_prints=True)
def loop_data(config: dict) -> dict:
    """One data set version from a resolved run config (the moaa pipeline)."""
    from flows.pipeline_flow import run_pipeline

    return run_pipeline(parse_config(config, source="loop data config"), base_dir=Path.cwd())


def _make_data(config: MoaaConfig) -> dict:
    from flows.pipeline_flow import task_runner_for

    return loop_data.with_options(task_runner=task_runner_for(config))(dump_config(config))


@task(name="sft", cache_policy=NONE)
def sft_task(**kwargs: Any) -> Any:
    from moaa.train.sft import run_sft

    return run_sft(**kwargs)


@task(name="dpo", cache_policy=NONE)
def dpo_task(**kwargs: Any) -> Any:
    from moaa.train.dpo import run_dpo

    return run_dpo(**kwargs)


@task(name="eval", cache_policy=NONE)
def eval_task(**kwargs: Any) -> Any:
    from moaa.train.evaluate import run_eval

    return run_eval(**kwargs)


@flow(name="moaa-self-improvement", log_prints=True)
def self_improvement_loop(settings: dict) -> dict:
    """Rounds of MoA data -> SFT -> student pairs -> DPO -> eval until N rounds or a small gain."""
    steps = LoopSteps(make_data=_make_data, sft=sft_task, dpo=dpo_task, evaluate=eval_task)
    summary = run_loop(LoopSettings.model_validate(settings), steps)
    _post_artifact(summary)
    return summary


def _post_artifact(summary: dict) -> None:
    try:
        from prefect.artifacts import create_markdown_artifact

        create_markdown_artifact(markdown=summary["table"], key="moaa-loop", description="self-improvement rounds")
    except Exception:  # noqa: BLE001 - an artifact is a convenience, never fatal
        pass
