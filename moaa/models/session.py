"""The models of one run: start the embedded local server when a config needs it, build clients.

The flow opens `local_endpoints` around the whole run and hands the resolved config (local base
URLs filled in) to every shard; a shard builds its own clients with `build_clients`, so shards stay
self-contained (any worker can run any shard) while limits are shared within a process.
`moaa train eval`, the students' matchups and the loop build theirs here too (`build_client`,
`serve_local`), so every client has the same cache and the same embedded server.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterable, Iterator
from pathlib import Path

from moaa.config import CacheConfig, EndpointConfig, MoaaConfig
from moaa.models.batch import BatchChatClient, batch_enabled
from moaa.models.cache import CachedClient, RequestCache
from moaa.models.client import ChatClient, OpenAIChatClient
from moaa.models.stats import RunStats

log = logging.getLogger(__name__)


def open_cache(cache: CacheConfig) -> RequestCache | None:
    """The request cache a config enables, or None."""
    return RequestCache(cache.path) if cache.enabled else None


def build_client(
    name: str,
    endpoint: EndpointConfig,
    stats: RunStats,
    cache: RequestCache | None = None,
    batch_dir: Path | None = None,
) -> ChatClient:
    """The client of one endpoint (HTTP, or the in-process transformers backend), behind `cache` if
    given; with `batch_dir` (a shard's folder) its calls go out as Batch API batches saved there."""
    if endpoint.backend == "transformers":
        from moaa.models.transformers_backend import TransformersChatClient

        client: ChatClient = TransformersChatClient(name, endpoint, stats)
    else:
        client = OpenAIChatClient(name, endpoint, stats)
        if batch_dir is not None:
            client = BatchChatClient(client, batch_dir)
    # `is not None`, not truthiness: an empty RequestCache is falsy (it has __len__).
    return CachedClient(client, cache, stats) if cache is not None else client


def build_clients(
    config: MoaaConfig, stats: RunStats, names: list[str] | None = None, work_dir: Path | None = None
) -> dict[str, ChatClient]:
    """One client per used endpoint, behind the request cache when it is enabled; endpoints in batch
    mode send their calls as batches saved in `work_dir` (a shard's folder; online without one)."""
    cache = open_cache(config.cache)
    return {
        name: build_client(
            name,
            config.endpoints[name],
            stats,
            cache,
            batch_dir=work_dir if work_dir is not None and batch_enabled(config, name) else None,
        )
        for name in names or config.used_endpoints()
    }


@contextlib.contextmanager
def serve_local(
    endpoints: dict[str, EndpointConfig], names: Iterable[str], log_dir: Path
) -> Iterator[dict[str, EndpointConfig]]:
    """Yield `endpoints` with each local one among `names` pointing at a running server.

    An endpoint that already names a reachable base_url is used as it is; otherwise the embedded
    server is started (once for all of them: free port, logs under `log_dir`, one parallel slot for
    each request they may have in flight together) and stopped when the block ends, also on Ctrl-C
    and errors.
    """
    from moaa.local.server import LocalServer, find_running_server

    def reachable(ep: EndpointConfig) -> bool:
        return bool(ep.base_urls()) and all(find_running_server(u) for u in ep.base_urls())

    unserved = [n for n in dict.fromkeys(names) if endpoints[n].local and not reachable(endpoints[n])]
    with contextlib.ExitStack() as stack:
        resolved = dict(endpoints)
        if unserved:
            server = stack.enter_context(LocalServer())
            server.start(
                log_path=log_dir / "local-server.log", slots=sum(endpoints[n].max_concurrency for n in unserved)
            )
            log.info("local model server up at %s", server.base_url)
            for name in unserved:
                resolved[name] = resolved[name].model_copy(update={"base_url": server.base_url})
        yield resolved


@contextlib.contextmanager
def local_endpoints(config: MoaaConfig, log_dir: Path) -> Iterator[MoaaConfig]:
    """Yield `config` with every used local endpoint pointing at a running server (see serve_local)."""
    with serve_local(config.endpoints, config.used_endpoints(), log_dir) as endpoints:
        yield config.model_copy(update={"endpoints": endpoints})
