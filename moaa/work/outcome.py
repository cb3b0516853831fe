"""Whether a finished stage made anything, and the one line that says why not.

A stage in which no prompt became a row (every prompt failed, or every one was dropped) ends the
run with StageMadeNothing, whatever the number of prompts: no data set version is written, so
nothing downstream (`make sft`, `make dpo`, a scheduled run's consumers) can pick up an empty one.
The message names the commonest cause among the failures (its text, the endpoint and its URL), how
many prompts it hit, and where the failure records are. The stage's shards are re-opened, so the
same command, run again once the cause is fixed, asks those prompts again.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from moaa.config import MoaaConfig
from moaa.errors import FailureRateExceeded
from moaa.public import bare_url
from moaa.work.shards import read_done, read_jsonl

_ENDPOINT = re.compile(r"endpoint '([^']+)'")


class StageMadeNothing(FailureRateExceeded):
    """Every prompt of a stage failed or was dropped: the run made no data and wrote no version."""


def commonest_cause(failures: Iterable[dict[str, Any]]) -> tuple[str, int, int]:
    """(the most frequent 'reason: error' text, how many prompts it hit, how many failed in all)."""
    causes = Counter(f"{f.get('reason', '?')}: {(f.get('error') or '').strip()[:300]}".rstrip(": ") for f in failures)
    if not causes:
        return "", 0, 0
    text, hits = causes.most_common(1)[0]
    return text, hits, sum(causes.values())


def endpoint_hint(text: str, config: MoaaConfig) -> str:
    """' (endpoint NAME at URL)' for the endpoint a failure text names (credentials and query removed)."""
    match = _ENDPOINT.search(text)
    endpoint = config.endpoints.get(match.group(1)) if match else None
    if endpoint is None:
        return ""
    urls = ", ".join(bare_url(u) for u in endpoint.base_urls()) or "no base_url"
    return f" (endpoint '{match.group(1)}' at {urls})"


def check_stage(stage: str, shards: list[tuple[Path, Path]], config: MoaaConfig) -> None:
    """Raise StageMadeNothing when the stage's finished shards hold prompts but no row."""
    outs = [out for _, out in shards]
    done = [d for d in (read_done(out) for out in outs) if d is not None]
    prompts = sum(d.counts.prompts for d in done)
    rows = sum(d.counts.rows for d in done)
    if not done or prompts == 0 or rows > 0:
        return
    failures = [f for out in outs for f in read_jsonl(out / "failures.jsonl")]
    dropped: Counter[str] = Counter()
    for d in done:
        dropped.update(d.counts.dropped)
    _reopen(outs)
    where = f"{outs[0].parent}/shard-*/failures.jsonl"
    if failures:
        text, hits, failed = commonest_cause(failures)
        cause = f"commonest cause ({hits} of {failed} failed prompts): {text}{endpoint_hint(text, config)}"
        head = (
            f"{stage}: all {prompts} prompts failed"
            if failed == prompts
            else (f"{stage}: no prompt made a row ({failed} failed, {sum(dropped.values())} dropped)")
        )
        raise StageMadeNothing(
            f"{head}; {cause}; no data set version was written; failures: {where}; fix the cause and run the "
            "same command again"
        )
    reasons = ", ".join(f"{k} {v}" for k, v in dropped.most_common()) or "none recorded"
    raise StageMadeNothing(
        f"{stage}: none of {prompts} prompts made a row (dropped: {reasons}); no data set version was written; "
        "loosen what drops them (e.g. preference.min_margin) or add prompts, and run the same command again"
    )


class DeadEndpoint(FailureRateExceeded):
    """An endpoint that failed every call it was asked this run: its part of the mixture (a proposer,
    a judge, a moderator) is missing from every row, so the run fails rather than write them."""


def check_endpoints(stage: str, shards: list[tuple[Path, Path]], config: MoaaConfig, since: float) -> None:
    """Raise DeadEndpoint when an endpoint answered none of the calls the stage's shards made of it
    since `since` (this run: what earlier runs asked is not held against a fixed endpoint)."""
    from moaa.models.stats import Counter as CallCounter

    per_endpoint: dict[str, CallCounter] = {}
    outs = [out for _, out in shards]
    for done in (read_done(out) for out in outs):
        if done is None or done.finished_at < since:
            continue
        for name, counts in (done.attempt_stats.get("endpoints") or {}).items():
            per_endpoint.setdefault(name, CallCounter()).add(counts)
    for name, counter in sorted(per_endpoint.items()):
        if counter.calls or not counter.failures:
            continue
        error = _last_error(outs, name)
        raise DeadEndpoint(
            f"{stage}: endpoint '{name}' failed all {counter.failures} calls it was asked"
            f"{endpoint_hint(f'endpoint {name!r}', config)}"
            f"{f'; last error: {error}' if error else ''}; rows made without it (min_answers, or other judges) "
            "are not written as data: no data set version was written; fix the endpoint (or remove it from the "
            "config) and run the same command again"
        )


def _last_error(outs: list[Path], endpoint: str) -> str:
    """The first recorded error naming `endpoint` in the shards' traces or failures ('' if none)."""
    from moaa.rows import trace_meta

    needle = f"endpoint '{endpoint}'"
    for out in outs:
        for step in read_jsonl(out / "trace.jsonl"):
            error = str(trace_meta(step).get("error") or "")
            if needle in error:
                return error[:300]
        for failure in read_jsonl(out / "failures.jsonl"):
            if needle in (failure.get("error") or ""):
                return str(failure["error"])[:300]
    return ""


def _reopen(outs: list[Path]) -> None:
    """Remove the shards' DONE marks: the next run of the same command asks their prompts again."""
    for out in outs:
        (out / "DONE").unlink(missing_ok=True)
