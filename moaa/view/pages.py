"""The viewer's pages as HTML, rendered on the server from Jinja2 templates (moaa/view/templates/), for
the web app (moaa.view.webapp) and the static snapshot (moaa.view.snapshot) alike.

    site = Site(Path("data"), Path("runs"), ServerLinks())
    html = site.version_page("demo", "v3", "sft", {"model": "qwen-a", "page": "2"})

Pages: the data sets and their versions; a version (its counts and one config as a paged, filtered
table, with the review bar); an SFT row (its conversation and the mixture's trace); a DPO pair; two
versions side by side; compare runs, one run, and one held-out prompt of a run. Each method reads
what its page shows and nothing more (moaa.view.paging), so a page of a big version answers at once.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from moaa.dataset.manifest import read_manifest
from moaa.dataset.versions import resolve_version
from moaa.errors import InputError
from moaa.view import paging
from moaa.view.decisions import EDIT_FIELDS, REVIEWED, ReviewLog, RowReview, tally
from moaa.view.reviewed import applied_as
from moaa.view.row_filters import FILTERS

TEMPLATES = Path(__file__).resolve().parent / "templates"
STATIC = Path(__file__).resolve().parent / "static"
PAGE_SIZE = 50
MAX_PAGE_SIZE = 500
CONFIG_ORDER = ("sft", "dpo", "trace", "failures", "prompts")  # prompts: the synthesized ones (instructions)


class NotFound(InputError):
    """A page for something that is not there (a 404, with the same one line)."""


@dataclass
class Version:
    name: str
    version: str
    path: Path
    manifest: dict[str, Any]

    @property
    def ref(self) -> str:
        return f"{self.name}@{self.version}"

    def configs(self) -> list[str]:
        rows = (self.manifest.get("counts") or {}).get("rows") or {}
        return [c for c in CONFIG_ORDER if c in rows]


@functools.cache
def environment() -> Any:
    """The templates' Jinja2 environment, one per process (it caches the compiled templates)."""
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=True, trim_blocks=True, lstrip_blocks=True,
        undefined=jinja2.StrictUndefined,
    )  # fmt: skip
    env.filters.update(short=_short, num=_num, money=_money, pct=lambda v: "–" if v is None else f"{100 * v:.0f}%")
    return env


def _short(text: Any, n: int = 160) -> str:
    text = " ".join(str(text or "").split())
    return text if len(text) <= n else text[: n - 1] + "…"


def _num(value: Any, digits: int = 3) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}g}" if abs(value) < 1e4 else f"{value:,.0f}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def _money(value: Any) -> str:
    return "–" if value is None else "$0" if value == 0 else f"${value:.4f}" if value < 100 else f"${value:,.2f}"


def final_text(messages: Any) -> str:
    return (messages or [{}])[-1].get("content") or "" if isinstance(messages, list) and messages else ""


def first_user(messages: Any) -> str:
    for m in messages or []:
        if m.get("role") == "user":
            return m.get("content") or ""
    return ""


