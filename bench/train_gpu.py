"""ThinkDiff-LVLM training at the paper's size on one GPU: samples/s and peak memory.

Random weights in the real shapes: a Flan-T5-XXL decoder (24 layers, d_model 4096, bf16, frozen,
encoder deleted as in training), a 3584 -> 4096 aligner (Qwen2-VL-7B features), batch 32 per GPU,
split points uniform in [1, 128], 64-128 target tokens, bf16 autocast, the real `train_step`.
Also times a bare forward+backward of the same decoder on the same batch (the irreducible work).
The paper reports 5 hours on 4 A100 for the LVLM aligner; multiply samples/s by the GPU count for
the data-parallel rate.

    python bench/train_gpu.py            # one CUDA GPU, ~40 GB
    python bench/train_gpu.py --tiny     # the same script at toy size on a CPU (checks that it runs)
"""

from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path

import torch
from accelerate import Accelerator

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from train_setup import step_vs_bare  # noqa: E402

from train.config import OptimOptions  # noqa: E402
from train.decoder import ProxyDecoder, new_aligner  # noqa: E402
from train.optim import make_optimizer  # noqa: E402
from train.recipe import IGNORE_INDEX  # noqa: E402

FLAN_T5_XXL = dict(vocab_size=32128, d_model=4096, d_kv=64, d_ff=10240, num_decoder_layers=24, num_heads=64,
                   dropout_rate=0.1)
TINY = dict(vocab_size=512, d_model=64, d_kv=16, d_ff=128, num_decoder_layers=2, num_heads=4, dropout_rate=0.1)


def random_decoder(shape: dict, device: torch.device, dtype: torch.dtype) -> ProxyDecoder:
    """A Flan-T5-shaped model with random weights; its encoder (one layer here) is deleted as in training."""
    from transformers import T5Config, T5ForConditionalGeneration

    config = T5Config(**shape, num_layers=1, feed_forward_proj="gated-gelu", tie_word_embeddings=False,
                      pad_token_id=0, eos_token_id=1, decoder_start_token_id=0)
    with torch.device(device):
        model = T5ForConditionalGeneration._from_config(config, dtype=dtype)
    norm = model.encoder.final_layer_norm.weight.detach().float().clone()
    del model.encoder
    model.requires_grad_(False).train()
    return ProxyDecoder(model, None, "random-flan-t5-xxl-shapes", norm, uses_dropout=True)


def random_batch(batch_size: int, hidden: int, vocab: int, rng: random.Random) -> dict:
    splits = [rng.randint(1, 128) for _ in range(batch_size)]
    lengths = [rng.randint(64, 128) for _ in range(batch_size)]
    features = torch.randn(batch_size, max(splits), hidden).to(torch.bfloat16)
    labels = torch.full((batch_size, max(lengths)), IGNORE_INDEX)
    for row, length in enumerate(lengths):
        labels[row, :length] = torch.randint(2, vocab, (length,))
        labels[row, length - 1] = 1  # </s>
    return {"features": features, "labels": labels, "splits": splits, "targets": [], "keys": []}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="toy sizes on the CPU")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=10, help="timed steps per side")
    args = parser.parse_args()
    cuda = torch.cuda.is_available() and not args.tiny
    if not cuda and not args.tiny:
        sys.exit("No CUDA GPU: run on a GPU, or pass --tiny to check the script on a CPU.")
    device = torch.device("cuda" if cuda else "cpu")
    if not cuda:
        torch.set_num_threads(1)
    shape, hidden = (FLAN_T5_XXL, 3584) if not args.tiny else (TINY, 48)
    decoder = random_decoder(shape, device, torch.bfloat16 if cuda else torch.float32)
    accelerator = Accelerator(cpu=not cuda, mixed_precision="bf16" if cuda else "no")
    aligner = new_aligner(hidden, decoder, seed=0).to(device)
    options = OptimOptions()  # the reference optimiser
    optimizer = make_optimizer(aligner, options)
    aligner = accelerator.prepare(aligner)
    rng = random.Random(0)
    batches = [random_batch(args.batch_size, hidden, shape["vocab_size"], rng) for _ in range(args.steps)]
    step_s, bare_s, ratio = step_vs_bare(accelerator, aligner, decoder, optimizer, options, batches, repeats=3)
    parameters = sum(p.numel() for p in decoder.model.parameters())
    name = torch.cuda.get_device_name() if cuda else "CPU (--tiny)"
    print(f"device: {name}; decoder {parameters / 1e9:.2f} B parameters ({'Flan-T5-XXL' if not args.tiny else 'toy'} "
          f"shapes, random), features {hidden}-d, batch {args.batch_size}, {'bf16 autocast' if cuda else 'fp32'}")
    print(f"train_step_s: {step_s:.4f}")
    print(f"bare_decoder_forward_backward_s: {bare_s:.4f}")
    print(f"train_step_over_bare: {ratio:.3f}")
    print(f"train_samples_per_s: {args.batch_size / step_s:.1f}")
    if cuda:
        print(f"peak_memory_gib: {torch.cuda.max_memory_allocated() / 2**30:.1f}")
        print(f"hours_per_million_samples_4_gpus: {1e6 / (4 * args.batch_size / step_s) / 3600:.2f}")


if __name__ == "__main__":
    main()
