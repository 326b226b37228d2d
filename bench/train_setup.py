"""Shared set-up for the train_* benches: a tiny random Qwen2-VL, a tiny Flan-T5 and their feature shards.

Not a bench itself. Everything is written under one temporary folder, offline.
"""

from __future__ import annotations

import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from accelerate import Accelerator  # noqa: E402
from vlm_capture import timed  # noqa: E402

from thinkdiff_core.testing.tiny import CORPUS, write_tiny_qwen_vl, write_tiny_t5  # noqa: E402
from train.align import train_step  # noqa: E402
from train.config import OptimOptions  # noqa: E402
from train.decoder import ProxyDecoder, decoder_loss  # noqa: E402
from train.precompute import BRIEF_INSTRUCTIONS, PrecomputeConfig  # noqa: E402
from train.precompute import run as precompute  # noqa: E402
from train.recipe import feature_mask  # noqa: E402
from thinkdiff_core.testing.synthetic import all_captions, shape_samples, write_image_folder  # noqa: E402


def tiny_world(root: Path, images: int = 256, d_model: int = 64, tokens: int = 24) -> dict[str, Path]:
    """Tiny VLM and T5 folders, `images` synthetic images, and their features in shards of 64."""
    vlm = write_tiny_qwen_vl(root / "vlm")
    t5 = write_tiny_t5(root / "t5", corpus=all_captions() + CORPUS + BRIEF_INSTRUCTIONS, d_model=d_model)
    folder = write_image_folder(root / "images", shape_samples(images, seed=1))
    precompute(PrecomputeConfig(vlm=str(vlm), images=str(folder), output=str(root / "features"), batch_size=16,
                                folder_chunk=64, max_new_tokens=tokens, min_new_tokens=tokens // 2, rank=0, world_size=1))
    return {"vlm": vlm, "t5": t5, "images": folder, "features": root / "features"}


def step_vs_bare(accelerator: Accelerator, aligner: torch.nn.Module, decoder: ProxyDecoder,
                 optimizer: torch.optim.Optimizer, options: OptimOptions, batches: list[dict],
                 repeats: int) -> tuple[float, float, float]:
    """Seconds per batch of the real `train_step` and of a bare forward+backward of the same decoder on
    the same batches (states of the aligned shape, requiring grad), interleaved; and their median ratio."""
    device, step = accelerator.device, 0

    def training() -> None:
        nonlocal step
        for batch in batches:
            train_step(accelerator, aligner, decoder, optimizer, [batch], step, options, seed=0)
            step += 1

    def bare() -> None:
        for batch in batches:
            states = torch.randn(*batch["features"].shape[:2], decoder.hidden_size, device=device, dtype=decoder.dtype,
                                 requires_grad=True)
            with accelerator.autocast():
                loss, _ = decoder_loss(decoder.model, states, feature_mask(batch, device), batch["labels"].to(device))
            loss.backward()

    training(), bare()  # warm-up
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    steps, bares = [], []
    for _ in range(repeats):  # interleaved so drift in machine load hits both sides alike
        bares.append(timed(bare, 1) / len(batches))
        steps.append(timed(training, 1) / len(batches))
    ratio = statistics.median(s / b for s, b in zip(steps, bares))
    return statistics.median(steps), statistics.median(bares), ratio
