"""The instruction stage on disk: its batches in the run's work folder, and the prompt source they make.

    work_dir/NAME/instructions-<fingerprint>/   named by the stage's settings, seed file and agents
        batch-K.prompts.jsonl     the kept tasks of batch K (`prompts` rows: moaa.instructions.synthesis)
        batch-K.failures.jsonl    its named drops (failure rows of stage `instructions`)
        batches.json              the finished batches: [{batch, seed, finished_at, counts, stats}]
        prompts.jsonl             every finished batch's kept tasks: the SFT stage's prompt source

A batch's files are written before it is recorded in batches.json, and prompts.jsonl is rebuilt
from the recorded batches, so a run killed mid-batch leaves nothing half-counted: the next run
writes that batch again, with the same seed (its answered calls come from the request cache).
A run makes a new batch when none is recorded, or, with prompts.schedule next or resample, at every
run: its seed is instructions.seed + the batches before it, and it repeats none of their instructions.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from moaa.config import InstructionsConfig, MoaaConfig, PromptSourceConfig, ReferenceColumns, dump_config
from moaa.errors import MoaaError
from moaa.fileio import sha256_file, write_json_atomic, write_jsonl_atomic
from moaa.instructions.seeds import load_seeds
from moaa.instructions.synthesis import Agent, Outcome, Synthesis
from moaa.models.stats import RunStats
from moaa.verify.checks import Verifier

log = logging.getLogger(__name__)

BATCHES = "batches.json"
PROMPTS = "prompts.jsonl"


@dataclass
class Batches:
    """The stage's folder and its finished batches (as batches.json lists them)."""

    folder: Path
    records: list[dict[str, Any]]

    @classmethod
    def read(cls, folder: Path) -> Batches:
        try:
            records = json.loads((folder / BATCHES).read_text(encoding="utf-8"))
        except FileNotFoundError:
            records = []
        except ValueError:
            raise MoaaError(
                f"{folder / BATCHES}: damaged (not JSON); remove the folder {folder} to synthesize again"
            ) from None
        return cls(folder, records)

    def rows(self, kind: str) -> list[dict[str, Any]]:
        """Every recorded batch's rows of `kind` (prompts or failures), in batch order."""
        found: list[dict[str, Any]] = []
        for record in self.records:
            path = self.folder / f"batch-{record['batch']}.{kind}.jsonl"
            found.extend(json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line)
        return found

    def add(self, outcome: Outcome, seed: int, stats: RunStats) -> None:
        """Record a finished batch: its files first, then its entry, then the combined prompt file."""
        batch = len(self.records)
        write_jsonl_atomic(self.folder / f"batch-{batch}.prompts.jsonl", outcome.kept)
        write_jsonl_atomic(self.folder / f"batch-{batch}.failures.jsonl", outcome.drops)
        record = {"batch": batch, "seed": seed, "finished_at": time.time(), "counts": outcome.counts(),
                  "stats": stats.to_dict()}  # fmt: skip
        self.records.append(record)
        write_json_atomic(self.folder / BATCHES, self.records)
        write_jsonl_atomic(self.folder / PROMPTS, self.rows("prompts"))


def stage_folder(config: MoaaConfig, base_dir: Path | None = None) -> Path:
    """The stage's folder: named by what decides its tasks (settings, seed file, agents' models)."""
    cfg = _settings(config)
    data = dump_config(config)
    agents = [a.model_dump(mode="json") for a in [*writers_of(config), *answerers_of(config)]]
    models = {a["endpoint"]: data["endpoints"][a["endpoint"]]["model"] for a in agents}
    blob = {
        # code_share 0 is left out, so a config written before the field names the same folder
        "instructions": cfg.model_dump(mode="json", exclude={"seeds", *(["code_share"] if not cfg.code_share else [])}),
        "seeds": sha256_file(seed_path(cfg, base_dir)) if seed_path(cfg, base_dir).is_file() else None,
        "agents": agents, "models": models,
    }  # fmt: skip
    digest = hashlib.sha256(json.dumps(blob, sort_keys=True).encode()).hexdigest()[:12]
    return Path(config.run.work_dir) / config.name / f"instructions-{digest}"


