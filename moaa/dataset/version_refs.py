"""Finding a data set's versions on disk: `name@vN` references, the newest version, the list under a root.

    <root>/<name>/v<N>/   a version (moaa.dataset.versions writes them); the highest N is the newest
    resolve_version(root, "moa-sft@v2") -> <root>/moa-sft/v2; resolve_version(root, "moa-sft") -> the newest

Reading only: writing a version (moaa.dataset.versions) and drawing its report (moaa.dataset.report_plots)
both look versions up here.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from moaa.dataset.manifest import MANIFEST_NAME, read_manifest
from moaa.errors import ConfigError, InputError

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
VERSION_RE = re.compile(r"^v?([1-9][0-9]*)$")


def version_numbers(dataset_dir: Path) -> list[int]:
    """The version numbers under a data set folder, lowest first."""
    if not dataset_dir.is_dir():
        return []
    found = (VERSION_RE.match(p.name) for p in dataset_dir.iterdir() if p.is_dir() and p.name.startswith("v"))
    return sorted(int(m.group(1)) for m in found if m)


def latest_number(dataset_dir: Path) -> int | None:
    """The newest version: the highest version folder. A folder appears only by an atomic rename
    of a complete version, and LATEST never points lower, so LATEST is a pointer for readers that
    do not know this rule; a kill between the rename and the LATEST update loses nothing."""
    numbers = version_numbers(dataset_dir)
    return numbers[-1] if numbers else None


def check_name(name: str) -> None:
    if not NAME_RE.match(name):
        raise ConfigError(f"data set name {name!r} is invalid; use letters, digits, '.', '_' or '-' (e.g. 'moa-sft')")


def parse_version(version: int | str, name: str) -> int:
    match = VERSION_RE.match(str(version))
    if not match:
        raise ConfigError(f"version {version!r} of {name} is invalid; use v1, v2, ...")
    return int(match.group(1))


def resolve_version(root: Path, ref: str) -> Path:
    """The folder of 'name@vN' (or 'name' for the latest); InputError listing what exists."""
    root = Path(root)
    name, _, version = ref.partition("@")
    check_name(name)
    dataset_dir = root / name
    have = version_numbers(dataset_dir)
    if not have:
        raise InputError(f"no data set named {name!r} under {root}; see `moaa datasets list --root {root}`")
    number = parse_version(version, name) if version else latest_number(dataset_dir)
    if number not in have:
        listed = ", ".join(f"v{n}" for n in have)
        raise InputError(f"{name}@v{number} does not exist under {root}; versions: {listed}")
    return dataset_dir / f"v{number}"


def list_versions(root: Path) -> list[dict[str, Any]]:
    """One dict per version under root: name, version, path, created_at, parent, rows, latest, summary."""
    root = Path(root)
    out = []
    if not root.is_dir():
        return out
    for dataset_dir in sorted(p for p in root.iterdir() if p.is_dir() and NAME_RE.match(p.name)):
        latest = latest_number(dataset_dir)
        for number in version_numbers(dataset_dir):
            path = dataset_dir / f"v{number}"
            try:
                manifest = read_manifest(path)
            except InputError:
                if not (path / MANIFEST_NAME).exists():
                    continue  # not a moaa version folder
                manifest = {}
            rows = (manifest.get("counts") or {}).get("rows", {})
            out.append({"name": dataset_dir.name, "version": f"v{number}", "path": path, "rows": rows,
                        "created_at": manifest.get("created_at"), "parent": manifest.get("parent"),
                        "latest": number == latest, "summary": manifest.get("summary")})  # fmt: skip
    return out
