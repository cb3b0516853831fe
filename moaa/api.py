"""moaa's Python API: run a config, open and use the data set versions it writes, A/B two methods.

    import moaa
    v = moaa.run("configs/moa-lite.yaml", prompts={"limit": 20})   # keyword overrides, as --set
    v.sft                      # datasets.DatasetDict (train/test): messages, source, method, models, ...
    v.frame("dpo")             # a polars DataFrame of every split, with a `split` column
    v.card, v.manifest         # README.md as text, moaa_manifest.json as a dict
    v.verify()                 # [] when every file matches the manifest
    v.publish("org/name", dry_run=True)
    moaa.Version.open("local-moa@v1"), moaa.versions()

`moaa run` is `run` plus printing (moaa.commands.run): the same early start of the first shards,
the same Prefect flow and task runs, the same up-to-date check, the same summary (`Version.summary`).
Progress is the CLI's: redrawn in place on a terminal, one plain line every 10 s elsewhere (a
notebook cell, a log). Keyword overrides are nested like the YAML (`sft={"layers": 3}`) and become
`--set` items, so a Prefect flow run records them as the CLI's would.

Everything heavy (Prefect, datasets, polars, pyarrow) is imported inside the functions that need it.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from moaa.config import MoaaConfig
    from moaa.dataset.hub import PublishResult
    from moaa.work.finished import FinishedRun


def load_config(config: str | Path | Mapping[str, Any] | MoaaConfig, *sets: str, **overrides: Any) -> MoaaConfig:
    """A validated config from a YAML path (following `extends:`), a mapping or a MoaaConfig, with
    `--set` strings (`"sft.layers=3"`) and keyword overrides (`prompts={"limit": 20}`) applied.
    A mistake raises moaa.errors.ConfigError with one line naming the key."""
    from moaa.config import MoaaConfig, apply_override, parse_config
    from moaa.config import load_config as load_yaml

    items = [*sets, *as_sets(overrides)]
    if isinstance(config, (str, Path)):
        return load_yaml(config, items)
    raw = config.model_dump(mode="json") if isinstance(config, MoaaConfig) else json.loads(json.dumps(config))
    for item in items:
        apply_override(raw, item)
    return parse_config(raw, source="config")


def as_sets(overrides: Mapping[str, Any], prefix: str = "") -> list[str]:
    """Nested keyword overrides as `--set` items: {"prompts": {"limit": 20}} -> ["prompts.limit=20"]."""
    import yaml

    items = []
    for key, value in overrides.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            items += as_sets(value, dotted + ".")
        else:
            text = yaml.safe_dump(value, default_flow_style=True, width=1 << 30).strip()
            items.append(f"{dotted}={text.removesuffix('...').strip()}")
    return items


def run(config: str | Path | Mapping[str, Any] | MoaaConfig, *, publish: bool = False, **overrides: Any) -> Version:
    """Run the pipeline for `config` (a YAML path, a mapping or a MoaaConfig) and return the data set
    version it wrote, or, when this config's work is all done already (with prompts.schedule
    next/resample: no new prompt), the newest version (`Version.summary` is then None). Keyword
    overrides as in load_config.

    Raises moaa.errors.MoaaError (one line: a bad key, a missing API key, a run that made nothing)."""
    path, sets = _config_file(config, overrides)
    loaded = load_config(path, *sets)
    outcome = execute(loaded, str(path), sets, publish=publish)
    return Version(outcome.version_path, summary=outcome.summary if outcome.wrote else None)


@dataclass
class RunOutcome:
    """What `execute` did: a new version (its summary), or nothing because the work was done."""

    summary: dict[str, Any] | None = None
    finished: FinishedRun | None = None

    @property
    def version_path(self) -> Path:
        return Path(self.summary["version_path"]) if self.summary else self.finished.path

    @property
    def wrote(self) -> bool:
        """Whether this run wrote a new version (False: up to date, nothing new)."""
        return self.summary is not None and not self.summary.get("up_to_date")

    def text(self) -> str:
        from moaa.work.summary import format_summary

        return self.finished.line() if self.finished is not None else format_summary(self.summary)


def execute(config: MoaaConfig, config_path: str, sets: list[str], publish: bool = False) -> RunOutcome:
    """One run of a loaded config (what `moaa run` does): the keys checked, the up-to-date check,
    then the flow on a run opened before Prefect started (its first shards begun at once when the
    Prefect API is this process's own). A Prefect API server started here is stopped at the end."""
    from moaa.config import check_environment
    from moaa.public import install_log_scrubber

    os.environ.setdefault("ARROW_DEFAULT_MEMORY_POOL", "system")  # see moaa.cli.main
    install_log_scrubber()
    check_environment(config)
    if not publish and (finished := _finished(config)) is not None:
        return RunOutcome(finished=finished)
    from flows import prefect_env

    started_here = prefect_env._local_api is None
    try:
        return RunOutcome(summary=_run_flow(config, config_path, sets, publish))
    finally:
        if started_here:
            prefect_env.stop_api()


def _finished(config: MoaaConfig) -> FinishedRun | None:
    from moaa.work.finished import find_finished

    return find_finished(config, base_dir=Path.cwd())


def _run_flow(config: MoaaConfig, config_path: str, sets: list[str], publish: bool) -> dict[str, Any]:
    import logging

    from flows.prefect_env import start_api_early
    from moaa.work.launch import begin_early, open_run

    # Prefect is imported in a thread while this one opens the run (plan, work-folder lock, local
    # model servers). With a server of moaa's own (no PREFECT_API_URL), the SFT shards begin at once
    # and that server, which runs in this process, starts once they are done: its start-up and the
    # flow's imports (~4 s of CPU) would share the GIL with their calls. The flow then runs on the
    # open run, its tasks joining the shards done. With a server of the user's, the flow starts now.
    prefect = start_api_early()
    with open_run(config, base_dir=Path.cwd()) as opened:
        early_start = os.environ.get("MOAA_EARLY_START", "1") != "0"  # 0: begin nothing before the flow
        if early_start and prefect.local() and (early := begin_early(opened)) is not None:
            early.wait_begun()
            logging.getLogger("moaa.run").info("starting Prefect's API server to record the flow and its task runs")
        prefect.release()  # its start then overlaps the flow's import
        from flows.pipeline_flow import run_flow

        prefect.wait()
        return run_flow(opened, config_path, sets, publish=publish)


def _config_file(config: Any, overrides: Mapping[str, Any]) -> tuple[Path, list[str]]:
    """A YAML path the flow can load (Prefect records it with the overrides): the given one, or the
    mapping / MoaaConfig written once under .moaa/configs/ (named by its content)."""
    from moaa.config import MoaaConfig

    sets = as_sets(overrides)
    if isinstance(config, (str, Path)):
        return Path(config), sets
    import yaml

    raw = config.model_dump(mode="json") if isinstance(config, MoaaConfig) else dict(config)
    text = yaml.safe_dump(json.loads(json.dumps(raw)), sort_keys=False)
    name = raw.get("name", "config") if isinstance(raw.get("name"), str) else "config"
    path = Path(".moaa") / "configs" / f"{name}-{hashlib.sha256(text.encode()).hexdigest()[:12]}.yaml"
    if not path.is_file():
        from moaa.fileio import write_text_atomic

        path.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(path, text)
    return path, sets


class Version:
    """One data set version folder (`<root>/<name>/vN/`): its rows, card and manifest; verify, publish."""

    def __init__(self, path: str | Path, summary: dict[str, Any] | None = None):
        self.path = Path(path)
        self.summary = summary  # the run's summary when moaa.run wrote this version, else None

    @classmethod
    def open(cls, ref: str | Path, root: str | Path = "data") -> Version:
        """A version by 'name' (its latest), 'name@vN', or its folder; InputError listing what exists."""
        from moaa.dataset.versions import resolve_version

        if Path(ref).is_dir() and (Path(ref) / "moaa_manifest.json").is_file():
            return cls(ref)
        return cls(resolve_version(Path(root), str(ref)))

    @property
    def name(self) -> str:
        return self.path.parent.name

    @property
    def version(self) -> str:
        return self.path.name

    @property
    def ref(self) -> str:
        return f"{self.name}@{self.version}"

    @cached_property
    def manifest(self) -> dict[str, Any]:
        """moaa_manifest.json: the resolved config, versions, counts, costs, timings, file hashes."""
        from moaa.dataset.manifest import read_manifest

        return read_manifest(self.path)

    @property
    def card(self) -> str:
        """The dataset card (README.md) as Markdown."""
        return (self.path / "README.md").read_text(encoding="utf-8")

    @property
    def rows(self) -> dict[str, dict[str, int]]:
        """Rows per config and split, e.g. {"sft": {"train": 18, "test": 2}, ...} (configs with rows only)."""
        return dict((self.manifest.get("counts") or {}).get("rows") or {})

    def dataset(self, config: str) -> Any:
        """One config as a datasets.DatasetDict of its splits (empty for a config without rows, such as
        `failures` of a run in which nothing failed). Read from the parquet files, offline."""
        import pyarrow as pa
        import pyarrow.parquet as pq
        from datasets import Dataset, DatasetDict

        from moaa.dataset.files import CONFIGS

        if config not in CONFIGS:
            raise ValueError(f"config {config!r}: a version has {', '.join(CONFIGS)}")
        splits = {}
        for split in self.rows.get(config, {}):
            files = sorted((self.path / "data" / config).glob(f"{split}-*.parquet"))
            splits[split] = Dataset(pa.concat_tables([pq.read_table(f) for f in files]))
        return DatasetDict(splits)

    @property
    def sft(self) -> Any:
        """The `sft` config: messages (TRL's conversational format) and provenance columns."""
        return self.dataset("sft")

    @property
    def dpo(self) -> Any:
        """The `dpo` config: prompt / chosen / rejected with scores and models."""
        return self.dataset("dpo")

    @property
    def trace(self) -> Any:
        """The `trace` config: every intermediate answer and verdict."""
        return self.dataset("trace")

    @property
    def failures(self) -> Any:
        """The `failures` config: prompt_id, stage, reason, error, transient (empty when none failed)."""
        return self.dataset("failures")

    def frame(self, config: str, split: str | None = None) -> Any:
        """One config as a polars DataFrame: one split, or every split with a `split` column."""
        import polars as pl

        from moaa.dataset.files import schemas

        parts = []
        for name in [split] if split else list(self.rows.get(config, {})):
            files = sorted((self.path / "data" / config).glob(f"{name}-*.parquet"))
            if files:
                frame = pl.read_parquet(files)
                parts.append(frame if split else frame.with_columns(pl.lit(name).alias("split")))
        if parts:
            return pl.concat(parts)
        empty = pl.from_arrow(schemas()[config].empty_table())
        return empty if split else empty.with_columns(pl.lit(None, pl.String).alias("split"))

    def verify(self) -> list[str]:
        """Every file re-hashed against the manifest: the problems found (missing, modified, extra); []."""
        from moaa.dataset.manifest import verify_version

        return verify_version(self.path)

    def publish(
        self, repo_id: str | None = None, *, private: bool | None = None, dry_run: bool = False,
        token: str | None = None,
    ) -> PublishResult:  # fmt: skip
        """Upload to a Hub dataset repo as one commit tagged vN (see `moaa publish`). `repo_id`: the
        run's output.publish_repo_id by default; `private`: the run's output.private; token: $HF_TOKEN."""
        from moaa.dataset.hub import publish_version
        from moaa.errors import ConfigError

        repo_id = repo_id or ((self.manifest.get("config") or {}).get("output") or {}).get("publish_repo_id")
        if not repo_id:
            raise ConfigError(f"{self.ref}: no repo id; pass publish('ORG/NAME') or set output.publish_repo_id")
        return publish_version(self.path, repo_id, private, token or os.environ.get("HF_TOKEN"), dry_run)

    def __repr__(self) -> str:
        counts = ", ".join(f"{cfg}={sum(splits.values())}" for cfg, splits in self.rows.items())
        return f"Version({self.ref!r}, {counts})"

    def _repr_markdown_(self) -> str:  # a notebook shows the card, without its YAML metadata
        card = self.card
        return card.split("\n---\n", 1)[-1] if card.startswith("---\n") else card


def versions(root: str | Path = "data") -> list[Version]:
    """Every data set version under `root`, by name then version number."""
    from moaa.dataset.versions import list_versions

    return [Version(v["path"]) for v in list_versions(Path(root))]


def compare(
    config: str | Path, *, arm_a: str | None = None, arm_b: str | None = None, baseline_agent: str | None = None,
    prompts: int | None = None, settings: str | Path = "configs/train/compare.yaml", **flags: Any,
) -> dict[str, Any]:  # fmt: skip
    """`moaa compare`: the config's method (arm A) against one model (arm B, or `arm_b`) on the same
    prompts, each arm's data fine-tuning the same student, judged head to head and against the base
    student. Other keywords are compare settings (test_size, student, name, runs_root, data_overrides,
    sft_overrides, eval_overrides; preference_a / preference_b, mappings of `preference` keys, compare two
    preference recipes instead: one SFT, DPO per arm). Returns the results (results.json's content; `report`
    is report.md)."""
    from flows.prefect_env import ensure_api, stop_api
    from moaa.config import check_environment
    from moaa.train.comparison import build_arms, load_compare_settings

    s = load_compare_settings(
        str(settings), data_config=str(config), arm_a=arm_a, arm_b=arm_b, baseline_agent=baseline_agent,
        prompts=prompts, **flags,
    )  # fmt: skip
    for arm in build_arms(load_config(s.data_config, *s.data_overrides), s):
        check_environment(arm.config)  # a bad arm or a missing key fails here, before Prefect starts
    from flows import prefect_env

    started_here = prefect_env._local_api is None
    ensure_api()
    try:
        from flows.compare_flow import compare_arms

        return compare_arms(s.model_dump())
    finally:
        if started_here:
            stop_api()
