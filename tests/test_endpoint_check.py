"""`moaa check` / `moaa run --check-endpoints` against the test server: each fault named in one line
(an unknown model with the nearest ids, a refused key, a wrong base URL, a refused parameter)."""

from __future__ import annotations

import pytest

from moaa.models.endpoint_check import check_config
from moaa.testing.openai_server import OpenAITestServer
from tests.conftest import make_config
from tests.pipeline_helpers import cli_env, run_cli, write_config

REFUSED = "Unsupported parameter: 'max_tokens' is not supported with this model. Use 'max_completion_tokens' instead."


def lines(config) -> list[str]:
    return [f.line() for f in check_config(config)]


def chat_requests(srv: OpenAITestServer) -> list[dict]:
    return [r for r in srv.requests if r["path"] == "/v1/chat/completions"]


def test_a_sound_config_passes_with_one_1_token_request_per_distinct_agent(tmp_path):
    with OpenAITestServer(models=["test-model"], strict_models=True) as srv:
        got = lines(make_config(tmp_path, srv.base_url))
        asked = chat_requests(srv)
    assert got == [
        f"ok   endpoint 'test': test-model at {srv.base_url}: listed by GET /models; "
        "2 agent requests answered (1 token each)"
    ]
    # the conftest config: 3 proposers at one temperature (one request) + the aggregator, 1 token each
    assert len(asked) == 2 and {r["body"]["max_tokens"] for r in asked} == {1}


def test_an_unknown_model_is_named_with_the_nearest_ids_the_server_lists(tmp_path):
    with OpenAITestServer(models=["gpt-4.1-mini", "gpt-4.1", "o3"], strict_models=True) as srv:
        got = lines(make_config(tmp_path, srv.base_url, "endpoints.test.model=gpt-4-1-mini"))
    assert got == [
        f"FAIL endpoint 'test': model 'gpt-4-1-mini' is not served at {srv.base_url}; nearest: gpt-4.1-mini, gpt-4.1"
    ]


def test_a_refused_key_and_a_missing_key_variable(tmp_path, monkeypatch):
    monkeypatch.setenv("MOAA_CHECK_KEY", "sk-wrong")
    with OpenAITestServer(api_key="sk-right") as srv:
        wrong = lines(make_config(tmp_path, srv.base_url, "endpoints.test.api_key_env=MOAA_CHECK_KEY"))
        unset = lines(make_config(tmp_path, srv.base_url, "endpoints.test.api_key_env=MOAA_UNSET_KEY"))
        assert chat_requests(srv) == []  # a key refused by /models costs no request
    refused = f"{srv.base_url} refused the key (HTTP 401); check the key in $MOAA_CHECK_KEY"
    assert wrong == [f"FAIL endpoint 'test': {refused}"]
    assert unset == [
        "FAIL endpoint 'test': environment variable MOAA_UNSET_KEY is not set; export it "
        "(or change endpoints.test.api_key_env)"
    ]


def test_a_wrong_base_url_path_and_no_server_at_all(tmp_path):
    with OpenAITestServer() as srv:
        root = srv.base_url.removesuffix("/v1")  # the API root without /v1: /models and /chat/completions 404
        got = lines(make_config(tmp_path, root))
    assert len(got) == 1 and got[0].startswith(f"FAIL endpoint 'test': HTTP 404 for model 'test-model' at {root}")
    assert got[0].endswith("check base_url and model")
    dead = lines(make_config(tmp_path, "http://127.0.0.1:9/v1"))
    assert len(dead) == 1 and dead[0].startswith("FAIL endpoint 'test': cannot reach http://127.0.0.1:9/v1 (")


def test_a_parameter_the_model_refuses_is_named_with_the_setting_that_fixes_it(tmp_path):
    with OpenAITestServer(refuse_params={"max_tokens": REFUSED}) as srv:
        got = lines(make_config(tmp_path, srv.base_url, "sft.proposers.0.temperature=0.3"))
        fixed = lines(make_config(tmp_path, srv.base_url, "endpoints.test.token_limit_param=max_completion_tokens"))
    assert got[0] == (
        f"FAIL endpoint 'test': sft.proposers[0]: HTTP 400 {REFUSED} -> set endpoints.test.token_limit_param: "
        "max_completion_tokens"
    )
    assert len(got) == 3 and all(line.startswith("FAIL") for line in got)  # 3 distinct samplings
    assert fixed[0].startswith("ok   endpoint 'test'")


@pytest.mark.parametrize("dry_run", [True, False])
def test_moaa_run_check_endpoints_stops_before_any_run_naming_the_unknown_model(tmp_path, dry_run):
    with OpenAITestServer(models=["gpt-4.1-mini"], strict_models=True) as srv:
        cfg = write_config(tmp_path, srv.base_url, "endpoints.test.model=gpt-4-1-mini")
        args = ["--check-endpoints", *(["--dry-run"] if dry_run else [])]
        done = run_cli(cfg, *args, cwd=tmp_path, env=cli_env())
        asked = chat_requests(srv)
    assert done.returncode == 3, done.stderr
    assert f"FAIL endpoint 'test': model 'gpt-4-1-mini' is not served at {srv.base_url}; nearest: gpt-4.1-mini" in (
        done.stdout
    )
    assert len(asked) == 1 and not (tmp_path / "data").exists()  # one 1-token request (404: no more); no run


def test_batch_mode_is_checked_against_the_providers_batch_api(tmp_path):
    from moaa.testing.batch_server import BatchTestServer
    from moaa.testing.provider_batch_servers import TogetherBatchServer

    batch = "endpoints.test.batch={enabled: true, api: BATCH}"
    with BatchTestServer() as srv:
        ok = lines(make_config(tmp_path, srv.base_url, batch.replace("BATCH", "openai")))
    with OpenAITestServer() as plain:  # answers chat completions, has no Batch API
        none = lines(make_config(tmp_path, plain.base_url, batch.replace("BATCH", "openai")))
    with TogetherBatchServer(shape_fault={"GET /batches": {"data": []}}) as srv:
        odd = lines(make_config(tmp_path, srv.base_url, batch.replace("BATCH", "together")))
    assert ok[0].startswith("ok   endpoint 'test'") and ok[0].endswith("its Batch API (openai) lists batches")
    assert none == [
        f"FAIL endpoint 'test': batch mode: the openai Batch API at {plain.base_url} did not list batches "
        "(HTTP 404); check batch.api and batch.base_url, or turn batch off"
    ]
    assert odd[0].startswith("FAIL endpoint 'test': the together Batch API answered GET /batches with a dict")
