"""TRL's own CLI trains on a written version exactly as its card says, on this machine without a GPU.

The card prints `trl sft ...` / `trl dpo ...` with `--use_cpu --bf16 false` (TRL's CLI trains in bf16
by default and stops with "Your setup doesn't support bf16/gpu" on a CPU). Here both lines are read
from the card and run, MODEL replaced by a tiny random model, for one step each.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from tests.tiny_models import build_tiny_causal_lm
from tests.version_helpers import write_demo, write_parts


def card_commands(card: str) -> dict[str, list[str]]:
    """The card's `trl <kind> ...` lines, as argument lists."""
    return {line.split()[1]: shlex.split(line) for line in card.splitlines() if line.startswith("trl ")}


def test_the_card_gives_the_cpu_flags_and_says_to_drop_them_on_a_gpu(tmp_path):
    info = write_demo(tmp_path / "data", write_parts(tmp_path / "parts"))
    card = (info.path / "README.md").read_text()
    commands = card_commands(card)
    assert sorted(commands) == ["dpo", "sft"]
    assert all(cmd[-3:] == ["--use_cpu", "--bf16", "false"] for cmd in commands.values())
    assert "On a GPU, leave them out." in card


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["sft", "dpo"])
def test_trl_trains_on_the_version_with_the_cards_command(tmp_path, kind):
    info = write_demo(tmp_path / "data", write_parts(tmp_path / "parts"))
    model = build_tiny_causal_lm(tmp_path / "lm")
    cmd = card_commands((info.path / "README.md").read_text())[kind]
    cmd = [str(model) if arg == "MODEL" else arg for arg in cmd]
    trl = Path(sys.executable).with_name("trl")
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", HF_HOME=str(tmp_path / "hf"))
    done = subprocess.run(
        [str(trl), *cmd[1:], "--max_steps", "1", "--report_to", "none"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    out = tmp_path / cmd[cmd.index("--output_dir") + 1]
    assert (out / "model.safetensors").is_file() or any(out.glob("*.safetensors")), sorted(out.iterdir())
