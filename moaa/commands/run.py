"""`moaa run CONFIG`: generate data with a config, through Prefect's local ephemeral API."""

from __future__ import annotations

import argparse
import logging
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from moaa.config import MoaaConfig


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "run",
        help="run the pipeline for a config and write a new data set version",
        epilog="Config keys, their types, defaults and meaning: moaa config explain [KEY] [--config FILE]; "
        "the resolved config: moaa config show FILE.",
    )
    p.add_argument("config", help="YAML config, e.g. configs/local.yaml")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config key (repeatable), e.g. sft.layers=3; keys: moaa config explain",
    )
    p.add_argument("--dry-run", action="store_true", help="validate and estimate calls, tokens and cost; call no model")
    p.add_argument(
        "--check-endpoints", action="store_true",
        help="first ask each endpoint for its models and send one 1-token request per agent (as `moaa check`); "
        "stop on a problem",
    )  # fmt: skip
    p.add_argument("--publish", action="store_true", help="publish the new version to output.publish_repo_id")
    p.set_defaults(func=handle)


def handle(args: argparse.Namespace) -> int:
    from moaa.config import check_environment, load_config, missing_keys

    config = load_config(args.config, args.set)  # fail fast, before Prefect starts
    if args.dry_run:  # estimates need no key: report the missing ones instead of failing
        from moaa.config.model_ids import unknown_models
        from moaa.public import scrub_text
        from moaa.work.estimate import estimate_run, format_estimate

        print(scrub_text(format_estimate(estimate_run(config))))
        for line in [*missing_keys(config), *unknown_models(config)]:
            print(f"before the real run: {scrub_text(line)}")
        if args.check_endpoints:
            return _check(config)
        return 0
    check_environment(config)
    if args.check_endpoints and (status := _check(config)):
        return status
    if not args.publish and _report_up_to_date(config):
        return 0
    from pathlib import Path

    from flows.prefect_env import start_api_early
    from moaa.public import scrub_text
    from moaa.work.launch import begin_early, open_run
    from moaa.work.summary import format_summary

    # Prefect is imported in a thread while this one opens the run (plan, work-folder lock, local
    # model servers). With a server of moaa's own (no PREFECT_API_URL), the SFT shards begin at once
    # and that server, which runs in this process, starts once they are done: its start-up and the
    # flow's imports (~4 s of CPU) would share the GIL with their calls. The flow then runs on the
    # open run, its tasks joining the shards done. With a server of the user's, the flow starts now.
    # The server is stopped by moaa.cli.main on the way out, as for every command that starts one.
    prefect = start_api_early()
    with open_run(config, base_dir=Path.cwd()) as opened:
        if prefect.local() and (early := begin_early(opened)) is not None:
            early.wait_begun()
            logging.getLogger("moaa.run").info("starting Prefect's API server to record the flow and its task runs")
        prefect.release()  # its start then overlaps the flow's import
        from flows.pipeline_flow import run_flow

        prefect.wait()
        summary = run_flow(config, args.config, args.set, publish=args.publish, opened=opened)
    print(scrub_text(format_summary(summary)))
    return 0


def _check(config: MoaaConfig) -> int:
    from moaa.commands.check import check_endpoints

    return check_endpoints(config)


def _report_up_to_date(config: MoaaConfig) -> bool:
    """Print the newest version and say True when this config's work is all done and that version
    was written from it (moaa.work.finished): no Prefect, no model client, no new version."""
    from pathlib import Path

    from moaa.public import scrub_text
    from moaa.work.finished import find_finished

    finished = find_finished(config, base_dir=Path.cwd())
    if finished is None:
        return False
    print(scrub_text(finished.line()))
    return True
