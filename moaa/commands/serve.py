"""`moaa serve`: run the embedded local model as an OpenAI-compatible server in the foreground."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="serve the embedded local model (OpenAI-compatible) until Ctrl-C")
    p.add_argument("--port", type=int, default=8080)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--slots", type=int, default=None, help="requests decoded at once (parallel slots; default 4)")
    p.add_argument(
        "--smoke", action="store_true",
        help="start the server, get one short real completion, print it and stop (the last step of `make setup`)",
    )  # fmt: skip
    p.set_defaults(func=handle)


def handle(args: argparse.Namespace) -> int:
    from moaa.local.server import DEFAULT_SLOTS, serve_forever, smoke_test

    if args.smoke:
        smoke_test()
        return 0
    serve_forever(args.port, args.host, slots=args.slots or DEFAULT_SLOTS)
    return 0
