"""Publish a data set version to the Hugging Face Hub as one commit, tagged with the version.

    result = publish_version(Path("data/moa-sft/v3"), "my-org/moa-sft", private=True, token=os.environ["HF_TOKEN"])
    load_dataset("my-org/moa-sft", "dpo", revision="v3")  # consumers pin the tag

The version is verified against its manifest first (a modified version is never published). The
card is then rendered again for its destination (its load snippet names `ORG/NAME` and the tag, not
the producer's folder) and the uploaded manifest records that card's sha256 in place of the local
one, so the published tree verifies against the published manifest exactly as the local version
does against the local one, and the local version stays untouched (versions are immutable). Before
any upload, every file that would be published is searched for a path of this machine or a private
URL (moaa.public); one is refused with the file and what to do. One
`create_commit` carries a `CommitOperationAdd` for every file of the version and deletes the files
an earlier version left in the repo (so `main` holds exactly this version and the README's
`configs:` globs match no stale shards); the commit is then tagged `vN`. A tag that already exists
is refused before anything is uploaded: published versions are as immutable as local ones.
The Hub endpoint is `HF_ENDPOINT` (read at call time) or huggingface.co; the token is never logged.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from moaa.config import REPO_ID
from moaa.dataset.card import CARD_NAME, render_card
from moaa.dataset.derived import review_pending
from moaa.dataset.manifest import MANIFEST_NAME, read_manifest, verify_version
from moaa.errors import ConfigError, EndpointError, InputError, MoaaError
from moaa.public import find_leak, machine_paths

log = logging.getLogger(__name__)

KEEP_REMOTE = (".gitattributes",)  # Hub bookkeeping files a version does not carry


@dataclass
class PublishResult:
    repo_id: str
    tag: str  # "v3"
    files: list[tuple[str, int]]  # (path in repo, size in bytes)
    private: bool
    dry_run: bool
    commit_oid: str | None = None
    commit_url: str | None = None
    deleted: list[str] = field(default_factory=list)  # files of an earlier version removed by the commit

    @property
    def total_bytes(self) -> int:
        return sum(size for _, size in self.files)


def plan_files(version_dir: Path) -> list[tuple[str, int]]:
    """(posix path relative to the version, size) of every file of the version, sorted."""
    return [
        (p.relative_to(version_dir).as_posix(), p.stat().st_size) for p in sorted(version_dir.rglob("*")) if p.is_file()
    ]


def hub_files(version_dir: Path, manifest: dict[str, Any], repo_id: str) -> dict[str, bytes | Path]:
    """{path in repo: contents (bytes) or the local file} as published: the card rendered for
    `repo_id` and a manifest whose file list holds that card's hash (see the module docstring)."""
    files: dict[str, bytes | Path] = {rel: version_dir / rel for rel, _ in plan_files(version_dir)}
    card = render_card(version_dir, manifest, repo_id=repo_id).encode("utf-8")
    published = dict(manifest)
    published["files"] = dict(manifest.get("files") or {}) | {
        CARD_NAME: {"sha256": hashlib.sha256(card).hexdigest(), "size": len(card)}
    }
    local = (manifest.get("files") or {}).get(CARD_NAME, {}).get("sha256")
    published["card"] = dict(manifest.get("card") or {}) | {"rendered_for": repo_id, "local_sha256": local}
    text = json.dumps(published, indent=2, ensure_ascii=False, default=str) + "\n"
    return files | {CARD_NAME: card, MANIFEST_NAME: text.encode("utf-8")}


def refuse_leaks(version_dir: Path, files: dict[str, bytes | Path]) -> None:
    """InputError naming the first file that would publish a path of this machine or a private URL."""
    found = find_leak(files, machine_paths(version_dir.resolve().parent.parent))
    if found:
        name, what = found
        raise InputError(
            f"{version_dir / name} holds {what!r}, a path or private URL of this machine; it will not be "
            "published: remove it from the prompts or config that put it there and write a new version"
        )


