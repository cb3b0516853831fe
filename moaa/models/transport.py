"""The HTTP transport under OpenAIChatClient: one aiohttp connection pool per base URL and event loop.

Chosen by measurement (`make bench ARGS="--only throughput"`, README "### Benchmarks"): against the
fixed-latency test server at 64 in flight, a direct aiohttp session spent ~0.5 ms of CPU per call
where the OpenAI SDK's generic `post` spent ~2.6-3.0 ms on httpx (httpcore scans every pooled
connection on each request, and the SDK deep-copies options and re-parses URLs per call) and
~1.5-1.8 ms on its own aiohttp backend (`DefaultAioHttpClient`, still the SDK's request building
and an httpx adapter). aiohttp's pool hands out an idle connection by popping a per-host list: no
scan over the connections.

The transport only moves bytes and says what went wrong; what a fault means (retry, fatal for the
run, fatal for the prompt) is decided by the client (`OpenAIChatClient._classify`). Its errors
carry what the SDK's did: the status, the parsed error body, the headers (Retry-After), and for
timeouts and connection failures the underlying exception as `__cause__`.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import ssl
import threading
import weakref
from collections.abc import AsyncGenerator, Callable
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    import aiohttp  # imported where a transport is built: `moaa run` on a finished config never needs it

USER_AGENT = "moaa (aiohttp)"


class TransportError(Exception):
    """Base of the faults the transport reports."""


class StatusError(TransportError):
    """A non-2xx answer: its status, parsed body (JSON, else text, else None) and headers.

    `message` is the SDK's wording ("Error code: 500 - <the body's error message>") so that logs
    and error lines read as they did before.
    """

    def __init__(self, status_code: int, body: Any, headers: Any):
        self.status_code, self.body, self.headers = status_code, body, headers
        self.message = f"Error code: {status_code}"
        error = body.get("error", body) if isinstance(body, dict) else None
        detail = error.get("message") if isinstance(error, dict) else None
        if isinstance(detail, str) and detail:
            self.message += f" - {detail}"
        super().__init__(self.message)


class BadBody(TransportError):
    """A 2xx answer whose body is not JSON: says what came back instead (an HTML page, an event
    stream that was not asked for, JSON cut short, nothing), so a log names it, not 'Expecting value'."""

    def __init__(self, status: int, content_type: str, raw: bytes):
        self.status, self.content_type = status, content_type
        super().__init__(describe_body(status, content_type, raw))


def describe_body(status: int, content_type: str, raw: bytes) -> str:
    """What a non-JSON answer is, in words, with what to do."""
    text = raw.decode("utf-8", errors="replace").strip()
    kind = content_type.split(";")[0].strip().lower()
    snippet = " ".join(text.split())[:80]
    if not text:
        return f"HTTP {status} with an empty body"
    if kind == "text/event-stream" or text.startswith(("data:", "event:")):
        return (
            f"HTTP {status} with a server-sent event stream (text/event-stream) though no stream was asked for: "
            "the server streams every answer; use its OpenAI-compatible non-streaming API"
        )
    if kind == "text/html" or text[:1] == "<":
        return (
            f"HTTP {status} with an HTML page, not JSON ({snippet!r}): is base_url the API (ending in /v1), "
            "not a web page, a proxy or a login page?"
        )
    if text[:1] in "{[":
        return f"HTTP {status} with JSON cut short after {len(raw)} bytes (the answer was cut mid-way)"
    return f"HTTP {status} with a body that is not JSON ({kind or 'no content type'}: {snippet!r})"


class Timeout(TransportError):
    """No connection, or no bytes of the answer, within the timeout."""


class ConnectionFailed(TransportError):
    """Refused, reset or closed without an answer (the aiohttp error is the `__cause__`)."""


class Transport(Protocol):
    """What OpenAIChatClient needs from a transport (the benchmarks plug the SDK's in for comparison)."""

    async def post_json(self, path: str, body: dict[str, Any]) -> Any: ...

    async def aclose(self) -> None: ...


class HTTPTransport:
    """POSTs JSON to one OpenAI-compatible base URL through one aiohttp session (its own pool).

    Bound to the event loop it is first used on (aiohttp sessions are). Timeouts are per phase
    like httpx's `Timeout(timeout_s)`: waiting for a pooled connection, connecting, and each read
    of the answer may take `timeout_s`; a slow answer that keeps sending bytes is not cut off.
    Proxies come from the environment (HTTP(S)_PROXY, NO_PROXY), read once here as httpx reads them
    when a client is built: aiohttp's `trust_env` would look them (and ~/.netrc) up again in a worker
    thread on every request, two thread hand-offs per call.
    """

    def __init__(self, base_url: str, api_key: str, timeout_s: float, ssl_context: ssl.SSLContext,
                 max_connections: int = 0):  # fmt: skip
        self.base_url = base_url.rstrip("/")
        self._headers = {
            "Authorization": f"Bearer {api_key}",
            "Content-Type": "application/json",
            "Accept": "application/json",
            "User-Agent": USER_AGENT,
        }
        import aiohttp

        # the faults post_json maps, kept here so the per-call path needs no import
        self._timeouts = (TimeoutError, aiohttp.ServerTimeoutError)
        self._failures = (aiohttp.ClientError, OSError)
        self._timeout = aiohttp.ClientTimeout(
            total=None, connect=timeout_s, sock_connect=timeout_s, sock_read=timeout_s
        )
        self._ssl, self._max_connections = ssl_context, max_connections
        self._proxy, self._proxy_auth = _env_proxy(self.base_url)
        self._session: aiohttp.ClientSession | None = None
        self._closer: AsyncGenerator[None, None] | None = None

    async def _open(self) -> aiohttp.ClientSession:
        import aiohttp

        connector = aiohttp.TCPConnector(limit=self._max_connections, ssl=self._ssl)
        # the key rides in the session's headers: never in a URL, never in anything logged
        self._session = aiohttp.ClientSession(connector=connector, headers=self._headers, timeout=self._timeout)
        # A caller that never calls aclose (`asyncio.run(client.chat(...))`) would leave an open
        # session that aiohttp reports as "Unclosed client session" on stderr. A suspended async
        # generator is closed by the loop's shutdown (asyncio.run's `shutdown_asyncgens`), which
        # closes the session while the loop still runs.
        self._closer = self._close_at_loop_shutdown()
        await self._closer.__anext__()
        return self._session

    async def _close_at_loop_shutdown(self) -> AsyncGenerator[None, None]:
        try:
            yield
        finally:
            await self._close_session()

    async def post_json(self, path: str, body: dict[str, Any]) -> Any:
        """The parsed JSON of a 2xx answer to POST `path`; raises StatusError, Timeout,
        ConnectionFailed, or BadBody for a 2xx body that is not JSON."""
        session = self._session or await self._open()
        data = json.dumps(body).encode()
        try:
            async with session.post(
                self.base_url + path, data=data, proxy=self._proxy, proxy_auth=self._proxy_auth
            ) as resp:
                raw = await resp.read()
                status, headers = resp.status, resp.headers
        except self._timeouts as exc:
            raise Timeout(str(exc) or "timed out") from exc
        except self._failures as exc:
            # refused, reset, closed mid-answer, a body cut short, not HTTP at all: as the SDK did
            # (every httpx error below a status became an APIConnectionError)
            raise ConnectionFailed(str(exc) or type(exc).__name__) from exc
        if status >= 400:
            raise StatusError(status, _error_body(raw), headers)
        try:
            return json.loads(raw)
        except ValueError:  # not JSON, or not UTF-8
            raise BadBody(status, headers.get("Content-Type", ""), raw) from None

    async def aclose(self) -> None:
        """Close the pool (its idle connections); the next request opens a new one."""
        closer, self._closer = self._closer, None
        await self._close_session()
        if closer is not None:
            await closer.aclose()

    async def _close_session(self) -> None:
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()


# ------------------------------------------------------------ one pool per endpoint per loop

# loop -> {(factory, url, key digest, timeout, ssl, max_connections): [transport, references]}. Weak
# on the loop: a loop that is gone takes its entries with it (its sessions closed at its shutdown).
_pools: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[tuple, list[Any]]] = weakref.WeakKeyDictionary()
_pools_lock = threading.Lock()


