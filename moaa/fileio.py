"""Atomic file writes and content hashes, shared by every layer (work folders, versions, runs, the local model).

    write_json_atomic(Path("work/run/DONE"), {"counts": ...})   # temp file beside it, then a rename
    sha256_file(Path("data/demo/v1/README.md"))                  # streamed, any size

A reader sees the old file or the new one, never half of one: each write goes to a temp file in the
same folder (same file system, so the rename is atomic) that is removed again if the write fails.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import IO, Any

_BLOCK = 1 << 20  # hash in 1 MiB blocks: a 490 MB model file is never held in memory


def sha256_file(path: Path) -> str:
    """The hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(_BLOCK):
            digest.update(block)
    return digest.hexdigest()


def replace_atomic(path: Path, write: Callable[[IO[str]], Any], mode: int | None = None) -> None:
    """Write `path` through `write(fh)` on a temp file beside it, then a rename (temp removed on failure).

    `mode`: the file's permission bits (else the umask's)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    # Per process and thread: two planners writing the same shard file must not share one temp file.
    tmp = path.with_name(f"{path.name}.{os.getpid()}-{threading.get_ident()}.tmp")
    try:
        with tmp.open("w", encoding="utf-8") as fh:
            write(fh)
        if mode is not None:
            os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_text_atomic(path: Path, text: str, mode: int | None = None) -> None:
    """Replace `path` with `text` atomically."""
    replace_atomic(path, lambda fh: fh.write(text), mode)


def write_json_atomic(
    path: Path, data: Any, *, indent: int | None = 2, scrub: bool = True, mode: int | None = None
) -> None:
    """Replace `path` with `data` as JSON; `scrub` redacts secret values (moaa.public.scrub_text), since a
    server may echo a key into an answer or an error that ends up in the record."""
    text = json.dumps(data, indent=indent, ensure_ascii=False, default=str)
    if scrub:
        from moaa.public import scrub_text

        text = scrub_text(text)
    write_text_atomic(path, text, mode)


def write_jsonl_atomic(path: Path, records: Iterable[dict[str, Any]]) -> int:
    """Replace `path` with one JSON line per record (secrets scrubbed, synced to disk); returns how many."""
    from moaa.public import scrub_text, secret_values

    count = 0

    def write(fh: IO[str]) -> None:
        nonlocal count
        secrets = secret_values()  # once per file, not once per record (it reads the environment)
        for record in records:
            fh.write(scrub_text(json.dumps(record, ensure_ascii=False), secrets) + "\n")
            count += 1
        fh.flush()
        os.fsync(fh.fileno())

    replace_atomic(path, write)
    return count
