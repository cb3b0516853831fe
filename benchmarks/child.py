"""Runs one measurement in a fresh process: `python -m benchmarks.child module:function '<json kwargs>'`.

Prints `RESULT <json>` (the function's dict plus this process's peak RSS) as its last stdout line;
logs go to stderr. Used by benchmarks.common.run_in_child.
"""

from __future__ import annotations

import importlib
import json
import logging
import sys

from benchmarks.common import self_maxrss


def main(argv: list[str]) -> int:
    target, kwargs = argv[0], json.loads(argv[1])
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(asctime)s %(name)s: %(message)s")
    module, _, name = target.partition(":")
    result = getattr(importlib.import_module(module), name)(**kwargs)
    result["maxrss_bytes"] = self_maxrss()
    print("RESULT " + json.dumps(result, default=str), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
