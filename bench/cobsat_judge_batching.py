"""CoBSAT judging of 16 images: one (image, question) per call, as the benchmark, vs batched calls.

The tiny LLaVA judge (`write_tiny_llava`: CLIP tower, Llama text model) judges the same 16 images with
both questions each through `LlavaJudge` at batch size 1 and at `--batch-size`; the rows give both
times, their ratio, and whether the answers are identical token for token (batched calls left-pad).
Run from the repo root: `python bench/cobsat_judge_batching.py [--batch-size 8 --max-new-tokens 8]`.
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

from tests.tiny_files import write_tiny_llava  # noqa: E402
from train.cobsat.judge import LlavaJudge, questions  # noqa: E402
from train.cobsat.tasks import TASKS, build_case, write_synthetic_dataset  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=8)
    parser.add_argument("--dtype", default="fp32", choices=["fp32", "fp16", "bf16"])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)) for _ in range(args.images)]
    with tempfile.TemporaryDirectory() as root:
        dataset = write_synthetic_dataset(Path(root) / "cobsat", num_prompts=1, size=8)
        entry = {"x_list": list(range(10)), "theta_list": list(range(10))}
        asked = questions(build_case(dataset / "datasets", TASKS[1], 2, 0, entry))
        single = LlavaJudge.from_pretrained(str(write_tiny_llava(Path(root) / "llava")), "llava-tiny",
                                            dtype=args.dtype, device="cpu", max_new_tokens=args.max_new_tokens)
        batched = LlavaJudge(single.model, single.processor, single.name, args.max_new_tokens, args.batch_size)
        pairs = [image for image in images for _ in range(2)], [asked["object"], asked["attribute"]] * args.images
        times: dict[str, list[float]] = {"single": [], "batched": []}
        answers = {}
        for _ in range(args.repeats):
            for name, judge in (("single", single), ("batched", batched)):
                start = time.perf_counter()
                answers[name] = judge.answer(*pairs)
                times[name].append(time.perf_counter() - start)
    single_s, batched_s = statistics.median(times["single"]), statistics.median(times["batched"])
    print(f"tiny LLaVA judge ({args.dtype}, CPU, torch threads 1): {args.images} images x 2 questions, "
          f"{args.max_new_tokens} new tokens, median of {args.repeats}")
    print(f"judge_one_per_call_{args.images}_images_s: {single_s:.3f}")
    print(f"judge_batched_{args.batch_size}_{args.images}_images_s: {batched_s:.3f}")
    print(f"judge_batched_speedup: {single_s / batched_s:.2f}")
    print(f"judge_batched_answers_identical: {answers['single'] == answers['batched']}")


if __name__ == "__main__":
    main()
