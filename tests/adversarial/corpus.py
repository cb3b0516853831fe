"""The adversarial corpus as data: each case is a `moaa run` that something goes wrong for, and what
the user must get (exit code, the one error line or the line that names the damage, rows, failures).

Families (the issue 32 pass): `config` (bad config files and overrides), `prompts` (bad prompt files),
`endpoints` (bad endpoints and faults mid-run, from the fault-injecting test server), `state` (work
files, the cache and locks damaged between runs) and `secrets` (keys where they must not go). Every
case runs with a canary key the test server demands (`$MOAA_CANARY_KEY`), so every case also checks
that no key is written anywhere. tests/adversarial/test_corpus.py runs them; the README's Reliability
section gives their totals.

Placeholders in `overrides`: {url} (the test server), {dead} (a port nothing listens on), {prompts}
(the case's prompt file), {tmp} (its folder), {canary} (the key).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DEAD = "http://127.0.0.1:1/v1"
ROWS = 2  # the corpus runs 2 prompts of configs/prompts/default.jsonl in one shard, unless a case says


@dataclass(frozen=True)
class Case:
    """One adversarial `moaa run` and what it must give.

    code: its exit status. error: a regex the single `error: ...` line must match (code != 0).
    rows / failures: SFT rows and failure rows (failed prompts and named drops) of the version
    written (code 0). shows: a regex that stdout, stderr or a warning must match, naming what went
    wrong: a run that exits 0 after something went wrong says so (clean: nothing went wrong).
    prompts: the prompt file's content (bytes or text; `prompts_name` its name). server: the test
    server's settings. env: variables set for the run. first: run once cleanly before `damage`
    (state cases). damage(tmp_path): what happens to the files between the runs.
    """

    id: str
    family: str
    code: int = 0
    error: str | None = None
    rows: int | None = ROWS
    failures: int | None = 0
    shows: str | None = None
    clean: bool = False
    overrides: tuple[str, ...] = ()
    prompts: str | bytes | None = None
    prompts_name: str = "prompts.jsonl"
    server: dict[str, Any] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)
    first: bool = False
    damage: Callable[[Path], None] | None = None
    args: tuple[str, ...] = ()  # the case's `moaa run` arguments after the config (a first run has none)
    slow: bool = False


def lines(*rows: Any) -> str:
    """JSONL text of rows (strings are written as they are: a broken line)."""
    return "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows)


Q = ({"prompt": "Name three primes."}, {"prompt": "Name two colours."})  # two good prompts


def config(id: str, override: str | tuple[str, ...], error: str) -> Case:
    return Case(
        id, "config", code=2, error=error, rows=None, overrides=(override,) if isinstance(override, str) else override
    )


# ------------------------------------------------------------------ config: bad files and overrides

# fmt: off
CONFIG = [
    config("unknown-key", "sft.layerz=3", r"unknown key 'sft\.layerz' \(allowed here: method, layers"),
    config("unknown-section", "prompt.limit=3", r"unknown key 'prompt' \(allowed here: name, description"),
    config("limit-not-a-number", "prompts.limit=many", r"prompts\.limit: Input should be a valid integer"),
    config("limit-zero", "prompts.limit=0", r"prompts\.limit: Input should be greater than or equal to 1"),
    config("one-layer-moa", "sft.layers=1", r"sft\.layers: method 'moa' needs layers >= 2 \(got 1\)"),
    config("unknown-method", "sft.method=magic", r"sft\.method: Input should be 'single', 'moa', .* or 'smoa' \(got"),
    config("moa-lite-five-layers", ("sft.method=moa-lite", "sft.layers=5"), r"sft\.layers: method 'moa-lite' always"),
    config("smoa-k-too-big", ("sft.method=smoa", "sft.smoa.k=9"), r"sft\.smoa\.k: the moderator picks 9 of 3"),
    config("ghost-endpoint", "sft.proposers.0.endpoint=ghost", r"unknown endpoint 'ghost' \(defined under endpoints"),
    config("ftp-base-url", "endpoints.test.base_url=ftp://x/v1", r"'ftp://x/v1' is not an http\(s\) URL"),
    config("temperature-5", "sft.aggregator.temperature=5", r"sft\.aggregator\.temperature: .*less than or equal to 2"),
    config("bad-repo-id", "output.publish_repo_id=demo", r"output\.publish_repo_id: repo id is invalid; use ORG/NAME"),
    config(
        "preference-no-policy", "preference.enabled=true", r"preference\.policy: preference\.enabled needs a policy"
    ),
    config("failure-rate-2", "run.max_failure_rate=2", r"run\.max_failure_rate: .*less than or equal to 1"),
    config("truncated-maybe", "answers.truncated=maybe", r"answers\.truncated: Input should be 'drop', 'reask' or"),
    config("on-bad-row-ignore", "prompts.on_bad_row=ignore", r"prompts\.on_bad_row: Input should be 'error' or 'skip'"),
    config("min-answers-0", "sft.min_answers=0", r"sft\.min_answers: Input should be greater than or equal to 1"),
    config("retry-after-0", "endpoints.test.max_retry_after_s=0", r"max_retry_after_s: Input should be greater than 0"),
    config("path-and-hub", "prompts.hf_dataset=org/set", r"prompts: set exactly one of path or hf_dataset"),
    Case("set-without-value", "config", 2, r"--set 'sft\.layers': expected dotted\.key=value", rows=None,
         args=("--set", "sft.layers")),
    Case("set-index-out-of-range", "config", 2, r"'sft\.proposers\.9' needs a list index below 3", rows=None,
         args=("--set", "sft.proposers.9.temperature=1")),
    config("shard-size-0", "run.shard_size=0", r"run\.shard_size: Input should be greater than or equal to 1"),
    config("unknown-task-runner", "run.task_runner=slurm", r"run\.task_runner: Input should be 'threads', 'dask'"),
    config("no-proposers", "sft.proposers=[]", r"sft: .*at least one proposer is required"),
    config("moa-without-aggregator", "sft.aggregator=null", r"sft: .*method 'moa' needs an aggregator"),
    config(
        "reward-model-missing",
        "preference={{enabled: true, policy: {{endpoint: test}}, scorer: {{kind: reward_model}}}}",
        r"preference\.scorer\.reward_model: required for kind reward_model",
    ),  # fmt: skip
    config(
        "judges-missing",
        "preference={{enabled: true, policy: {{endpoint: test}}}}",
        r"preference\.scorer\.judges: kind pointwise needs at least one judge agent",
    ),  # fmt: skip
    config(
        "api-key-env-unset",
        "endpoints.test.api_key_env=MOAA_NO_SUCH_VARIABLE",
        r"endpoint 'test': environment variable MOAA_NO_SUCH_VARIABLE is not set; export it",
    ),  # fmt: skip
    config(
        "seq-window-too-small",
        "sft.seq={{samples: 8, window: 3, new_per_step: 3}}",
        r"sft\.seq: .*new_per_step \+ repeats must not exceed window",
    ),  # fmt: skip
    config("negative-backoff", "endpoints.test.backoff_s=-1", r"endpoints\.test\.backoff_s: .*greater than or equal"),
]
# fmt: on

# ------------------------------------------------------------------ prompts: bad prompt files

MM = [{"type": "text", "text": "What is in it?"}, {"type": "image_url", "image_url": {"url": "https://x.org/a.png"}}]

PROMPTS = [
    Case("missing-file", "prompts", 2, r"prompts\.jsonl: prompt file not found; fix prompts\.path", prompts=None,
         overrides=("prompts.path={tmp}/prompts.jsonl", "prompts.limit=null")),  # fmt: skip
    Case("empty-file", "prompts", 2, r"prompts\.jsonl: the file holds no prompts; add at least one row", prompts=""),
    Case("invalid-json", "prompts", 2, r"prompts\.jsonl:2: invalid JSON \(.*\); fix or remove the line",
         prompts=lines(Q[0], '{"prompt": "torn', Q[1])),  # fmt: skip
    Case("not-utf8", "prompts", 2, r"prompts\.jsonl:2: not UTF-8 text \(byte offset \d+\); save the file as UTF-8",
         prompts=lines(Q[0]).encode() + b'{"prompt": "caf\xe9"}\n'),  # fmt: skip
    Case("lone-surrogate", "prompts", 2, r"prompts\.jsonl:2: a string holds a lone UTF-16 surrogate",
         prompts=lines(Q[0], '{"prompt": "half \\ud800 a pair"}')),  # fmt: skip
    Case("no-prompt-column", "prompts", 2, r"no prompt column \(expected one of messages, .*columns found: label, text",
         prompts=lines({"text": "a", "label": 1})),  # fmt: skip
    Case("json-not-a-list", "prompts", 2, r"prompts\.json: expected a JSON list of objects", prompts='{"a": 1}',
         prompts_name="prompts.json"),  # fmt: skip
    Case("txt-file", "prompts", 2, r"prompts\.txt: unknown prompt file type '\.txt'", prompts="hello\n",
         prompts_name="prompts.txt"),  # fmt: skip
    Case("csv-200k-cell", "prompts", rows=2, failures=1, shows=r"dropped: too_long 1", prompts_name="prompts.csv",
         prompts=f"prompt\nName three primes.\n\"{'x' * 200_000}\"\nName two colours.\n"),  # fmt: skip
    Case("parquet-garbage", "prompts", 2, r"prompts\.parquet: not a readable parquet file", prompts=b"PAR1 nope",
         prompts_name="prompts.parquet"),  # fmt: skip
    Case("every-prompt-dropped", "prompts", 2, r"prompts: no prompts left after filtering \(dropped: empty 2\); relax",
         prompts=lines({"prompt": ""}, {"prompt": "   "})),  # fmt: skip
    Case("bad-role", "prompts", 2, r"malformed messages: turn 1 has role 'robot'",
         prompts=lines({"messages": [{"role": "robot", "content": "hi"}]})),  # fmt: skip
    Case("duplicate-ids", "prompts", 2, r"prompts\.jsonl:2: duplicate id 'a' \(first at .*prompts\.jsonl:1\)",
         prompts=lines(Q[0] | {"id": "a"}, Q[1] | {"id": "a"}), overrides=("prompts.id_column=id",)),  # fmt: skip
    Case("id-column-missing", "prompts", 2, r"column 'uid' not found \(columns found: prompt\); fix prompts\.id_column",
         prompts=lines(*Q), overrides=("prompts.id_column=uid",)),  # fmt: skip
    Case("skip-bad-lines", "prompts", rows=2, failures=2, shows=r"dropped: bad_row 2 \(named in the failures config",
         prompts=lines(Q[0], '{"prompt": "torn', "[1, 2]", Q[1]), overrides=("prompts.on_bad_row=skip",)),  # fmt: skip
    Case("skip-not-utf8", "prompts", rows=2, failures=1, shows=r"dropped: bad_row 1",
         prompts=lines(*Q).encode() + b'{"prompt": "caf\xe9"}\n', overrides=("prompts.on_bad_row=skip",)),  # fmt: skip
    Case("a-2mb-prompt", "prompts", rows=2, failures=1, shows=r"dropped: too_long 1 \(named in the failures config",
         prompts=lines(Q[0], {"prompt": "x" * 2_000_000}, Q[1])),  # fmt: skip
    Case("empty-and-system-only", "prompts", rows=2, failures=2, shows=r"dropped: empty 2",
         prompts=lines(Q[0], {"instruction": ""}, {"messages": [{"role": "system", "content": "Be brief."}]}, Q[1])),
    Case("duplicate-prompt", "prompts", rows=2, failures=1, shows=r"dropped: duplicate 1",
         prompts=lines(Q[0], Q[1], Q[0])),  # fmt: skip
    Case("too-short", "prompts", rows=2, failures=1, shows=r"dropped: too_short 1",
         prompts=lines(Q[0], {"prompt": "ok"}, Q[1]), overrides=("prompts.min_chars=3",)),  # fmt: skip
    Case("multimodal-row", "prompts", rows=2, failures=1, shows=r"dropped: multimodal 1",
         prompts=lines(Q[0], {"messages": [{"role": "user", "content": MM}]}, Q[1])),  # fmt: skip
    Case("text-parts-only", "prompts", rows=2, clean=True,
         prompts=lines(Q[0], {"messages": [{"role": "user", "content": [{"type": "text", "text": "Hi!"}]}]})),
    Case("bom-and-crlf", "prompts", rows=2, clean=True,
         prompts=b"\xef\xbb\xbf" + lines(*Q).replace("\n", "\r\n").encode()),
    Case("sharegpt-and-trailing-answer", "prompts", rows=2, clean=True, prompts=lines(
        {"conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello"},
                           {"from": "human", "value": "Name a colour."}, {"from": "gpt", "value": "drop me"}]}, Q[0])),
    Case("null-prompt-cell", "prompts", rows=2, failures=1, shows=r"dropped: empty 1",
         prompts=lines(Q[0], {"prompt": None}, Q[1])),  # fmt: skip
]  # fmt: skip

# ------------------------------------------------------------------ endpoints: bad endpoints, faults mid-run

TWO = ("endpoints.fa={{base_url: '{dead}', model: fa-model, max_retries: 0}}", "sft.proposers.2.endpoint=fa")


def fault_once(kind: str, shows: str = r"retries 1\)", **server: Any) -> Case:
    """One call meets `kind`, then the server answers: retried, rows complete, the retry counted."""
    return Case(f"{kind}-once", "endpoints", shows=shows, server={"script": [kind], **server})


def answers_every(kind: str, error: str) -> Case:
    """Every call meets `kind`: the run makes nothing and says what came back."""
    return Case(f"{kind}-always", "endpoints", 4, rf"error: sft: all 2 prompts failed; .*{error}", rows=None,
                server={"script": [kind] * 100}, overrides=("endpoints.test.max_retries=1",))  # fmt: skip


def poisoned(request: dict) -> None:
    """Every call carrying the first prompt fails (a prompt no retry can save)."""
    if any("three primes" in str(m.get("content")) for m in request["messages"]):
        raise RuntimeError("poisoned prompt")


ENDPOINTS = [
    fault_once("429", retry_after_s=0.05),
    fault_once("500"),
    fault_once("503"),
    fault_once("garbage"),
    fault_once("empty"),
    fault_once("truncated"),
    fault_once("drop"),
    fault_once("sse"),
    fault_once("error200"),
    fault_once("blank"),
    fault_once("hang", hang_s=3),
    Case("retry-after-3600", "endpoints", shows=r"Retry-After 3600 s; waiting 1 s instead",
         server={"script": ["429"], "retry_after_s": 3600}, overrides=("endpoints.test.max_retry_after_s=1",)),
    answers_every("500", r"server_error: endpoint 'test' \(test-model\): HTTP 500 Injected fault 500"),
    answers_every("garbage", r"HTTP 200 with an HTML page, not JSON"),
    answers_every("sse", r"HTTP 200 with a server-sent event stream \(text/event-stream\) though no stream"),
    answers_every("error200", r"HTTP 200 with an error instead of an answer: Injected error in a 200 answer"),
    answers_every("empty", r"malformed response: HTTP 200 with an empty body"),
    answers_every("blank", r"empty answer from proposer\d \(test-model\)"),
    answers_every("400", r"proposers_failed: bad_request: endpoint 'test' \(test-model\): HTTP 400"),
    Case("404-model", "endpoints", 3, r"endpoint 'test': HTTP 404 for model 'test-model' at .*check base_url and model",
         rows=None, server={"script": ["404"]}),  # fmt: skip
    Case("wrong-key", "endpoints", 3, r"endpoint 'test' refused the key \(HTTP 401\): check the key in "
         r"\$MOAA_CANARY_KEY", rows=None, server={"api_key": "another-key-0123456789"}),  # fmt: skip
    Case("dead-endpoint", "endpoints", 4, r"sft: all 2 prompts failed; .*connection failed.* \(endpoint 'test' at "
         r"http://127\.0\.0\.1:1/v1\)", rows=None, overrides=("endpoints.test.base_url={dead}",
                                                              "endpoints.test.max_retries=0")),  # fmt: skip
    Case("dead-proposer-of-two", "endpoints", 4, r"sft: all 2 prompts failed; .*endpoint 'fa' \(fa-model\): connection "
         r"failed", rows=None, overrides=TWO),  # fmt: skip
    Case("dead-proposer-allowed-away", "endpoints", 4, r"sft: endpoint 'fa' failed all 2 calls it was asked \(endpoint "
         r"'fa' at http://127\.0\.0\.1:1/v1\); last error: connection", rows=None,
         overrides=(*TWO, "sft.min_answers=1")),  # fmt: skip
    Case("dead-aggregator", "endpoints", 4, r"sft: all 2 prompts failed; .*aggregator_failed: connection: endpoint "
         r"'agg'", rows=None, overrides=("endpoints.agg={{base_url: '{dead}', model: agg-model, max_retries: 0}}",
                                         "sft.aggregator.endpoint=agg")),  # fmt: skip
    Case("one-poisoned-prompt", "endpoints", rows=1, failures=1, shows=r"failures: sft:proposers_failed 1",
         prompts=lines(*Q), server={"responder": poisoned}, overrides=("endpoints.test.max_retries=1",)),  # fmt: skip
    Case("content-filter", "endpoints", rows=1, failures=1, shows=r"failures: sft:proposers_failed 1",
         server={"script": ["content_filter"]}),
    Case("aggregator-cut", "endpoints", rows=1, failures=1, shows=r"failures: sft:truncated 1",
         server={"script": [None, None, None, "length"]}, overrides=("sft.method=moa", "run.shard_size=1",
                                                                     "run.max_parallel_shards=1")),  # fmt: skip
    Case("degraded-allowed", "endpoints", rows=2, shows=r"1 rows from fewer answers than configured",
         server={"script": [None, None, "500"]}, overrides=("sft.min_answers=2", "endpoints.test.max_retries=0",
                                                             "run.shard_size=1", "run.max_parallel_shards=1")),
    Case("failure-rate-stop", "endpoints", 4, r"sft: \d of \d prompts failed \(limit run\.max_failure_rate=0\.3\); "
         r"commonest cause .*HTTP 500.*fix the cause \(failures: .*/sft/shard-\*/failures\.jsonl\)", rows=None,
         server={"script": ["500"] * 24}, overrides=(
             "prompts.limit=6", "run.shard_size=2", "run.max_parallel_shards=1", "endpoints.test.max_retries=0",
             "run.max_failure_rate=0.3", "run.min_prompts_for_failure_rate=2")),  # fmt: skip
    Case("ignored-n", "endpoints", rows=2, clean=True, server={"ignore_n": True},
         overrides=("sft.method=self-moa", "sft.self_moa.samples=3")),  # fmt: skip
    Case("key-with-line-break", "endpoints", 2, r"endpoint 'test': environment variable MOAA_CANARY_KEY ends with a "
         r"line break", rows=None, env={"MOAA_CANARY_KEY": "{canary}\n"}),  # fmt: skip
]  # fmt: skip

# ------------------------------------------------------------------ state: files damaged between runs


def shard(tmp: Path, stage: str = "sft") -> Path:
    return next((tmp / "work").glob(f"test-run/*/{stage}/shard-00000"))


def write(name: str, data: bytes) -> Callable[[Path], None]:
    def damage(tmp: Path) -> None:
        (shard(tmp) / name).write_bytes(data)
        (tmp / "data" / "test-run" / "v1" / "README.md").unlink()  # not "up to date": a version is written

    return damage


def garble_line(name: str, unfinished: bool = True) -> Callable[[Path], None]:
    def damage(tmp: Path) -> None:
        folder = shard(tmp)
        path = folder / name
        kept = path.read_text().splitlines(keepends=True)
        path.write_text("".join([kept[0], "garbage {\n", *kept[1:]]))
        if unfinished:
            (folder / "DONE").unlink()
        (tmp / "data" / "test-run" / "v1" / "README.md").unlink()

    return damage


def cache_bytes(data: bytes) -> Callable[[Path], None]:
    def damage(tmp: Path) -> None:
        (tmp / "cache.sqlite").write_bytes(data)

    return damage


def truncated_cache(tmp: Path) -> None:
    import sqlite3

    path = tmp / "cache.sqlite"
    sqlite3.connect(path).execute("PRAGMA wal_checkpoint(TRUNCATE)").close()
    data = path.read_bytes()
    for extra in ("-wal", "-shm"):
        Path(f"{path}{extra}").unlink(missing_ok=True)
    path.write_bytes(data[: len(data) // 2])


def roles_garbage(tmp: Path) -> None:
    next((tmp / "work").glob("test-run/*/roles.json")).write_text("{not json")
    (tmp / "data" / "test-run" / "v1" / "README.md").unlink()


def leftovers(tmp: Path) -> None:
    """What a killed run leaves: a half-written version folder and a prompts spill file."""
    (tmp / "data" / "test-run" / ".tmp-v2-dead0001").mkdir()
    stale = tmp / "work" / ".prompts-dead0001.jsonl.tmp"
    stale.write_text('["left by a SIGKILL"]\n')
    import os

    os.utime(stale, (1, 1))
    (tmp / "data" / "test-run" / "v1" / "README.md").unlink()


def latest_garbage(tmp: Path) -> None:
    (tmp / "data" / "test-run" / "LATEST").write_text("v99-garbage\n")


STATE_DONE = (r"shard sft/shard-00000's work file DONE is damaged \({}\): redoing the shard: its prompts without a "
              r"row on disk are asked again \(cached answers kept\)")  # fmt: skip
NOT_JSON = r"not JSON \(empty, torn or garbage\)"
DAMAGED_LINE = r"shard sft/shard-00000's work file {}\.jsonl is damaged \(1 line\(s\) that are not records"


def state(id: str, damage: Callable[[Path], None], shows: str | None = None, **kw: Any) -> Case:
    return Case(id, "state", first=True, damage=damage, shows=shows, clean=shows is None, **kw)


STATE = [
    state("done-empty", write("DONE", b""), STATE_DONE.format(NOT_JSON)),
    state("done-torn", write("DONE", b'{"stage": "sft", "sha'), STATE_DONE.format(NOT_JSON)),
    state("done-garbage", write("DONE", b"\x00\x01\xff garbage"), STATE_DONE.format(NOT_JSON)),
    state("done-a-list", write("DONE", b"[1, 2]"), STATE_DONE.format("not a JSON object")),
    state("done-older-layout", write("DONE", b'{"stage": "sft", "shard": "shard-00000.jsonl", "stats": {}}'),
          STATE_DONE.format("no counts of prompts, rows and failures: written by an older moaa")),
    state("calls-garbage-line", garble_line("calls.jsonl"), DAMAGED_LINE.format("calls")),
    state("rows-garbage-line", garble_line("rows.jsonl"), DAMAGED_LINE.format("rows")),
    state("trace-garbage-line", garble_line("trace.jsonl"), DAMAGED_LINE.format("trace")),
    state("finished-rows-line", garble_line("rows.jsonl", unfinished=False), code=2, rows=None,
          error=r"rows\.jsonl:2: not valid JSON \(.*\): moaa's work file is damaged; no data set version was written; "
                r"run the same command again: its shard is redone"),
    Case("cache-garbage", "state", 2, r"cache .*cache\.sqlite is damaged \(file is not a database\); move it aside",
         rows=None, damage=cache_bytes(b"not a database " * 200)),  # fmt: skip
    Case("cache-truncated", "state", 2, r"cache .*cache\.sqlite is damaged \(.*\); move it aside",
         rows=None, first=True, damage=truncated_cache, args=("--set", "sft.layers=3")),  # fmt: skip
    Case("cache-empty-file", "state", clean=True, damage=cache_bytes(b"")),
    state("roles-garbage", roles_garbage, r"roles\.json is damaged \(not the run's SMoA roles\): generating them again",
          overrides=("sft.method=smoa",)),  # fmt: skip
    state("killed-write-leftovers", leftovers),
    state("latest-garbage", latest_garbage),
]  # fmt: skip

# ------------------------------------------------------------------ secrets: keys where they must not go


SECRETS = [
    Case("key-in-api-key-env", "secrets", 2, r"endpoints\.test\.api_key_env: expected the NAME of an environment "
         r"variable", rows=None, overrides=("endpoints.test.api_key_env={canary}",)),  # fmt: skip
    Case("key-in-extra-body", "secrets", 2, r"endpoints\.test\.extra_body\.api_key: looks like a key, token or "
         r"password", rows=None, overrides=("endpoints.test.extra_body={{api_key: '{canary}'}}",)),  # fmt: skip
    Case("key-in-agent-extra-body", "secrets", 2, r"sft\.aggregator\.extra_body\.headers\.Authorization: looks like a "
         r"key", rows=None, overrides=("sft.aggregator.extra_body={{headers: {{Authorization: 'Bearer {canary}'}}}}",)),
    Case("password-in-base-url", "secrets", 2, r"endpoints\.test\.base_url: holds credentials \(user:password@ before "
         r"127\.0\.0\.1\)", rows=None, overrides=("endpoints.test.base_url=http://me:{canary}@127.0.0.1:9/v1",)),
    Case("key-in-prompt", "secrets", rows=2, failures=1, shows=r"dropped: secret 1",
         prompts=lines(Q[0], {"prompt": "My key is {canary}, is it safe?"}, Q[1])),  # fmt: skip
    Case("url-credentials-in-prompt", "secrets", rows=2, failures=1, shows=r"dropped: secret 1",
         prompts=lines(Q[0], {"prompt": "Open https://me:{canary}@example.com/x"}, Q[1])),  # fmt: skip
    Case("key-echoed-in-400s", "secrets", rows=None, failures=None, shows=r"failures: sft:proposers_failed",
         server={"echo_key": True, "fault_rate": 0.1, "fault_mix": ["400"], "seed": 3},
         overrides=("prompts.limit=4",)),  # fmt: skip
    Case("key-in-a-description", "secrets", shows=r"config\.description held the value of \$MOAA_CANARY_KEY; it was "
         r"redacted", overrides=("description=mirror https://u:{canary}@example.com",)),  # fmt: skip
    Case("url-credentials-in-a-description", "secrets", clean=True,
         overrides=("description=mirror https://u:pw-0123456789@example.com",)),  # fmt: skip
    Case("key-in-tags", "secrets", shows=r"tags\[0\] held the value of \$MOAA_CANARY_KEY; it was redacted",
         overrides=("output.tags=[x-{canary}]",)),  # fmt: skip
]  # fmt: skip

CASES = CONFIG + PROMPTS + ENDPOINTS + STATE + SECRETS
