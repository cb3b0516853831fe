"""Where each page is: the web app's URLs (moaa.view.webapp) or, for a static snapshot
(moaa.view.snapshot), file names in one folder. The templates only ever ask a Links object.

    links = ServerLinks()
    links.row("demo", "v3", "sft", "p7", {"model": "qwen"})   # '/d/demo/v3/sft/p7?model=qwen'
    FileLinks("demo", "v3").row("demo", "v3", "sft", "p7")   # 'sft-p7.html'
"""

from __future__ import annotations

import hashlib
import re
from urllib.parse import quote, urlencode

_SAFE = re.compile(r"^[A-Za-z0-9_-]{1,80}$")


def _query(params: dict[str, str] | None) -> str:
    params = {k: v for k, v in (params or {}).items() if v not in ("", None)}
    return f"?{urlencode(params)}" if params else ""


class ServerLinks:
    """The web app's URLs."""

    editable = True

    def home(self) -> str | None:
        return "/"

    def version(self, name: str, version: str, config: str | None = None, params: dict | None = None) -> str | None:
        base = f"/d/{quote(name)}/{quote(version)}/"
        return base + (quote(config) if config else "") + _query(params)

    def page(self, name: str, version: str, config: str, page: int, params: dict | None = None) -> str | None:
        return self.version(name, version, config, (params or {}) | ({"page": str(page + 1)} if page else {}))

    def row(self, name: str, version: str, config: str, prompt_id: str, params: dict | None = None) -> str | None:
        return f"/d/{quote(name)}/{quote(version)}/{config}/{quote(prompt_id, safe='')}{_query(params)}"

    def diff(self, name: str, a: str, b: str) -> str | None:
        return f"/diff/{quote(name)}/{quote(a)}/{quote(b)}"

    def diff_row(self, name: str, a: str, b: str, config: str, prompt_id: str) -> str | None:
        return f"/diff/{quote(name)}/{quote(a)}/{quote(b)}/{config}/{quote(prompt_id, safe='')}"

    def compare(self, run: str | None = None, prompt_id: str | None = None) -> str | None:
        if run is None:
            return "/compare/"
        return f"/compare/{quote(run)}/" + (quote(prompt_id, safe="") if prompt_id else "")

    def static(self, file: str) -> str:
        return f"/static/{file}"

    def api(self, name: str, version: str, action: str) -> str | None:
        return f"/api/d/{quote(name)}/{quote(version)}/{action}"


class FileLinks(ServerLinks):
    """A static snapshot of one version: every page a file in one folder, links relative; pages the
    snapshot does not hold (other versions, compare runs) have no link."""

    editable = False

    def __init__(self, name: str, version: str):
        self.name, self.version_name = name, version

    def _ours(self, name: str, version: str) -> bool:
        return (name, version) == (self.name, self.version_name)

    def home(self) -> str | None:
        return None

    def version(self, name: str, version: str, config: str | None = None, params: dict | None = None) -> str | None:
        if not self._ours(name, version):
            return None
        return f"{config}.html" if config else "index.html"

    def page(self, name: str, version: str, config: str, page: int, params: dict | None = None) -> str | None:
        if not self._ours(name, version):
            return None
        return f"{config}.html" if page == 0 else f"{config}-page{page + 1}.html"

    def row(self, name: str, version: str, config: str, prompt_id: str, params: dict | None = None) -> str | None:
        return f"{config}-{file_key(prompt_id)}.html" if self._ours(name, version) else None

    def diff(self, name: str, a: str, b: str) -> str | None:
        return None

    def diff_row(self, name: str, a: str, b: str, config: str, prompt_id: str) -> str | None:
        return None

    def compare(self, run: str | None = None, prompt_id: str | None = None) -> str | None:
        return None

    def static(self, file: str) -> str:
        return file

    def api(self, name: str, version: str, action: str) -> str | None:
        return None


def file_key(prompt_id: str) -> str:
    """A prompt id as a file name: itself when safe, else a hash of it."""
    return prompt_id if _SAFE.match(prompt_id) else "h" + hashlib.sha256(prompt_id.encode()).hexdigest()[:20]
