"""The viewer as a Starlette app: the pages of moaa.view.pages, the review API, the static files.

    app = build_app(Path("data"), Path("runs"), hosts=["127.0.0.1"], token=None)

Routes: `/` data sets; `/d/NAME/vN/[CONFIG]` a version and one config's table (filters and `page`
as query parameters); `/d/NAME/vN/sft/ID` and `/d/NAME/vN/dpo/ID` a row; `/diff/NAME/vA/vB`;
`/compare/`, `/compare/RUN/`, `/compare/RUN/ID`; `POST /api/d/NAME/vN/decide` (JSON {config,
prompt_id, action, note, field, text}) and `POST /api/d/NAME/vN/apply`.

Safety: the review API takes JSON with an `X-Moaa-Review` header only, which a page of another site
cannot send without a CORS preflight this app never grants, so no other site can decide rows or
apply a review from a browser that has the viewer open; requests naming another Host are refused
(DNS rebinding). With a token (required to listen beyond loopback, moaa.view.serving), every request
needs it: `?token=` once (then a cookie), or `Authorization: Bearer`. Page work runs in Starlette's
thread pool, so a slow page never holds up another.
"""

from __future__ import annotations

import hmac
import logging
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from moaa.errors import MoaaError
from moaa.view.pages import STATIC, NotFound, Site

log = logging.getLogger(__name__)

REVIEW_HEADER = "x-moaa-review"
TOKEN_COOKIE = "moaa_view_token"


def build_app(root: Path, runs: Path, *, hosts: list[str] | None = None, token: str | None = None) -> Any:
    from starlette.applications import Starlette
    from starlette.concurrency import run_in_threadpool
    from starlette.middleware import Middleware
    from starlette.middleware.trustedhost import TrustedHostMiddleware
    from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse
    from starlette.routing import Mount, Route
    from starlette.staticfiles import StaticFiles

    from moaa.view.links import ServerLinks

    site = Site(root, runs, ServerLinks())

    def page(render):
        async def endpoint(request):
            args = dict(request.path_params)
            try:
                html = await run_in_threadpool(render, request, **args)
            except NotFound as exc:
                return HTMLResponse(_error_page(site, "not found", str(exc)), status_code=404)
            except MoaaError as exc:
                return HTMLResponse(_error_page(site, "cannot show this", str(exc)), status_code=400)
            return HTMLResponse(html)

        return endpoint

    params = lambda request: dict(request.query_params)  # noqa: E731
    index = page(lambda request: site.index_page())
    version = page(lambda request, name, version, config=None: site.version_page(name, version, config,
                                                                                  params(request)))  # fmt: skip
    row = page(lambda request, name, version, config, prompt_id: site.row_page(name, version, config, prompt_id,
                                                                               params(request)))  # fmt: skip
    diff = page(lambda request, name, a, b: site.diff_page(name, a, b))
    diff_row = page(lambda request, name, a, b, config, prompt_id: site.diff_row_page(name, a, b, config, prompt_id))
    runs_page = page(lambda request: site.compare_list_page())
    run_page = page(lambda request, run: site.compare_run_page(run))
    prompt_page = page(lambda request, run, prompt_id: site.compare_prompt_page(run, prompt_id))

    async def decide(request):
        if (refused := _refuse_api(request)) is not None:
            return refused
        try:
            body = await request.json()
            state = await run_in_threadpool(_decide, site, request.path_params, body)
        except (ValueError, TypeError, KeyError) as exc:
            return JSONResponse({"error": f"a decision is JSON {{config, prompt_id, action}} ({exc})"}, 400)
        except MoaaError as exc:
            return JSONResponse({"error": str(exc)}, 404 if isinstance(exc, NotFound) else 400)
        return JSONResponse(state)

    async def apply(request):
        if (refused := _refuse_api(request)) is not None:
            return refused
        from moaa.view.reviewed import apply_review

        name, version = request.path_params["name"], request.path_params["version"]
        try:
            applied = await run_in_threadpool(apply_review, site.root, f"{name}@{version}", publish=False)
        except MoaaError as exc:
            return JSONResponse({"error": str(exc)}, 400)
        info = applied.version
        url = site.links.version(info.name, info.version)
        return JSONResponse({"version": f"{info.name}@{info.version}", "url": url, "derived": applied.derived})

    routes = [
        Route("/", index),
        Route("/d/{name}/{version}/", version),
        Route("/d/{name}/{version}/{config}", version),
        Route("/d/{name}/{version}/{config}/{prompt_id:path}", row),
        Route("/diff/{name}/{a}/{b}", diff),
        Route("/diff/{name}/{a}/{b}/{config}/{prompt_id:path}", diff_row),
        Route("/compare/", runs_page),
        Route("/compare/{run}/", run_page),
        Route("/compare/{run}/{prompt_id:path}", prompt_page),
        Route("/api/d/{name}/{version}/decide", decide, methods=["POST"]),
        Route("/api/d/{name}/{version}/apply", apply, methods=["POST"]),
        Route("/d/{name}/{version}", lambda request: RedirectResponse(f"{request.url.path}/")),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]
    middleware = [Middleware(TrustedHostMiddleware, allowed_hosts=hosts or ["127.0.0.1", "localhost"])]
    if token:
        middleware.append(Middleware(_TokenGate, token=token))
    return Starlette(routes=routes, middleware=middleware)


