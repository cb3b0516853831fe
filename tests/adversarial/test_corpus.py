"""The adversarial corpus (tests/adversarial/corpus.py): every case a `moaa run` in this process
against the fault-injecting test server, with the same checks for all of them:

- its exit code, and exactly one `error: ...` line (matching the case) when it fails, none when not;
- no traceback: none printed, none logged, no exception out of the CLI;
- nothing silent: a run that exits 0 after something went wrong names it (the case's `shows`), a clean
  one logs no moaa warning; every prompt read is a row, a failure or a named drop;
- no secret written: the canary key the test server demands is in no file under the run's folders (the
  user's own config and prompt files aside), in nothing printed or logged, nor (last test) in Prefect's
  database.

Totals (README "Reliability"): `pytest tests/adversarial -q` prints them.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections import Counter
from pathlib import Path

import pytest

from moaa.testing.openai_server import OpenAITestServer
from tests.adversarial.corpus import CASES, DEAD, Case
from tests.pipeline_helpers import files_holding, prefect_database_folder, run_main, version_rows, write_config

CANARIES: list[str] = []  # every case's key, for the Prefect database check at the end
USER_FILES = {"config.yaml", "prompts.jsonl", "prompts.json", "prompts.csv", "prompts.txt", "prompts.parquet"}


def record_everything(monkeypatch) -> list[logging.LogRecord]:
    """Every record any logger hands to its handlers (moaa's and Prefect's), whatever handlers Prefect's
    logging set-up put in place (its console handler keeps the stderr of the test that set it up)."""
    records: list[logging.LogRecord] = []
    handle = logging.Logger.callHandlers

    def call_handlers(self: logging.Logger, record: logging.LogRecord) -> None:
        records.append(record)
        handle(self, record)

    monkeypatch.setattr(logging.Logger, "callHandlers", call_handlers)
    monkeypatch.setattr(logging, "raiseExceptions", False)  # that stale stderr, closed: not the run's error
    return records


def versions(tmp_path: Path) -> list[str]:
    return sorted(p.name for p in (tmp_path / "data" / "test-run").glob("v*"))


def run(case: Case, tmp_path: Path, monkeypatch, capsys) -> tuple[int, str, str, list[logging.LogRecord]]:
    """The case's `moaa run` (after a clean first run and the damage, for state cases)."""
    monkeypatch.chdir(tmp_path)
    canary = f"sk-moaa-canary-{uuid.uuid4().hex}"
    CANARIES.append(canary)
    monkeypatch.setenv("MOAA_CANARY_KEY", canary)
    for name, value in case.env.items():
        monkeypatch.setenv(name, value.replace("{canary}", canary))
    server = {"api_key": canary, "retry_after_s": 0.05} | case.server
    records = record_everything(monkeypatch)
    with OpenAITestServer(**server) as srv:
        places = {"url": srv.base_url, "dead": DEAD, "tmp": str(tmp_path), "canary": canary}
        places["prompts"] = str(_write_prompts(case, tmp_path, canary))
        overrides = ["endpoints.test.api_key_env=MOAA_CANARY_KEY", "prompts.limit=2", "run.shard_size=2"]
        if case.prompts is not None:
            overrides += ["prompts.path={prompts}", "prompts.limit=null"]
        overrides += list(case.overrides)
        cfg = write_config(tmp_path, srv.base_url, *(o.format(**places) for o in overrides))
        if case.first:
            assert run_main("run", str(cfg)) == 0, capsys.readouterr().err
            capsys.readouterr()
        if case.damage is not None:
            case.damage(tmp_path)
        srv.set_script(server.get("script", ()))  # a state case's script is for the run after the damage
        records.clear()
        code = run_main("run", str(cfg), *case.args)
    out, err = capsys.readouterr()
    return code, out, err, list(records)


def _write_prompts(case: Case, tmp_path: Path, canary: str) -> Path:
    path = tmp_path / case.prompts_name
    if case.prompts is None:
        return path
    data = case.prompts if isinstance(case.prompts, bytes) else case.prompts.encode("utf-8")
    path.write_bytes(data.replace(b"{canary}", canary.encode()))
    return path


