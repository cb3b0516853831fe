"""`moaa config explain|show`: every config key with its type, default and meaning; a resolved config.

moaa config explain                              # all keys
moaa config explain sft.aggregator.max_tokens    # one key (a section: it and its keys)
moaa config explain preference.scorer --config configs/local.yaml --set preference.enabled=true
moaa config show configs/local.yaml              # the resolved config, as a run writes it

The text is each field's `Field(description=...)` in moaa.config, so help and validation come from
one place. Values shown come from the public dump (moaa.config.dump_public_config): a config names
the environment variable of a key, never the key, and URL credentials are taken out.
"""

from __future__ import annotations

import argparse
import difflib
import json
import re
import textwrap
import types
from dataclasses import dataclass
from typing import Any, Literal, Union, get_args, get_origin

LIST, NAME = "[]", "<name>"  # the steps into a list's items and a mapping's values (endpoints.<name>)


@dataclass(frozen=True)
class Key:
    """One config key: its parts (LIST / NAME for the step into an item), type, default and text."""

    parts: tuple[str, ...]
    type: str
    default: str  # "" for a section whose default is its own keys' defaults
    description: str
    section: bool  # holds keys of its own

    @property
    def path(self) -> str:
        return dotted(self.parts)


def dotted(parts: tuple[str, ...] | list[str]) -> str:
    out = ""
    for part in parts:
        out += part if part == LIST else (f".{part}" if out else part)
    return out


def config_keys(model: Any = None, prefix: tuple[str, ...] = ()) -> list[Key]:
    """Every key of `model` (default: MoaaConfig) and of the sections below it, parents first."""
    from pydantic_core import PydanticUndefined

    if model is None:
        from moaa.config import MoaaConfig

        model = MoaaConfig
    keys: list[Key] = []
    for name, info in model.model_fields.items():
        parts = (*prefix, name)
        child, step = _nested(info.annotation)
        if info.is_required():
            default = "required"
        elif child is not None and info.default is not PydanticUndefined and info.default is not None:
            default = ""  # a section: its keys carry the defaults
        else:
            default = _yaml(info.get_default(call_default_factory=True))
        keys.append(Key(parts, type_name(info.annotation), default, info.description or "", child is not None))
        if child is not None:
            keys += config_keys(child, (*parts, step) if step else parts)
    return keys


def _nested(annotation: Any) -> tuple[Any, str]:
    """(the config model inside `annotation` or None, LIST / NAME / "" for how its items are reached)."""
    from pydantic import BaseModel

    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation, ""
    origin = get_origin(annotation)
    for arg in get_args(annotation):
        model, step = _nested(arg)
        if model is not None:
            return model, step or (LIST if origin is list else NAME if origin is dict else "")
    return None, ""


def type_name(annotation: Any) -> str:
    origin, args = get_origin(annotation), get_args(annotation)
    if origin is Literal:
        return " | ".join(json.dumps(a) for a in args)
    if origin in (Union, types.UnionType):
        return " | ".join(type_name(a) for a in args)
    if origin in (list, dict):
        return f"{origin.__name__}[{', '.join(type_name(a) for a in args)}]"
    if annotation is type(None):
        return "null"
    return getattr(annotation, "__name__", str(annotation))


def _yaml(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, default=str)  # JSON scalars and lists read as YAML


def find_keys(key: str, keys: list[Key]) -> tuple[tuple[str, ...], dict[int, str]]:
    """The canonical parts `key` names (`sft.proposers.0.x`, `sft.proposers[0].x` and `sft.proposers.x`
    all name sft.proposers[].x) and the items it picks ({part index: list index or mapping name})."""
    segments = re.sub(r"\[([^\]]*)\]", lambda m: "." + (m.group(1) or "*"), key.strip()).split(".")
    by_parts = {k.parts: k for k in keys}
    parts: list[str] = []
    picks: dict[int, str] = {}
    i = 0
    while i < len(segments):
        parts.append(segments[i])
        if tuple(parts) not in by_parts or not segments[i]:
            raise _unknown(key, parts, keys)
        i += 1
        for step in (LIST, NAME):
            if (*parts, step) in {k.parts[: len(parts) + 1] for k in keys}:
                given = segments[i] if i < len(segments) else None
                if step == LIST and given is not None and not given.isdigit() and given != "*":
                    given = None  # `sft.proposers.temperature`: every proposer
                else:
                    i += int(given is not None)
                parts.append(step)
                if given not in (None, "*", NAME):
                    picks[len(parts) - 1] = given
    return tuple(parts), picks


