"""Training checkpoints: written atomically, the last K kept, read back without unpickling code.

A checkpoint is a folder `checkpoints/step-00001000/` holding `aligner.safetensors` (the nodes can
load it as is) and `trainer.pt` (optimizer state, step, batches consumed, config: tensors and plain
values only, read with `weights_only=True`). It is assembled in a hidden temporary folder and
renamed into place, so a kill at any moment leaves either the old set or the new one, never half.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from thinkdiff_core.checkpoint import LoadedAligner, load_aligner, save_aligner

from . import config as cfg

CHECKPOINTS = "checkpoints"
NAME = re.compile(r"^step-(\d{8})$")


def checkpoints(output_dir: str | Path) -> list[Path]:
    """Complete checkpoints, oldest first."""
    folder = Path(output_dir) / CHECKPOINTS
    if not folder.is_dir():
        return []
    found = [p for p in folder.iterdir() if NAME.match(p.name) and (p / "trainer.pt").is_file()]
    return sorted(found, key=lambda p: int(NAME.match(p.name).group(1)))


def latest(output_dir: str | Path) -> Path | None:
    found = checkpoints(output_dir)
    return found[-1] if found else None


def remove_partial(output_dir: str | Path) -> None:
    """Temporary folders left by a run killed while saving."""
    folder = Path(output_dir) / CHECKPOINTS
    for stale in folder.glob(".step-*.tmp-*") if folder.is_dir() else []:
        shutil.rmtree(stale, ignore_errors=True)


def save(output_dir: str | Path, step: int, aligner: LoadedAligner, trainer: dict[str, Any], keep_last: int) -> Path:
    folder = Path(output_dir) / CHECKPOINTS
    folder.mkdir(parents=True, exist_ok=True)
    final = folder / f"step-{step:08d}"
    temporary = folder / f".{final.name}.tmp-{os.getpid()}"
    shutil.rmtree(temporary, ignore_errors=True)
    temporary.mkdir()
    save_aligner(temporary / "aligner.safetensors", aligner)
    torch.save(trainer, temporary / "trainer.pt")
    if final.exists():  # the same step saved again after a resume: the new copy replaces it
        shutil.rmtree(final)
    os.replace(temporary, final)
    for old in checkpoints(output_dir)[:-max(keep_last, 1)]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def load(path: str | Path) -> tuple[LoadedAligner, dict[str, Any]]:
    path = Path(path)
    return load_aligner(path / "aligner.safetensors", dtype=torch.float32), torch.load(
        path / "trainer.pt", map_location="cpu", weights_only=True)


def load_latest_intact(output_dir: str | Path, log: Callable[[str], None]) -> tuple[Path, LoadedAligner, dict[str, Any]]:
    """The newest checkpoint that loads; a damaged newer one (a disk that filled up, a copy cut short) is
    skipped, saying so, instead of ending the resume with a traceback."""
    found = checkpoints(output_dir)
    for path in reversed(found):
        try:
            return (path, *load(path))
        except Exception as error:  # a damaged file fails in many ways: EOF, a zip index, unpickling, shapes
            reason = (str(error).splitlines() or [type(error).__name__])[0][:160]
            log(f"note: checkpoint {path} is damaged ({reason}); trying the one before it")
    raise ValueError(f"--resume: none of the {len(found)} checkpoint(s) in {Path(output_dir) / CHECKPOINTS} can be read. "
                     f"Delete the damaged step-* folders and start again without --resume.")


RESUME_MUST_MATCH = ("data.train", "data.batch_size", "data.num_workers", "data.shuffle_buffer", "data.max_split",
                     "data.masking", "data.features", "data.max_prefix_tokens", "data.max_target_tokens", "optim.grad_accum", "run.seed",
                     "model.variant", "model.decoder", "model.vision_encoder")
"""Options that decide the data order or the objective: a resumed run must keep them."""


def check_resume(saved: dict[str, Any], config: dict[str, Any], world_size: int) -> list[str]:
    """Refuse a resume that would change the data order; list the harmless changes."""
    before, now = cfg.flatten(saved["config"]), cfg.flatten(config)
    # an option newer than the checkpoint is absent from its config: it had the default then, as it has now
    broken = [f"{k}: {before[k]!r} -> {now[k]!r}" for k in RESUME_MUST_MATCH if k in before and before[k] != now[k]]
    if saved["world_size"] != world_size:
        broken.append(f"number of processes: {saved['world_size']} -> {world_size}")
    if broken:
        raise ValueError("Cannot resume exactly: these settings differ from the checkpoint's and decide the data order "
                         f"or the objective: {'; '.join(broken)}. Resume with the original settings, or start a new run "
                         "in another run.output_dir.")
    return [f"{k}: {before.get(k)!r} -> {now[k]!r}" for k in now if k != "run.resume" and before.get(k) != now[k]]
