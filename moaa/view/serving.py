"""Where `moaa view` listens, who may open it, and the server itself (uvicorn, the ASGI server that
comes with Prefect and FastAPI).

    with ViewServer(Path("data"), Path("runs"), port=0) as server:    # in a thread (tests, benchmarks)
        server.url                                                      # http://127.0.0.1:PORT
    serve(Path("data"), Path("runs"), host="127.0.0.1", port=None, path="/d/demo/v3/", say=print)

The port: `--port N`, else 8765 (so a link to a version, like the one in a run's Prefect artifact,
stays the same) when it is free, else any free one; the URL printed is the one that answers. The
socket is bound and listening before the URL is printed. Loopback is the default; any other host
serves the data set to the network, so it needs a token: the MOAA_VIEW_TOKEN environment variable
(a secret, so never an argument and never printed), checked on every request (moaa.view.webapp).
"""

from __future__ import annotations

import os
import socket
import threading
from pathlib import Path
from typing import Any
from urllib.parse import quote

from moaa.errors import ConfigError

DEFAULT_PORT = 8765
TOKEN_ENV = "MOAA_VIEW_TOKEN"
LOOPBACK = ("127.0.0.1", "localhost", "::1")


def version_url(name: str, version: str, port: int = DEFAULT_PORT, host: str = "127.0.0.1") -> str:
    """The viewer's page of a version (as `moaa view` serves it on that port)."""
    return f"http://{host}:{port}/d/{quote(name)}/{quote(version)}/"


def listen(host: str, port: int | None) -> socket.socket:
    """A listening socket on host:port (port None: DEFAULT_PORT when free, else a free one)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    tries = [DEFAULT_PORT, 0] if port is None else [port]
    for i, number in enumerate(tries):
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, number))
        except OSError as exc:
            sock.close()
            if i + 1 < len(tries):
                continue
            raise ConfigError(f"cannot listen on {host}:{number} ({exc.strerror}); pass another --port") from None
        sock.listen(128)
        sock.set_inheritable(True)
        return sock
    raise AssertionError("unreachable")


def access(host: str) -> tuple[list[str], str | None]:
    """(the Host names the app answers, its token or None); ConfigError for a non-loopback host without one."""
    token = os.environ.get(TOKEN_ENV) or None
    if host in LOOPBACK:
        return ["127.0.0.1", "localhost", "::1", "[::1]"], token
    if not token:
        raise ConfigError(
            f"--host {host} serves the data to the network; set {TOKEN_ENV} to a secret first (e.g. "
            f"`export {TOKEN_ENV}=$(python -c 'import secrets; print(secrets.token_urlsafe())')`) and open the "
            f"URL with ?token=<it>, or leave --host out to serve on 127.0.0.1 only"
        )
    return ["*"], token


def shown_host(host: str) -> str:
    if host in ("0.0.0.0", "::"):
        return socket.gethostname()
    return f"[{host}]" if ":" in host else host


def _server(app: Any) -> Any:
    import uvicorn

    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off", timeout_graceful_shutdown=2)
    return uvicorn.Server(config)


def serve(root: Path, runs: Path, *, host: str, port: int | None, path: str, say) -> None:
    """Serve the viewer until Ctrl-C; `say(url)` once it answers."""
    from moaa.view.webapp import build_app

    hosts, token = access(host)
    sock = listen(host, port)
    number = sock.getsockname()[1]
    server = _server(build_app(root, runs, hosts=hosts, token=token))
    warm_up()
    say(f"http://{shown_host(host)}:{number}{path}", number, token is not None)
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()


def warm_up() -> None:
    """Import what every page uses and compile the templates before the URL is printed, so the first
    page a person opens answers as fast as the rest."""
    import pyarrow as pa
    import pyarrow.compute  # noqa: F401
    import pyarrow.parquet  # noqa: F401

    from moaa.view.pages import TEMPLATES, environment

    # pyarrow imports pandas (when installed) the first time it converts a Python value, as every
    # filter does (~0.9 s, ~40 MiB here): once, now, rather than in the first page a person opens.
    pa.array([0])

    env = environment()
    for template in TEMPLATES.glob("*.html"):
        env.get_template(template.name)


class ViewServer:
    """The viewer in a thread of this process (tests, benchmarks); stopped on leaving the block."""

    def __init__(self, root: Path, runs: Path | None = None, *, port: int = 0, token: str | None = None):
        from moaa.view.webapp import build_app

        self.sock = listen("127.0.0.1", port)
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        hosts = ["127.0.0.1", "localhost"]
        self.server = _server(build_app(Path(root), Path(runs or "runs"), hosts=hosts, token=token))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    def __enter__(self) -> ViewServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
        self.sock.close()
