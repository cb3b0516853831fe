"""Prefect's own CLI works in the locked environment (prefect 3.8.8 with the fastapi the lock pins).

fastapi 0.151.0 began validating an explicit `null` in a JSON body field whose default is None;
prefect 3.8.8's server declares `limit: int = Body(None)` and its client sends `"limit": null`, so
every listing command answered 422 "limit: Input should be a valid integer" (pyproject.toml pins
fastapi<0.151). The first test names that cause in seconds; the second runs the commands a user
types against `prefect server start`.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.prefect_server import PrefectServer

LISTINGS = ["flow-run ls", "deployment ls", "artifact ls", "work-pool ls", "flow ls"]


def test_the_installed_fastapi_takes_an_explicit_null_for_a_body_field_that_defaults_to_none():
    import fastapi
    from fastapi import Body, FastAPI
    from fastapi.testclient import TestClient

    app = FastAPI()

    @app.post("/filter")
    async def read(limit: int = Body(None), offset: int = Body(0)) -> dict:  # prefect's LimitBody shape
        return {"limit": limit}

    answer = TestClient(app).post("/filter", json={"limit": None, "offset": 0})
    assert answer.status_code == 200, (
        f"fastapi {fastapi.__version__} answers {answer.status_code} to prefect 3.8.8's `limit: null`: "
        "Prefect's CLI listings fail; install the lock's fastapi (pyproject.toml pins <0.151)"
    )


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_prefects_listing_commands_answer_against_its_own_server(tmp_path):
    with PrefectServer(tmp_path) as server:
        env = server.client_env(tmp_path / "client-home")
        for command in LISTINGS:
            done = subprocess.run(
                [sys.executable, "-m", "prefect", *command.split()], env=env, capture_output=True, text=True,
                timeout=120,
            )  # fmt: skip
            out = done.stdout + done.stderr
            assert done.returncode == 0 and "422" not in out, f"`prefect {command}`: {out[-2000:]}{server}"
