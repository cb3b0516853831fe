"""`moaa publish NAME@VERSION --repo-id ORG/NAME`: upload a version to the Hub as one tagged commit.

    moaa publish moa-sft@v3 --repo-id my-org/moa-sft             # private unless the run's output.private is false
    moaa publish moa-sft@v3 --repo-id my-org/moa-sft --public    # anyone may read it
    moaa publish moa-sft@v3 --repo-id my-org/moa-sft --dry-run   # what would be uploaded, no network

The token is read from HF_TOKEN only; consumers then pin `load_dataset("my-org/moa-sft", "dpo", revision="v3")`.
"""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("publish", help="upload a data set version to the Hugging Face Hub, tagged with its version")
    p.add_argument("ref", metavar="NAME@VERSION", help="e.g. moa-sft@v3 (the latest without @)")
    p.add_argument("--repo-id", required=True, metavar="ORG/NAME", help="dataset repo on the Hub")
    seen = p.add_mutually_exclusive_group()
    default = "default: the version's output.private, true unless the run set it false"
    seen.add_argument(
        "--private", dest="private", action="store_const", const=True, help=f"create the repo private ({default})"
    )
    seen.add_argument("--public", dest="private", action="store_const", const=False, help="create the repo public")
    p.add_argument("--dry-run", action="store_true", help="list files, sizes, target repo and tag; no network")
    p.add_argument("--root", default="data", help="output root holding the data sets (default: data)")
    p.set_defaults(func=handle)


def _size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def _visibility(private: bool, flag: bool | None) -> str:
    word = "private" if private else "public"
    why = f"--{word}" if flag is not None else "the version's output.private"
    return f"{word}: {why}"


def handle(args: argparse.Namespace) -> int:
    import os

    from moaa.dataset.hub import publish_version
    from moaa.dataset.versions import resolve_version

    path = resolve_version(args.root, args.ref)
    result = publish_version(path, args.repo_id, args.private, os.environ.get("HF_TOKEN"), args.dry_run)
    target = (
        f"https://huggingface.co/datasets/{result.repo_id}" if not os.environ.get("HF_ENDPOINT") else result.repo_id
    )
    if result.dry_run:
        print(f"dry run: would upload {path} to {target} ({_visibility(result.private, args.private)})")
        print(f"as one commit tagged {result.tag}: {len(result.files)} files, {_size(result.total_bytes)}")
        for name, size in result.files:
            print(f"  {size:>12,d}  {name}")
        return 0
    print(f"published {path} to {target} as commit {result.commit_oid}, tagged {result.tag}")
    print(
        f"  {len(result.files)} files, {_size(result.total_bytes)}"
        + (f"; removed {len(result.deleted)} files of an earlier version" if result.deleted else "")
    )
    print(f'  load_dataset("{result.repo_id}", CONFIG, revision="{result.tag}")')
    return 0
