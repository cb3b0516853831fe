"""A stand-in for `python -m moaa.local.llama_server` that crashes on cue, for supervision tests.

It takes the same command line as the real server (only --host, --port and --model_alias are
read), answers `GET /v1/models` and chat completions with a fixed reply, and dies as the
environment variable MOAA_FAKE_LLAMA tells it:
- `segv-on-completion:N`: SIGSEGV on its N-th chat completion (1 = the first, like a llama.cpp
  build for another CPU that passes the health check and faults on the first real request);
- `exit-at-start:CODE`: exit with CODE before listening;
- unset: never.
Run by `LocalServer(module="moaa.testing.fake_llama_server")`.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

REPLY = "ready"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--model_alias", default="fake")
    args, _ = parser.parse_known_args(argv)
    mode, _, value = os.environ.get("MOAA_FAKE_LLAMA", "").partition(":")
    if mode == "exit-at-start":
        print("fake llama server: failing at start as asked", flush=True)
        sys.exit(int(value))
    crash_at = int(value) if mode == "segv-on-completion" else 0
    completions = [0]
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *a: object) -> None:  # quiet
            pass

        def _send(self, payload: dict) -> None:
            data = json.dumps(payload).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:  # noqa: N802
            self._send({"object": "list", "data": [{"id": args.model_alias, "object": "model"}]})

        def do_POST(self) -> None:  # noqa: N802
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            with lock:
                completions[0] += 1
                n = completions[0]
            print(f"fake llama server: completion {n}", flush=True)
            if crash_at and n >= crash_at:
                print("ggml_compute_forward: general protection fault (simulated)", flush=True)
                # A fault is raised in the thread that faults. SIGSEGV sent to the whole process
                # (os.kill) wakes only the main thread, and under load this thread could still send
                # its answer before the core dump stopped it. The sleep makes sure it never answers.
                signal.pthread_kill(threading.get_ident(), signal.SIGSEGV)
                while True:
                    time.sleep(1)
            message = {"role": "assistant", "content": REPLY}
            self._send({
                "id": f"fake-{n}", "object": "chat.completion", "model": args.model_alias,
                "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 5, "completion_tokens": 1, "total_tokens": 6},
            })  # fmt: skip

    server = ThreadingHTTPServer((args.host, args.port), Handler)
    print(f"fake llama server listening on {args.host}:{args.port}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
