"""Training settings: a flat YAML of TRL's own field names, with `--set key=value` overrides.

A settings file (configs/train/sft.yaml, configs/train/dpo.yaml) mixes the fields of TRL's
training config (`SFTConfig` or `DPOConfig`, which include every `transformers.TrainingArguments`
field) with those of TRL's `ModelConfig` (`model_name_or_path`, `use_peft`, `lora_r`, ...), exactly
as `trl sft --config recipe.yaml` reads them. An unknown key is an error that names the closest
field. The command line wins over the file.
"""

from __future__ import annotations

import dataclasses
import difflib
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from moaa.config import apply_override
from moaa.errors import ConfigError

log = logging.getLogger(__name__)

KINDS = ("sft", "dpo")
# Set by moaa itself per run; a settings file that names them would be silently overruled.
MANAGED = ("output_dir",)
_SCIENTIFIC = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)[eE][+-]?\d+$")


@dataclass
class TrainSettings:
    """The resolved settings of one training run, split by the TRL dataclass they belong to."""

    kind: str
    source: str
    trainer: dict[str, Any] = field(default_factory=dict)  # SFTConfig / DPOConfig fields
    model: dict[str, Any] = field(default_factory=dict)  # ModelConfig fields

    def as_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "source": self.source, "model": dict(self.model), "trainer": dict(self.trainer)}


def config_class(kind: str) -> type:
    """TRL's config dataclass for `kind` ('sft' or 'dpo')."""
    if kind == "sft":
        from trl import SFTConfig

        return SFTConfig
    if kind == "dpo":
        from trl import DPOConfig

        return DPOConfig
    raise ConfigError(f"unknown training kind {kind!r}; use one of {', '.join(KINDS)}")


def field_names(cls: type) -> set[str]:
    return {f.name for f in dataclasses.fields(cls) if f.init}


def read_settings(path: str | Path | None, overrides: list[str] | None = None) -> dict[str, Any]:
    """The YAML mapping at `path` (empty when None) with `key=value` overrides applied."""
    raw: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"{path}: training settings file not found; pass e.g. --config configs/train/sft.yaml")
        try:
            raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f":{mark.line + 1}" if mark else ""
            raise ConfigError(f"{path}{where}: malformed YAML: {getattr(exc, 'problem', exc)}") from None
        if not isinstance(raw, dict):
            raise ConfigError(f"{path}: the top level must be a mapping of TRL field names to values")
    for item in overrides or []:
        apply_override(raw, item)  # `a.b=1` reaches into mapping fields such as model_init_kwargs
    # YAML 1.1 reads `1e-4` (no dot) as a string; every learning rate is written that way.
    return {k: float(v) if isinstance(v, str) and _SCIENTIFIC.match(v) else v for k, v in raw.items()}


def load_settings(kind: str, path: str | Path | None, overrides: list[str] | None = None) -> TrainSettings:
    """Validate the keys of the settings file + overrides against TRL's dataclasses for `kind`."""
    from trl import ModelConfig

    raw = read_settings(path, overrides)
    source = str(path) if path is not None else "defaults"
    trainer_fields, model_fields = field_names(config_class(kind)), field_names(ModelConfig)
    settings = TrainSettings(kind, source)
    for key, value in raw.items():
        if key in MANAGED:
            raise ConfigError(f"{source}: '{key}' is set by moaa (use --output DIR); remove it")
        if key in model_fields:
            settings.model[key] = value
        elif key in trainer_fields:
            settings.trainer[key] = value
        else:
            close = difflib.get_close_matches(key, sorted(trainer_fields | model_fields), n=1)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            cls = config_class(kind).__name__
            raise ConfigError(f"{source}: unknown key '{key}' (not a field of trl.{cls} or trl.ModelConfig){hint}")
    return settings


def build_trainer_config(settings: TrainSettings, output_dir: Path, **forced: Any) -> Any:
    """The TRL config object (SFTConfig / DPOConfig); a value TRL rejects is a ConfigError."""
    cls = config_class(settings.kind)
    values = settings.trainer | forced | {"output_dir": str(output_dir)}
    if "bf16" not in values and "fp16" not in values and not has_accelerator():
        values["bf16"] = False  # TRL defaults to bf16, which a CPU-only setup refuses: train in fp32
    try:
        return cls(**values)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{settings.source}: trl.{cls.__name__} rejected the settings: {exc}") from None


def has_accelerator() -> bool:
    import torch

    return torch.cuda.is_available() or (hasattr(torch, "xpu") and torch.xpu.is_available())


def build_peft_config(settings: TrainSettings) -> Any:
    """A peft LoraConfig when `use_peft` is true (TRL's ModelConfig fields), else None (full fine-tuning)."""
    from trl import ModelConfig, get_peft_config

    values = {k: v for k, v in settings.model.items() if k != "model_name_or_path"}
    try:
        return get_peft_config(ModelConfig(**values))
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{settings.source}: trl.ModelConfig rejected the settings: {exc}") from None
