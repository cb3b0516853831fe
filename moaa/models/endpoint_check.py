"""Ask every endpoint of a config whether a run would work, before any money is spent (`moaa check`).

Per used endpoint: its key variable is set; `GET {base_url}/models` answers like an OpenAI-compatible
API and lists the model; then each distinct request the config's agents would send (their sampling,
extra_body and the endpoint's token_limit_param) goes out once with a 1-token budget. Each fault is
one line naming the endpoint, the agent and what to change: an unknown model (with the nearest ids
the server lists), a refused key, a wrong base URL, a parameter the model refuses or lacks.

The requests go through `OpenAIChatClient` (no retries), so they fail exactly as a run's first calls
would; `/models` is read with httpx (a GET the chat client does not need).
"""

from __future__ import annotations

import asyncio
import difflib
from dataclasses import dataclass

from moaa.config import EndpointConfig, MoaaConfig, Sampling, resolve_api_key
from moaa.errors import ConfigError, EndpointError

PROBE = [{"role": "user", "content": "Reply with one word: ok"}]
SAMPLING_KEYS = ("temperature", "top_p", "seed", "stop", "top_logprobs", "extra_body")


@dataclass(frozen=True)
class Finding:
    """What the check found for one endpoint (`ok`) or one of its problems (not `ok`)."""

    endpoint: str
    ok: bool
    text: str

    def line(self) -> str:
        return f"{'ok  ' if self.ok else 'FAIL'} endpoint '{self.endpoint}': {self.text}"


def check_config(config: MoaaConfig) -> list[Finding]:
    """Check every used endpoint of `config` (see the module docstring); one Finding or more each."""
    return asyncio.run(_check_all(config))


def format_findings(findings: list[Finding]) -> str:
    bad = sum(not f.ok for f in findings)
    lines = [f.line() for f in findings]
    lines.append(
        "every endpoint answered: the run's first calls will get through"
        if not bad
        else f"{bad} problem(s): fix them before the run (each line names the endpoint and what to change)"
    )
    return "\n".join(lines)


async def _check_all(config: MoaaConfig) -> list[Finding]:
    names = config.used_endpoints()
    results = await asyncio.gather(*(_check_endpoint(config, name) for name in names))
    return [finding for found in results for finding in found]


async def _check_endpoint(config: MoaaConfig, name: str) -> list[Finding]:
    ep = config.endpoints[name]
    if ep.local or ep.backend != "openai":
        what = "the embedded model, started by `moaa run`" if ep.local else f"backend {ep.backend}, in-process"
        return [Finding(name, True, f"{what}: not checked here")]
    try:
        key = resolve_api_key(name, ep)
    except ConfigError as exc:
        return [Finding(name, False, _without_name(name, exc))]
    where = f"{ep.model} at {ep.base_urls()[0]}"
    listing = [await _list_models(name, ep, url, key) for url in ep.base_urls()]
    fatal = [f for f in listing if isinstance(f, Finding)]
    if fatal:
        return fatal
    answers = await _ask_agents(config, name, ep, key)
    problems = [f for f in answers if not f.ok]
    served = [ids for ids in listing if isinstance(ids, list)]
    unlisted = [ids for ids in served if ep.model not in ids]
    if unlisted and problems:
        nearest = difflib.get_close_matches(ep.model, unlisted[0], n=3, cutoff=0.5)
        hint = f"; nearest: {', '.join(nearest)}" if nearest else f" ({len(unlisted[0])} ids listed)"
        return [Finding(name, False, f"model '{ep.model}' is not served at {ep.base_urls()[0]}{hint}")]
    if problems:
        return problems
    notes = []
    if unlisted:  # llama-server answers whatever `model` says: it lists its own file name
        notes.append(f"not listed by GET /models ({', '.join(unlisted[0][:3])}) but answered")
    elif served:
        notes.append("listed by GET /models")
    else:
        notes.append("GET /models not offered, requests answered")
    count = len(answers)
    notes.append(f"{count} agent request{'s' if count != 1 else ''} answered (1 token each)")
    from moaa.models.batch import batch_enabled

    if batch_enabled(config, name):
        problem = await _batch_api_problem(name, ep, key)
        if problem is not None:
            return [Finding(name, False, problem)]
        notes.append(f"its Batch API ({_batch_provider(ep)}) lists batches")
    return [Finding(name, True, f"{where}: " + "; ".join(notes))]


def _batch_provider(ep: EndpointConfig) -> str:
    from moaa.models.batch_apis import provider_for

    return provider_for(ep.batch.api, ep.batch.base_url or ep.base_urls()[0])


