"""Does data loading starve the step? The fraction of training time spent waiting for the next batch.

Runs the real `train.align` loop (tiny Flan-T5, CPU, batch 32) on feature shards of a tiny random
Qwen2-VL, once with 2 DataLoader workers and once loading in the training process, and prints the
waiting fraction `train.align` itself measures (time inside `next(loader)` over the step loop).

    python bench/train_data_wait.py
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch

from train_setup import tiny_world

from train import config as cfg
from train.align import train
from train.config import TrainConfig


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--d-model", type=int, default=64, help="tiny T5 width (a wider one makes each step cost more)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    root = Path(tempfile.mkdtemp())
    world = tiny_world(root, images=512, d_model=args.d_model)
    results = {}
    for workers in (2, 0):
        config = cfg.from_dict(TrainConfig, {
            "model": {"decoder": str(world["t5"]), "decoder_dtype": "fp32"},
            "data": {"train": str(world["features"]), "batch_size": args.batch_size, "num_workers": workers,
                     "shuffle_buffer": 256, "max_target_tokens": 128},
            "optim": {"max_steps": args.steps, "warmup_steps": 10},
            "run": {"output_dir": str(root / f"run-{workers}"), "log_every": args.steps, "eval_every": 0,
                    "save_every": 0, "mixed_precision": "no"},
        })
        results[workers] = train(config)
    print(f"setup: tiny Flan-T5 d_model {args.d_model}, batch {args.batch_size}, {args.steps} steps, CPU ({torch.get_num_threads()} "
          f"torch thread; the workers share this machine's cores)")
    for workers, summary in results.items():
        print(f"data_wait_fraction_{workers}_workers: {summary['data_wait_fraction']:.3f}")
        print(f"data_wait_fraction_after_first_batch_{workers}_workers: "
              f"{summary['data_wait_fraction_after_first_batch']:.3f}")
        print(f"samples_per_s_{workers}_workers: {summary['samples_per_s']:.0f}")


if __name__ == "__main__":
    main()