def check(case: Case, tmp_path: Path, code: int, out: str, err: str, records: list[logging.LogRecord]) -> None:
    logged = "\n".join(r.getMessage() for r in records)
    shown = "\n".join([out, err, logged])
    # no traceback
    assert "Traceback" not in shown, shown
    ours = [r for r in records if not r.name.startswith("moaa.testing")]  # the test server's own records aside
    assert [r.getMessage() for r in ours if r.exc_info and r.exc_info[0] is not None] == []
    # the exit code and its one line
    assert code == case.code, err
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    if case.code:
        import re

        assert len(errors) == 1 and re.search(case.error or "", errors[0]), err
    else:
        assert errors == [], err
    # no secret written or shown
    canary = CANARIES[-1]
    leaked = [p for p in files_holding(tmp_path, [canary.encode()]) if Path(p).name not in USER_FILES]
    assert leaked == [] and canary not in shown
    if case.code:
        assert versions(tmp_path) == (["v1"] if case.first else [])  # no version of a run that failed
        return
    _check_rows(case, tmp_path)
    # nothing silent
    if case.clean:
        warnings = [r.getMessage() for r in records if r.levelno >= logging.WARNING and r.name.startswith("moaa")]
        assert warnings == [], warnings
    else:
        import re

        assert case.shows and re.search(case.shows, shown), shown


def _check_rows(case: Case, tmp_path: Path) -> None:
    """The version's rows and failures, and every prompt read accounted for."""
    dataset = tmp_path / "data" / "test-run"
    version = dataset / sorted(versions(tmp_path), key=lambda v: int(v[1:]))[-1]
    rows, failures = version_rows(version, "sft"), version_rows(version, "failures")
    if case.rows is not None:
        assert len(rows) == case.rows
    if case.failures is not None:
        assert len(failures) == case.failures, failures
    prompts = json.loads((version / "moaa_manifest.json").read_text())["run"]["summary"]["prompts"]
    used = prompts["read"] - prompts["dropped"].get("sampled_out", 0)
    assert used == len(rows) + len(failures), (prompts, len(rows), len(failures))
    ids = [r["prompt_id"] for r in rows] + [(f["prompt_id"], f["stage"]) for f in failures]
    assert len(ids) == len(set(ids))  # nothing twice


def params(family: str) -> list:
    marks = lambda case: [pytest.mark.slow] if case.slow else []  # noqa: E731
    return [pytest.param(case, id=case.id, marks=marks(case)) for case in CASES if case.family == family]


@pytest.mark.parametrize("case", params("config"))
def test_config(case, tmp_path, prefect_harness, monkeypatch, capsys):
    check(case, tmp_path, *run(case, tmp_path, monkeypatch, capsys))


@pytest.mark.parametrize("case", params("prompts"))
def test_prompts(case, tmp_path, prefect_harness, monkeypatch, capsys):
    check(case, tmp_path, *run(case, tmp_path, monkeypatch, capsys))


@pytest.mark.parametrize("case", params("endpoints"))
def test_endpoints(case, tmp_path, prefect_harness, monkeypatch, capsys):
    check(case, tmp_path, *run(case, tmp_path, monkeypatch, capsys))


@pytest.mark.parametrize("case", params("state"))
def test_state(case, tmp_path, prefect_harness, monkeypatch, capsys):
    check(case, tmp_path, *run(case, tmp_path, monkeypatch, capsys))


@pytest.mark.parametrize("case", params("secrets"))
def test_secrets(case, tmp_path, prefect_harness, monkeypatch, capsys):
    check(case, tmp_path, *run(case, tmp_path, monkeypatch, capsys))


def test_no_case_key_reached_prefects_database(prefect_harness):
    """Flow-run parameters, task runs, logs and artifacts of every case above (run first: file order)."""
    assert CANARIES, "run with the cases above"
    assert files_holding(prefect_database_folder(), [c.encode() for c in CANARIES]) == []


def test_the_corpus_and_its_readme_totals():
    """At least 100 cases, ids unique, and the README's count of them per family is the corpus's."""
    assert len(CASES) >= 100 and len({c.id for c in CASES}) == len(CASES)
    families = Counter(c.family for c in CASES)
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    line = ", ".join(f"{n} {family}" for family, n in families.items())
    assert f"**{len(CASES)} cases** ({line})" in readme, f"README should say: **{len(CASES)} cases** ({line})"
    codes = Counter(c.code for c in CASES)
    exits = ", ".join(f"{codes[code]} exit {code}" for code in sorted(codes, key=lambda c: (c == 0, c)))
    assert f"({exits})" in " ".join(readme.split()), f"README should say: ({exits})"
    named = sum(1 for c in CASES if c.code == 0 and not c.clean)
    assert f"names it: {named} cases" in " ".join(readme.split()), f"README should say: names it: {named} cases"
