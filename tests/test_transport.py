"""moaa.models.transport against real sockets: what each fault becomes, pooling, closing."""

from __future__ import annotations

import asyncio
import gc
import ssl
import warnings

import pytest

from moaa.models.transport import BadBody, ConnectionFailed, HTTPTransport, StatusError, Timeout
from moaa.testing.openai_server import OpenAITestServer

BODY = {"model": "test-model", "messages": [{"role": "user", "content": "Say hello"}]}


def make_transport(base_url: str, timeout_s: float = 2.0, max_connections: int = 8, key: str = "k") -> HTTPTransport:
    return HTTPTransport(base_url, key, timeout_s, ssl.create_default_context(), max_connections)


def post_once(transport: HTTPTransport, body: dict = BODY):
    async def go():
        try:
            return await transport.post_json("/chat/completions", body)
        finally:
            await transport.aclose()

    return asyncio.run(go())


def test_a_2xx_answer_is_its_parsed_json():
    with OpenAITestServer() as srv:
        data = post_once(make_transport(srv.base_url))
    assert data["choices"][0]["message"]["content"].startswith("[test-model] answer")
    assert srv.requests[0]["body"] == BODY


def test_a_429_carries_status_error_body_and_retry_after():
    with OpenAITestServer(retry_after_s=0.25) as srv:
        srv.set_script(["429"])
        with pytest.raises(StatusError) as err:
            post_once(make_transport(srv.base_url))
    assert err.value.status_code == 429
    assert err.value.headers.get("retry-after") == "0.25"
    assert isinstance(err.value.body, dict) and err.value.message.startswith("Error code: 429 - ")


def test_the_key_goes_in_the_authorization_header():
    with OpenAITestServer(api_key="right") as srv:
        assert post_once(make_transport(srv.base_url, key="right"))["choices"]
        with pytest.raises(StatusError) as err:
            post_once(make_transport(srv.base_url, key="wrong"))
    assert err.value.status_code == 401


@pytest.mark.parametrize(
    "fault, says",
    [("garbage", "HTTP 200 with an HTML page"), ("empty", "HTTP 200 with an empty body"),
     ("truncated", "HTTP 200 with JSON cut short"), ("sse", "HTTP 200 with a server-sent event stream")],
)  # fmt: skip
def test_a_2xx_body_that_is_not_json_says_what_came_back(fault, says):
    with OpenAITestServer() as srv:
        srv.set_script([fault])
        with pytest.raises(BadBody) as err:
            post_once(make_transport(srv.base_url))
    assert str(err.value).startswith(says)


def test_no_answer_within_the_timeout_is_a_timeout():
    with OpenAITestServer(hang_s=30) as srv:
        srv.set_script(["hang"])
        with pytest.raises(Timeout):
            post_once(make_transport(srv.base_url, timeout_s=0.3))


def test_a_dropped_connection_is_a_connection_failure():
    with OpenAITestServer() as srv:
        srv.set_script(["drop"])
        with pytest.raises(ConnectionFailed) as err:
            post_once(make_transport(srv.base_url))
    assert err.value.__cause__ is not None


def test_a_refused_connection_is_a_connection_failure():
    with OpenAITestServer() as srv:
        url = srv.base_url
    with pytest.raises(ConnectionFailed):
        post_once(make_transport(url))


def test_one_pool_reuses_its_connections_and_opens_at_most_max_connections():
    """16 callers over a pool of 4: every request answered on at most 4 keep-alive connections."""
    opened = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        opened.append(writer)
        reply = b'{"choices": []}'
        head_of_reply = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(reply)
        while head := await reader.readuntil(b"\r\n\r\n"):
            length = next(int(h.split(b":")[1]) for h in head.split(b"\r\n") if h.lower().startswith(b"content-length"))
            await reader.readexactly(length)
            await asyncio.sleep(0.01)
            writer.write(head_of_reply + reply)
            await writer.drain()

    async def go() -> int:
        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        transport = make_transport(f"http://127.0.0.1:{port}/v1", max_connections=4)
        replies = await asyncio.gather(*(transport.post_json("/chat/completions", BODY) for _ in range(64)))
        await transport.aclose()
        server.close()
        return len(replies)

    assert asyncio.run(go()) == 64
    assert 1 <= len(opened) <= 4


def test_a_transport_never_closed_is_closed_with_its_loop():
    """`asyncio.run(...)` without aclose leaves no open session (no "Unclosed client session")."""
    with OpenAITestServer() as srv:
        transport = make_transport(srv.base_url)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            asyncio.run(transport.post_json("/chat/completions", BODY))
            gc.collect()
    assert transport._session is None
    assert not [w for w in caught if "Unclosed" in str(w.message)]


def test_proxies_come_from_the_environment_once_per_pool(monkeypatch):
    monkeypatch.setenv("HTTP_PROXY", "http://user:pw@proxy.example:3128")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    for name in ("http_proxy", "no_proxy", "HTTPS_PROXY", "https_proxy"):
        monkeypatch.delenv(name, raising=False)
    proxied = make_transport("http://api.example/v1")
    assert str(proxied._proxy) == "http://proxy.example:3128"
    assert proxied._proxy_auth is not None and proxied._proxy_auth.login == "user"
    assert make_transport("http://127.0.0.1:8000/v1")._proxy is None
