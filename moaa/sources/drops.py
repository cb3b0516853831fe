"""Prompts the filters left out, each named: where it was read, why, and an id (moaa.rows.Failure rows
of stage `prompts`, which a run writes into its version's `failures` config).

    drops = Drops(spill_dir, "prompts.jsonl", "/home/me/prompts.jsonl")
    drops.add("/home/me/prompts.jsonl:17", "too_long", "2,000,123 characters of user text, ...")
    drops.count, drops.path                 # how many, and the JSONL file that holds them (None: none)

A run reads every prompt of its source once, and each becomes a row, a named failure or a named
drop: a prompt that was too long, empty, a duplicate, unreadable (`prompts.on_bad_row: skip`), not
text only, or holding a secret is no longer only a number in the manifest. `sampled_out` (beyond
`prompts.limit`) is counted, not named: it is the user's own choice of how many to use.

Records are spilled to a temp file beside the prompts' own spill, created at the first drop (a
source without drops leaves none) and locked while it is in use, like that spill. The location is
the source's own name (`prompts.jsonl:17`), never a path of this machine: it is written into data.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import TextIO

from moaa.rows import Failure

STAGE = "prompts"  # the `stage` of a drop's failure row
SPILL_PREFIX, SPILL_SUFFIX = ".prompts-", ".jsonl.tmp"  # as the prompts' spill: removed alike when stale


class Drops:
    """Named drops of one source, spilled to a temp file in `spill_dir` (the system's temp folder when None)."""

    def __init__(self, spill_dir: Path | None, label: str, origin: str):
        self.spill_dir, self.label, self.origin = spill_dir, label, origin
        self.count = 0
        self.path: Path | None = None
        self._fh: TextIO | None = None
        self._owner: int | None = None

    def add(self, where: str, reason: str, detail: str, given_id: str | None = None) -> None:
        """Name one dropped row: its location (`file:line`), reason and what the reason means here.

        Its id is the row's own (id_column), else a hash of its location: a duplicate must not take
        the id of the prompt it repeats, which is a row of the same version."""
        place = where.replace(self.origin, self.label, 1)
        prompt_id = given_id or hashlib.blake2b(place.encode(), digest_size=8).hexdigest()
        record = Failure(prompt_id, STAGE, reason, f"{place}: {detail}", transient=False).to_dict()
        self._file().write(json.dumps(record, ensure_ascii=False) + "\n")
        self.count += 1

    def _file(self) -> TextIO:
        if self._fh is None:
            handle, name = tempfile.mkstemp(prefix=SPILL_PREFIX, suffix=SPILL_SUFFIX, dir=self.spill_dir)
            self.path = Path(name)
            self._owner = os.open(name, os.O_RDONLY)
            fcntl.flock(self._owner, fcntl.LOCK_EX)  # alive while we are: a later run removes it only once we died
            self._fh = open(handle, "w", encoding="utf-8")
        return self._fh

    def finish(self) -> None:
        """Every record written (the file stays until `close`)."""
        if self._fh is not None and not self._fh.closed:
            self._fh.close()

    def close(self) -> None:
        """Remove the spill file."""
        self.finish()
        if self.path is not None:
            self.path.unlink(missing_ok=True)
        if self._owner is not None:
            os.close(self._owner)
            self._owner = None
