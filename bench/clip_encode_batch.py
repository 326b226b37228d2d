"""ThinkDiff-CLIP encoding: 4 images in one forward vs one image per call.

A tiny-width BLIP-2 tower with the real geometry (224 px, patch 14: 257 ViT tokens, 65 recipe tokens per
image) is written to a temp folder and loaded with `VisionEncoder`; both ways include preprocessing.
Run from the repo root: `python bench/clip_encode_batch.py [--width 256 --layers 4 --repeats 5]`.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from thinkdiff_core.tiny import write_tiny_blip2  # noqa: E402
from thinkdiff_core.vision import VisionEncoder  # noqa: E402


def median_seconds(run, repeats: int) -> float:
    run()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--width", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--images", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 256, (300, 400, 3), dtype=np.uint8)) for _ in range(args.images)]
    with tempfile.TemporaryDirectory() as root:
        folder = write_tiny_blip2(Path(root) / "blip2", vision_width=args.width, vision_layers=args.layers)
        encoder = VisionEncoder.from_pretrained(folder, dtype="fp32", device="cpu")
        batched = median_seconds(lambda: encoder.encode(images), args.repeats)
        one_by_one = median_seconds(lambda: [encoder.encode([image]) for image in images], args.repeats)
        same = torch.allclose(encoder.encode(images).features,
                              torch.cat([encoder.encode([image]).features for image in images], dim=1), atol=1e-4)
    print(f"tower: width {args.width}, {args.layers} layers, 224 px / patch 14, {encoder.tokens_per_image} tokens per image")
    print(f"clip_encode_batched_{args.images}_images_ms: {batched * 1000:.1f}")
    print(f"clip_encode_one_at_a_time_{args.images}_images_ms: {one_by_one * 1000:.1f}")
    print(f"clip_encode_batch_speedup: {one_by_one / batched:.2f}")
    print(f"clip_encode_same_tokens: {same}")


if __name__ == "__main__":
    main()
