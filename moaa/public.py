"""What may leave the machine: names and paths as a reader of a published data set should see them.

    served_name("/home/me/runs/dpo/student")   # "student": rows name a local model by its folder
    public_record(manifest)                    # paths relative to the project, private URLs removed
    find_leak({"README.md": b"...", "data/sft/train-0.parquet": path})  # ("README.md", "/home/me") or None
    scrub_text('HTTP 400 bad key sk-123...')  # 'HTTP 400 bad key <redacted:OPENAI_API_KEY>'

A data set version is written on one machine and read on others. Its rows, card and manifest name
models, prompt files and endpoints; on the producer's disk those are absolute folders and URLs
of private servers, which mean nothing to a reader and tell them about the producer's machine.
So rows name a model by the name it was served under (a local folder becomes its folder name),
the manifest keeps paths relative to the project (or under `~`) and endpoint names without
private URLs, and `find_leak` is the last check before anything is uploaded.

Secrets never leave the process: `scrub_text` / `scrub` take out the values of the keys moaa
read (`add_secret`, called by moaa.config.resolve_api_key), of variables named like secrets
(`*_KEY`, `*_TOKEN`, `*_SECRET`), and the credentials inside URLs (`https://user:pass@host`).
They run at every boundary where a string leaves: shard and work files (moaa.work.shards), the
version writer, the request cache, log records (`install_log_scrubber`), Prefect flow
parameters (flows/pipeline_flow.py) and the CLI's terminal lines.
"""

from __future__ import annotations

import ipaddress
import os
import re
import sys
import tempfile
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

PRIVATE_URL = "<private-url>"  # what a private server's URL becomes in a published record
_URL = re.compile(r"[a-z][a-z0-9+.-]*://[^\s\"'<>)]+", re.IGNORECASE)
_PRIVATE_URL = re.compile(
    r"https?://(localhost|127\.\d+\.\d+\.\d+|0\.0\.0\.0|10\.\d+\.\d+\.\d+|192\.168\.\d+\.\d+|"
    r"172\.(1[6-9]|2\d|3[01])\.\d+\.\d+|\[::1\]|[\w-]+\.(local|internal|lan))(?![\w.-])",
    re.IGNORECASE,
)
_SHARED_TMP = ("/tmp", "/var/tmp")  # a bare mention of these is not a path of this machine
SECRET_SUFFIXES = ("_KEY", "_TOKEN", "_SECRET")
_MIN_SECRET = 8  # shorter values are not searched for inside text (they would hit ordinary words)
# user:password@ after a scheme (a bare user, as in ssh://git@host, is no secret and stays)
_URL_CREDENTIALS = re.compile(r"([a-z][a-z0-9+.-]*://)[^/\s\"'<>@:\\]*:[^/\s\"'<>@\\]*@", re.IGNORECASE)
_secrets: dict[str, str] = {}  # value -> the variable it was read from (add_secret)


def add_secret(value: str, name: str) -> None:
    """Remember a key this process read (from variable `name`), so no string written holds it."""
    if len(value) >= _MIN_SECRET:
        _secrets[value] = name


def secret_values(environ: dict[str, str] | None = None) -> dict[str, str]:
    """{value: variable name}: the keys this process read, and every non-empty variable named like a
    secret (`environ`: the variables to read, os.environ by default)."""
    if environ is None:
        return dict(_process_secrets()[0])
    return {v: k for k, v in environ.items() if k.upper().endswith(SECRET_SUFFIXES) and v.strip()}


# (os.environ's raw data, _secrets, {value: name}, the (spelling, replacement) pairs) as last read.
# Reading os.environ decodes every variable (~30 us); the scrub runs several times per model call,
# so the answer is kept until the environment or the keys read change: comparing the raw dicts
# (bytes on POSIX) against copies is a C-level check of well under a microsecond.
_memo: tuple[dict[Any, Any], dict[str, str], dict[str, str], tuple[tuple[str, str], ...]] | None = None


def _process_secrets() -> tuple[dict[str, str], tuple[tuple[str, str], ...]]:
    """This process's secrets ({value: name}) and their spellings to replace, current as of now."""
    global _memo
    data = getattr(os.environ, "_data", None)  # CPython's raw mapping behind os.environ
    memo = _memo
    if memo is not None and data is not None and memo[0] == data and memo[1] == _secrets:
        return memo[2], memo[3]
    snapshot = dict(data) if data is not None else {}
    keys = dict(_secrets)
    named = {v: k for k, v in os.environ.items() if k.upper().endswith(SECRET_SUFFIXES) and v.strip()}
    values = keys | named
    pairs = _spellings(values)
    if data is not None:
        _memo = (snapshot, keys, values, pairs)
    return values, pairs


