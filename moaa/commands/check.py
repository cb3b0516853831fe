"""`moaa check CONFIG`: ask every endpoint whether the run would work, before any money is spent.

Per endpoint: the key variable, `GET /models` (is the model served there?), and one 1-token request
per distinct agent sampling (a parameter the model refuses, a wrong base URL, a refused key). Exit
status 0 when every endpoint answered, 3 otherwise. `moaa run CONFIG --check-endpoints` does the
same first (with --dry-run: after the estimate).
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from moaa.config import MoaaConfig


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("check", help="ask each endpoint for its models and send one 1-token request per agent")
    p.add_argument("config", help="YAML config, e.g. configs/providers/openai.yaml")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key (repeatable)")
    p.set_defaults(func=handle)


def handle(args: argparse.Namespace) -> int:
    from moaa.config import load_config

    return check_endpoints(load_config(args.config, args.set))


def check_endpoints(config: MoaaConfig) -> int:
    """Print one line per endpoint (or per problem) and a verdict; 0 when all answered, else 3."""
    from moaa.models.endpoint_check import check_config, format_findings
    from moaa.public import scrub_text

    findings = check_config(config)
    print(scrub_text(format_findings(findings)))
    return 0 if all(f.ok for f in findings) else 3
