"""Batched vs one-at-a-time generation of 8 CoBSAT prompts through ThinkDiffPipeline (tiny models).

    python bench/pipeline_batch.py [--prompts 8] [--repeats 3] [--threads 1]

Both sides run the same 8 Color-I 2-shot prompts (a synthetic CoBSAT folder) with the reference
generation settings (128 new tokens, min = max; 28 FLUX steps) at the tiny models' 64x64: one call
with a batch of 8 (one VLM batch, one FLUX batch) against 8 calls of one. Best of `--repeats`,
interleaved.
The last lines are `name: value` rows.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from thinkdiff_core.pipeline import ThinkDiffPipeline  # noqa: E402
from thinkdiff_core.testing.tiny_pipeline import write_tiny_thinkdiff  # noqa: E402
from thinkdiff_core.vlm import GenerationSettings  # noqa: E402
from train.cobsat.harness import request_for  # noqa: E402
from train.cobsat.tasks import build_cases, write_synthetic_dataset  # noqa: E402


def best_times(runs: dict, repeats: int) -> dict[str, float]:
    """Best of `repeats` for each, the runs interleaved so that machine load drifts hit both alike."""
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(repeats):
        for name, run in runs.items():
            start = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - start)
    return {name: min(values) for name, values in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory() as workdir:
        root = Path(workdir)
        cobsat = write_synthetic_dataset(root / "cobsat", num_prompts=args.prompts)
        requests = [request_for(case) for case in build_cases(cobsat, [1], [2], args.prompts)]
        paths = write_tiny_thinkdiff(root / "models")
        pipeline = ThinkDiffPipeline.from_pretrained(paths["flux"], paths["aligner"], paths["vlm"], dtype="fp32",
                                                     device="cpu")
        settings = GenerationSettings(seed=0)  # reference: temperature 0.6, top-p 0.9, 128 new tokens (min = max)
        common = dict(height=64, width=64, num_inference_steps=28, progress=False)
        seeds = list(range(len(requests)))

        def batched():
            pipeline(requests, settings, image_seeds=seeds, **common)

        def one_at_a_time():
            for request, seed in zip(requests, seeds):
                pipeline(request, settings, image_seeds=[seed], **common)

        pipeline(requests[:2], settings, image_seeds=seeds[:2], **common)  # warm-up
        best = best_times({"separate": one_at_a_time, "together": batched}, args.repeats)
        separate, together = best["separate"], best["together"]

    print(f"prompts: {len(requests)}")
    print(f"torch_threads: {args.threads}")
    print(f"one_at_a_time_s: {separate:.3f}")
    print(f"batched_s: {together:.3f}")
    print(f"batched_speedup: {separate / together:.2f}")


if __name__ == "__main__":
    main()
