"""Endpoint rate limits shared by every worker, through Prefect global concurrency limits (optional).

Each process has its own limiter per endpoint (moaa.models.limits: max_concurrency, requests and tokens
per minute), so N Dask or Ray worker processes may together send N times an endpoint's limits.
Either divide `max_concurrency` / `requests_per_minute` by the number of workers in the config, or
give the endpoint one budget for the whole cluster: a Prefect global concurrency limit named
`moaa-<endpoint>` with a slot decay is a rate limit, e.g. about 10 requests/s in all:

    prefect gcl create moaa-together --limit 10 --slot-decay-per-second 10

When a shard starts, `use_prefect_rate_limits` looks for `moaa-<endpoint>` for every endpoint the
config uses; where one exists, each request to that endpoint first takes a slot with Prefect's
`rate_limit` (one call to the Prefect API per request), then the process's own limiter as usual.
Deleting the limit turns this off for shards started afterwards.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from moaa.config import MoaaConfig
from moaa.models.limits import EndpointLimiter, shared_limiter

log = logging.getLogger("moaa.flow")


def limit_name(endpoint: str) -> str:
    return f"moaa-{endpoint}"


def use_prefect_rate_limits(config: MoaaConfig) -> list[str]:
    """Route this process's requests to each endpoint through `moaa-<endpoint>` where that limit exists.

    Returns the names of the limits in use. Needs a Prefect API (the flow's); without one, or when
    it cannot be read, the process's own limiters work alone.
    """
    found = _existing_limits([limit_name(n) for n in config.used_endpoints()])
    for name in config.used_endpoints():
        ep = config.endpoints[name]
        # The same key OpenAIChatClient uses, so its requests go through this limiter.
        limiter = shared_limiter(
            (name, tuple(ep.base_urls()), ep.model), ep.max_concurrency, ep.requests_per_minute, ep.tokens_per_minute
        )
        _route(limiter, limit_name(name) if limit_name(name) in found else None)
    return sorted(found)


def _existing_limits(names: list[str]) -> set[str]:
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    found: set[str] = set()
    try:
        with get_client(sync_client=True) as client:
            for name in names:
                try:
                    client.read_global_concurrency_limit_by_name(name)
                    found.add(name)
                except ObjectNotFound:
                    pass
    except Exception as exc:  # noqa: BLE001 - no API: the per-process limiters still hold
        log.debug("Prefect global concurrency limits not read: %s", exc)
    return found


@dataclass(frozen=True)
class PrefectRateLimit:
    """A limiter gate (moaa.models.limits.EndpointLimiter.set_gate): one slot of a Prefect rate limit per request."""

    name: str

    async def __call__(self) -> None:
        from prefect.concurrency.asyncio import rate_limit

        await rate_limit(self.name, strict=True)


def _route(limiter: EndpointLimiter, name: str | None) -> None:
    """Make the limiter take a slot of the Prefect rate limit `name` first, or stop doing so (None)."""
    gate = PrefectRateLimit(name) if name is not None else None
    if limiter.gate == gate:
        return
    limiter.set_gate(gate)
    if name is not None:
        log.info("requests to %s take a slot of the Prefect rate limit %s", name.removeprefix("moaa-"), name)
