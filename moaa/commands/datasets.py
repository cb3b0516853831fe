"""`moaa datasets list|show|verify`: the versions under an output root, their cards, their integrity.

moaa datasets list [--root data]
moaa datasets show moa-sft@v2 [--rows 3]
moaa datasets verify moa-sft@v2
"""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("datasets", help="list, show and verify data set versions")
    inner = p.add_subparsers(dest="datasets_command", metavar="ACTION", required=True)
    lst = inner.add_parser("list", help="names, versions, rows per config, dates and lineage")
    show = inner.add_parser("show", help="a version's card summary and a few rows")
    show.add_argument("ref", metavar="NAME[@VERSION]", help="e.g. moa-sft@v2 (the latest without @)")
    show.add_argument("--rows", type=int, default=3, help="rows shown per config (default 3)")
    verify = inner.add_parser("verify", help="re-hash a version's files against its manifest")
    verify.add_argument("ref", metavar="NAME@VERSION", help="e.g. moa-sft@v2")
    for action, handler in ((lst, handle_list), (show, handle_show), (verify, handle_verify)):
        action.add_argument("--root", default="data", help="output root holding the data sets (default: data)")
        action.set_defaults(func=handler)


def _rows_text(rows: dict[str, dict[str, int]]) -> str:
    parts = []
    for config, splits in rows.items():
        counts = "/".join(str(splits.get(s, 0)) for s in ("train", "test") if s in splits)
        parts.append(f"{config} {counts}")
    return ", ".join(parts) or "-"


def handle_list(args: argparse.Namespace) -> int:
    from moaa.dataset.versions import list_versions

    versions = list_versions(args.root)
    if not versions:
        print(f"no data sets under {args.root}")
        return 0
    table = [("NAME", "VERSION", "CREATED", "PARENT", "ROWS (train/test)")]
    for v in versions:
        version = v["version"] + (" (latest)" if v["latest"] else "")
        table.append((v["name"], version, v["created_at"] or "-", v["parent"] or "-", _rows_text(v["rows"])))
    widths = [max(len(row[i]) for row in table) for i in range(4)]
    for row in table:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=False)) + "  " + row[4])
    return 0


def handle_show(args: argparse.Namespace) -> int:
    import json

    from moaa.dataset.card_stats import sample_rows
    from moaa.dataset.manifest import read_manifest
    from moaa.dataset.versions import resolve_version

    path = resolve_version(args.root, args.ref)
    manifest = read_manifest(path)
    print(card_summary((path / "README.md").read_text(encoding="utf-8")))
    print(f"Path: {path}   created {manifest.get('created_at')}   parent {manifest.get('parent') or 'none'}")
    for config in (manifest.get("counts") or {}).get("rows", {}):
        print(f"\n{config} (first {args.rows} rows):")
        for row in sample_rows(path, config, args.rows):
            line = json.dumps(row, ensure_ascii=False)
            print("  " + (line if len(line) <= 300 else line[:300] + " …"))
    return 0


def card_summary(readme: str) -> str:
    """The card without its YAML header and from its sample rows on (those are shown as rows)."""
    if readme.startswith("---\n"):
        readme = readme.split("\n---\n", 1)[-1]
    return readme.split("\n## Sample rows", 1)[0].strip() + "\n"


def handle_verify(args: argparse.Namespace) -> int:
    from moaa.dataset.manifest import read_manifest
    from moaa.dataset.versions import resolve_version, verify_version

    path = resolve_version(args.root, args.ref)
    problems = verify_version(path)
    if problems:
        print(f"{path}: {len(problems)} problem(s)")
        for problem in problems:
            print(f"  {problem}")
        return 1
    files = len(read_manifest(path).get("files", {}))
    print(f"ok: {path} ({files} files match moaa_manifest.json)")
    return 0