class Site:
    """Renders every page; `links` says where pages are (web app or snapshot)."""

    def __init__(self, root: Path, runs: Path, links: Any):
        self.root, self.runs, self.links = Path(root), Path(runs), links
        self.env = environment()

    def render(self, template: str, **context: Any) -> str:
        return self.env.get_template(template).render(links=self.links, editable=self.links.editable, **context)

    # -------------------------------------------------------------- data

    def version(self, name: str, version: str) -> Version:
        try:
            path = resolve_version(self.root, f"{name}@{version}")
        except InputError as exc:
            raise NotFound(str(exc)) from None
        return Version(path.parent.name, path.name, path, read_manifest(path))

    def table(self, v: Version, config: str) -> paging.ConfigTable:
        if config not in v.configs():
            raise NotFound(f"{v.ref} has no {config} rows; it has {', '.join(v.configs()) or 'none'}")
        return paging.config_table(v.path, config)

    def reviews(self, v: Version) -> dict[str, dict[str, RowReview]]:
        return ReviewLog.of(v.path).state()

    # -------------------------------------------------------------- pages

    def index_page(self) -> str:
        from moaa.view.arms import list_runs
        from moaa.view.catalog import catalog

        return self.render("index.html", title="data sets", datasets=catalog(self.root), root=self.root,
                           runs=list_runs(self.runs))  # fmt: skip

    def version_page(
        self, name: str, version: str, config: str | None, params: dict[str, str], cap: int | None = None
    ) -> str:
        """A version and one config's table; `cap`: show only the first `cap` matching rows (a snapshot)."""
        v = self.version(name, version)
        configs = v.configs()
        if not configs:
            raise NotFound(f"{v.ref} has no rows")
        config = config or configs[0]
        table = self.table(v, config)
        query = paging.Query.of(config, params)
        page, size = _page_args(params)
        paging.prefetch(v.path, [c for c in configs if c in ("sft", "dpo", "trace")])  # for the rows opened next
        state = self.reviews(v)
        decided = {pid: r.decision or "" for pid, r in state.get(config, {}).items()}
        found = paging.read_page(table, query, page, size, decided)
        matching = found.total
        if cap is not None and found.total > cap:
            found.rows = [r for i, r in enumerate(found.rows) if page * size + i < cap]
            found.total = cap
        if page and page >= found.pages:
            raise NotFound(f"page {page + 1} of {config} is past its last page ({found.pages})")
        from moaa.view.catalog import version_entry

        applied = [version for version, _ in applied_as(self.root, v.path)]
        return self.render(
            "version.html", title=v.ref, v=v, entry=version_entry(v.path), config=config, configs=configs,
            table=table, query=query, params=query.params(), found=found, facets=paging.facets(table),
            filters=FILTERS[config], state=state.get(config, {}), tally=tally(state),
            reviewable=config in REVIEWED, review_file=ReviewLog.of(v.path).path, size=size,
            final_text=final_text, first_user=first_user, applied=applied, matching=matching,
        )  # fmt: skip

    def row_page(self, name: str, version: str, config: str, prompt_id: str, params: dict[str, str]) -> str:
        v = self.version(name, version)
        if config not in REVIEWED:
            raise NotFound(f"{config} rows have no page of their own; see {v.ref}'s {config} table")
        table = self.table(v, config)
        found = paging.find_row(table, prompt_id)
        if found is None:
            raise NotFound(f"{v.ref} has no {config} row for prompt {prompt_id!r}")
        position, row = found
        query = paging.Query.of(config, params)
        state = self.reviews(v).get(config, {})
        decided = {pid: r.decision or "" for pid, r in state.items()}
        around = paging.neighbours(table, position, query, decided)
        steps = []
        if "trace" in v.configs():
            steps = paging.rows_of(paging.config_table(v.path, "trace"), prompt_id)
        return self.render_row(v, config, row, steps, query.params(), around, state.get(prompt_id, RowReview()))

    def render_row(
        self, v: Version, config: str, row: dict[str, Any], steps: list[dict[str, Any]], params: dict[str, str],
        around: tuple[str | None, str | None, int, int], review: RowReview,
    ) -> str:  # fmt: skip
        """A row's page from what was read: the row, its prompt's trace steps (every stage), its
        neighbours in the table's filter (previous id, next id, place, rows) and its review."""
        before, after, place, total = around
        mine = [s for s in steps if (s.get("stage") == "sft") == (config == "sft")]
        context = dict(
            title=f"{v.ref} {config} {row['prompt_id']}", v=v, config=config, row=row, prompt_id=row["prompt_id"],
            params=params, before=before, after=after, place=place, total=total, review=review,
            edit_fields=EDIT_FIELDS[config], final_text=final_text,
        )  # fmt: skip
        if config == "sft":
            from moaa.view.mixture import build_mixture

            return self.render("sft_row.html", mixture=build_mixture(mine, v.manifest), **context)
        from moaa.view.pair_detail import build_pair

        return self.render("dpo_row.html", pair=build_pair(row, mine, v.manifest), **context)

    def diff_page(self, name: str, a: str, b: str) -> str:
        from moaa.view.version_diff import diff_versions

        va, vb = self.version(name, a), self.version(name, b)
        return self.render("diff.html", title=f"{name} {a} vs {b}", a=va, b=vb, diff=diff_versions(va.path, vb.path))

    def diff_row_page(self, name: str, a: str, b: str, config: str, prompt_id: str) -> str:
        from moaa.view.version_diff import row_diff

        va, vb = self.version(name, a), self.version(name, b)
        if config not in REVIEWED:
            raise NotFound(f"only sft and dpo rows are compared one by one, not {config}")
        found = row_diff(va.path, vb.path, config, prompt_id)
        if found["a"] is None and found["b"] is None:
            raise NotFound(f"neither {va.ref} nor {vb.ref} has a {config} row for prompt {prompt_id!r}")
        return self.render("diff_row.html", title=f"{name} {a} vs {b} {prompt_id}", a=va, b=vb, config=config,
                           prompt_id=prompt_id, found=found)  # fmt: skip

    def compare_list_page(self) -> str:
        from moaa.view.arms import list_runs

        return self.render("compare_list.html", title="compare runs", runs=list_runs(self.runs), where=self.runs)

    def compare_run_page(self, run: str) -> str:
        from moaa.view.arms import load_run

        try:
            data = load_run(self.runs, run)
        except InputError as exc:
            raise NotFound(str(exc)) from None
        return self.render("compare_run.html", title=f"compare {run}", run=data, data_ref=_data_ref)

    def compare_prompt_page(self, run: str, prompt_id: str) -> str:
        from moaa.view.arms import load_run, prompt_arms

        try:
            data = load_run(self.runs, run)
            seen = prompt_arms(data, prompt_id, self.root)
        except InputError as exc:
            raise NotFound(str(exc)) from None
        return self.render("compare_prompt.html", title=f"compare {run} {prompt_id}", run=data, seen=seen)


def _page_args(params: dict[str, str]) -> tuple[int, int]:
    try:
        page = max(int(params.get("page") or 1), 1) - 1
        size = min(max(int(params.get("size") or PAGE_SIZE), 1), MAX_PAGE_SIZE)
    except ValueError:
        raise InputError("page and size are whole numbers") from None
    return page, size


def _data_ref(ref: str | None) -> tuple[str, str] | None:
    if not ref or "@" not in ref:
        return None
    name, _, version = ref.partition("@")
    return name, version