async def _batch_api_problem(name: str, ep: EndpointConfig, key: str) -> str | None:
    """What keeps batch mode from working on this endpoint (one list call), or None."""
    from moaa.models.batch_apis import BatchShapeError, build_api

    provider = _batch_provider(ep)
    api = build_api(provider, ep.batch.base_url or ep.base_urls()[0], key, min(ep.timeout_s, 30.0), ep.batch, ep.model)
    try:
        await api.probe()
    except BatchShapeError as exc:
        return str(exc)
    except Exception as exc:  # noqa: BLE001 - every fault is reported, none raised
        response = getattr(exc, "response", None)
        what = f"HTTP {response.status_code}" if response is not None else type(exc).__name__
        return (f"batch mode: the {provider} Batch API at {api.base_url} did not list batches ({what}); check "
                "batch.api and batch.base_url, or turn batch off")  # fmt: skip
    finally:
        await api.close()
    return None


async def _list_models(name: str, ep: EndpointConfig, url: str, key: str) -> list[str] | Finding | None:
    """The ids `GET {url}/models` lists; a Finding for a refused key or no server; None when not offered."""
    import httpx

    headers = {"Authorization": f"Bearer {key}"}
    # Anthropic's and Gemini's own /models read the key from their headers (harmless elsewhere)
    headers |= {"x-api-key": key, "anthropic-version": "2023-06-01", "x-goog-api-key": key}
    try:
        async with httpx.AsyncClient(timeout=min(ep.timeout_s, 30.0)) as http:
            resp = await http.get(url.rstrip("/") + "/models", headers=headers)
    except httpx.HTTPError as exc:
        return Finding(name, False, f"cannot reach {url} ({type(exc).__name__}: {exc}); check base_url and the server")
    if resp.status_code in (401, 403):
        return Finding(name, False, f"{url} refused the key (HTTP {resp.status_code}); {_key_hint(name, ep)}")
    if resp.status_code == 404:
        return None  # some servers have no /models; the requests decide (a wrong path fails them too)
    try:
        data = resp.json()
        return [str(m["id"]) for m in data["data"]]
    except (ValueError, KeyError, TypeError):
        kind = resp.headers.get("content-type", "?").split(";")[0]
        return Finding(
            name, False,
            f"GET {url}/models answered HTTP {resp.status_code} {kind}, not an OpenAI-compatible model list; "
            "check base_url (it ends at the API root, e.g. https://api.openai.com/v1)",
        )  # fmt: skip


async def _ask_agents(config: MoaaConfig, name: str, ep: EndpointConfig, key: str) -> list[Finding]:
    """One 1-token request per distinct sampling the config's agents use on this endpoint."""
    from moaa.models.client import CallError, OpenAIChatClient
    from moaa.models.stats import RunStats

    probe_ep = ep.model_copy(update={"max_retries": 0, "timeout_s": min(ep.timeout_s, 60.0)})
    client = OpenAIChatClient(name, probe_ep, RunStats(), api_key=key)
    distinct: dict[str, tuple[str, Sampling]] = {}
    for path, agent in config.agents():
        if agent.endpoint == name:
            sampling = Sampling(**agent.model_dump(include=set(SAMPLING_KEYS)), max_tokens=1)
            distinct.setdefault(sampling.model_dump_json(), (path, sampling))
    findings = []
    try:
        for path, sampling in distinct.values():
            try:
                await client.chat(PROBE, sampling, tag="check")
            except EndpointError as exc:
                return [Finding(name, False, _without_name(name, exc))]
            except CallError as exc:
                findings.append(Finding(name, False, f"{path}: {_call_hint(name, exc)}"))
            else:
                findings.append(Finding(name, True, path))
    finally:
        await client.aclose()
    return findings


def _without_name(name: str, exc: Exception) -> str:
    """An error's text without its leading "endpoint 'NAME'" (the finding names the endpoint)."""
    text = str(exc)
    for prefix in (f"endpoint '{name}': ", f"endpoint '{name}' "):
        text = text.removeprefix(prefix)
    return text


def _key_hint(name: str, ep: EndpointConfig) -> str:
    if ep.api_key_env:
        return f"check the key in ${ep.api_key_env}"
    return f"set endpoints.{name}.api_key_env to the variable holding its key"


def _call_hint(name: str, exc: Exception) -> str:
    """The request's fault with what to change, for the parameters models most often refuse."""
    text = _without_name(name, exc).removeprefix(f"{getattr(exc, 'kind', '')}: ")
    text = text.removeprefix(f"endpoint '{name}' ")
    text = text.split("): ", 1)[-1] if text.startswith("(") else text  # "(model): HTTP 400 ..."
    if getattr(exc, "kind", "") != "bad_request":
        return f"no answer ({text}); the run would retry, but check the server"
    low = text.lower()
    if "max_completion_tokens" in low:
        return f"{text} -> set endpoints.{name}.token_limit_param: max_completion_tokens"
    if "temperature" in low or "top_p" in low:
        return f"{text} -> leave temperature/top_p out for this model (or send extra_body reasoning_effort: none)"
    return f"{text} -> the model refuses or lacks a request parameter: fix this agent's sampling or extra_body"
