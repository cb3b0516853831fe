"""The registry of generation methods: the name `sft.method` takes -> its `Method` (moaa.engine.plan).

    from moaa.engine.methods import calls_per_prompt, method_of, register
    register(Method("my-method", my_turn, my_plan))   # then sft.method: my-method loads, runs, estimates
    calls_per_prompt(gen)["calls"]                    # what one prompt costs, read from the plan

The built-in methods are found, not listed: every module-level `Method` in a module of moaa.engine
registers itself the first time the registry is read, so a new method is one module (plus its
prompt). The registry is the config's table of method rules (moaa.config.sft_methods), so
GenerationConfig checks method names and rules when a config loads without importing the engine;
the runner dispatches on it, and the dry run adds up its plans.
"""

from __future__ import annotations

import importlib
import math
import pkgutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

from moaa.config.sft_methods import METHODS, MethodRule, Rule, rule_of
from moaa.engine.plan import Method, Plan, Step

if TYPE_CHECKING:
    from moaa.config import EndpointConfig, GenerationConfig

# The config's table of methods (moaa.config.sft_methods), filled here with each method's `Method`:
# one registry, which GenerationConfig reads without importing the engine.
REGISTRY: dict[str, Rule] = METHODS
_found = False


def register(method: Method) -> Method:
    """Make `method` a value of `sft.method` (a name is registered once). A built-in's rule, stated in
    moaa.config.sft_methods, gives way to its Method only when the Method carries that same rule."""
    known = REGISTRY.get(method.name, method)
    stated = isinstance(known, MethodRule) and (known.check, known.aggregator) == (method.check, method.aggregator)
    if known is not method and not stated:
        raise ValueError(f"a generation method named {method.name!r} is already registered")
    REGISTRY[method.name] = method
    return method


def _find_builtins() -> None:
    """Register every module-level `Method` of moaa.engine's modules (once, in module order). A
    built-in's config rule is stated in moaa.config.sft_methods (a config loads before the engine
    does), so a Method found here without one there is an error, not a method the config would know
    only once the engine had been imported."""
    global _found
    if _found:
        return
    _found = True
    # The package's folder, read beside this module: importing the package itself (its __init__
    # imports the runner, which imports this registry) is not needed to list its modules.
    for info in sorted(pkgutil.iter_modules([str(Path(__file__).parent)]), key=lambda m: m.name):
        module = importlib.import_module(f"{__package__}.{info.name}")
        for value in vars(module).values():
            if isinstance(value, Method) and value.turn.__module__ == module.__name__:
                if not isinstance(REGISTRY.get(value.name), MethodRule):
                    raise ValueError(
                        f"{module.__name__}: method {value.name!r} has no rule in moaa.config.sft_methods; "
                        f"add MethodRule({value.name!r}, ...) to its table, with the check its Method carries"
                    )
                register(value)


def method_names() -> tuple[str, ...]:
    _find_builtins()
    return tuple(REGISTRY)


def method_of(name: str) -> Method:
    """The registered method `name`; ValueError naming the known ones otherwise."""
    _find_builtins()
    method = rule_of(name)
    if not isinstance(method, Method):
        raise ValueError(f"method {name!r} has a config rule (moaa.config.sft_methods) but no engine module")
    return method


def plan_of(gen: GenerationConfig) -> Plan:
    return method_of(gen.method).plan(gen)


def requests(step: Step, endpoints: dict[str, EndpointConfig] | None) -> int:
    """HTTP requests of one of the step's calls: an n=K call is K where the endpoint ignores n (supports_n: false)."""
    endpoint = (endpoints or {}).get(step.agent.endpoint)
    return step.samples if endpoint is not None and endpoint.supports_n is False else 1


def calls_per_prompt(
    gen: GenerationConfig,
    *,
    turns: int = 1,
    endpoints: dict[str, EndpointConfig] | None = None,
    stage: str = "sft",
) -> dict[str, Any]:
    """Calls and generated answers per prompt of `turns` assistant turns, per agent and endpoint, from the plan.

    Returns {"method", "stage", "turns", "calls", "answers", "upper_bound", "agents": {label:
    {"endpoint", "calls", "answers"}}, "endpoints": {name: calls}, "per_run": {label: calls}}.
    "calls" counts requests: an n=K sampling call counts once where the endpoint honours n and
    K times where `endpoints` says it does not (supports_n: false); "answers" counts texts.
    Exact on the path where every call succeeds; an upper bound where the plan says so.
    """
    plan = plan_of(gen)
    agents: dict[str, dict[str, Any]] = {}
    by_endpoint: dict[str, int] = {}
    per_run: dict[str, int] = {}
    for step in plan.steps:
        calls = step.calls * requests(step, endpoints)
        if step.per_run:
            per_run[step.label] = per_run.get(step.label, 0) + calls
            continue
        row = agents.setdefault(step.label, {"endpoint": step.agent.endpoint, "calls": 0, "answers": 0})
        row["calls"] += calls * turns
        row["answers"] += step.answers * turns
        by_endpoint[step.agent.endpoint] = by_endpoint.get(step.agent.endpoint, 0) + calls * turns
    return {
        "method": gen.method,
        "stage": stage,
        "turns": turns,
        "calls": sum(a["calls"] for a in agents.values()),
        "answers": sum(a["answers"] for a in agents.values()),
        "upper_bound": bool(plan.stops_early),
        "agents": agents,
        "endpoints": by_endpoint,
        "per_run": per_run,
    }


def prompt_window(gen: GenerationConfig, endpoint_slots: int) -> int:
    """How many prompts to keep in flight so that every endpoint slot stays busy, and no more.

    Twice the slots' worth of the widest layer's calls (consecutive steps of one part run at once:
    a MoA layer's proposers), at least 8. A wider window only queues more first-layer calls ahead
    of the aggregations that finish rows, so a shard would write nothing until its end.
    """
    widths: list[int] = []
    last_part = None
    for step in plan_of(gen).steps:
        if step.per_run:
            continue
        if step.part == last_part:
            widths[-1] += step.calls
        else:
            widths.append(step.calls)
        last_part = step.part
    return max(8, math.ceil(2 * endpoint_slots / max(widths, default=1)))
