"""SMoA's role descriptions for a run: from the config, else generated once per run and kept in its
work folder (`roles.json`: the roles and the call's accounting, which moaa.work.totals folds into the
run's totals like a shard's)."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

from moaa.config import MoaaConfig
from moaa.fileio import write_json_atomic
from moaa.models.stats import RunStats
from moaa.work.run_plan import RunPlan

log = logging.getLogger(__name__)


def run_roles(config: MoaaConfig, plan: RunPlan) -> list[str] | None:
    """SMoA role descriptions: from the config, else generated once per run and kept in the run."""
    smoa = config.sft.smoa
    if config.sft.method != "smoa":
        return None
    if smoa.roles:
        return list(smoa.roles)
    saved = read_roles(plan.work_dir)
    if saved is not None:
        return saved["roles"]
    import asyncio

    from moaa.engine.smoa import generate_roles, run_task
    from moaa.models.session import build_clients

    agent = smoa.role_generator or config.sft.aggregator
    stats = RunStats()
    client = build_clients(config, stats, [agent.endpoint])[agent.endpoint]
    task = run_task(smoa.task, plan.shards["sft"][0][0])
    roles = asyncio.run(generate_roles(len(config.sft.proposers), client, agent, task=task))
    # Kept with the call's accounting, which moaa.work.totals.collect folds into the run totals like a shard's.
    record = {"roles": roles, "stats": stats.to_dict(), "finished_at": time.time()}
    write_json_atomic(plan.work_dir / ROLES_FILE, record)
    return roles


ROLES_FILE = "roles.json"


def read_roles(work_dir: Path) -> dict[str, Any] | None:
    """The run's saved SMoA roles: {"roles", "stats", "finished_at"} (a bare list from older runs)."""
    path = work_dir / ROLES_FILE
    try:
        data = json.loads(path.read_bytes())
    except FileNotFoundError:
        return None
    except ValueError:
        data = None
    if isinstance(data, list) and all(isinstance(r, str) for r in data):
        return {"roles": data, "stats": {}, "finished_at": 0.0}
    if isinstance(data, dict) and isinstance(data.get("roles"), list) and isinstance(data.get("stats", {}), dict):
        return {"roles": data["roles"], "stats": data.get("stats", {}), "finished_at": data.get("finished_at", 0.0)}
    log.warning("%s is damaged (not the run's SMoA roles): generating them again (the call is cached)", path)
    return None
