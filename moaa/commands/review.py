"""`moaa review status|apply NAME@vN`: a person's review of a version (made in `moaa view`), and the
reviewed version written from it.

moaa review status local-moa@v3            # decisions so far, per config, and the review file
moaa review apply local-moa@v3             # the next version without rejected rows, with the edits
moaa review apply local-moa@v3 --no-publish
"""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("review", help="a version's review decisions; apply them as the next version")
    inner = p.add_subparsers(dest="review_command", metavar="ACTION", required=True)
    status = inner.add_parser("status", help="the decisions made so far (in `moaa view`) and the review file")
    apply = inner.add_parser(
        "apply", help="write the next version: rejected rows left out, edits applied, the review file recorded"
    )
    for action, handler in ((status, handle_status), (apply, handle_apply)):
        action.add_argument("ref", metavar="NAME@VERSION", help="e.g. local-moa@v3 (the latest without @)")
        action.add_argument("--root", default="data", help="output root holding the data sets (default: data)")
        action.set_defaults(func=handler)
    held = "default: when the version's run held its publishing for this review (output.review: required)"
    apply.add_argument("--publish", dest="publish", action="store_const", const=True, help=f"publish it ({held})")
    apply.add_argument("--no-publish", dest="publish", action="store_const", const=False, help="do not publish it")


def _counts(tally: dict[str, dict[str, int]]) -> str:
    parts = []
    for config, counts in sorted(tally.items()):
        shown = ", ".join(f"{decision} {n}" for decision, n in counts.items() if n)
        parts.append(f"{config}: {shown or 'none'}")
    return "; ".join(parts) or "no decisions yet"


def handle_status(args: argparse.Namespace) -> int:
    from moaa.dataset.versions import resolve_version
    from moaa.view.decisions import ReviewLog, tally

    path = resolve_version(args.root, args.ref)
    log = ReviewLog.of(path)
    decisions = len(log.entries())
    print(f"{path.parent.name}@{path.name}: {_counts(tally(log.state()))} ({decisions} decisions in {log.path})")
    return 0


def handle_apply(args: argparse.Namespace) -> int:
    from moaa.view.reviewed import apply_review

    applied = apply_review(args.root, args.ref, publish=args.publish)
    d = applied.derived
    total = lambda key: sum(d[key].values())  # noqa: E731
    print(
        f"wrote {applied.version.name}@{applied.version.version} ({applied.version.path}) from {d['from']}: "
        f"{total('removed')} rows removed, {total('edited')} edited, {total('flagged')} flagged and kept; "
        f"the review file (sha256 {d['sha256'][:12]}) is in it as {d['file']}"
    )
    if applied.published:
        print(f"published to {applied.published['repo_id']}, tagged {applied.published['tag']}")
    return 0
