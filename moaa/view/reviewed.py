"""A person's review applied: the next version of the data set, without the rejected rows and with the edits.

    applied = apply_review(Path("data"), "local-moa@v3")     # moaa review apply local-moa@v3
    applied.version.path                                    # data/local-moa/v4

The reviewed version is written by moaa.dataset.versions.write_derived from the review file as it is
at that moment (a copy is taken first, so decisions made meanwhile wait for the next apply): SFT rows
and DPO pairs a person rejected are left out, an edit replaces the final answer's text (an SFT row's
last message, a pair's chosen or rejected side) and clears that row's or side's `verification`
verdict where the column exists (the verdict judged the old text); the trace and failures are copied
as they are (they record what the run did). The version carries the copy as `review.jsonl`; its
manifest names the parent, the file and its sha256 and the counts, and so does its card. A run that
held its publishing for this review (`output.review: required`) gets the reviewed version published
to the repo it named.
"""

from __future__ import annotations

import copy
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from moaa.dataset.derived import RowEdits, rewrite_data
from moaa.dataset.manifest import read_manifest
from moaa.dataset.versions import VersionInfo, resolve_version, write_derived
from moaa.errors import InputError
from moaa.fileio import sha256_file
from moaa.view.decisions import ReviewLog, RowReview, review_path, tally
from moaa.view.paging import missing_ids

log = logging.getLogger(__name__)

REVIEW_FILE = "review.jsonl"


@dataclass
class Applied:
    version: VersionInfo
    derived: dict[str, Any]  # what the manifest records
    published: dict[str, Any] | None = None


def row_edits(state: dict[str, dict[str, RowReview]]) -> dict[str, RowEdits]:
    """The decisions as what becomes of each config's rows: rejected ones dropped, edited ones changed."""
    edits: dict[str, RowEdits] = {}
    for config, rows in state.items():
        mine = edits.setdefault(config, RowEdits())
        for pid, row in rows.items():
            if row.decision == "reject":
                mine.drop.add(pid)
            elif row.edits:
                mine.change[pid] = _changer(dict(row.edits))
    return edits


def _changer(texts: dict[str, str]):
    def change(row: dict[str, Any]) -> dict[str, Any]:
        row = copy.deepcopy(row)
        for name, text in texts.items():  # messages (SFT), chosen / rejected (DPO): the final message's text
            if not row.get(name):
                raise InputError(f"row {row['prompt_id']} has no {name} to edit")
            row[name][-1]["content"] = text
            _clear_verdict(row, name)
        return row

    return change


def _clear_verdict(row: dict[str, Any], name: str) -> None:
    """An edited text's verification verdict no longer applies (issue 29's column, where present)."""
    verdict = row.get("verification")
    if not isinstance(verdict, dict):
        return
    if name == "messages":
        row["verification"] = None
    elif name in verdict:
        row["verification"] = verdict | {name: None}


def apply_review(root: Path, ref: str, *, publish: bool | None = None) -> Applied:
    """Write the reviewed version of `ref` (name@vN) from its review file; publish it when its run held
    its publishing for review (`publish` None), or as `publish` says."""
    version_dir = resolve_version(Path(root), ref)
    source = review_path(version_dir)
    label = f"{version_dir.parent.name}@{version_dir.name}"
    if not ReviewLog(source).entries():
        raise InputError(f"{label} has no review decisions ({source}); make them with `moaa view {label}` first")
    done = dict((sha, version) for version, sha in applied_as(Path(root), version_dir)).get(sha256_file(source))
    if done:
        ref = f"{version_dir.parent.name}@{done}"
        raise InputError(f"{label}'s decisions as they are now were applied already as {ref}; decide more rows first")
    manifest = read_manifest(version_dir)
    derived: dict[str, Any] = {}  # filled by write(), which write_derived calls before it reads this

    def write(folder: Path) -> dict[str, dict[str, int]]:
        snapshot = folder / REVIEW_FILE
        shutil.copyfile(source, snapshot)  # decisions made from here on wait for the next apply
        state = ReviewLog(snapshot).state()
        unknown = missing_ids(version_dir, {config: set(rows) for config, rows in state.items()})
        if unknown:
            config, ids = next(iter(unknown.items()))
            raise InputError(f"{source}: {len(ids)} decided {config} row(s) are not in {label} (e.g. {ids[0]!r})")
        edits = row_edits(state)
        rows = rewrite_data(version_dir, folder, {c: e for c, e in edits.items() if e})
        derived.update(_record(label, snapshot, state))
        return rows

    info = write_derived(Path(root), version_dir, write, derived=derived)
    applied = Applied(info, derived)
    held = (manifest.get("run") or {}).get("publish_held")
    if publish or (publish is None and held):
        applied.published = _publish(info, manifest, held)
    return applied


def _record(label: str, snapshot: Path, state: dict[str, dict[str, RowReview]]) -> dict[str, Any]:
    counts = tally(state)
    entries = ReviewLog(snapshot).entries()
    return {
        "kind": "review", "from": label, "file": REVIEW_FILE, "sha256": sha256_file(snapshot),
        "decisions": len(entries), "reviewed_at": entries[-1]["at"] if entries else None,
        "removed": {c: n["reject"] for c, n in counts.items()},
        "edited": {c: sum(1 for r in state[c].values() if r.edits and r.decision != "reject") for c in counts},
        "flagged": {c: n["flag"] for c, n in counts.items()},
        "accepted": {c: n["accept"] for c, n in counts.items()},
    }  # fmt: skip


def _publish(info: VersionInfo, manifest: dict[str, Any], held: Any) -> dict[str, Any]:
    from moaa.dataset.hub import publish_version
    from moaa.errors import ConfigError

    repo_id = (held or {}).get("repo_id") if isinstance(held, dict) else None
    repo_id = repo_id or ((manifest.get("config") or {}).get("output") or {}).get("publish_repo_id")
    if not repo_id:
        raise ConfigError(
            f"{info.name}@{info.version} is written, but its run named no output.publish_repo_id to publish it to; "
            f"run `moaa publish {info.name}@{info.version} --repo-id ORG/NAME`"
        )
    result = publish_version(info.path, repo_id, None, os.environ.get("HF_TOKEN"), False)
    return vars(result)


def applied_as(root: Path, version_dir: Path) -> list[tuple[str, str]]:
    """(version, review file sha256) of each version written from this one's review, oldest first."""
    from moaa.dataset.versions import list_versions
    from moaa.errors import MoaaError

    label = f"{version_dir.parent.name}@{version_dir.name}"
    out = []
    for listed in list_versions(root):
        if listed["name"] != version_dir.parent.name or listed["version"] == version_dir.name:
            continue
        try:
            derived = read_manifest(Path(listed["path"])).get("derived") or {}
        except MoaaError:
            continue
        if derived.get("kind") == "review" and derived.get("from") == label:
            out.append((listed["version"], str(derived.get("sha256"))))
    return out