def _unknown(key: str, parts: list[str], keys: list[Key]) -> Exception:
    from moaa.errors import ConfigError

    here = tuple(parts[:-1])
    siblings = [k.path for k in keys if k.parts[:-1] == here]
    wanted = re.sub(r"\[[^\]]*\]|\.(\d+|\*)(?=\.|$)", LIST, key.strip())  # compared in the keys' own form
    near = difflib.get_close_matches(wanted, [k.path for k in keys], n=3, cutoff=0.6) or siblings
    return ConfigError(f"unknown config key '{key}'; nearest valid keys: {', '.join(near)}")


def values_at(data: Any, parts: tuple[str, ...], picks: dict[int, str]) -> list[tuple[str, Any]]:
    """(concrete path, value) of every place `parts` reaches in a dumped config."""
    found: list[tuple[str, Any]] = [("", data)]
    for i, part in enumerate(parts):
        reached: list[tuple[str, Any]] = []
        for path, node in found:
            if part == LIST and isinstance(node, list):
                reached += [(f"{path}[{n}]", v) for n, v in enumerate(node) if picks.get(i, str(n)) == str(n)]
            elif part == NAME and isinstance(node, dict):
                reached += [(f"{path}.{n}", v) for n, v in node.items() if picks.get(i, n) == n]
            elif isinstance(node, dict) and part in node:
                reached.append((f"{path}.{part}" if path else part, node[part]))
        found = reached
    return found


def format_key(key: Key, values: list[tuple[str, Any]] | None = None, width: int = 100) -> str:
    """Two or more lines: `path  type  default ...`, the description, and where given the values."""
    default = {"": "", "required": "  required"}.get(key.default, f"  default {key.default}")
    head = f"{key.path}  {key.type}{default}"
    lines = [head, *textwrap.wrap(key.description, width, initial_indent="    ", subsequent_indent="    ")]
    if values is None:
        return "\n".join(lines)
    if key.section:
        values = [(p, v) for p, v in values if v in (None, [], {})]  # else its keys show the values
        if not values:
            return "\n".join(lines)
    if not values:
        lines.append("    value: (none in this config: a section above it is unset or empty)")
    elif len(values) == 1 and values[0][0] == key.path:
        lines.append(f"    value: {_yaml(values[0][1])}")
    else:
        lines += [f"    {path}: {_yaml(value)}" for path, value in values]
    return "\n".join(lines)


def explain(key: str | None, data: dict[str, Any] | None = None) -> str:
    """The text of `moaa config explain [KEY]`; with `data` (a dumped config), the values too."""
    keys = config_keys()
    parts, picks = find_keys(key, keys) if key else ((), {})
    shown = [k for k in keys if k.parts[: len(parts)] == parts]
    blocks = []
    for k in shown:
        values = values_at(data, k.parts, picks) if data is not None else None
        blocks.append(format_key(k, values))
    return "\n".join(blocks)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("config", help="explain config keys; show a resolved config")
    inner = p.add_subparsers(dest="config_command", metavar="ACTION", required=True)
    exp = inner.add_parser(
        "explain",
        help="every config key (or one) with its type, default and meaning",
        description="Config keys with their type, default and meaning. KEY is dotted as for --set "
        "(sft.aggregator.max_tokens, preference.scorer, endpoints.local.base_url, sft.proposers.0.temperature); "
        "a section shows its keys too.",
    )
    exp.add_argument("key", nargs="?", metavar="KEY", help="a dotted key or section (default: all keys)")
    exp.add_argument("--config", metavar="FILE", help="also show the values this config resolves to")
    show = inner.add_parser("show", help="the resolved config (extends and --set applied), as a run writes it")
    show.add_argument("config", metavar="FILE", help="YAML config, e.g. configs/local.yaml")
    for action in (exp, show):
        action.add_argument(
            "--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key (repeatable)"
        )
    exp.set_defaults(func=handle_explain)
    show.set_defaults(func=handle_show)


def _resolved(path: str, overrides: list[str]) -> dict[str, Any]:
    from moaa.config import dump_public_config, load_config

    return dump_public_config(load_config(path, overrides))


def handle_explain(args: argparse.Namespace) -> int:
    from moaa.errors import ConfigError

    if args.set and not args.config:
        raise ConfigError("--set changes a config: pass --config FILE with it")
    if args.key:
        find_keys(args.key, config_keys())  # an unknown key fails before the config is read
    data = _resolved(args.config, args.set) if args.config else None
    if data is not None:
        print(f"# values from {args.config} (extends and --set applied)")
    print(explain(args.key, data))
    return 0


def handle_show(args: argparse.Namespace) -> int:
    import yaml

    print(yaml.safe_dump(_resolved(args.config, args.set), sort_keys=False, allow_unicode=True), end="")
    return 0
