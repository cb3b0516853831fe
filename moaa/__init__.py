"""moaa: alignment data (SFT and DPO) manufactured with Mixture-of-Agents.

The Python API (moaa.api), importable from here:

    import moaa
    v = moaa.run("configs/moa-lite.yaml", prompts={"limit": 20})   # -> moaa.Version
    v.sft, v.dpo, v.frame("sft"), v.card, v.manifest, v.verify(), v.publish("org/name", dry_run=True)
    moaa.load_config(path, **overrides), moaa.Version.open("local-moa@v1"), moaa.versions(), moaa.compare(path)

`import moaa` loads none of it (nor pydantic, Prefect or datasets): the names below are looked up
on first use, so `moaa --help` stays instant.
"""

from typing import Any

from moaa.version import __version__

_API = ("run", "load_config", "Version", "versions", "compare")
__all__ = [*_API, "MoaaError", "ConfigError", "InputError", "EndpointError", "__version__"]


def __getattr__(name: str) -> Any:
    if name in _API:
        from moaa import api

        return getattr(api, name)
    if name in ("MoaaError", "ConfigError", "InputError", "EndpointError"):
        from moaa import errors

        return getattr(errors, name)
    raise AttributeError(f"module 'moaa' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
