"""A raw row's reference: what its answer will be checked against (moaa.rows.Reference).

`prompts.reference` maps the columns (moaa.config.ReferenceColumns): a `reference` column of
objects in moaa's own form, or flat columns as Hugging Face data sets have them (GSM8K `answer`,
MBPP `test_list`, IFEval `instruction_id_list` + `kwargs`). A field of the object wins over its flat
column. A row with none of them has no reference; a malformed one is an error naming the row.
"""

from __future__ import annotations

from typing import Any

from moaa.config import PromptSourceConfig, ReferenceColumns
from moaa.errors import InputError
from moaa.rows import Reference
from moaa.sources.conversations import json_cell

FLAT_FIELDS = ("answer", "tests", "language", "instructions", "kwargs")


def row_reference(row: dict[str, Any], where: str, cfg: PromptSourceConfig) -> Reference | None:
    """The row's reference, or None when it carries none."""
    columns = cfg.reference
    data: dict[str, Any] = {}
    if columns.column and row.get(columns.column) is not None:
        data = dict(_object(row[columns.column], where, columns.column))
    for field in FLAT_FIELDS:
        column = getattr(columns, field)
        if column and field not in data and row.get(column) is not None:
            data[field] = row[column]
    if "instructions" not in data:
        data.pop("kwargs", None)  # another data set's `kwargs` column, with no instructions to go with it
    if columns.data:
        data["data"] = {c: row.get(c) for c in columns.data}
    if not data:
        return None
    try:
        reference = Reference.from_dict(data)
    except ValueError as exc:
        raise InputError(f"{where}: reference {exc}; fix the row or prompts.reference") from None
    return reference if reference.kinds or reference.data else None


def check_reference_columns(cfg: PromptSourceConfig, found: set[str], where: str) -> None:
    """A reference column set to other than its default must exist in the source (the defaults are optional)."""
    defaults = ReferenceColumns()
    shown = ", ".join(sorted(found)) or "none"
    for field in ("column", *FLAT_FIELDS):
        column = getattr(cfg.reference, field)
        if column and column != getattr(defaults, field) and column not in found:
            raise InputError(
                f"{where}: column '{column}' not found (columns found: {shown}); fix prompts.reference.{field}"
            )
    for column in cfg.reference.data:
        if column not in found:
            raise InputError(
                f"{where}: column '{column}' not found (columns found: {shown}); fix prompts.reference.data"
            )


def _object(value: Any, where: str, column: str) -> dict[str, Any]:
    value = json_cell(value, where, column, "a JSON object")
    if not isinstance(value, dict):
        raise InputError(f'{where}: column \'{column}\' must hold an object like {{"answer": "72"}}')
    return value
