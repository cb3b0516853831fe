"""`moaa deploy CONFIG --cron "0 3 * * *"`: run the pipeline on a schedule through a Prefect server.

Registers a deployment named after the config (or --name) with the server at PREFECT_API_URL;
`--serve` also executes its scheduled runs in the foreground, `--work-pool POOL` hands them to a
process work pool's worker instead. Each run writes a new data set version (`--publish`: and
publishes it). The Prefect code lives in flows/schedule.py.
"""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("deploy", help="schedule the pipeline for a config as a Prefect deployment")
    p.add_argument("config", help="YAML config, e.g. configs/local.yaml (stored by absolute path)")
    p.add_argument("--cron", required=True, help='when to run, a cron expression, e.g. "0 3 * * *" (03:00 daily)')
    p.add_argument("--timezone", default="UTC", help="time zone of the cron expression (default UTC)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key (repeatable)")
    p.add_argument("--publish", action="store_true", help="publish each new version to output.publish_repo_id")
    p.add_argument("--name", help="deployment name (default: the config's name)")
    how = p.add_mutually_exclusive_group()
    how.add_argument("--serve", action="store_true", help="also execute the scheduled runs here until Ctrl-C")
    how.add_argument("--work-pool", metavar="POOL", help="deploy to this process work pool (run by a prefect worker)")
    p.set_defaults(func=handle)


def handle(args: argparse.Namespace) -> int:
    from flows.prefect_env import quiet_prefect
    from moaa.config import load_config, refuse_stored_secrets
    from moaa.public import scrub

    refuse_stored_secrets(args.set)  # Prefect stores the overrides as given: none may hold a key
    config = load_config(args.config, args.set)  # fail fast, before Prefect starts
    if args.serve:  # Prefect's own INFO lines, on this terminal and in each served run's logs, as `prefect serve`
        import os

        os.environ.setdefault("PREFECT_LOGGING_LEVEL", "INFO")
    quiet_prefect()
    from flows import schedule

    name = args.name or config.name
    params = schedule.deployment_parameters(args.config, args.set, args.publish)
    where = f"{schedule.FLOW_NAME}/{name}"
    if args.serve:
        print(f"serving deployment '{where}' on '{args.cron}' ({args.timezone}); Ctrl-C to stop")
        schedule.serve(name, params, args.cron, args.timezone)
        return 0
    if args.work_pool:
        deployment_id = schedule.deploy_to_pool(name, params, args.cron, args.work_pool, args.timezone)
        runner = f"start a worker in this folder: prefect worker start --pool {args.work_pool}"
    else:
        deployment_id = schedule.register(name, params, args.cron, args.timezone)
        runner = "execute its runs with the same command plus --serve (or deploy with --work-pool POOL)"
    info = schedule.describe(deployment_id)
    cron = ", ".join(f"{s['cron']} ({s['timezone']})" for s in info["schedules"])
    print(f"deployment '{where}' ({deployment_id}) scheduled on {cron}")
    print(f"  parameters: {scrub(info['parameters'])}")
    print(f"  {runner}")
    print(f"  run it now: prefect deployment run '{where}'")
    return 0
