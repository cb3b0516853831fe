"""The filters of the viewer's tables: which rows of a row group match a Query, with pyarrow's kernels.

    query = Query.of("dpo", {"verdict": "chosen:fail", "q": "paris"})   # from a page's URL parameters
    mask = row_mask("dpo", row_group, query, truncated=frozenset(), decided={})

`columns_for` names the only columns a query needs read; `row_mask` tests one row group (a boolean
array, None when nothing filters). moaa.view.paging runs them over a version a row group at a time.
What each filter means is in moaa.view.paging's docstring.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from moaa.errors import InputError

VERDICTS = ("pass", "fail", "unverifiable", "unchecked")
TEXT_COLUMNS = {"sft": ("messages",), "dpo": ("prompt", "chosen", "rejected"), "trace": ("text",),
                "failures": ("error", "reason"), "prompts": ("prompt", "consensus_answer")}  # fmt: skip
# The filters each config offers (beyond text search and split).
FILTERS = {
    "sft": ("split", "method", "model", "category", "verdict", "truncated", "decision", "q"),
    "dpo": ("split", "model", "verdict", "truncated", "score_min", "score_max", "margin_min", "decision", "q"),
    "trace": ("split", "stage", "kind", "model", "truncated", "score_min", "score_max", "q"),
    "failures": ("stage", "reason", "q"),
    "prompts": ("category", "q"),
}
DECISION_FILTERS = ("accept", "reject", "flag", "edit", "undecided")


@dataclass(frozen=True)
class Query:
    """A table's filters; empty strings and None filter nothing."""

    split: str = ""
    method: str = ""
    model: str = ""
    category: str = ""
    verdict: str = ""
    stage: str = ""
    kind: str = ""
    reason: str = ""
    truncated: str = ""  # "yes" or "no"
    score_min: float | None = None
    score_max: float | None = None
    margin_min: float | None = None
    decision: str = ""
    q: str = ""

    @classmethod
    def of(cls, config: str, params: Mapping[str, str]) -> Query:
        """The filters of `params` that `config` offers (others ignored); InputError for a bad value."""
        values: dict[str, Any] = {}
        for name in FILTERS.get(config, ()):
            raw = str(params.get(name) or "").strip()
            if not raw:
                continue
            if name in ("score_min", "score_max", "margin_min"):
                try:
                    values[name] = float(raw)
                except ValueError:
                    raise InputError(f"filter {name}={raw!r} is not a number") from None
            elif name == "truncated" and raw not in ("yes", "no"):
                raise InputError(f"filter truncated={raw!r}: use yes or no")
            elif name == "decision" and raw not in DECISION_FILTERS:
                raise InputError(f"filter decision={raw!r}: use one of {', '.join(DECISION_FILTERS)}")
            else:
                values[name] = raw
        return cls(**values)

    def params(self) -> dict[str, str]:
        """The set filters as URL parameters."""
        out = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if value not in ("", None):
                out[f.name] = f"{value:g}" if isinstance(value, float) else value
        return out

    def __bool__(self) -> bool:
        return bool(self.params())


def columns_for(table: Any, query: Query) -> list[str]:
    """The columns `query` tests, of those `table` (a moaa.view.paging.ConfigTable) has; InputError
    for a verdict filter on a version without verdicts."""
    wanted = {"prompt_id"}
    config = table.config
    if query.method:
        wanted.add("method")
    if query.category:
        wanted.add("category")
    if query.model:
        wanted |= {"sft": {"models"}, "dpo": {"chosen_model", "rejected_model"}}.get(config, {"model"})
    if query.verdict:
        wanted.add("verification")
    if query.stage:
        wanted.add("stage")
    if query.kind:
        wanted.add("kind")
    if query.reason:
        wanted.add("reason")
    if query.truncated and config == "trace":
        wanted.add("finish_reason")
    if query.score_min is not None or query.score_max is not None:
        wanted.add("score_chosen" if config == "dpo" else "score")
    if query.margin_min is not None:
        wanted |= {"score_chosen", "score_rejected"}
    if query.q:
        wanted |= set(TEXT_COLUMNS[config])
    missing = sorted(c for c in wanted if not table.has(c))
    if "verification" in missing:
        raise InputError(f"{table.version_dir} has no verification verdicts to filter by (no `verification` column)")
    return [c for c in table.columns if c in wanted and c not in missing]


