"""The checks the Hub's `/api/validate-yaml` makes on a dataset card's metadata, as the test stub applies them.

    metadata_errors(card_text, "dataset")  # [] when the YAML header would be accepted

The Hub rejects a header that is not a mapping, fields of the wrong type, a `size_categories`
outside its fixed list, language codes that are not ISO 639 (or a special value), and `configs`
entries without a `config_name` or with `data_files` that are neither a path, a list of paths nor
a list of {split, path}. The field list follows huggingface_hub's DatasetCardData.
"""

from __future__ import annotations

import re
from typing import Any

import yaml

SIZE_CATEGORIES = ("n<1K", "1K<n<10K", "10K<n<100K", "100K<n<1M", "1M<n<10M", "10M<n<100M", "100M<n<1B", "1B<n<10B",
                   "10B<n<100B", "100B<n<1T", "n>1T", "other")  # fmt: skip
_LANGUAGE = re.compile(r"^([a-z]{2,3}(-[A-Za-z0-9]{2,8})*|code|multilingual)$")
_LISTS = ("language", "license", "tags", "task_categories", "task_ids", "size_categories", "annotations_creators",
          "language_creators", "source_datasets")  # fmt: skip


def metadata_errors(content: str, repo_type: str = "dataset") -> list[str]:
    """Problems with the YAML header of a card's text (none when absent: a card may have no metadata)."""
    if not content.startswith("---\n"):
        return []
    head, sep, _ = content[4:].partition("\n---")
    if not sep:
        return ["the YAML header is not closed by a '---' line"]
    try:
        meta = yaml.safe_load(head)
    except yaml.YAMLError as exc:
        return [f"invalid YAML: {exc}"]
    if meta is None:
        return []
    if not isinstance(meta, dict):
        return ["the YAML header must be a mapping"]
    errors = [f"'{k}' must be a string or a list of strings" for k in _LISTS if k in meta and not _strings(meta[k])]
    if "pretty_name" in meta and not isinstance(meta["pretty_name"], str):
        errors.append("'pretty_name' must be a string")
    errors += [f"size_categories: '{s}' is not one of {', '.join(SIZE_CATEGORIES)}"
               for s in _as_list(meta.get("size_categories")) if s not in SIZE_CATEGORIES]  # fmt: skip
    errors += [f"language: '{code}' is not an ISO 639 code" for code in _as_list(meta.get("language"))
               if not _LANGUAGE.match(str(code))]  # fmt: skip
    if repo_type == "dataset":
        errors += _config_errors(meta.get("configs"))
    return errors


def _strings(value: Any) -> bool:
    return isinstance(value, str) or (isinstance(value, list) and all(isinstance(v, str) for v in value))


def _as_list(value: Any) -> list[Any]:
    return [] if value is None else value if isinstance(value, list) else [value]


def _config_errors(configs: Any) -> list[str]:
    if configs is None:
        return []
    if not isinstance(configs, list):
        return ["'configs' must be a list"]
    errors = []
    for i, cfg in enumerate(configs):
        if not isinstance(cfg, dict) or not isinstance(cfg.get("config_name"), str):
            errors.append(f"configs[{i}] needs a config_name")
            continue
        files = cfg.get("data_files")
        ok = _strings(files) or (
            isinstance(files, list)
            and all(isinstance(f, dict) and isinstance(f.get("split"), str) and _strings(f.get("path")) for f in files)
        )
        if not ok:
            errors.append(f"configs[{i}] ({cfg['config_name']}): data_files must be paths or {{split, path}} entries")
    return errors
