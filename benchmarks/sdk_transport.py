"""moaa's transport before issue 19, kept for side-by-side measurement: the SDK's generic `post` on httpx.

`SDKTransport` has the constructor and methods of `moaa.models.transport.HTTPTransport` and sends a
request exactly as `OpenAIChatClient` did (an `AsyncOpenAI` per base URL on its default httpx
pool, `post(..., cast_to=httpx.Response)`, the key in a client header); the SDK's exceptions are
turned into the transport's so that the client's retries and accounting run as they do on the
new transport. `SDKChatClient` is `OpenAIChatClient` over it.
"""

from __future__ import annotations

import ssl
from typing import Any

from moaa.models.client import OpenAIChatClient
from moaa.models.transport import ConnectionFailed, StatusError, Timeout


class SDKTransport:
    """One `AsyncOpenAI` (its httpx pool) for one base URL, used through its generic `post`."""

    def __init__(self, base_url: str, api_key: str, timeout_s: float, ssl_context: ssl.SSLContext,
                 max_connections: int = 0):  # fmt: skip
        from openai import AsyncOpenAI, DefaultAsyncHttpxClient

        del max_connections  # the SDK's default pool limits, as before
        self._client = AsyncOpenAI(
            base_url=base_url,
            api_key=api_key,
            max_retries=0,
            timeout=timeout_s,
            http_client=DefaultAsyncHttpxClient(verify=ssl_context),
            default_headers={"Authorization": f"Bearer {api_key}"},
        )

    async def post_json(self, path: str, body: dict[str, Any]) -> Any:
        import httpx
        import openai

        try:
            resp = await self._client.post(path, body=body, cast_to=httpx.Response)
        except openai.APIStatusError as exc:
            raise StatusError(exc.status_code, exc.body, exc.response.headers) from exc
        except openai.APITimeoutError as exc:
            raise Timeout(str(exc)) from exc
        except openai.APIConnectionError as exc:
            raise ConnectionFailed(str(exc.__cause__ or exc)) from exc
        return resp.json()

    async def aclose(self) -> None:
        await self._client.close()


class SDKChatClient(OpenAIChatClient):
    """OpenAIChatClient as it was: the same limiter, retries and accounting over the SDK's transport."""

    transport_factory = SDKTransport
