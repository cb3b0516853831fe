"""The models of one run: start the embedded local server when a config needs it, build clients.

The flow opens a `LocalEndpoints` around the whole run and hands the resolved config (local base
URLs filled in) to every shard; a shard builds its own clients with `build_clients`, so shards stay
self-contained (any worker can run any shard) while limits are shared within a process.
"""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path

from moaa.config import MoaaConfig
from moaa.models.batch import BatchChatClient, batch_enabled
from moaa.models.cache import CachedClient, RequestCache
from moaa.models.client import ChatClient, OpenAIChatClient
from moaa.models.stats import RunStats

log = logging.getLogger(__name__)


def build_clients(
    config: MoaaConfig, stats: RunStats, names: list[str] | None = None, work_dir: Path | None = None
) -> dict[str, ChatClient]:
    """One client per used endpoint, behind the request cache when it is enabled; endpoints in batch
    mode send their calls as batches saved in `work_dir` (a shard's folder; online without one)."""
    cache = RequestCache(config.cache.path) if config.cache.enabled else None
    clients: dict[str, ChatClient] = {}
    for name in names or config.used_endpoints():
        endpoint = config.endpoints[name]
        if endpoint.backend == "transformers":
            from moaa.models.transformers_backend import TransformersChatClient

            client: ChatClient = TransformersChatClient(name, endpoint, stats)
        else:
            client = OpenAIChatClient(name, endpoint, stats)
            if work_dir is not None and batch_enabled(config, name):
                client = BatchChatClient(client, work_dir)
        # `is not None`, not truthiness: an empty RequestCache is falsy (it has __len__).
        clients[name] = CachedClient(client, cache, stats) if cache is not None else client
    return clients


@contextlib.contextmanager
def local_endpoints(config: MoaaConfig, log_dir: Path):
    """Yield `config` with every used local endpoint pointing at a running server.

    An endpoint that already names a reachable base_url is used as it is; otherwise the embedded
    server is started (free port, logs under `log_dir`) and stopped when the block ends, also on
    Ctrl-C and errors.
    """
    from moaa.local.server import LocalServer, find_running_server

    wanted = [n for n in config.used_endpoints() if config.endpoints[n].local]
    with contextlib.ExitStack() as stack:
        endpoints = dict(config.endpoints)
        server = None
        for name in wanted:
            ep = endpoints[name]
            urls = ep.base_urls()
            if urls and all(find_running_server(u) for u in urls):
                continue
            if server is None:
                server = stack.enter_context(LocalServer())
                server.start(log_path=log_dir / "local-server.log")
                log.info("local model server up at %s", server.base_url)
            endpoints[name] = ep.model_copy(update={"base_url": server.base_url})
        yield config.model_copy(update={"endpoints": endpoints})
