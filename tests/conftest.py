"""Shared fixtures: a config builder, a Prefect test harness, and fast-retry endpoints."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from moaa.config import MoaaConfig, apply_override, parse_config

ROOT = Path(__file__).resolve().parents[1]

# Never reach the Hub from tests; keep Prefect quiet and local.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")

# The files that take minutes, first: `make test` runs in pytest-xdist workers a file at a time, in this
# order, so none of them starts last and runs alone while the other worker has nothing left to do.
LONGEST_FIRST = ("test_make_data.py", "test_schedule.py", "test_distributed.py", "test_batch_providers.py")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: the rest keep their order


# default.jsonl's checkable prompts carry references; the test server's replies would fail them all.
# Tests of other features read the prompts without them (the verification tests set their own).
NO_REFERENCES = dict.fromkeys(("column", "answer", "tests", "language", "instructions", "kwargs"))


def base_raw(tmp_path: Path, base_url: str = "http://127.0.0.1:9/v1") -> dict[str, Any]:
    """A small valid config as plain data: one test endpoint, 2-layer MoA of 3 proposers, prompts
    read without their references (no answer is checked)."""
    return {
        "name": "test-run",
        "endpoints": {
            "test": {
                "base_url": base_url,
                "model": "test-model",
                "max_retries": 3,
                "backoff_s": 0.01,
                "timeout_s": 5,
            }
        },
        "prompts": {"path": str(ROOT / "configs/prompts/default.jsonl"), "limit": 4, "reference": NO_REFERENCES},
        "sft": {
            "method": "moa",
            "layers": 2,
            "proposers": [{"endpoint": "test", "temperature": 0.7} for _ in range(3)],
            "aggregator": {"endpoint": "test", "temperature": 0.2},
        },
        "output": {"root": str(tmp_path / "data")},
        "run": {"work_dir": str(tmp_path / "work"), "shard_size": 2},
        "cache": {"path": str(tmp_path / "cache.sqlite")},
    }


def make_config(
    tmp_path: Path, base_url: str = "http://127.0.0.1:9/v1", *overrides: str, **sections: Any
) -> MoaaConfig:
    """A validated config; `sections` replace whole top-level keys, `overrides` are --set strings."""
    raw = base_raw(tmp_path, base_url) | sections
    for item in overrides:
        apply_override(raw, item)
    return parse_config(raw, source="test-config")


@pytest.fixture(scope="session")
def prefect_harness():
    """A temporary Prefect API for tests that run flows (session-scoped: it takes seconds to start)."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield
