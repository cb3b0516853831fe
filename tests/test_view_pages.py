"""`moaa view`'s pages over HTTP (the app on a real socket, moaa.view.serving.ViewServer): data sets and
versions, paged and filtered tables that match what pyarrow reads, rows, the review API and its
guards, the token, versions side by side, a compare run, and the static export.

Run: .venv/bin/python -m pytest tests/test_view_pages.py -x -q
"""

from __future__ import annotations

import json
import re
from html import unescape
from pathlib import Path

import httpx
import pyarrow.parquet as pq
import pytest
from version_helpers import write_demo, write_parts

from moaa.view import paging
from moaa.view.serving import ViewServer
from moaa.view.snapshot import export_version

API = {"X-Moaa-Review": "1"}


def rows_of(version: Path, config: str) -> list[dict]:
    """The config's rows in file order, read whole with pyarrow (what the pages must agree with)."""
    return [r for f in sorted((version / "data" / config).glob("*.parquet")) for r in pq.read_table(f).to_pylist()]


def text(html: str) -> str:
    return " ".join(unescape(re.sub(r"<[^>]+>", " ", html)).split())


def row_ids(html: str) -> list[str]:
    return re.findall(r'<tr data-pid="([^"]+)"', html)


@pytest.fixture
def demo(tmp_path):
    """demo@v1: 120 prompts in shards of 50 rows (several files and row groups per split)."""
    parts = write_parts(tmp_path / "parts", n=120)
    version = write_demo(tmp_path / "data", parts, max_shard_rows=50).path
    with ViewServer(tmp_path / "data", tmp_path / "runs") as server:
        yield version, server


def get(server, path, **kw) -> httpx.Response:
    return httpx.get(server.url + path, timeout=30, **kw)


def test_index_lists_each_version_with_counts_cost_method_and_parent(demo):
    version, server = demo
    page = get(server, "/")
    assert page.status_code == 200
    body = text(page.text)
    assert "demo" in body and "v1 latest" in body
    # rows per config, failures, cost to make, method and parent, from the manifest
    assert re.search(r"v1 latest \d{4}-\d\d-\d\d \d\d:\d\d 120 120 240 2 – \$0\.2500 moa – –", body), body


def test_pages_of_a_table_are_the_rows_in_file_order(demo):
    version, server = demo
    every = [r["prompt_id"] for r in rows_of(version, "sft")]
    assert len(every) == 120
    seen = []
    for page in (1, 2, 3):
        html = get(server, f"/d/demo/v1/sft?page={page}").text
        seen += row_ids(html)
    assert seen == every
    assert "120 sft rows · page 3 of 3" in text(get(server, "/d/demo/v1/sft?page=3").text)
    assert get(server, "/d/demo/v1/sft?page=4").status_code == 404


@pytest.mark.parametrize(
    "config, params, keep",
    [
        ("sft", {"q": "QUESTION 1"}, lambda r: r["messages"][0]["content"].startswith("Question 1")),
        ("sft", {"model": "qwen-b", "split": "test"}, lambda r: r["_split"] == "test"),
        ("sft", {"category": "math"}, lambda r: r["category"] == "math"),
        ("dpo", {"score_min": "9"}, lambda r: r["score_chosen"] >= 9),
        ("dpo", {"margin_min": "6.5", "q": "word word word word word word"},
         lambda r: r["score_chosen"] - r["score_rejected"] >= 6.5 and "word " * 6 in r["chosen"][0]["content"]),
        ("trace", {"kind": "verdict", "score_min": "7"}, lambda r: r["kind"] == "verdict"),
        ("failures", {"reason": "aggregator_failed"}, lambda r: True),
        ("trace", {"model": "nobody"}, lambda r: False),
    ],
)  # fmt: skip
def test_filters_keep_exactly_the_matching_rows(demo, config, params, keep):
    version, server = demo
    table = paging.config_table(version, config)
    splits = {}
    for shard in table.shards:  # each row's split, from its shard's name
        for r in pq.read_table(shard.path).to_pylist():
            splits.setdefault(r["prompt_id"], shard.split)
    expected = [r["prompt_id"] for r in rows_of(version, config) if keep(r | {"_split": splits[r["prompt_id"]]})]
    found = paging.read_page(table, paging.Query.of(config, params), 0, 500)
    assert [r["prompt_id"] for r in found.rows] == expected and found.total == len(expected)
    html = get(server, f"/d/demo/v1/{config}", params=params).text
    assert f"{len(expected)} {config} rows match" in text(html)
    if config in ("sft", "dpo"):
        assert row_ids(html) == expected[:50]


def test_truncated_rows_are_the_prompts_with_a_step_cut_at_max_tokens(tmp_path):
    parts = write_parts(tmp_path / "parts", n=10)
    trace = parts["trace"][0]
    steps = [json.loads(line) for line in trace.read_text().splitlines()]
    steps[2]["finish_reason"] = "length"  # p001's proposal was cut
    trace.write_text("".join(json.dumps(s) + "\n" for s in steps))
    version = write_demo(tmp_path / "data", parts).path
    sft = paging.config_table(version, "sft")
    assert [r["prompt_id"] for r in paging.read_page(sft, paging.Query(truncated="yes")).rows] == ["p001"]
    assert paging.read_page(sft, paging.Query(truncated="no")).total == 9
    steps_cut = paging.read_page(paging.config_table(version, "trace"), paging.Query(truncated="yes")).rows
    assert [(s["prompt_id"], s["finish_reason"]) for s in steps_cut] == [("p001", "length")]


def test_a_bad_filter_an_unknown_version_or_row_is_one_line_not_a_traceback(demo):
    _, server = demo
    bad = get(server, "/d/demo/v1/dpo?score_min=lots")
    assert bad.status_code == 400 and "filter score_min='lots' is not a number" in text(bad.text)
    assert "Traceback" not in bad.text
    unchecked = get(server, "/d/demo/v1/sft?verdict=pass")  # rows carry a verification column, none checked
    assert (
        unchecked.status_code == 200 and "Traceback" not in unchecked.text and "/d/demo/v1/sft/p0" not in unchecked.text
    )
    missing = get(server, "/d/demo/v7/")
    assert missing.status_code == 404 and "demo@v7 does not exist" in text(missing.text)
    assert get(server, "/d/demo/v1/sft/nope").status_code == 404
    assert get(server, "/d/demo/v1/trace/p001").status_code == 404


def test_a_row_page_knows_its_neighbours_in_the_filter(demo):
    version, server = demo
    html = get(server, "/d/demo/v1/sft/p013", params={"q": "question 1"}).text
    ids = [r["prompt_id"] for r in rows_of(version, "sft") if r["messages"][0]["content"].startswith("Question 1")]
    place = ids.index("p013")
    assert f"row {place + 1} of {len(ids)} (filtered)" in text(html)
    assert f'data-prev="/d/demo/v1/sft/{ids[place - 1]}?q=question+1"' in html
    assert f'data-next="/d/demo/v1/sft/{ids[place + 1]}?q=question+1"' in html
    assert "Question 13?" in text(html)


def test_decisions_are_saved_beside_the_version_and_filter_the_table(demo):
    version, server = demo
    before = sorted(p.name for p in version.rglob("*"))
    decide = server.url + "/api/d/demo/v1/decide"
    got = httpx.post(decide, json={"config": "sft", "prompt_id": "p002", "action": "reject", "note": "off topic"},
                     headers=API)  # fmt: skip
    assert got.status_code == 200 and got.json()["decision"] == "reject"
    httpx.post(decide, json={"config": "sft", "prompt_id": "p004", "action": "edit", "field": "messages",
                             "text": "Better."}, headers=API)  # fmt: skip
    lines = [json.loads(x) for x in (version.parent / "v1.review.jsonl").read_text().splitlines()]
    assert [(x["prompt_id"], x["action"]) for x in lines] == [("p002", "reject"), ("p004", "edit")]
    assert sorted(p.name for p in version.rglob("*")) == before  # the version itself is untouched
    rejected = get(server, "/d/demo/v1/sft", params={"decision": "reject"}).text
    assert row_ids(rejected) == ["p002"]
    undecided = get(server, "/d/demo/v1/sft", params={"decision": "undecided"}).text
    assert "118 sft rows match" in text(undecided)
    assert "sft: reject 1 edit 1" in text(get(server, "/d/demo/v1/").text)


