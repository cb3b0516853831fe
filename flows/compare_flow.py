"""`moaa compare` as one Prefect flow: each arm's data (a sub-flow running the pipeline) and SFT (a
task), then the students' matchups (a task). The logic, arms and report live in moaa.train.comparison;
this module only orchestrates.

Usage: moaa compare configs/local.yaml [--arm-b single] [--baseline-agent precise] ...
   or: python -c "from flows.compare_flow import compare_arms; compare_arms({'data_config': 'configs/local.yaml'})"
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow, task
from prefect.cache_policies import NONE

from moaa.config import MoaaConfig, dump_config, parse_config
from moaa.train.comparison import CompareSettings, CompareSteps, run_compare


@flow(name="moaa-compare-data", log_prints=True)
def arm_data(config: dict) -> dict:
    """One arm's data set version from its resolved run config (the moaa pipeline)."""
    from flows.pipeline_flow import run_pipeline

    return run_pipeline(parse_config(config, source="compare arm config"), base_dir=Path.cwd())


def _make_data(config: MoaaConfig) -> dict:
    from flows.pipeline_flow import task_runner_for

    return arm_data.with_options(task_runner=task_runner_for(config))(dump_config(config))


@task(name="sft", cache_policy=NONE)
def sft_task(**kwargs: Any) -> Any:
    from moaa.train.sft import run_sft

    return run_sft(**kwargs)


@task(name="matchups", cache_policy=NONE)
def matchups_task(**kwargs: Any) -> dict:
    from moaa.train.matchups import evaluate_students

    return evaluate_students(**kwargs)


@task(name="dpo", cache_policy=NONE)
def dpo_task(**kwargs: Any) -> Any:
    from moaa.train.dpo import run_dpo

    return run_dpo(**kwargs)


@task(name="pass-rates", cache_policy=NONE)
def pass_rates_task(**kwargs: Any) -> dict:
    from moaa.train.pass_rates import score_students

    return score_students(**kwargs)


@flow(name="moaa-compare", log_prints=True)
def compare_arms(settings: dict) -> dict:
    """Arm A's and arm B's data -> the same student's SFT on each -> A vs B, A vs base, B vs base
    (and, with `verified`, each student's held-out pass rate). Preference recipes: one SFT, then DPO on
    each arm's pairs from it, and base is that SFT model."""
    steps = CompareSteps(make_data=_make_data, sft=sft_task, evaluate=matchups_task, pass_rates=pass_rates_task,
                         dpo=dpo_task)  # fmt: skip
    results = run_compare(CompareSettings.model_validate(settings), steps)
    _post_artifact(results)
    return results


def _post_artifact(results: dict) -> None:
    try:
        from prefect.artifacts import create_markdown_artifact

        from moaa.train.comparison_report import format_summary

        create_markdown_artifact(markdown=format_summary(results), key="moaa-compare", description="A/B of two methods")
    except Exception:  # noqa: BLE001 - an artifact is a convenience, never fatal
        pass
