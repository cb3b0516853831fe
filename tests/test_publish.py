"""Publishing a version to the Hub: one commit with every file, tagged with the version, against a
local stand-in for the Hub's HTTP API (tests/hub_stub.py); the token never lands in logs or files.

Run: .venv/bin/python -m pytest tests/test_publish.py -x -q
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import pytest
from hub_stub import HubStub, Reply, disable_xet

from moaa.cli import main
from moaa.dataset.hub import hub_files, publish_version
from moaa.dataset.manifest import read_manifest
from moaa.errors import ConfigError, EndpointError, InputError, MoaaError
from tests.version_helpers import CONFIG, write_demo, write_parts

TOKEN = "hf_stubtoken_0123456789abcdef"


@pytest.fixture
def hub(monkeypatch):
    """The local Hub; conftest's offline mode is lifted for it (it listens on 127.0.0.1 only).

    huggingface_hub's own default endpoint is pointed at it too: building request headers fetches
    an "agent harnesses" registry from that endpoint, which must not leave the machine."""
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    disable_xet(monkeypatch)
    with HubStub(token=TOKEN) as stub:
        monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", stub.url)
        yield stub


@pytest.fixture
def versions(tmp_path):
    """v1 written in many small shards, v2 in one shard per split (so v2 must remove v1's files)."""
    parts = write_parts(tmp_path / "parts")
    v1 = write_demo(tmp_path / "data", parts, max_shard_rows=8)
    v2 = write_demo(tmp_path / "data", parts)
    return v1, v2


def _files(path: Path) -> dict[str, bytes]:
    return {p.relative_to(path).as_posix(): p.read_bytes() for p in path.rglob("*") if p.is_file()}


def _published(path: Path, repo_id: str = "org/demo") -> dict[str, bytes]:
    """The version's files as publish uploads them: its own, with card and manifest rendered for the repo."""
    return {
        name: c if isinstance(c, bytes) else c.read_bytes()
        for name, c in hub_files(path, read_manifest(path), repo_id).items()
    }


def _assert_no_token(*texts: str, folder: Path) -> None:
    for text in texts:
        assert TOKEN not in text
    for path in folder.rglob("*"):
        if path.is_file():
            assert TOKEN.encode() not in path.read_bytes(), path


def test_publish_is_one_commit_with_every_file_and_the_version_tag(hub, versions, tmp_path, caplog, capsys):
    v1, _ = versions
    caplog.set_level(logging.DEBUG)
    result = publish_version(v1.path, "org/demo", True, TOKEN, endpoint=hub.url)

    repo = hub.repos["datasets/org/demo"]
    assert repo.private is True
    assert len(repo.commits) == 1
    commit = repo.commits[0]
    assert commit.files == _published(v1.path)  # every file in this one commit
    local = _files(v1.path)
    assert {k: v for k, v in commit.files.items() if k not in ("README.md", "moaa_manifest.json")} == {
        k: v for k, v in local.items() if k not in ("README.md", "moaa_manifest.json")
    }  # the data and the report, byte for byte
    assert commit.summary == "demo v1" and commit.deleted == []
    assert repo.tags == {"v1": commit.oid}
    assert (result.commit_oid, result.tag, result.repo_id, result.dry_run) == (commit.oid, "v1", "org/demo", False)
    assert result.files == sorted((p, len(b)) for p, b in _published(v1.path).items())
    commits = [r for r in hub.requests if r.path.startswith("/api/datasets/org/demo/commit/")]
    assert len(commits) == 1 and commits[0].headers["content-type"] == "application/x-ndjson"
    api_calls = [r for r in hub.requests if r.path.startswith(("/api/repos/", "/api/datasets/", "/api/validate-yaml"))]
    repo_api = "/api/datasets/org/demo"
    assert [(r.method, r.path.split("?")[0]) for r in api_calls] == [
        ("POST", "/api/repos/create"),
        ("GET", f"{repo_api}/refs"),  # an existing tag is refused before uploading
        ("GET", f"{repo_api}/tree/main"),  # files an earlier version left are deleted
        ("POST", "/api/validate-yaml"),
        ("POST", f"{repo_api}/preupload/main"),
        ("POST", f"{repo_api}/commit/main"),
        ("POST", f"{repo_api}/tag/{commit.oid}"),
    ]
    assert all(r.headers["authorization"] == f"Bearer {TOKEN}" for r in api_calls)
    create = next(r for r in hub.requests if r.path == "/api/repos/create")
    payload = json.loads(create.body)
    assert (payload["organization"], payload["name"], payload["type"]) == ("org", "demo", "dataset")
    out = capsys.readouterr()
    _assert_no_token(caplog.text, out.out, out.err, folder=tmp_path)


def test_next_version_replaces_the_tree_in_one_commit_through_the_cli(hub, versions, tmp_path, monkeypatch, capsys):
    v1, v2 = versions
    publish_version(v1.path, "org/demo", False, TOKEN, endpoint=hub.url)
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    monkeypatch.setenv("HF_ENDPOINT", hub.url)
    assert main(["publish", "demo@v2", "--repo-id", "org/demo", "--root", str(tmp_path / "data")]) == 0
    out = capsys.readouterr().out
    repo = hub.repos["datasets/org/demo"]
    assert len(repo.commits) == 2 and list(repo.tags) == ["v1", "v2"]
    assert repo.tags["v2"] == repo.commits[1].oid and f"as commit {repo.commits[1].oid}, tagged v2" in out
    stale = sorted(set(_files(v1.path)) - set(_files(v2.path)))
    assert stale and sorted(repo.commits[1].deleted) == stale
    assert repo.files == {".gitattributes": repo.files[".gitattributes"]} | _published(v2.path)  # main == v2 exactly
    _assert_no_token(out, folder=tmp_path)

    before = len(hub.requests)
    assert main(["publish", "demo@v2", "--repo-id", "org/demo", "--root", str(tmp_path / "data")]) == 2
    assert "org/demo already has tag v2; published versions are immutable" in capsys.readouterr().err
    assert len(repo.commits) == 2
    assert not any("/commit/" in r.path for r in hub.requests[before:])


@pytest.mark.parametrize(
    "flag, visibility",
    [
        ([], "private: the version's output.private"),
        (["--public"], "public: --public"),
        (["--private"], "private: --private"),
    ],
)
def test_dry_run_through_the_cli_uses_no_network_and_no_token(
    hub, versions, tmp_path, monkeypatch, capsys, flag, visibility
):
    _, v2 = versions
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", hub.url)  # were anything sent, the stub would record it
    code = main(["publish", "demo@v2", "--repo-id", "org/demo", "--dry-run", "--root", str(tmp_path / "data"), *flag])
    assert code == 0 and hub.requests == []
    out = capsys.readouterr().out.splitlines()
    files = _published(v2.path)
    assert out[0] == f"dry run: would upload {v2.path} to org/demo ({visibility})"
    assert out[1].startswith(f"as one commit tagged v2: {len(files)} files, ")
    assert [line.split() for line in out[2:]] == [[f"{len(data):,d}", name] for name, data in sorted(files.items())]


def test_publish_follows_output_private_unless_told(hub, tmp_path, monkeypatch):
    """A run's output.private (true by default) decides; --public / --private win over it."""
    parts = write_parts(tmp_path / "parts")
    public_run = CONFIG | {"output": {"root": "data", "private": False}}
    v1 = write_demo(tmp_path / "data", parts)  # output.private unset: private
    v2 = write_demo(tmp_path / "data", parts, config=public_run)
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    monkeypatch.setenv("HF_ENDPOINT", hub.url)
    root = ["--root", str(tmp_path / "data")]
    assert main(["publish", "demo@v1", "--repo-id", "org/a", *root]) == 0
    assert main(["publish", "demo@v2", "--repo-id", "org/b", *root]) == 0
    assert main(["publish", "demo@v1", "--repo-id", "org/c", "--public", *root]) == 0
    assert main(["publish", "demo@v2", "--repo-id", "org/d", "--private", *root]) == 0
    got = {key: repo.private for key, repo in hub.repos.items()}
    assert got == {"datasets/org/a": True, "datasets/org/b": False, "datasets/org/c": False, "datasets/org/d": True}
    assert v1.version == "v1" and v2.version == "v2"


def test_missing_token_bad_token_and_tampered_version(hub, versions, tmp_path, monkeypatch, capsys):
    v1, _ = versions
    root = str(tmp_path / "data")
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", hub.url)
    assert main(["publish", "demo@v1", "--repo-id", "org/demo", "--root", root]) == 2
    err = capsys.readouterr().err
    assert err == "error: HF_TOKEN is not set; export a Hugging Face write token as HF_TOKEN (or use --dry-run)\n"
    assert hub.requests == []

    monkeypatch.setenv("HF_TOKEN", "hf_wrong_token_value")
    assert main(["publish", "demo@v1", "--repo-id", "org/demo", "--root", root]) == 3
    err = capsys.readouterr().err
    assert err.startswith("error: publishing v1 to org/demo failed: ") and err.count("\n") == 1
    assert "401" in err and "hf_wrong_token_value" not in err and hub.repos == {}

    with pytest.raises(ConfigError, match="repo id 'demo' is invalid; use ORG/NAME"):
        publish_version(v1.path, "demo", True, TOKEN, endpoint=hub.url)
    (v1.path / "README.md").write_text("edited after the fact")
    with pytest.raises(InputError, match=r"does not match its manifest \(modified: README.md"):
        publish_version(v1.path, "org/demo", True, TOKEN, endpoint=hub.url)
    with pytest.raises(MoaaError, match="HF_TOKEN is not set"):
        publish_version(tmp_path / "data" / "demo" / "v2", "org/demo", True, None)
    assert hub.repos == {}


def test_binary_files_travel_through_lfs_and_a_lost_upload_fails(hub, versions, tmp_path):
    """Parquet and PNG files go the Hub's LFS way (preupload says lfs, batch API, PUT, lfsFile pointer)."""
    v1, v2 = versions
    publish_version(v1.path, "org/demo", True, TOKEN, endpoint=hub.url)
    commit = hub.repos["datasets/org/demo"].commits[0]
    parquet = sorted(p for p in _files(v1.path) if p.endswith(".parquet"))
    assert parquet and sorted(p for p in commit.lfs if p.endswith(".parquet")) == parquet
    for path in parquet:
        oid = hashlib.sha256((v1.path / path).read_bytes()).hexdigest()
        assert f"preupload {path}: lfs" in hub.log and f"commit {path}: lfs pointer {oid}" in hub.log
        assert f"lfs upload {oid} ({(v1.path / path).stat().st_size} bytes)" in hub.log
    assert "commit README.md: regular" in hub.log and "README.md" not in commit.lfs

    hub._lfs_put = lambda oid, body: Reply(200, {})  # the storage answers but keeps nothing
    with pytest.raises(EndpointError, match="^publishing v2 to org/demo failed: "):
        publish_version(v2.path, "org/demo", True, TOKEN, endpoint=hub.url)
    assert len(hub.repos["datasets/org/demo"].commits) == 1 and "v2" not in hub.repos["datasets/org/demo"].tags