def row_mask(config: str, t: Any, query: Query, truncated: frozenset[str], decided: dict[str, str]) -> Any:
    """The rows of one row group that match, as a boolean array (None: all of them)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    tests = []
    if query.method:
        tests.append(pc.equal(t["method"], query.method))
    if query.category:
        tests.append(pc.equal(t["category"], query.category))
    if query.model:
        tests.append(_model_mask(config, t, query.model))
    if query.verdict:
        tests.append(_verdict_mask(config, t["verification"], query.verdict))
    for name in ("stage", "kind", "reason"):
        if getattr(query, name) and name in t.column_names:
            tests.append(pc.equal(t[name], getattr(query, name)))
    if query.truncated:
        cut = (
            pc.equal(t["finish_reason"], "length")
            if config == "trace"
            else pc.is_in(t["prompt_id"], value_set=pa.array(sorted(truncated), pa.string()))
        )
        tests.append(cut if query.truncated == "yes" else pc.invert(pc.fill_null(cut, False)))
    score = t["score_chosen"] if config == "dpo" and "score_chosen" in t.column_names else None
    score = t["score"] if score is None and "score" in t.column_names else score
    if query.score_min is not None:
        tests.append(pc.greater_equal(score, query.score_min))
    if query.score_max is not None:
        tests.append(pc.less_equal(score, query.score_max))
    if query.margin_min is not None:
        tests.append(pc.greater_equal(pc.subtract(t["score_chosen"], t["score_rejected"]), query.margin_min))
    if query.decision:
        tests.append(_decision_mask(t["prompt_id"], query.decision, decided))
    if query.q:
        tests.append(_text_mask(config, t, query.q))
    if not tests:
        return None
    mask = pc.fill_null(tests[0], False)
    for test in tests[1:]:
        mask = pc.and_(mask, pc.fill_null(test, False))
    return mask


def _model_mask(config: str, t: Any, model: str) -> Any:
    import pyarrow.compute as pc

    if config == "sft":
        return _any_in_list(t["models"], lambda values: pc.equal(values, model), t.num_rows)
    if config == "dpo":
        return pc.or_(pc.fill_null(pc.equal(t["chosen_model"], model), False),
                      pc.fill_null(pc.equal(t["rejected_model"], model), False))  # fmt: skip
    return pc.equal(t["model"], model)


def _any_in_list(column: Any, test, rows: int) -> Any:
    """Per row of a list column: whether any element passes `test` (a kernel on the flat values)."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    column = column.combine_chunks() if hasattr(column, "combine_chunks") else column
    hits = pc.fill_null(test(pc.list_flatten(column)), False)
    parents = pc.list_parent_indices(column)
    out = np.zeros(rows, dtype=bool)
    chosen = pc.filter(parents, hits).to_numpy(zero_copy_only=False)
    out[chosen] = True
    return pa.array(out)


def _verdict_mask(config: str, verification: Any, verdict: str) -> Any:
    import pyarrow.compute as pc

    side, _, status = verdict.rpartition(":")
    if status not in VERDICTS or (config == "dpo" and side not in ("chosen", "rejected")):
        allowed = VERDICTS if config == "sft" else [f"{s}:{v}" for s in ("chosen", "rejected") for v in VERDICTS]
        raise InputError(f"filter verdict={verdict!r}: use one of {', '.join(allowed)}")
    column = pc.struct_field(verification, side) if config == "dpo" else verification
    statuses = pc.struct_field(column, "status")
    if status == "unchecked":
        return pc.is_null(statuses)
    return pc.equal(statuses, status)


def _text_mask(config: str, t: Any, text: str) -> Any:
    import pyarrow.compute as pc

    found = None
    for name in TEXT_COLUMNS[config]:
        if name not in t.column_names:
            continue
        column = t[name]
        if str(column.type).startswith("list"):  # messages: any message's content
            contents = lambda values: pc.match_substring(pc.struct_field(values, "content"), text, ignore_case=True)  # noqa: E731
            hit = _any_in_list(column, contents, t.num_rows)
        else:
            hit = pc.fill_null(pc.match_substring(column, text, ignore_case=True), False)
        found = hit if found is None else pc.or_(found, hit)
    return found


def _decision_mask(ids: Any, decision: str, decided: dict[str, str]) -> Any:
    import pyarrow as pa
    import pyarrow.compute as pc

    if decision == "undecided":
        return pc.invert(pc.is_in(ids, value_set=pa.array(sorted(decided), pa.string())))
    chosen = sorted(pid for pid, d in decided.items() if d == decision)
    return pc.is_in(ids, value_set=pa.array(chosen, pa.string()))
