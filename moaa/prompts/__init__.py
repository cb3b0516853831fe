"""Prompt templates of moaa: every text sent to a model lives in this package, versioned.

A `Template` carries a name and a version; the version goes into the tag of each call
(`Template.tag`), which the request cache keys on, so editing a prompt's text means bumping its
version and only the calls built from it are asked again.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Template:
    """A prompt text with `str.format` fields (literal braces doubled) and a version."""

    name: str
    version: str
    text: str

    def render(self, **fields: object) -> str:
        return self.text.format(**fields)

    def tag(self, stage: str, role: str) -> str:
        """The call tag: stage, the agent's part and the template version, e.g. `sft.aggregator.aggregate@v1`."""
        return f"{stage}.{role}.{self.name}@{self.version}"
