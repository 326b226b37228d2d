"""ThinkDiff-CLIP encoding: 4 images in one forward vs one image per call.

A tiny-width BLIP-2 tower with the real geometry (224 px, patch 14: 257 ViT tokens, 65 recipe tokens per
image) is written to a temp folder and loaded with `VisionEncoder`. The inputs are photo-sized
(`--image-size`, default 1024x768): `encode` rows include their preprocessing, whose bicubic resize
costs more than a tiny tower's forward (and than the real tower's forward on a GPU); a batch resizes
its images concurrently. `forward` rows time the tower alone on prepared pixels.
Run from the repo root: `python bench/clip_encode_batch.py [--width 64 --layers 2 --repeats 9]`.
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

from thinkdiff_core.testing.tiny import write_tiny_blip2  # noqa: E402
from thinkdiff_core.vision import VisionEncoder  # noqa: E402


def median_seconds(runs: dict, repeats: int) -> dict[str, float]:
    """Median wall time of each run, the runs interleaved so load from other processes hits both alike."""
    times: dict[str, list[float]] = {name: [] for name in runs}
    for name, run in runs.items():
        run()  # warm-up
    for _ in range(repeats):
        for name, run in runs.items():
            start = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--images", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--image-size", type=int, nargs=2, default=(1024, 768), metavar=("WIDTH", "HEIGHT"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    width, height = args.image_size
    images = [Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)) for _ in range(args.images)]
    with tempfile.TemporaryDirectory() as root:
        folder = write_tiny_blip2(Path(root) / "blip2", vision_width=args.width, vision_layers=args.layers)
        encoder = VisionEncoder.from_pretrained(folder, dtype="fp32", device="cpu")
        timings = median_seconds({"batched": lambda: encoder.encode(images),
                                  "one_by_one": lambda: [encoder.encode([image]) for image in images]}, args.repeats)
        pixels = encoder.preprocess(images)
        with torch.no_grad():
            forward = median_seconds({"batched": lambda: encoder.model(pixel_values=pixels),
                                      "one_by_one": lambda: [encoder.model(pixel_values=p[None]) for p in pixels]},
                                     args.repeats)
        same = torch.allclose(encoder.encode(images).features,
                              torch.cat([encoder.encode([image]).features for image in images], dim=1), atol=1e-4)
    print(f"tower: width {args.width}, {args.layers} layers, 224 px / patch 14, {encoder.tokens_per_image} tokens per image; "
          f"inputs {width}x{height}, torch threads 1")
    for name, figures in (("encode", timings), ("forward", forward)):
        print(f"clip_{name}_batched_{args.images}_images_ms: {figures['batched'] * 1000:.1f}")
        print(f"clip_{name}_one_at_a_time_{args.images}_images_ms: {figures['one_by_one'] * 1000:.1f}")
    for name, figures in (("encode", timings), ("forward", forward)):
        print(f"clip_{name}_batch_speedup: {figures['one_by_one'] / figures['batched']:.2f}")
    print(f"clip_encode_same_tokens: {same}")


if __name__ == "__main__":
    main()