def _refuse_api(request: Any) -> Any:
    from starlette.responses import JSONResponse

    if request.headers.get(REVIEW_HEADER) != "1" or "json" not in request.headers.get("content-type", ""):
        return JSONResponse({"error": f"the review API takes JSON with the {REVIEW_HEADER} header"}, 403)
    return None


def _decide(site: Site, path: dict[str, str], body: dict[str, Any]) -> dict[str, Any]:
    from moaa.view import paging
    from moaa.view.decisions import ReviewLog

    v = site.version(path["name"], path["version"])
    config, prompt_id = str(body["config"]), str(body["prompt_id"])
    if config in v.configs() and paging.find_row(paging.config_table(v.path, config), prompt_id) is None:
        raise NotFound(f"{v.ref} has no {config} row for prompt {prompt_id!r}")
    if config not in v.configs() and config in ("sft", "dpo"):
        raise NotFound(f"{v.ref} has no {config} rows")
    note, text = body.get("note") or "", body.get("text")
    state = ReviewLog.of(v.path).record(config, prompt_id, str(body["action"]), note=str(note),
                                        field=body.get("field"), text=text)  # fmt: skip
    return {"config": config, "prompt_id": prompt_id, **state.to_dict()}


def _error_page(site: Site, title: str, message: str) -> str:
    try:
        return site.render("error.html", title=title, message=message)
    except Exception:  # noqa: BLE001 - the error page must not fail on its own
        from html import escape

        return f"<!doctype html><title>moaa view</title><p>{escape(message)}</p>"


class _TokenGate:
    """Every request needs the token: `?token=` (answered with a cookie and a redirect to the URL
    without it, so it leaves the address bar and the history), the cookie, or `Authorization: Bearer`."""

    def __init__(self, app: Any, token: str):
        self.app, self.token = app, token

    def _ok(self, given: str | None) -> bool:
        return bool(given) and hmac.compare_digest(str(given).encode(), self.token.encode())

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        from starlette.requests import Request
        from starlette.responses import PlainTextResponse, RedirectResponse

        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        request = Request(scope)
        bearer = request.headers.get("authorization", "")
        if self._ok(request.cookies.get(TOKEN_COOKIE)) or self._ok(bearer.removeprefix("Bearer ").strip() or None):
            return await self.app(scope, receive, send)
        if self._ok(request.query_params.get("token")):
            kept = [(k, v) for k, v in request.query_params.multi_items() if k != "token"]
            target = request.url.path + (f"?{urlencode(kept)}" if kept else "")
            response = RedirectResponse(target, status_code=303)
            response.set_cookie(TOKEN_COOKIE, self.token, httponly=True, samesite="strict")
            return await response(scope, receive, send)
        response = PlainTextResponse("this viewer needs its token: open the URL with ?token=$MOAA_VIEW_TOKEN", 401)
        return await response(scope, receive, send)
