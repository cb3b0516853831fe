"""A version's `moaa_manifest.json`: provenance (config, code, packages, models, counts) and file hashes.

The manifest is what makes a version reproducible and checkable: it records the resolved config
(secrets are only ever named by their variable, and a defensive scrub strips any value equal to a
`*_KEY`/`*_TOKEN`/`*_SECRET` environment variable), the moaa version and git commit, the versions
of the packages that shaped the data, and the sha256 of every other file in the version folder, so
`verify_version` can tell a modified, missing or extra file.
"""

from __future__ import annotations

import importlib.metadata
import json
import logging
import shutil
import subprocess
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from moaa.fileio import sha256_file
from moaa.public import machine_paths, public_value, scrub_text, secret_values, served_name
from moaa.version import __version__

log = logging.getLogger(__name__)

MANIFEST_NAME = "moaa_manifest.json"
PACKAGES = (
    "datasets",
    "trl",
    "transformers",
    "huggingface_hub",
    "openai",
    "prefect",
    "polars",
    "pyarrow",
    "pydantic",
    "httpx",
    "torch",
    "xllamacpp",
)
_RUN_INFO_FIELDS = ("stats", "counts", "timings", "prompt_source", "methods", "summary_text", "prompts_added")
_MIN_SUBSTRING_SECRET = 8  # shorter secrets are only matched as whole values (no false hits)


def scrub_secrets(data: Any, secrets: dict[str, str] | None = None, where: str = "") -> Any:
    """A copy of `data` where any string equal to (or holding) a secret's value, or a URL's
    credentials, is redacted (moaa.public.scrub_text, with a warning naming where a key was)."""
    secrets = secret_values() if secrets is None else secrets
    if isinstance(data, dict):
        return {k: scrub_secrets(v, secrets, f"{where}.{k}" if where else str(k)) for k, v in data.items()}
    if isinstance(data, (list, tuple)):
        return [scrub_secrets(v, secrets, f"{where}[{i}]") for i, v in enumerate(data)]
    if isinstance(data, str):
        for value, name in secrets.items():
            if data == value or (len(value) >= _MIN_SUBSTRING_SECRET and value in data):
                log.warning("%s held the value of $%s; it was redacted (name the variable instead)", where, name)
                data = data.replace(value, f"<redacted:{name}>")
        return scrub_text(data, {})  # credentials inside URLs
    return data


def package_versions() -> dict[str, str | None]:
    """Installed versions of the packages that shape the data (None when absent)."""
    out: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


def git_commit() -> dict[str, Any]:
    """The commit of the moaa checkout (and whether it had local changes); nulls outside git."""
    repo = Path(__file__).resolve().parent

    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.SubprocessError):
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    status = git("status", "--porcelain", "--untracked-files=no") if commit else None
    return {"commit": commit, "dirty": bool(status) if status is not None else None}


def hash_files(folder: Path) -> dict[str, dict[str, Any]]:
    """{posix path relative to folder: {sha256, size}} for every file except the manifest."""
    out = {}
    files = {path.relative_to(folder).as_posix(): path for path in folder.rglob("*") if path.is_file()}
    for rel in sorted(files):  # by the name's text: report.md before report/calls.png
        if rel != MANIFEST_NAME:
            out[rel] = {"sha256": sha256_file(files[rel]), "size": files[rel].stat().st_size}
    return out


def copy_verified(source: Path, target: Path, files: dict[str, dict[str, Any]]) -> bool:
    """Copy `files` ({relative path: {sha256, size}} as a manifest lists them) from source to target.

    Plain copies (never links: each version stays independent). Each copy is re-hashed; False, with
    every copy made so far removed, as soon as one is missing, unsafe or unlike its manifest entry."""
    copied: list[Path] = []
    for rel, meta in files.items():
        src, dst = source / rel, target / rel
        ok = not Path(rel).is_absolute() and ".." not in Path(rel).parts and src.is_file()
        if ok:
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, dst)
            copied.append(dst)
            ok = dst.stat().st_size == meta.get("size") and sha256_file(dst) == meta.get("sha256")
        if not ok:
            for path in copied:
                path.unlink(missing_ok=True)
            return False
    return True


def endpoint_models(config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """{endpoint name: {model, local}}: which models answered, as served; no URLs, no keys."""
    endpoints = config.get("endpoints") or {}
    return {
        name: {
            "model": served_name(str(ep.get("model"))),
            "local": bool(ep.get("local") or ep.get("backend") == "transformers"),
        }
        for name, ep in endpoints.items()
    }


def build_manifest(
    folder: Path,
    *,
    name: str,
    version: str,
    parent: str | None,
    config: dict[str, Any],
    run_info: dict[str, Any],
    rows: dict[str, dict[str, int]],
    split: dict[str, Any],
) -> dict[str, Any]:
    """The manifest of the version written in `folder` (hashes every file already there).

    It is published with the data, so what it records is public (moaa.public): paths relative to
    the project (or `~`), private endpoint URLs removed, models named as served."""
    secrets, prefixes = secret_values(), machine_paths(folder.resolve().parent.parent)
    config = public_value(scrub_secrets(config, secrets, "config"), prefixes)
    run_info = public_value(scrub_secrets(run_info, secrets, "run_info"), prefixes)
    counts = dict(run_info.get("counts") or {})
    counts["rows"] = rows
    return {
        "name": name,
        "version": version,
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "parent": parent,
        "moaa_version": __version__,
        "git": git_commit(),
        "packages": package_versions(),
        "config": config,
        "endpoints": endpoint_models(config),
        "prompt_source": run_info.get("prompt_source"),
        "prompts_added": run_info.get("prompts_added"),  # what this version holds that its parent did not
        "methods": run_info.get("methods"),
        "summary": run_info.get("summary_text"),
        "split": split,
        "counts": counts,
        "stats": run_info.get("stats"),
        "timings": run_info.get("timings"),
        "run": {k: v for k, v in run_info.items() if k not in _RUN_INFO_FIELDS},  # e.g. the pipeline's summary
        "files": hash_files(folder),
    }


def write_manifest(folder: Path, manifest: dict[str, Any]) -> Path:
    path = folder / MANIFEST_NAME
    path.write_text(json.dumps(manifest, indent=2, ensure_ascii=False, default=str) + "\n", encoding="utf-8")
    return path


def read_manifest(folder: Path) -> dict[str, Any]:
    from moaa.errors import InputError

    path = folder / MANIFEST_NAME
    if not path.is_file():
        raise InputError(f"{path} is missing; {folder} is not a moaa data set version")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise InputError(f"{path} is not valid JSON ({exc}); the version is damaged") from exc


def verify_version(path: Path) -> list[str]:
    """Problems found re-hashing the version folder against its manifest; empty when intact."""
    path = Path(path)
    if not (path / MANIFEST_NAME).is_file():
        return [f"missing: {MANIFEST_NAME}"]
    try:
        expected = json.loads((path / MANIFEST_NAME).read_text(encoding="utf-8"))["files"]
    except (json.JSONDecodeError, KeyError, TypeError):
        return [f"modified: {MANIFEST_NAME} (not a readable manifest)"]
    problems = []
    for rel, meta in sorted(expected.items()):
        file = path / rel
        if not file.is_file():
            problems.append(f"missing: {rel}")
        elif file.stat().st_size != meta["size"] or sha256_file(file) != meta["sha256"]:
            problems.append(f"modified: {rel} (sha256 differs from the manifest)")
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        rel = file.relative_to(path).as_posix()
        if rel != MANIFEST_NAME and rel not in expected:
            problems.append(f"extra: {rel} (not in the manifest)")
    return problems
