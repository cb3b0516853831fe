"""`moaa view NAME@vN --export DIR`: a version (or a filtered subset) as static HTML that opens without a
server, for a colleague or a pull request.

    written = export_version(Path("data"), "local-moa@v3", Path("review-v3"), {"verdict": "fail"}, limit=500)

DIR gets `index.html` (the version and its first config's table), each config's table pages
(`sft.html`, `sft-page2.html`, ...), a page per SFT row and DPO pair (`sft-<id>.html`, `dpo-<id>.html`)
and the stylesheet; every link is relative, so the folder can be zipped, attached or served by any
static host. The pages are the viewer's own (moaa.view.pages), read-only: no review buttons, the
review decisions made so far shown as they stand. Filters apply to every config that has them;
`limit` caps the rows per config that get pages (0: all), and the table says so. Rows are read in
file order a row group at a time and the trace once, so an export costs one pass over the version.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from moaa.dataset.versions import resolve_version
from moaa.errors import InputError
from moaa.view import paging
from moaa.view.decisions import REVIEWED, RowReview
from moaa.view.links import FileLinks
from moaa.view.pages import STATIC, Site

TABLE_ROWS = 100


def export_version(root: Path, ref: str, out: Path, params: dict[str, str], limit: int = 1000) -> dict[str, int]:
    """Write the snapshot; {config: rows exported} (tables; SFT and DPO rows also as pages)."""
    path = resolve_version(Path(root), ref)
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise InputError(f"{out} exists and is not an empty folder; pass a new --export folder")
    out.mkdir(parents=True, exist_ok=True)
    site = Site(Path(root), Path("runs"), FileLinks(path.parent.name, path.name))
    v = site.version(path.parent.name, path.name)
    shutil.copyfile(STATIC / "viewer.css", out / "viewer.css")
    state = site.reviews(v)
    written = {}
    for config in v.configs():
        query = paging.Query.of(config, params)
        table = paging.config_table(v.path, config)
        decided = {pid: r.decision or "" for pid, r in state.get(config, {}).items()}
        positions = list(paging.matches(table, query, decided)) if query else range(table.rows)
        kept = list(positions[:limit] if limit else positions)
        cap = len(kept)
        for page in range(max(1, -(-cap // TABLE_ROWS))):
            page_params = params | {"page": str(page + 1), "size": str(TABLE_ROWS)}
            html = site.version_page(v.name, v.version, config, page_params, cap=cap)
            (out / site.links.page(v.name, v.version, config, page)).write_text(html, encoding="utf-8")
        if config in REVIEWED:
            _row_pages(site, v, config, table, kept, query.params(), state.get(config, {}), out)
        written[config] = cap
    first = v.configs()[0]
    shutil.copyfile(out / site.links.page(v.name, v.version, first, 0), out / "index.html")
    return written


def _row_pages(
    site: Site, v: Any, config: str, table: paging.ConfigTable, positions: list[int], params: dict[str, str],
    state: dict[str, RowReview], out: Path,
) -> None:  # fmt: skip
    """One page per row, `batch` rows read at a time, their trace steps in one pass over the trace."""
    batch = 500
    for start in range(0, len(positions), batch):
        rows = paging.rows_at(table, positions[start : start + batch])
        steps = _steps_of(v, {r["prompt_id"] for r in rows})
        for offset, row in enumerate(rows):
            i = start + offset
            before = rows[offset - 1]["prompt_id"] if offset else None
            if i and before is None:
                before = paging.prompt_ids_at(table, [positions[i - 1]])[0]
            after = rows[offset + 1]["prompt_id"] if offset + 1 < len(rows) else None
            if after is None and i + 1 < len(positions):
                after = paging.prompt_ids_at(table, [positions[i + 1]])[0]
            around = (before, after, i + 1, len(positions))
            review = state.get(row["prompt_id"], RowReview())
            html = site.render_row(v, config, row, steps.get(row["prompt_id"], []), params, around, review)
            (out / site.links.row(v.name, v.version, config, row["prompt_id"])).write_text(html, encoding="utf-8")


def _steps_of(v: Any, ids: set[str]) -> dict[str, list[dict[str, Any]]]:
    """The trace steps of these prompts, by prompt id (one pass over the trace's prompt_id column)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if "trace" not in v.configs() or not ids:
        return {}
    trace = paging.config_table(v.path, "trace")
    wanted = pa.array(sorted(ids), pa.string())
    positions: list[int] = []
    for start, _, t in trace.groups(["prompt_id"]):
        positions += [start + i for i in pc.indices_nonzero(pc.is_in(t["prompt_id"], value_set=wanted)).to_pylist()]
    out: dict[str, list[dict[str, Any]]] = {}
    for step in paging.rows_at(trace, positions):
        out.setdefault(step["prompt_id"], []).append(step)
    return out
