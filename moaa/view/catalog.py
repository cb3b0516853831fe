"""The data sets under an output root, as the viewer's first page lists them: per version its rows per
config, verified and failed counts, cost, method, parent, date and where its review stands.

    for entry in catalog(Path("data")): entry["name"], entry["versions"][0]["cost"]

Everything comes from the manifests (moaa.dataset.versions.list_versions) and the review files beside
the versions; no row is read, so the page answers at once for versions of any size.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from moaa.dataset.manifest import read_manifest
from moaa.dataset.versions import list_versions
from moaa.errors import InputError
from moaa.view.decisions import ReviewLog, tally


def cost_of(manifest: dict[str, Any]) -> float | None:
    """What the data cost to make: every endpoint's cost, answers from the cache at their first price."""
    stats = manifest.get("stats") or {}
    endpoints = stats.get("endpoints", stats) if isinstance(stats, dict) else {}
    found = [c for c in endpoints.values() if isinstance(c, dict) and ("cost" in c or "cached_cost" in c)]
    if not found:
        return None
    return sum(float(c.get("cost") or 0.0) + float(c.get("cached_cost") or 0.0) for c in found)


def method_of(manifest: dict[str, Any]) -> str:
    methods = manifest.get("methods")
    if isinstance(methods, dict):
        return ", ".join(f"{k} {v}" for k, v in methods.items() if v) or "-"
    return ", ".join(map(str, methods or [])) or "-"


def verification_of(manifest: dict[str, Any]) -> dict[str, int] | None:
    """Verified / failed / unverifiable SFT answers, where the run checked answers (issue 29's counters)."""
    counters = ((((manifest.get("counts") or {}).get("stages") or {}).get("sft") or {}).get("counters")) or {}
    found = {k: int(counters.get(f"verify_{k}", 0)) for k in ("pass", "fail", "unverifiable")}
    return found if any(found.values()) else None


def version_entry(path: Path, listed: dict[str, Any] | None = None) -> dict[str, Any]:
    """One version's line: rows, counts, cost, method, parent, date, review."""
    try:
        manifest = read_manifest(path)
    except InputError:
        manifest = {}
    rows = (manifest.get("counts") or {}).get("rows") or {}
    log = ReviewLog.of(path)
    entries = log.entries()
    derived = manifest.get("derived") or {}
    return {
        "name": path.parent.name, "version": path.name, "path": path, "rows": rows,
        "total": {c: sum(s.values()) for c, s in rows.items()},
        "failed": sum((rows.get("failures") or {}).values()), "verification": verification_of(manifest),
        "cost": cost_of(manifest), "method": method_of(manifest), "parent": manifest.get("parent"),
        "created_at": manifest.get("created_at"), "latest": (listed or {}).get("latest", False),
        "review": {"decisions": len(entries), "tally": tally(log.state())} if entries else None,
        "reviewed_from": derived.get("from") if derived.get("kind") == "review" else None,
        "review_required": ((manifest.get("config") or {}).get("output") or {}).get("review") == "required",
    }  # fmt: skip


def catalog(root: Path) -> list[dict[str, Any]]:
    """[{name, versions: [entry, newest first]}] for every data set under root."""
    by_name: dict[str, list[dict[str, Any]]] = {}
    for listed in list_versions(Path(root)):
        by_name.setdefault(listed["name"], []).append(version_entry(Path(listed["path"]), listed))
    return [{"name": name, "versions": sorted(v, key=lambda e: int(e["version"][1:]), reverse=True)}
            for name, v in sorted(by_name.items())]  # fmt: skip
