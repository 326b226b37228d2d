"""Precompute throughput: batched VLM generation (8 images per call) vs one image per call.

Runs the real `train.precompute` on the same synthetic images with a tiny random Qwen2-VL, a fixed
number of new tokens per image (so both sides generate the same amount), batch 8 and batch 1,
interleaved, and prints images per second for each.

    python bench/train_precompute.py
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from thinkdiff_core.testing.tiny import write_tiny_qwen_vl  # noqa: E402
from train.precompute import PrecomputeConfig  # noqa: E402
from train.precompute import run as precompute  # noqa: E402
from thinkdiff_core.testing.synthetic import shape_samples, write_image_folder  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--tokens", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    root = Path(tempfile.mkdtemp())
    vlm = write_tiny_qwen_vl(root / "vlm")
    images = write_image_folder(root / "images", shape_samples(args.images, seed=1))
    rates: dict[int, list[float]] = {8: [], 1: []}
    for repeat in range(args.repeats):
        for batch in rates:
            output = root / f"features-{batch}-{repeat}"
            summary = precompute(PrecomputeConfig(vlm=str(vlm), images=str(images), output=str(output), batch_size=batch,
                                                  max_new_tokens=args.tokens, min_new_tokens=args.tokens, rank=0,
                                                  world_size=1))
            rates[batch].append(summary["images_per_s"])
            shutil.rmtree(output)
    batched, single = statistics.median(rates[8]), statistics.median(rates[1])
    print(f"setup: tiny random Qwen2-VL, {args.images} images of 112x112, {args.tokens} new tokens each, CPU, 1 thread")
    print(f"precompute_images_per_s_batch_8: {batched:.1f}")
    print(f"precompute_images_per_s_batch_1: {single:.1f}")
    print(f"precompute_batch_8_over_batch_1: {batched / single:.2f}")


if __name__ == "__main__":
    main()
