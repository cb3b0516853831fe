"""`moaa view [NAME[@vN]]`: look at data set versions in a local web app, review their rows, or export a
version as static HTML.

moaa view                                  # every data set under data/ (http://127.0.0.1:8765/)
moaa view local-moa@v3                     # that version's page
moaa view local-moa --port 9000            # the latest version, on port 9000 (0: any free port)
MOAA_VIEW_TOKEN=... moaa view --host 0.0.0.0    # beyond this machine: a token is required
moaa view local-moa@v3 --export review-v3 --filter verdict=fail --limit 200
"""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("view", help="look at and review data set versions in a local web app (or export HTML)")
    p.add_argument("ref", nargs="?", metavar="NAME[@VERSION]", help="open this version (the latest without @)")
    p.add_argument("--root", default="data", help="output root holding the data sets (default: data)")
    p.add_argument("--runs", default="runs", help="the runs folder, for `moaa compare` runs (default: runs)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1; any other "
                   "needs MOAA_VIEW_TOKEN)")  # fmt: skip
    p.add_argument("--port", type=int, default=None, help="port (default 8765 when free, else a free one; 0: any)")
    p.add_argument("--export", metavar="DIR", default=None, help="write the version as static HTML into DIR and exit")
    p.add_argument("--filter", action="append", default=[], metavar="KEY=VALUE",
                   help="with --export: only rows that match (e.g. verdict=fail, q=TEXT); repeatable")  # fmt: skip
    p.add_argument("--limit", type=int, default=1000, help="with --export: rows per config with pages (0: all)")
    p.set_defaults(func=handle)


def _filters(items: list[str]) -> dict[str, str]:
    from moaa.errors import InputError

    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise InputError(f"--filter {item!r}: use KEY=VALUE, e.g. --filter verdict=fail")
        out[key.strip()] = value.strip()
    return out


def handle(args: argparse.Namespace) -> int:
    from pathlib import Path
    from urllib.parse import quote

    from moaa.dataset.versions import resolve_version
    from moaa.errors import InputError

    path = None
    if args.ref:
        path = resolve_version(Path(args.root), args.ref)
    if args.export:
        if path is None:
            raise InputError("--export needs the version to export, e.g. `moaa view local-moa@v3 --export DIR`")
        from moaa.view.snapshot import export_version

        ref = f"{path.parent.name}@{path.name}"
        written = export_version(Path(args.root), ref, Path(args.export), _filters(args.filter), args.limit)
        counts = ", ".join(f"{config} {n:,}" for config, n in written.items())
        print(f"wrote {ref} as static HTML to {args.export}/index.html ({counts} rows; open it in any browser)")
        return 0
    if args.filter:
        raise InputError("--filter applies to --export; in the viewer, filter on the page")
    from moaa.view.serving import serve

    page = f"/d/{quote(path.parent.name)}/{quote(path.name)}/" if path is not None else "/"

    def say(url: str, port: int, token: bool) -> None:
        how = "; open it with ?token=$MOAA_VIEW_TOKEN once" if token else ""
        print(f"moaa view: {url}  (serving {args.root}{how}; Ctrl-C stops)", flush=True)

    try:
        serve(Path(args.root), Path(args.runs), host=args.host, port=args.port, path=page, say=say)
    except KeyboardInterrupt:
        pass
    return 0
