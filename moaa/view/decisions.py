"""A person's review of a data set version: one decision per SFT row or DPO pair, kept beside the version.

    <root>/<name>/v3.review.jsonl      one JSON line per decision, appended as it is made

    log = ReviewLog.of(Path("data/demo/v3"))
    log.record("sft", "p7", "reject", note="answers another question")
    log.record("dpo", "p9", "edit", field="chosen", text="The corrected answer.")
    log.state()["sft"]["p7"].decision   # 'reject'

Actions: accept, reject, flag (kept, with a note), edit (a new text for the final answer: an SFT
row's last message, a pair's chosen or rejected side; the row is kept with it) and clear (back to
undecided). The latest decision of a row wins; its edits stay until it is cleared. Each line is
written and fsynced before the answer goes back to the browser, so a crash or a closed tab loses
nothing; a line torn by a crash mid-write is skipped when read (and the next line starts on its own).
The version folder itself is never touched: `moaa review apply` (moaa.view.reviewed) writes the
next version with the decisions applied, carrying a copy of this file and its hash.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from moaa.errors import InputError

log = logging.getLogger(__name__)

ACTIONS = ("accept", "reject", "flag", "edit", "clear")
DECISIONS = ("accept", "reject", "flag", "edit")
REVIEWED = ("sft", "dpo")  # configs whose rows a person decides
EDIT_FIELDS = {"sft": ("messages",), "dpo": ("chosen", "rejected")}
MAX_NOTE = 2_000
_locks: dict[Path, threading.Lock] = {}
_locks_guard = threading.Lock()


@dataclass
class RowReview:
    """Where a row stands: its latest decision (None: undecided), the note, and edited texts by field."""

    decision: str | None = None
    note: str = ""
    edits: dict[str, str] = field(default_factory=dict)
    at: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"decision": self.decision, "note": self.note, "edits": dict(self.edits), "at": self.at}


def review_path(version_dir: Path) -> Path:
    """The review file of a version: beside its folder, `<name>/vN.review.jsonl`."""
    version_dir = Path(version_dir)
    return version_dir.parent / f"{version_dir.name}.review.jsonl"


def check_decision(config: str, action: str, field_name: str | None, text: str | None, note: str) -> None:
    """InputError naming what is wrong with a decision before it is written."""
    if config not in REVIEWED:
        raise InputError(f"config {config!r} is not reviewed; decide rows of {' or '.join(REVIEWED)}")
    if action not in ACTIONS:
        raise InputError(f"action {action!r} is unknown; use one of {', '.join(ACTIONS)}")
    if action == "edit":
        if field_name not in EDIT_FIELDS[config]:
            raise InputError(f"an edit of a {config} row names its field: {' or '.join(EDIT_FIELDS[config])}")
        if not isinstance(text, str) or not text.strip():
            raise InputError("an edit needs the new text (reject the row to remove it)")
    if len(note) > MAX_NOTE:
        raise InputError(f"the note has {len(note)} characters; keep it under {MAX_NOTE}")


class ReviewLog:
    """The review file of one version: append decisions, read where every row stands."""

    def __init__(self, path: Path):
        self.path = Path(path)
        with _locks_guard:
            self._lock = _locks.setdefault(self.path.resolve(), threading.Lock())

    @classmethod
    def of(cls, version_dir: Path) -> ReviewLog:
        return cls(review_path(version_dir))

    def record(
        self, config: str, prompt_id: str, action: str, *, note: str = "", field: str | None = None,
        text: str | None = None,
    ) -> RowReview:  # fmt: skip
        """Append one decision (durably) and return the row's state after it."""
        check_decision(config, action, field, text, note)
        entry: dict[str, Any] = {"at": datetime.now(timezone.utc).isoformat(timespec="seconds"), "config": config,
                                 "prompt_id": prompt_id, "action": action}  # fmt: skip
        if note:
            entry["note"] = note
        if action == "edit":
            entry |= {"field": field, "text": text}
        line = (json.dumps(entry, ensure_ascii=False) + "\n").encode()
        with self._lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                if os.fstat(fd).st_size and not self._ends_with_newline():
                    line = b"\n" + line  # a torn last line stays alone, and is skipped when read
                os.write(fd, line)
                os.fsync(fd)
            finally:
                os.close(fd)
        return self.state().get(config, {}).get(prompt_id, RowReview())

    def _ends_with_newline(self) -> bool:
        with self.path.open("rb") as fh:
            fh.seek(-1, os.SEEK_END)
            return fh.read(1) == b"\n"

    def entries(self) -> list[dict[str, Any]]:
        """Every readable decision in the order made (a torn or foreign line is skipped with a warning)."""
        if not self.path.is_file():
            return []
        out = []
        with self.path.open(encoding="utf-8", errors="replace") as fh:
            for number, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    entry = json.loads(line)
                    check_decision(entry["config"], entry["action"], entry.get("field"), entry.get("text"),
                                   entry.get("note", ""))  # fmt: skip
                    if not isinstance(entry["prompt_id"], str):
                        raise TypeError("prompt_id")
                except (json.JSONDecodeError, KeyError, TypeError, InputError) as exc:
                    log.warning("%s:%d: not a review decision (%s); skipped", self.path, number, exc)
                    continue
                out.append(entry)
        return out

    def state(self) -> dict[str, dict[str, RowReview]]:
        """{config: {prompt_id: RowReview}} of every row a decision named (cleared rows left out)."""
        return fold(self.entries())


def fold(entries: list[dict[str, Any]]) -> dict[str, dict[str, RowReview]]:
    """Where each row stands after `entries`, in order: the latest decision wins, edits add up until a clear."""
    rows: dict[str, dict[str, RowReview]] = {}
    for entry in entries:
        config, pid, action = entry["config"], entry["prompt_id"], entry["action"]
        mine = rows.setdefault(config, {})
        if action == "clear":
            mine.pop(pid, None)
            continue
        row = mine.setdefault(pid, RowReview())
        row.decision, row.at = action, entry.get("at", "")
        if entry.get("note"):
            row.note = entry["note"]
        if action == "edit":
            row.edits[entry["field"]] = entry["text"]
    return rows


def tally(state: dict[str, dict[str, RowReview]]) -> dict[str, dict[str, int]]:
    """{config: {decision: rows}} for every config reviewed."""
    out: dict[str, dict[str, int]] = {}
    for config, rows in state.items():
        counts = dict.fromkeys(DECISIONS, 0)
        for row in rows.values():
            if row.decision:
                counts[row.decision] += 1
        out[config] = counts
    return out