def publish_version(
    version_dir: Path,
    repo_id: str,
    private: bool | None = None,
    token: str | None = None,
    dry_run: bool = False,
    *,
    endpoint: str | None = None,
) -> PublishResult:
    """Upload `version_dir` to dataset repo `repo_id` as one commit tagged with its version.

    `private=None` follows the version's `output.private` (true unless the run set it false)."""
    version_dir = Path(version_dir)
    if not REPO_ID.match(repo_id or ""):
        raise ConfigError(f"repo id {repo_id!r} is invalid; use ORG/NAME (e.g. my-org/moa-sft)")
    manifest = read_manifest(version_dir)
    problems = verify_version(version_dir)
    if problems:
        raise InputError(f"{version_dir} does not match its manifest ({problems[0]}); it will not be published")
    pending = review_pending(manifest)
    if pending and not dry_run:
        raise InputError(pending)
    tag = str(manifest.get("version") or version_dir.name)
    if private is None:
        private = bool(((manifest.get("config") or {}).get("output") or {}).get("private", True))
    files = hub_files(version_dir, manifest, repo_id)
    refuse_leaks(version_dir, files)
    sizes = sorted((p, len(c) if isinstance(c, bytes) else c.stat().st_size) for p, c in files.items())
    result = PublishResult(repo_id, tag, sizes, private, dry_run)
    if dry_run:
        return result
    if not token:
        raise MoaaError("HF_TOKEN is not set; export a Hugging Face write token as HF_TOKEN (or use --dry-run)")
    endpoint = endpoint or os.environ.get("HF_ENDPOINT") or None
    try:
        _upload(result, files, manifest, token, endpoint)
    except MoaaError:
        raise
    except Exception as exc:
        raise _hub_error(exc, repo_id, tag, token) from None
    log.info("published %s as %s@%s (commit %s)", version_dir, repo_id, tag, result.commit_oid)
    return result


def _upload(
    result: PublishResult, files: dict[str, bytes | Path], manifest: dict, token: str, endpoint: str | None
) -> None:
    from huggingface_hub import CommitOperationAdd, CommitOperationDelete, HfApi

    api = HfApi(endpoint=endpoint, token=token)
    repo_id, tag = result.repo_id, result.tag
    api.create_repo(repo_id, repo_type="dataset", private=result.private, exist_ok=True)
    refs = api.list_repo_refs(repo_id, repo_type="dataset")
    if any(ref.name == tag for ref in refs.tags):
        raise MoaaError(f"{repo_id} already has tag {tag}; published versions are immutable (publish a newer version)")
    ours = {path for path, _ in result.files}
    remote = api.list_repo_files(repo_id, repo_type="dataset")
    result.deleted = sorted(p for p in remote if p not in ours and p not in KEEP_REMOTE)
    operations = [CommitOperationDelete(path_in_repo=p) for p in result.deleted]
    operations += [
        CommitOperationAdd(path_in_repo=p, path_or_fileobj=c if isinstance(c, bytes) else str(c))
        for p, c in sorted(files.items())
    ]
    name = manifest.get("name") or result.repo_id.split("/")[1]
    commit = api.create_commit(
        repo_id,
        operations,
        commit_message=f"{name} {tag}",
        commit_description=str(manifest.get("summary") or f"moaa data set {name} version {tag}"),
        repo_type="dataset",
    )
    result.commit_oid, result.commit_url = commit.oid, commit.commit_url
    api.create_tag(repo_id, tag=tag, revision=commit.oid, repo_type="dataset", tag_message=f"{name} {tag}")


def _hub_error(exc: Exception, repo_id: str, tag: str, token: str) -> MoaaError:
    """One line from a Hub failure, with the token cut out should the server have echoed it."""
    status = getattr(getattr(exc, "response", None), "status_code", None)
    first = (str(exc).strip().splitlines() or [type(exc).__name__])[0].replace(token, "<HF_TOKEN>")
    hint = {401: "check HF_TOKEN", 403: "the token needs write access to this org", 404: "check the repo id"}
    what = f"publishing {tag} to {repo_id} failed"
    return EndpointError(f"{what}: {first}" + (f" ({hint[status]})" if status in hint else ""))