def test_the_review_api_refuses_what_a_page_of_another_site_could_send(demo):
    version, server = demo
    decide = server.url + "/api/d/demo/v1/decide"
    body = {"config": "sft", "prompt_id": "p002", "action": "reject"}
    assert httpx.post(decide, json=body).status_code == 403  # no X-Moaa-Review header
    form = httpx.post(decide, data=body, headers=API)  # a form post, not JSON
    assert form.status_code == 403
    assert httpx.post(server.url + "/api/d/demo/v1/apply").status_code == 403
    wrong_host = httpx.get(server.url + "/", headers={"Host": "evil.example:80"})
    assert wrong_host.status_code == 400
    assert httpx.post(decide, json=body | {"prompt_id": "nope"}, headers=API).status_code == 404
    bad = httpx.post(decide, json=body | {"action": "approve"}, headers=API)
    assert bad.status_code == 400 and "action 'approve' is unknown" in bad.json()["error"]
    assert not (version.parent / "v1.review.jsonl").exists()


def test_a_token_guards_every_request(tmp_path):
    write_demo(tmp_path / "data", write_parts(tmp_path / "parts", n=4))
    with ViewServer(tmp_path / "data", token="s3cret-token") as server:
        assert get(server, "/").status_code == 401
        assert get(server, "/", params={"token": "wrong"}).status_code == 401
        with httpx.Client(base_url=server.url) as browser:
            first = browser.get("/d/demo/v1/", params={"token": "s3cret-token", "model": "qwen-a"})
            assert first.status_code == 303 and first.headers["location"] == "/d/demo/v1/?model=qwen-a"
            assert browser.get("/d/demo/v1/").status_code == 200  # the cookie carries it
        assert get(server, "/", headers={"Authorization": "Bearer s3cret-token"}).status_code == 200


def test_two_versions_side_by_side(demo):
    version, server = demo
    decide = server.url + "/api/d/demo/v1/decide"
    httpx.post(decide, json={"config": "sft", "prompt_id": "p002", "action": "reject"}, headers=API)
    httpx.post(decide, json={"config": "sft", "prompt_id": "p007", "action": "edit", "field": "messages",
                             "text": "word word CHANGED"}, headers=API)  # fmt: skip
    applied = httpx.post(server.url + "/api/d/demo/v1/apply", headers=API | {"content-type": "application/json"})
    assert applied.status_code == 200 and applied.json()["version"] == "demo@v2"
    body = text(get(server, "/diff/demo/v1/v2").text)
    assert "sft 120 119 0 1 1 118" in body  # rows a, rows b, added, removed, changed, same
    assert "trace 240 240 0 0 0 120 the same files" in body
    row = get(server, "/diff/demo/v1/v2/sft/p007").text
    assert "Columns that differ: messages." in text(row)
    assert '<span class="ins">CHANGED</span>' in row


def test_a_compare_run_shows_each_held_out_prompt_with_the_arms_answers_and_verdicts(tmp_path):
    from test_compare import CONSTANT, compare_with_fakes, prefers_the_answer_to_the_question

    results, _, _, data_root = compare_with_fakes(tmp_path, prefers_the_answer_to_the_question)
    run = Path(results["folder"]).name
    with ViewServer(data_root, tmp_path / "runs") as server:
        listed = text(get(server, "/compare/").text)
        assert run in listed and "100%" in listed
        overview = get(server, f"/compare/{run}/").text
        assert "A vs B 7 0 0 100%" in text(overview)
        pid = results["held_out"]["prompt_ids"][0]
        assert f'href="/compare/{run}/{pid}"' in overview and 'href="/d/cmp-A/v1/"' in overview
        page = text(get(server, f"/compare/{run}/{pid}").text)
        sft = paging.find_row(paging.config_table(data_root / "cmp-A/v1", "sft"), pid)[1]
        question = sft["messages"][0]["content"]
        assert f"Held-out prompt {pid} user {question}" in page  # the prompt, from arm A's data set
        assert f"A moa (precise, teacher, creative -> aggregator) Here is my answer to: {question}" in page
        assert f"B single (precise) {CONSTANT}" in page
        assert "A vs B A first → A B first → A yes A wins" in page
        assert "B vs base B first → tie base first → tie yes tie" in page
        assert get(server, f"/compare/{run}/not-a-prompt").status_code == 404


