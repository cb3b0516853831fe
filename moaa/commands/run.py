"""`moaa run CONFIG`: generate data with a config, through Prefect's local ephemeral API."""

from __future__ import annotations

import argparse
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
    from moaa.config import load_config, missing_keys

    config = load_config(args.config, args.set)  # fail fast, before Prefect starts
    if args.dry_run:  # estimates need no key: report the missing ones instead of failing
        from moaa.config.model_ids import unknown_models
        from moaa.public import scrub_text
        from moaa.work.estimate import estimate_run
        from moaa.work.estimate_report import format_estimate

        print(scrub_text(format_estimate(estimate_run(config))))
        for line in [*missing_keys(config), *unknown_models(config)]:
            print(f"before the real run: {scrub_text(line)}")
        if args.check_endpoints:
            return _check(config)
        return 0
    if args.check_endpoints and (status := _check(config)):
        return status
    from moaa.api import execute
    from moaa.public import scrub_text

    outcome = execute(config, args.config, args.set, publish=args.publish)
    print(scrub_text(outcome.text()))
    return 0


def _check(config: MoaaConfig) -> int:
    from moaa.commands.check import check_endpoints

    return check_endpoints(config)
