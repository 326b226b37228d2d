"""Training step vs the irreducible work: a bare forward+backward of the same frozen decoder, same batch.

The training step adds the aligner (forward, backward), the learning-rate update and the AdamW step
to the decoder's forward and backward (the reference's options: no gradient clipping; --clip adds
it). Both sides run on identical batches built by the real LVLM batch builder, timed interleaved so
machine-load drift hits both alike.

    python bench/train_step.py                   # tiny Flan-T5 (d_model 64), CPU, batch 32
    python bench/train_step.py --d-model 512     # a wider tiny decoder
"""

from __future__ import annotations

import argparse
import random
import tempfile
from pathlib import Path

import torch
from accelerate import Accelerator

from train_setup import step_vs_bare, tiny_world

from train.config import OptimOptions
from train.data import decode_feature_sample, expand_shards, tar_samples
from train.decoder import load_decoder, new_aligner
from train.variants import vlm_tokenizer_for
from train.optim import make_optimizer
from train.recipe import LvlmBatches


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--d-model", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--clip", type=float, default=None, help="also clip the gradient norm to this")
    args = parser.parse_args()
    torch.set_num_threads(1)
    world = tiny_world(Path(tempfile.mkdtemp()), images=256, d_model=args.d_model)
    decoder = load_decoder(str(world["t5"]), dtype="fp32")
    builder = LvlmBatches(vlm_tokenizer_for(str(world["features"]), None), decoder.tokenizer, 128, 128)
    samples = [decode_feature_sample(r) for s in expand_shards(str(world["features"])) for r in tar_samples(s)]
    rng = random.Random(0)
    batches = [builder(samples[i:i + args.batch_size], rng) for i in range(0, len(samples), args.batch_size)]
    hidden = batches[0]["features"].shape[-1]

    accelerator = Accelerator(cpu=True)
    aligner = new_aligner(hidden, decoder, seed=0)
    options = OptimOptions(warmup_steps=10, max_steps=10_000, max_grad_norm=args.clip)
    optimizer = make_optimizer(aligner, options)
    aligner = accelerator.prepare(aligner)
    step_s, bare_s, ratio = step_vs_bare(accelerator, aligner, decoder, optimizer, options, batches, args.repeats)
    step_ms, bare_ms = step_s * 1e3, bare_s * 1e3
    print(f"setup: tiny Flan-T5 d_model {args.d_model}, features {hidden}-d, batch {args.batch_size}, CPU, 1 thread, "
          f"gradient clipping {args.clip}")
    print(f"bare_decoder_forward_backward_ms: {bare_ms:.2f}")
    print(f"train_step_ms: {step_ms:.2f}")
    print(f"train_step_over_bare: {ratio:.3f}")
    print(f"train_samples_per_s: {args.batch_size / step_ms * 1e3:.0f}")
    print(f"bare_samples_per_s: {args.batch_size / bare_ms * 1e3:.0f}")


if __name__ == "__main__":
    main()