def synthesize(config: MoaaConfig, base_dir: Path | None = None) -> PromptSourceConfig:
    """Run the stage for `config` (its endpoints reachable: local ones started) and return the SFT
    stage's prompt source: the kept tasks of every finished batch, with the config's prompt filters."""
    cfg = _settings(config)
    seeds = load_seeds(seed_path(cfg, base_dir))
    folder = stage_folder(config, base_dir)
    folder.mkdir(parents=True, exist_ok=True)
    batches = Batches.read(folder)
    if not batches.records or config.prompts.schedule != "all":
        _run_batch(config, cfg, seeds, batches)
    elif batches.records:
        log.info("instructions: batch %d of %s is finished (prompts.schedule all: no new batch)", 0, folder)
    return synthesized_source(config.prompts, folder / PROMPTS)


def _run_batch(config: MoaaConfig, cfg: InstructionsConfig, seeds: list, batches: Batches) -> None:
    from moaa.models.session import build_clients

    batch = len(batches.records)
    seed = cfg.seed + batch
    writers, answerers = writers_of(config), answerers_of(config)
    stats = RunStats()
    clients = build_clients(config, stats, sorted({a.endpoint for a in [*writers, *answerers]}))
    synthesis = Synthesis(
        cfg, seeds,
        [Agent(f"writer{i}", a, clients[a.endpoint]) for i, a in enumerate(writers)],
        [Agent(f"answerer{i}", a, clients[a.endpoint]) for i, a in enumerate(answerers)],
        seed=seed, batch=batch, earlier=[row["instruction"] for row in batches.rows("prompts")],
        verifier=Verifier(config.verify),
    )  # fmt: skip
    log.info("instructions: batch %d (seed %d): writing %d tasks from %d seed tasks", batch, seed, cfg.n, len(seeds))
    outcome = asyncio.run(_run_closing(synthesis, clients))
    counts = outcome.counts()
    log.info(
        "instructions: batch %d kept %d of %d written (%d answered) in %d rounds; dropped %s",
        batch, counts["kept"], counts["written"], counts["answered"], counts["rounds"], counts["dropped"] or "none",
    )  # fmt: skip
    if not outcome.kept:  # its drops are kept to read, the batch is not recorded: a re-run writes it again
        dropped = ", ".join(f"{k} {v}" for k, v in counts["dropped"].items()) or "none"
        named = batches.folder / f"batch-{batch}.failures.jsonl"
        write_jsonl_atomic(named, outcome.drops)
        raise MoaaError(
            f"instructions: no task kept in {counts['rounds']} rounds (dropped: {dropped}; each named in {named}); "
            "use stronger writers, fewer instructions.examples, or a lower instructions.agreement.threshold"
        )
    batches.add(outcome, seed, stats)


async def _run_closing(synthesis: Synthesis, clients: dict[str, Any]) -> Outcome:
    try:
        return await synthesis.run()
    finally:
        for client in clients.values():
            close = getattr(client, "aclose", None)
            if close is not None:
                await close()


def synthesized_source(prompts: PromptSourceConfig, path: Path) -> PromptSourceConfig:
    """The prompt source of the kept tasks, with the user's filters, limit, schedule and seed."""
    return prompts.model_copy(
        update={
            "path": str(path.resolve()), "hf_dataset": None, "prompt_column": "prompt", "messages_column": None,
            "conversations_column": None, "id_column": "prompt_id",
            "reference": ReferenceColumns(answer=None, tests=None, language=None, instructions=None, kwargs=None),
            # the kept tasks' `reference` column: with-answer tasks' agreed answers, with-tests tasks' tests,
            # IFEval constraints (moaa.instructions.synthesis)
        }
    )  # fmt: skip


def stage_record(config: MoaaConfig, base_dir: Path | None = None) -> dict[str, Any] | None:
    """What the version records of the stage: its folder's batches (counts, seeds), or None when off."""
    if config.instructions is None:
        return None
    batches = Batches.read(stage_folder(config, base_dir))
    return {"batches": [{k: v for k, v in r.items() if k != "stats"} for r in batches.records]}


def _settings(config: MoaaConfig) -> InstructionsConfig:
    if config.instructions is None:
        raise MoaaError("instructions: the stage is off in this config")
    return config.instructions


SHIPPED_SEEDS = Path(__file__).resolve().parents[2] / "configs" / "prompts" / "seed-tasks.jsonl"


def seed_path(cfg: InstructionsConfig, base_dir: Path | None) -> Path:
    if cfg.seeds is None:
        return SHIPPED_SEEDS
    path = Path(cfg.seeds)
    return path if path.is_absolute() else (base_dir or Path.cwd()) / path


def writers_of(config: MoaaConfig) -> list:
    return list(config.instructions.writers or config.sft.proposers) if config.instructions else []


def answerers_of(config: MoaaConfig) -> list:
    return list(config.instructions.answerers or config.sft.proposers) if config.instructions else []
