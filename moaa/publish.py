"""Publish a data set version to the Hugging Face Hub as one commit, tagged with the version.

    result = publish_version(Path("data/moa-sft/v3"), "my-org/moa-sft", private=True, token=os.environ["HF_TOKEN"])
    load_dataset("my-org/moa-sft", "dpo", revision="v3")  # consumers pin the tag

The version is verified against its manifest first (a modified version is never published). One
`create_commit` carries a `CommitOperationAdd` for every file of the version and deletes the files
an earlier version left in the repo (so `main` holds exactly this version and the README's
`configs:` globs match no stale shards); the commit is then tagged `vN`. A tag that already exists
is refused before anything is uploaded: published versions are as immutable as local ones.
The Hub endpoint is `HF_ENDPOINT` (read at call time) or huggingface.co; the token is never logged.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from moaa.errors import ConfigError, EndpointError, InputError, MoaaError
from moaa.manifest import read_manifest, verify_version

log = logging.getLogger(__name__)

_REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")
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
    """(posix path relative to the version, size) of every file to upload, sorted."""
    return [
        (p.relative_to(version_dir).as_posix(), p.stat().st_size) for p in sorted(version_dir.rglob("*")) if p.is_file()
    ]


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
    if not _REPO_ID.match(repo_id or ""):
        raise ConfigError(f"repo id {repo_id!r} is invalid; use ORG/NAME (e.g. my-org/moa-sft)")
    manifest = read_manifest(version_dir)
    problems = verify_version(version_dir)
    if problems:
        raise InputError(f"{version_dir} does not match its manifest ({problems[0]}); it will not be published")
    tag = str(manifest.get("version") or version_dir.name)
    if private is None:
        private = bool(((manifest.get("config") or {}).get("output") or {}).get("private", True))
    result = PublishResult(repo_id, tag, plan_files(version_dir), private, dry_run)
    if dry_run:
        return result
    if not token:
        raise MoaaError("HF_TOKEN is not set; export a Hugging Face write token as HF_TOKEN (or use --dry-run)")
    endpoint = endpoint or os.environ.get("HF_ENDPOINT") or None
    try:
        _upload(result, version_dir, manifest, token, endpoint)
    except MoaaError:
        raise
    except Exception as exc:
        raise _hub_error(exc, repo_id, tag, token) from None
    log.info("published %s as %s@%s (commit %s)", version_dir, repo_id, tag, result.commit_oid)
    return result


def _upload(result: PublishResult, version_dir: Path, manifest: dict, token: str, endpoint: str | None) -> None:
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
    operations += [CommitOperationAdd(path_in_repo=p, path_or_fileobj=str(version_dir / p)) for p, _ in result.files]
    name = manifest.get("name") or version_dir.parent.name
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