def shared_transport(loop: asyncio.AbstractEventLoop, url: str, api_key: str, timeout_s: float,
                     ssl_context: ssl.SSLContext, max_connections: int,
                     factory: Callable[..., Transport] = HTTPTransport) -> Transport:  # fmt: skip
    """The transport (connection pool) of `url` on `loop`, shared by every client asking for the
    same settings: one pool per endpoint per process, whichever shard's client asks. Takes a
    reference; give it back with `release_transport`, which closes the pool after the last one.

    The key is held as a digest: the pool's own headers are the only place it is kept in clear.
    """
    digest = hashlib.sha256(api_key.encode()).hexdigest()
    key = (factory, url, digest, timeout_s, id(ssl_context), max_connections)
    with _pools_lock:
        entry = _pools.setdefault(loop, {}).get(key)
        if entry is None:
            entry = _pools[loop][key] = [factory(url, api_key, timeout_s, ssl_context, max_connections), 0]
        entry[1] += 1
        return entry[0]


async def release_transport(transport: Transport) -> None:
    """Give back one reference taken on the running loop; the last one closes the pool."""
    loop = asyncio.get_running_loop()
    with _pools_lock:
        entries = _pools.get(loop, {})
        key = next((k for k, e in entries.items() if e[0] is transport), None)
        if key is None:
            last = True  # not (or no longer) shared: the caller's own
        else:
            entries[key][1] -= 1
            last = entries[key][1] <= 0
            if last:
                del entries[key]
    if last:
        await transport.aclose()


def _env_proxy(url: str) -> tuple[Any, aiohttp.BasicAuth | None]:
    """The proxy (and its credentials) the environment names for `url`, or (None, None)."""
    from aiohttp.helpers import get_env_proxy_for_url
    from yarl import URL

    try:
        return get_env_proxy_for_url(URL(url))
    except LookupError:
        return None, None


def _error_body(raw: bytes) -> Any:
    text = raw.decode("utf-8", errors="replace").strip()
    if not text:
        return None
    try:
        return json.loads(text)
    except ValueError:
        return text