def _spellings(secrets: dict[str, str]) -> tuple[tuple[str, str], ...]:
    """(spelling, replacement) for every secret long enough to search for: as is and JSON-escaped."""
    pairs: list[tuple[str, str]] = []
    for value, name in secrets.items():
        if len(value) < _MIN_SECRET:
            continue
        for spelling in dict.fromkeys((value, _json_escaped(value))):
            pairs.append((spelling, f"<redacted:{name}>"))
    return tuple(pairs)


def scrub_text(text: str, secrets: dict[str, str] | None = None) -> str:
    """`text` without secret values (as `<redacted:VARIABLE>`) or credentials inside URLs.

    Safe on JSON text: a value is also found in its JSON-escaped spelling, and a URL's credentials
    never include a quote or backslash, so a scrubbed JSON line stays valid JSON."""
    return _scrub_text(text, _process_secrets()[1] if secrets is None else _spellings(secrets))


def _scrub_text(text: str, pairs: tuple[tuple[str, str], ...]) -> str:
    for spelling, replacement in pairs:
        if spelling in text:
            text = text.replace(spelling, replacement)
    if "@" in text and "://" in text:
        text = _URL_CREDENTIALS.sub(r"\1", text)
    return text


def secret_in(text: str) -> str | None:
    """What secret `text` holds, named without its value ("the value of $OPENAI_API_KEY", "credentials
    in a URL"), or None: what scrub_text would take out, for callers that must refuse rather than rewrite."""
    for spelling, replacement in _process_secrets()[1]:
        if spelling in text:
            return f"the value of ${replacement.removeprefix('<redacted:').removesuffix('>')}"
    if "@" in text and "://" in text and _URL_CREDENTIALS.search(text):
        return "credentials in a URL (user:password@)"
    return None


def _json_escaped(value: str) -> str:
    import json

    return json.dumps(value, ensure_ascii=False)[1:-1]


def scrub(value: Any, secrets: dict[str, str] | None = None) -> Any:
    """A copy of a JSON-like value with every string (dict keys too) through scrub_text."""
    return _scrub(value, _process_secrets()[1] if secrets is None else _spellings(secrets))


def _scrub(value: Any, pairs: tuple[tuple[str, str], ...]) -> Any:
    if isinstance(value, str):
        return _scrub_text(value, pairs)
    if isinstance(value, dict):
        return {_scrub(k, pairs): _scrub(v, pairs) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_scrub(v, pairs) for v in value]
    return value


