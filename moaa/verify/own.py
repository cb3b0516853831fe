"""Your own check (`verify.check: module:function`): called as function(answer, prompt) for every prompt.

It returns True or False (pass or fail), None (cannot tell: unverifiable), a (bool, reason) pair, or
a moaa.verify.Verdict. It runs in a check worker (moaa.verify.worker), with the worker's time limit;
an exception it raises makes the answer unverifiable, with the exception in the reason.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from moaa.errors import ConfigError
from moaa.rows import Prompt
from moaa.verify.verdict import Verdict, failed, passed, unverifiable


def load_own_check(name: str) -> Callable[[str, Prompt], Any]:
    """The function `module:function` names; ConfigError naming what is wrong."""
    module_name, _, function = name.partition(":")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # noqa: BLE001 - any import failure is the config's
        raise ConfigError(
            f"verify.check: cannot import {module_name!r} ({type(exc).__name__}: {exc}); it must be importable "
            "from the folder you run moaa in"
        ) from None
    found = getattr(module, function, None)
    if not callable(found):
        raise ConfigError(f"verify.check: {module_name} has no function {function!r}")
    return found


def run_own_check(name: str, text: str, prompt: Prompt) -> Verdict:
    check = load_own_check(name)
    try:
        result = check(text, prompt)
    except Exception as exc:  # noqa: BLE001 - the user's code
        return unverifiable(f"{name} raised {type(exc).__name__}: {exc}", "own")
    return as_verdict(result, name)


def as_verdict(result: Any, name: str) -> Verdict:
    """A check's return value as a Verdict (its checks named `own`)."""
    if isinstance(result, Verdict):
        return replace(result, checks=("own",))
    reason = ""
    if isinstance(result, tuple) and len(result) == 2 and isinstance(result[1], str):
        result, reason = result
    if result is None:
        return unverifiable(reason or f"{name} could not tell", "own")
    if isinstance(result, bool):
        return passed(reason or f"{name} passed it", "own") if result else failed(reason or f"{name} failed it", "own")
    return unverifiable(f"{name} returned {type(result).__name__}, not True/False/None/Verdict", "own")
