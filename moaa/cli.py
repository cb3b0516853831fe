"""The `moaa` command line. Usage: moaa run configs/local.yaml [--set key=value ...]

Each sub-command lives in `moaa/commands/<name>.py` with a `register(subparsers)` function; those
modules import nothing heavy at module level so `moaa --help` answers at once. A user mistake
(MoaaError) is printed as one line on stderr with a non-zero exit, never as a traceback. Output
piped into a reader that stops early (`moaa datasets show X | head`) ends quietly with status 141.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import signal
import sys
import threading

from moaa.errors import MoaaError
from moaa.version import __version__

COMMANDS = (
    "run",
    "check",
    "config",
    "serve",
    "datasets",
    "publish",
    "inspect",
    "view",
    "review",
    "train",
    "compare",
    "deploy",
)
INTERRUPTED = "interrupted: finished work is kept; run the same command again to resume"
TERMINATED = "terminated (SIGTERM): finished work is kept; run the same command again to resume"
UNWIND_S = 5.0  # how long Ctrl-C may take to unwind before the process exits anyway


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="moaa",
        description="Make SFT and DPO data sets with Mixture-of-Agents, versioned as Hugging Face data sets.",
    )
    parser.add_argument("--version", action="version", version=f"moaa {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"moaa.commands.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"moaa.commands.{name}":
                continue  # a command not built yet
            raise
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one command; its exit status."""
    # Arrow's default allocator (mimalloc) keeps what a version write freed: ~25 MiB of a run's peak
    # memory. The system's gives it back; set before pyarrow is first imported, a user's choice kept.
    os.environ.setdefault("ARROW_DEFAULT_MEMORY_POOL", "system")
    try:
        try:
            return _run(argv)
        finally:
            _stop_prefect_api()
            sys.stdout.flush()  # here, not at exit: a closed pipe must surface where it is caught
    except BrokenPipeError:
        _silence_stdout()
        return 141  # 128 + SIGPIPE: what a shell reports for a writer cut short by its reader


def _stop_prefect_api() -> None:
    """Stop the Prefect API server a command started in this process (flows.prefect_env), if any,
    before the interpreter's shutdown: at exit its workers would find their thread pools gone."""
    prefect_env = sys.modules.get("flows.prefect_env")
    if prefect_env is not None:
        prefect_env.stop_api()


def _silence_stdout() -> None:
    """Point stdout at /dev/null so the interpreter's final flush does not print a traceback."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):  # no real file descriptor (captured in tests)
        pass


def _run(argv: list[str] | None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 1
    from moaa.public import install_log_scrubber

    install_log_scrubber()  # no log line, here or in Prefect's database, holds a key
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    if not args.verbose:  # per-request lines from the HTTP stack drown the progress display
        for noisy in ("httpx", "httpx2", "httpcore", "openai", "urllib3", "huggingface_hub", "datasets", "filelock"):
            logging.getLogger(noisy).setLevel(logging.WARNING)
    if argv is None and args.command == "run":
        signal.signal(signal.SIGINT, _on_interrupt)
        signal.signal(signal.SIGTERM, _on_terminate)
    try:
        return int(args.func(args) or 0)
    except MoaaError as exc:
        from moaa.public import scrub_text

        print(f"error: {scrub_text(str(exc))}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        if argv is None:
            # From the console: finished prompts are already on disk and the local server is
            # stopped, so exit now instead of waiting for shard threads still inside a model call.
            _exit_interrupted()
        print(INTERRUPTED, file=sys.stderr)
        return 130


_exit_lock = threading.Lock()


def _exit_interrupted() -> None:
    with _exit_lock:  # once, whichever of the main thread and the watchdog gets here first
        print(INTERRUPTED, file=sys.stderr)
        sys.stderr.flush()
        sys.stdout.flush()
        os._exit(130)


def _on_terminate(signum: int, frame: object) -> None:
    """SIGTERM (a scheduler, `kill`, a container stopping): exit at once with a line saying how to
    resume. Everything finished is on disk (rows per prompt, the calls journal per call); while a
    flow runs, Prefect's own handler sees the signal first, records the flow run as crashed and
    sends it again to this one."""
    with _exit_lock:
        print(TERMINATED, file=sys.stderr)
        sys.stderr.flush()
        sys.stdout.flush()
        os._exit(128 + signal.SIGTERM)


def _on_interrupt(signum: int, frame: object) -> None:
    """Ctrl-C: raise KeyboardInterrupt as usual, and exit anyway if unwinding hangs.

    Unwinding can wait on Prefect (reporting the interrupted flow run, with retries) or on a shard
    thread inside a model call. Everything finished is already on disk, so after UNWIND_S the
    process leaves without waiting for that.
    """
    timer = threading.Timer(UNWIND_S, _exit_interrupted)
    timer.daemon = True
    timer.start()
    raise KeyboardInterrupt


if __name__ == "__main__":
    sys.exit(main())