def test_export_is_static_html_with_relative_links_and_no_review_controls(demo, tmp_path):
    version, server = demo
    query = paging.Query(q="question 1")
    first = {c: [r["prompt_id"] for r in paging.read_page(paging.config_table(version, c), query, 0, 5).rows]
             for c in ("sft", "dpo")}  # fmt: skip
    flagged = first["dpo"][0]
    httpx.post(server.url + "/api/d/demo/v1/decide", json={"config": "dpo", "prompt_id": flagged, "action": "flag",
               "note": "look again"}, headers=API)  # fmt: skip
    out = tmp_path / "snapshot"
    written = export_version(tmp_path / "data", "demo@v1", out, {"q": "question 1"}, limit=5)
    assert written == {"sft": 5, "dpo": 5, "trace": 0, "failures": 0}  # no trace text or error says it
    files = sorted(p.name for p in out.iterdir())
    assert "index.html" in files and "viewer.css" in files
    for config, ids in first.items():
        assert sorted(f for f in files if f.startswith(f"{config}-p")) == sorted(f"{config}-{i}.html" for i in ids)
    for page in out.glob("*.html"):
        html = page.read_text()
        assert "<script src=" not in html and "/api/" not in html and "<button" not in html
        for href in re.findall(r'href="([^"#]+)"', html):
            assert (out / href).is_file(), f"{page.name} links to {href}"
    index = text((out / "index.html").read_text())
    assert "31 sft rows match · this snapshot holds the first 5" in index  # Question 1, 10-19, 100-119
    assert "Review flag “look again”" in text((out / f"dpo-{flagged}.html").read_text())
    with pytest.raises(Exception, match="not an empty folder"):
        export_version(tmp_path / "data", "demo@v1", out, {})


def test_rows_are_found_by_prompt_id_across_shards_and_row_groups(tmp_path):
    """The PromptIndex finds each prompt's rows wherever they are: a small shard size spreads a split
    over many files, and each prompt's trace steps over two row groups of its block at times."""
    parts = write_parts(tmp_path / "parts", n=90)
    version = write_demo(tmp_path / "data", parts, max_shard_rows=7).path
    for config in ("sft", "trace"):
        table = paging.config_table(version, config)
        assert len(table.shards) > 10
        every = rows_of(version, config)
        for pid in {r["prompt_id"] for r in every}:
            mine = [r for r in every if r["prompt_id"] == pid]
            found = [{k: v for k, v in r.items() if not k.startswith("_")} for r in paging.rows_of(table, pid)]
            assert found == mine
            position, row = paging.find_row(table, pid)
            assert {k: v for k, v in row.items() if not k.startswith("_")} == mine[0]
            assert paging.rows_at(table, [position])[0]["prompt_id"] == pid
        assert paging.find_row(table, "p999") is None and paging.rows_of(table, "p999") == []


def test_a_version_with_synthesized_prompts_shows_them_with_their_consensus_and_reference(tmp_path):
    """The instruction stage's `prompts` config is a table of its own: each kept task with its category,
    writer, agreement, consensus answer, reference and seeds, filtered by category and text, linked to
    the SFT row that answers it."""
    import json as _json

    parts = write_parts(tmp_path / "parts", n=6)
    kept = [
        {"prompt_id": f"p{i:03d}", "prompt": f"Question {i}?", "instruction": f"Question {i}?", "input": "",
         "category": "with-answer" if i % 2 else "no-input", "seeds": ["s1", "s2"], "batch": 0, "round": 0,
         "writer": "writer0", "writer_model": "qwen-a", "answerers": ["answerer0", "answerer1"],
         "answers": [f"It is {i}.", f"{i}."], "measure": "rouge_l", "agreement": 0.5, "exact_match": False,
         "consensus_agent": "answerer0", "consensus_answer": f"It is {i}.",
         "reference": _json.dumps({"answer": str(i)}) if i % 2 else None}
        for i in range(6)
    ]  # fmt: skip
    path = tmp_path / "parts" / "prompts.jsonl"
    path.write_text("".join(_json.dumps(r) + "\n" for r in kept))
    write_demo(tmp_path / "data", parts | {"prompts": [path]})
    with ViewServer(tmp_path / "data", tmp_path / "runs") as server:
        page = get(server, "/d/demo/v1/sft")
        assert 'href="/d/demo/v1/prompts' in page.text  # a tab beside sft, dpo, trace, failures
        html = get(server, "/d/demo/v1/prompts").text
        body = text(html)
        assert row_ids(html) == [r["prompt_id"] for r in kept]
        assert "with-answer Question 1? writer0 (qwen-a) 0.5 answerer0: It is 1." in body and '{"answer": "1"}' in body
        assert 'href="/d/demo/v1/sft/p001' in html  # the SFT row that answers it
        filtered = get(server, "/d/demo/v1/prompts", params={"category": "no-input", "q": "question 4"}).text
        assert row_ids(filtered) == ["p004"] and "1 prompts rows match" in text(filtered)
