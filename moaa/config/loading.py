"""Loading a config: YAML files (following `extends:`), `--set dotted.key=value` overrides, one-line
errors, the endpoints' keys read from their environment variables, and the dumps written with a run."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from moaa.config.models import EndpointConfig, MoaaConfig
from moaa.errors import ConfigError


def load_config(path: str | Path, overrides: list[str] | None = None) -> MoaaConfig:
    """Read a YAML config (following `extends:`), apply `key=value` overrides, validate."""
    path = Path(path)
    raw = _read_yaml(path)
    for item in overrides or []:
        apply_override(raw, item)
    config = parse_config(raw, source=str(path))
    return config


def parse_config(raw: dict[str, Any], source: str = "config") -> MoaaConfig:
    try:
        config = MoaaConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(f"{source}: {describe_validation_error(exc, MoaaConfig)}") from None
    return config


def _read_yaml(path: Path, seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found; pass a YAML file such as configs/local.yaml")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (byte {exc.start}); save the file as UTF-8") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f":{mark.line + 1}:{mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{path}{where}: malformed YAML: {problem}") from None
    if raw is None:
        raise ConfigError(f"{path}: the config file is empty")
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of keys, not {type(raw).__name__}")
    if "extends" not in raw:
        return raw
    parent = raw.pop("extends")
    where = f"{path}:{_line_of_key(path, 'extends')}"
    if not isinstance(parent, str) or not parent.strip():
        raise ConfigError(f"{where}: extends: expected the path of another YAML file, e.g. extends: local.yaml")
    parent_path = (path.parent / parent).resolve()
    if parent_path in seen or parent_path == path.resolve():
        raise ConfigError(f"{where}: extends: {parent} loops back to {parent_path}; remove one of the extends")
    if not parent_path.is_file():
        raise ConfigError(
            f"{where}: extends: {parent} not found (looked for {parent_path}); the path is relative to {path.parent}"
        )
    return deep_merge(_read_yaml(parent_path, (*seen, path.resolve(), parent_path)), raw)


def _line_of_key(path: Path, key: str) -> int:
    """The 1-based line of a top-level `key:` in a YAML file (1 when it cannot be told)."""
    try:
        node = yaml.compose(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return 1
    for k, _ in getattr(node, "value", []) or []:
        if getattr(k, "value", None) == key:
            return int(k.start_mark.line) + 1
    return 1


def deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """`over` laid onto `base`; mappings merge key by key, anything else is replaced."""
    merged = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def apply_override(raw: dict[str, Any], item: str) -> None:
    """Apply one `dotted.key=value` (value parsed as YAML; `a.0.b` indexes lists)."""
    key, sep, text = item.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set {item!r}: expected dotted.key=value, e.g. --set sft.layers=3")
    try:
        value = yaml.safe_load(text) if text.strip() else ""
    except yaml.YAMLError:
        value = text
    parts = key.strip().split(".")
    node: Any = raw
    for i, part in enumerate(parts[:-1]):
        node = _step(node, part, parts[: i + 1], item, create=True)
    last = parts[-1]
    if isinstance(node, list):
        index = _index(node, last, parts, item)
        node[index] = value
    else:
        node[last] = value


def refuse_stored_secrets(overrides: list[str]) -> None:
    """A ConfigError naming the first `--set` that holds a secret (a key moaa read, a variable named
    like one, URL credentials): for overrides that are stored as given (a deployment's parameters
    in Prefect's database), where scrubbing would change the run. The value is never echoed."""
    from moaa.public import secret_in

    for item in overrides:
        found = secret_in(item)
        if found:
            raise ConfigError(
                f"--set {item.partition('=')[0].strip()}: holds {found}; a deployment's parameters are stored in "
                "Prefect's database, so pass keys through environment variables (api_key_env) and write URLs "
                "without user:password@"
            )


def _step(node: Any, part: str, so_far: list[str], item: str, create: bool) -> Any:
    if isinstance(node, list):
        return node[_index(node, part, so_far, item)]
    if not isinstance(node, dict):
        raise ConfigError(f"--set {item!r}: '{'.'.join(so_far[:-1])}' is not a mapping")
    if part not in node or node[part] is None:
        node[part] = {}
    return node[part]


def _index(node: list[Any], part: str, so_far: list[str], item: str) -> int:
    if not part.isdigit() or int(part) >= len(node):
        raise ConfigError(f"--set {item!r}: '{'.'.join(so_far)}' needs a list index below {len(node)}")
    return int(part)


def describe_validation_error(exc: ValidationError, root: type[BaseModel]) -> str:
    """The first error as `dotted.path: what is wrong` (with the allowed keys for unknown keys)."""
    err = exc.errors()[0]
    loc = [p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-"))]
    where = _dotted(loc) or "(top level)"
    if err["type"] == "extra_forbidden":
        allowed = ", ".join(_allowed_keys(root, loc[:-1]))
        return f"unknown key '{where}' (allowed here: {allowed})"
    if err["type"] == "missing":
        return f"missing required key '{where}'"
    msg = err["msg"].removeprefix("Value error, ")
    field, sep, rest = msg.partition(": ")
    if sep and re.fullmatch(r"[A-Za-z_][\w.\[\]]*", field):
        # A model validator names the field it checks ("layers: ...", "sft.proposers[0].endpoint: ..."):
        # report it at that field.
        where, msg = (f"{where}.{field}" if loc else field), rest
    got = err.get("input")
    secret = loc and loc[-1] == "api_key_env"  # a key typed there is never echoed
    shown = "" if isinstance(got, (dict, list)) or got is None or secret else f" (got {got!r})"
    return f"{where}: {msg}{shown}"


def _dotted(loc: list[Any]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _allowed_keys(model: type[BaseModel], loc: list[Any]) -> list[str]:
    current: Any = model
    for part in loc:
        if isinstance(part, int) or current is None:
            continue
        field = current.model_fields.get(part) if isinstance(current, type) else None
        current = _model_of(field.annotation) if field else None
    if isinstance(current, type) and issubclass(current, BaseModel):
        return list(current.model_fields)
    return []


def _model_of(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()) or ():
        found = _model_of(arg)
        if found:
            return found
    return None


def resolve_api_key(name: str, endpoint: EndpointConfig) -> str:
    """The endpoint's key read from its environment variable (a placeholder when none is needed)."""
    if not endpoint.api_key_env:
        return "not-needed"
    value = os.environ.get(endpoint.api_key_env)
    if not value:
        raise ConfigError(
            f"endpoint '{name}': environment variable {endpoint.api_key_env} is not set; "
            f"export it (or change endpoints.{name}.api_key_env)"
        )
    if value != value.strip() or any(ord(c) < 32 or ord(c) == 127 for c in value):
        # aiohttp refuses such a header ("header injection"), naming no variable; the value is never shown
        what = "ends with a line break" if value.endswith(("\n", "\r")) else "holds whitespace or a control character"
        var = endpoint.api_key_env
        raise ConfigError(
            f"endpoint '{name}': environment variable {var} {what}, which no key has; set it again without "
            f"it (e.g. export {var}=\"$(tr -d '[:space:]' < keyfile)\")"
        )
    from moaa.public import add_secret

    add_secret(value, endpoint.api_key_env)  # scrubbed from everything moaa writes
    return value


def check_environment(config: MoaaConfig) -> None:
    """Fail before any work when a used endpoint's key variable is missing."""
    for name in config.used_endpoints():
        resolve_api_key(name, config.endpoints[name])


def missing_keys(config: MoaaConfig) -> list[str]:
    """One line per used endpoint whose key variable is unset (a dry run reports them, not fails)."""
    out = []
    for name in config.used_endpoints():
        try:
            resolve_api_key(name, config.endpoints[name])
        except ConfigError as exc:
            out.append(str(exc))
    return out


def dump_config(config: MoaaConfig) -> dict[str, Any]:
    """The resolved config as plain data (it holds variable names, never keys)."""
    return config.model_dump(mode="json")


def dump_public_config(config: MoaaConfig) -> dict[str, Any]:
    """dump_config without secrets: a URL's credentials and any key value removed (what is written)."""
    from moaa.public import scrub

    return scrub(dump_config(config))