def install_log_scrubber() -> None:
    """Scrub every log record as it is made (all handlers, Prefect's API log handler included)."""
    import logging

    factory = logging.getLogRecordFactory()
    if getattr(factory, "moaa_scrubs", False):
        return

    def make_record(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = factory(*args, **kwargs)
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a malformed record is logging's to report, not ours
            return record
        clean = scrub_text(message)
        if clean != message:
            record.msg, record.args = clean, None
        if record.exc_info and record.exc_info[1] is not None:
            import traceback

            record.exc_text = scrub_text("".join(traceback.format_exception(*record.exc_info)).rstrip("\n"))
        return record

    make_record.moaa_scrubs = True  # type: ignore[attr-defined]
    logging.setLogRecordFactory(make_record)


def served_name(model: str) -> str:
    """A model as rows name it: a Hub id or served name unchanged; a local folder or file by its name."""
    text = str(model)
    local = text.startswith(("/", "~", ".")) or "\\" in text or text.count("/") > 1
    return Path(text.rstrip("/\\").replace("\\", "/")).name if local else text


def is_private_url(url: str) -> bool:
    """Whether a URL points at this machine or a private network (loopback, RFC 1918, .local...)."""
    try:
        host = urlsplit(url).hostname or ""
    except ValueError:
        return True
    try:
        ip = ipaddress.ip_address(host)
        return ip.is_private or ip.is_loopback or ip.is_link_local or ip.is_unspecified
    except ValueError:
        return host == "localhost" or "." not in host or host.endswith((".local", ".internal", ".lan"))


def bare_url(url: str) -> str:
    """A URL without credentials, query or fragment (what a log line or error may show)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    return urlunsplit((parts.scheme, host + (f":{parts.port}" if parts.port else ""), parts.path, "", ""))


def public_url(url: str) -> str:
    """A public URL without credentials or query; PRIVATE_URL for a private one."""
    return PRIVATE_URL if is_private_url(url) else bare_url(url)


def machine_paths(*also: Path) -> list[str]:
    """Absolute folders that belong to this machine: the project (cwd), home, the Python prefix,
    MOAA_HOME, and `also` (e.g. a version's folder); a temp folder by its first level below /tmp."""
    found: set[str] = set()
    candidates = [Path.cwd(), Path.home(), Path(sys.prefix), Path(os.environ.get("MOAA_HOME") or Path.home())]
    for path in [*candidates, *also]:
        for variant in {str(path.expanduser().absolute()), os.path.realpath(path.expanduser())}:
            found.add(_below_tmp(variant))
    return sorted((p for p in found if p not in ("/", *_SHARED_TMP) and len(Path(p).parts) > 1), key=len, reverse=True)


def _below_tmp(path: str) -> str:
    """/tmp/pytest-of-me/x/y -> /tmp/pytest-of-me: the whole per-user temp folder is this machine's."""
    for tmp in {*_SHARED_TMP, tempfile.gettempdir()}:
        rest = Path(path).relative_to(tmp).parts if Path(path).is_relative_to(tmp) else ()
        if rest:
            return str(Path(tmp) / rest[0])
    return path


def public_text(text: str, prefixes: list[str] | None = None) -> str:
    """`text` with this machine's folders made relative (the project) or `~` (home), other machine
    folders as `<local>`, and private URLs as PRIVATE_URL."""
    prefixes = machine_paths() if prefixes is None else prefixes
    cwd, home = str(Path.cwd()), str(Path.home())
    for prefix in prefixes:
        if prefix not in text:
            continue
        if prefix == cwd:  # inside the project: relative to it
            text = text.replace(prefix + "/", "")
        swap = "." if prefix == cwd else "~" if prefix == home else "<local>"
        text = re.sub(re.escape(prefix) + r"(?![\w.-])", swap, text)
    return _PRIVATE_URL.sub(PRIVATE_URL, _URL.sub(lambda m: _public_url_in_text(m.group(0)), text))


def _public_url_in_text(url: str) -> str:
    return public_url(url) if is_private_url(url) or "@" in url else url


def public_value(value: Any, prefixes: list[str] | None = None) -> Any:
    """A copy of a JSON-like record in which every string went through public_text; an absolute
    path outside this machine's known folders keeps only its last part."""
    prefixes = machine_paths() if prefixes is None else prefixes
    if isinstance(value, dict):
        return {k: public_value(v, prefixes) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [public_value(v, prefixes) for v in value]
    if not isinstance(value, str):
        return value
    text = public_text(value, prefixes)
    if text.startswith("/") and " " not in text:  # a lone absolute path of some other disk
        return f"<local>/{Path(text).name}"
    return text


def leak_pattern(prefixes: list[str], lookahead: bool = True) -> re.Pattern[str]:
    """Matches a path under one of `prefixes` or a private URL (without the lookahead that keeps
    `/home/me` from matching `/home/mel`: arrow's RE2 has none, so its hits are checked again)."""
    tail = r"(?![\w.-])" if lookahead else ""
    url = _PRIVATE_URL.pattern if lookahead else _PRIVATE_URL.pattern.removesuffix(r"(?![\w.-])")
    return re.compile("|".join([*(re.escape(p) + tail for p in prefixes), url]), re.IGNORECASE)


def find_leak(files: dict[str, bytes | Path], prefixes: list[str]) -> tuple[str, str] | None:
    """(file, what it holds) for the first file holding a machine path or a private URL, else None.

    Text files are read whole; parquet files column by column (every string, nested ones too)."""
    pattern = leak_pattern(prefixes)
    for name, content in sorted(files.items()):
        if name.endswith(".parquet"):
            found = _parquet_leak(content, pattern, leak_pattern(prefixes, lookahead=False))
        elif name.endswith((".md", ".json", ".jsonl", ".txt", ".yaml", ".yml", ".csv", ".gitattributes")):
            data = content if isinstance(content, bytes) else Path(content).read_bytes()
            match = pattern.search(data.decode("utf-8", errors="replace"))
            found = match.group(0) if match else None
        else:
            found = None  # images and other binaries carry no text of ours
        if found:
            return name, found
    return None


def _parquet_leak(content: bytes | Path, pattern: re.Pattern[str], rough: re.Pattern[str]) -> str | None:
    import io

    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    table = pq.read_table(io.BytesIO(content) if isinstance(content, bytes) else content)
    for column in table.columns:
        for chunk in column.chunks:
            for strings in _string_arrays(chunk):
                hits = pc.match_substring_regex(strings, rough.pattern, ignore_case=True)
                if not pc.any(hits).as_py():
                    continue
                for text in strings.filter(hits).to_pylist():
                    if match := pattern.search(text):
                        return match.group(0)
    return None


def _string_arrays(array: Any):
    """Every string array inside a (nested) arrow array: lists are flattened, structs opened."""
    import pyarrow as pa

    kind = array.type
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        yield array
    elif pa.types.is_list(kind) or pa.types.is_large_list(kind):
        yield from _string_arrays(array.flatten())
    elif pa.types.is_struct(kind):
        for i in range(kind.num_fields):
            yield from _string_arrays(array.field(i))
