"""`moaa view` as a command: it prints a URL that answers (8765, or a free port when that is taken), a host
beyond loopback needs MOAA_VIEW_TOKEN (never printed), mistakes are one line; `--export`; the run's
Prefect artifact links to the version's page.

Run: .venv/bin/python -m pytest tests/test_view_cli.py -x -q
"""

from __future__ import annotations

import socket
import subprocess
import sys

import httpx
import pytest
from version_helpers import write_demo, write_parts

from moaa.cli import main
from moaa.view.serving import DEFAULT_PORT
from tests.pipeline_helpers import assert_one_line_error, cli_env


@pytest.fixture
def root(tmp_path):
    write_demo(tmp_path / "data", write_parts(tmp_path / "parts", n=6))
    return tmp_path / "data"


def start_view(*args: str, env: dict | None = None) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen([sys.executable, "-m", "moaa.cli", "view", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env or cli_env())  # fmt: skip
    return proc, proc.stdout.readline()


def stop(proc: subprocess.Popen) -> tuple[str, str]:
    proc.terminate()
    out, err = proc.communicate(timeout=30)
    return out, err


def test_view_prints_a_url_that_answers_and_moves_off_a_taken_port(root):
    taken = socket.socket()
    try:
        taken.bind(("127.0.0.1", DEFAULT_PORT))
        taken.listen(1)
    except OSError:
        pass  # something else holds it already: the same situation
    try:
        proc, line = start_view("demo@v1", "--root", str(root))
        try:
            assert line.startswith("moaa view: http://127.0.0.1:") and "/d/demo/v1/  (serving" in line, line
            url = line.split()[2]
            assert f":{DEFAULT_PORT}/" not in url
            page = httpx.get(url, timeout=30)
            assert page.status_code == 200 and "<h1>demo@v1</h1>" in page.text
        finally:
            stop(proc)
    finally:
        taken.close()


def test_a_taken_port_asked_for_is_one_line(root):
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen(1)
    port = taken.getsockname()[1]
    try:
        done = subprocess.run([sys.executable, "-m", "moaa.cli", "view", "--root", str(root), "--port", str(port)],
                              capture_output=True, text=True, env=cli_env(), timeout=120)  # fmt: skip
        line = assert_one_line_error(done, 2)
        assert line == f"error: cannot listen on 127.0.0.1:{port} (Address already in use); pass another --port"
    finally:
        taken.close()


def test_beyond_loopback_a_token_is_required_and_never_printed(root):
    env = cli_env()
    env.pop("MOAA_VIEW_TOKEN", None)
    done = subprocess.run([sys.executable, "-m", "moaa.cli", "view", "--root", str(root), "--host", "0.0.0.0"],
                          capture_output=True, text=True, env=env, timeout=120)  # fmt: skip
    line = assert_one_line_error(done, 2)
    assert line.startswith("error: --host 0.0.0.0 serves the data to the network; set MOAA_VIEW_TOKEN to a secret")
    secret = "tok-5b1c9e7a0d3f"
    proc, line = start_view("--root", str(root), "--host", "0.0.0.0", "--port", "0",
                            env=cli_env(MOAA_VIEW_TOKEN=secret))  # fmt: skip
    try:
        port = line.split()[2].rsplit(":", 1)[1].split("/")[0]
        assert "?token=$MOAA_VIEW_TOKEN" in line
        assert httpx.get(f"http://127.0.0.1:{port}/", timeout=30).status_code == 401
        ok = httpx.get(f"http://127.0.0.1:{port}/", headers={"Authorization": f"Bearer {secret}"}, timeout=30)
        assert ok.status_code == 200
    finally:
        out, err = stop(proc)
    assert secret not in line + out + err


def test_export_from_the_command_line(root, tmp_path, capsys):
    out = tmp_path / "html"
    assert main(["view", "demo@v1", "--root", str(root), "--export", str(out), "--filter", "split=train"]) == 0
    said = capsys.readouterr().out
    assert said.startswith(f"wrote demo@v1 as static HTML to {out}/index.html (sft ") and (out / "index.html").is_file()
    assert main(["view", "--root", str(root), "--export", str(out)]) == 2
    assert "--export needs the version to export" in capsys.readouterr().err
    assert main(["view", "demo@v1", "--root", str(root), "--filter", "verdict=fail"]) == 2
    assert "--filter applies to --export" in capsys.readouterr().err
    assert main(["view", "demo@v1", "--root", str(root), "--export", str(tmp_path / "x"), "--filter", "oops"]) == 2
    assert "--filter 'oops': use KEY=VALUE" in capsys.readouterr().err


def test_the_run_artifact_links_to_the_version_in_the_viewer(tmp_path, monkeypatch):
    import prefect.artifacts
    from test_report import make_version

    from flows import pipeline_flow

    version = make_version(tmp_path)  # a version as a run writes it, with its report

    posted = []
    monkeypatch.setattr(prefect.artifacts, "create_markdown_artifact", lambda **kw: posted.append(kw))
    monkeypatch.setattr("moaa.work.summary.format_summary", lambda summary: "summary")
    pipeline_flow.post_artifact({"name": "demo", "version_path": str(version)})
    url = f"http://127.0.0.1:{DEFAULT_PORT}/d/demo/v1/"
    markdown = posted[0]["markdown"]
    assert f"run `moaa view demo@v1` here, then open [{url}]({url})" in markdown and "**Chosen**" in markdown
