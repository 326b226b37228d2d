"""Shared set-up for the train_* benches: a tiny random Qwen2-VL, a tiny Flan-T5 and their feature shards.

Not a bench itself. Everything is written under one temporary folder, offline.
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from thinkdiff_core.tiny import CORPUS, write_tiny_qwen_vl, write_tiny_t5  # noqa: E402
from train.precompute import BRIEF_INSTRUCTIONS, PrecomputeConfig  # noqa: E402
from train.precompute import run as precompute  # noqa: E402
from train.synthetic import all_captions, shape_samples, write_image_folder  # noqa: E402


def tiny_world(root: Path, images: int = 256, d_model: int = 64, tokens: int = 24) -> dict[str, Path]:
    """Tiny VLM and T5 folders, `images` synthetic images, and their features in shards of 64."""
    vlm = write_tiny_qwen_vl(root / "vlm")
    t5 = write_tiny_t5(root / "t5", corpus=all_captions() + CORPUS + BRIEF_INSTRUCTIONS, d_model=d_model)
    folder = write_image_folder(root / "images", shape_samples(images, seed=1))
    precompute(PrecomputeConfig(vlm=str(vlm), images=str(folder), output=str(root / "features"), batch_size=16,
                                folder_chunk=64, max_new_tokens=tokens, min_new_tokens=tokens // 2, rank=0, world_size=1))
    return {"vlm": vlm, "t5": t5, "images": folder, "features": root / "features"}


def timed(function, repeats: int = 1) -> float:
    """Median wall time of `function()` (synchronising CUDA around it)."""
    times = []
    for _ in range(repeats):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        start = time.perf_counter()
        function()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times)
