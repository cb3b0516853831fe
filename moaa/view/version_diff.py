"""Two versions side by side: per config, the rows added, removed and changed, matched by prompt_id.

    diff = diff_versions(Path("data/demo/v3"), Path("data/demo/v4"))
    diff["sft"]["changed"]       # prompt ids whose row differs in any column

A config whose data files are the same bytes in both manifests (a reviewed version's trace and
failures, a re-run's copied files) is compared by their hashes without reading a row; otherwise each
row is reduced to a digest (prompt_id and every column, read a row group at a time), so memory grows
with the number of prompts (a few dozen bytes each), not with their texts. Trace rows are many per
prompt: a prompt's steps are compared as one digest. Failures are keyed by prompt_id and stage.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from moaa.dataset.manifest import read_manifest
from moaa.view.paging import config_table

CONFIGS = ("sft", "dpo", "trace", "failures")
EXAMPLES = 50


def _files(manifest: dict[str, Any], config: str) -> list[str]:
    return sorted(m["sha256"] for rel, m in (manifest.get("files") or {}).items() if rel.startswith(f"data/{config}/"))


def _digests(version_dir: Path, config: str, ids_only: bool) -> dict[str, bytes]:
    table = config_table(version_dir, config)
    out: dict[str, Any] = {}
    columns = ["prompt_id", "stage"] if ids_only and config == "failures" else ["prompt_id"] if ids_only else None
    for _, _, t in table.groups(columns):
        for row in t.to_pylist():
            key = f"{row['prompt_id']} ({row['stage']})" if config == "failures" else row["prompt_id"]
            if ids_only:
                out[key] = b""
                continue
            digest = hashlib.blake2b(repr(sorted(row.items())).encode(), digest_size=12)
            if config == "trace" and key in out:  # a prompt's steps: one digest over all of them
                digest.update(out[key])
            out[key] = digest.digest()
    return out


def diff_versions(a: Path, b: Path, examples: int = EXAMPLES) -> dict[str, dict[str, Any]]:
    """{config: {rows_a, rows_b, added, removed, changed, same (counts), examples: {added, removed, changed}}}."""
    ma, mb = read_manifest(a), read_manifest(b)
    out = {}
    for config in CONFIGS:
        rows_a = sum(((ma.get("counts") or {}).get("rows", {}).get(config) or {}).values())
        rows_b = sum(((mb.get("counts") or {}).get("rows", {}).get(config) or {}).values())
        if not rows_a and not rows_b:
            continue
        same_files = _files(ma, config) == _files(mb, config)
        left = _digests(a, config, same_files) if rows_a else {}
        right = _digests(b, config, same_files) if rows_b else {}
        added = [k for k in right if k not in left]
        removed = [k for k in left if k not in right]
        changed = [] if same_files else [k for k in right if k in left and left[k] != right[k]]
        out[config] = {
            "rows_a": rows_a, "rows_b": rows_b, "added": len(added), "removed": len(removed),
            "changed": len(changed), "same": len(right) - len(added) - len(changed), "identical_files": same_files,
            "examples": {"added": added[:examples], "removed": removed[:examples], "changed": changed[:examples]},
        }  # fmt: skip
    return out


def row_diff(a: Path, b: Path, config: str, prompt_id: str) -> dict[str, Any]:
    """One prompt's row in both versions: each row (None where absent), the columns that differ, and
    the final texts word by word (moaa.view.textdiff)."""
    from moaa.view.paging import find_row
    from moaa.view.textdiff import word_diff

    left, right = (find_row(config_table(v, config), prompt_id) for v in (a, b))
    row_a, row_b = (found[1] if found else None for found in (left, right))
    columns = sorted({k for row in (row_a, row_b) if row for k in row if not k.startswith("_")})
    differ = [c for c in columns if (row_a or {}).get(c) != (row_b or {}).get(c)]
    texts = {}
    for column in {"sft": ("messages",), "dpo": ("chosen", "rejected")}.get(config, ()):
        old, new = (((row or {}).get(column) or [{}])[-1].get("content") or "" for row in (row_a, row_b))
        if old != new:
            texts[column] = word_diff(old, new)
    return {"a": row_a, "b": row_b, "differ": differ, "texts": texts}
