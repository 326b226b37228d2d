"""`python -m train.evaluate`: held-out proxy metrics of an aligner.

The proxy is the training objective itself, measured on samples the aligner never trained on:
- loss: token-mean cross-entropy of the target text given the aligned features;
- token_accuracy: the decoder's teacher-forced next-token argmax equals the target token;
- exact_match: the greedy decode equals the whole target text;
- content_accuracy (when given the content words, as the demo does): of the target's words that are
  content words (a colour, a shape), the share the greedy decode has at the same word position; unlike
  the two above it cannot be met by the predictable endings ("on a plain background") alone;
plus a few greedy decodes printed next to their targets. Split points come from a fixed seed, so
two aligners (or two checkpoints of one run) are measured on exactly the same inputs.

LVLM aligners are measured on held-out feature shards; CLIP aligners on a held-out image-caption
source, with the BLIP-2 vision tower and the T5-encoded caption start, exactly as they trained.
"""

from __future__ import annotations

import argparse
import dataclasses
import random
import sys
from collections.abc import Callable
from contextlib import nullcontext

import torch

from thinkdiff_core.checkpoint import load_aligner
from thinkdiff_core.cli import ShowsDefaults
from thinkdiff_core.vision_files import BLIP2_HUB_ID
from thinkdiff_core.devices import compute_device

from . import config as cfg
from .decoder import (ProxyDecoder, decoder_loss, encoder_states, greedy_decode, inference_mode, new_aligner)
from .recipe import IGNORE_INDEX, ClipBatches, LvlmBatches
from .variants import training_variant


@dataclasses.dataclass
class ProxyMetrics:
    loss: float
    token_accuracy: float
    exact_match: float
    samples: int
    examples: list[tuple[str, str, str]]  # (text the aligner saw, target, greedy decode)
    content_accuracy: float | None = None  # None: no content words were given, or no target had one
    content_words: int = 0  # how many content words the targets held

    def rows(self, prefix: str = "") -> list[str]:
        return [f"{prefix}loss: {self.loss:.4f}", f"{prefix}token_accuracy: {self.token_accuracy:.4f}",
                f"{prefix}exact_match: {self.exact_match:.4f}", f"{prefix}samples: {self.samples}"]


def content_hits(target: str, text: str, words: frozenset[str]) -> tuple[int, int]:
    """(right, total) over the words of `target` that are in `words`: right where `text` has the same word
    at the same word position."""
    wanted, got = target.split(), text.split()
    positions = [i for i, word in enumerate(wanted) if word in words]
    return sum(i < len(got) and got[i] == wanted[i] for i in positions), len(positions)


def held_out_batches(spec: str, batches: LvlmBatches | ClipBatches, batch_size: int, limit: int,
                     seed: int = 0) -> list[dict]:
    """The first `limit` usable held-out samples, split with a fixed seed, in fixed batches."""
    batches = dataclasses.replace(batches, keep_prefix=True)
    samples: list = []
    for shard in batches.shards(spec, "held-out data"):
        for raw in batches.read(shard):
            sample = batches.decode(raw)
            if batches.usable(sample):
                samples.append(sample)
            if len(samples) >= limit:
                break
        if len(samples) >= limit:
            break
    if not samples:
        raise ValueError(f"No usable held-out samples in {spec} (LVLM: each needs at least 2 generated tokens; "
                         f"CLIP: a readable image with a caption).")
    rng = random.Random(f"{seed}:held-out")
    return [batches(samples[i:i + batch_size], rng) for i in range(0, len(samples), batch_size)]


@torch.no_grad()
def evaluate(aligner: torch.nn.Module, decoder: ProxyDecoder, eval_batches: list[dict], device: torch.device,
             show: int = 4, autocast: Callable[[], object] = nullcontext,
             content_words: frozenset[str] = frozenset()) -> ProxyMetrics:
    """Proxy metrics of `aligner` over `eval_batches` (the decoder's dropout off while measuring)."""
    tokenizer = decoder.tokenizer
    total_loss = correct = tokens = exact = count = content_right = content_total = 0
    examples: list[tuple[str, str, str]] = []
    was_training = aligner.training
    aligner.eval()
    with inference_mode(decoder), autocast():
        for batch in eval_batches:
            labels = batch["labels"].to(device)
            states, mask = encoder_states(aligner, decoder, batch, device)
            loss, logits = decoder_loss(decoder.model, states, mask, labels)
            real = labels != IGNORE_INDEX
            total_loss += loss.float().item() * real.sum().item()
            correct += ((logits.argmax(-1) == labels) & real).sum().item()
            tokens += real.sum().item()
            decoded = greedy_decode(decoder, states, mask, max_new_tokens=labels.shape[1])
            for row, text in enumerate(decoded):
                target = tokenizer.decode(labels[row][real[row]], skip_special_tokens=True)
                exact += text.strip() == target.strip()
                right, total = content_hits(target, text, content_words)
                content_right, content_total = content_right + right, content_total + total
                if len(examples) < show:
                    examples.append((batch["prefixes"][row] if "prefixes" in batch else "", target, text))
            count += len(decoded)
    aligner.train(was_training)
    return ProxyMetrics(total_loss / max(tokens, 1), correct / max(tokens, 1), exact / max(count, 1), count, examples,
                        content_right / content_total if content_total else None, content_total)


def format_examples(examples: list[tuple[str, str, str]], width: int = 40,
                    seen: str = LvlmBatches.SEEN) -> list[str]:
    """One line per example: what the proxy saw (`seen` names it), the target continuation, the greedy decode
    (= if equal)."""
    lines = [f"  {seen:<{width}} | {'target (text of [s:])':<{width}} | greedy decode"]
    for seen, target, decoded in examples:
        mark = "=" if target.strip() == decoded.strip() else "x"
        lines.append(f"{mark} {seen[-width:]:<{width}} | {target[:width]:<{width}} | {decoded[:width]}")
    return lines


@dataclasses.dataclass
class EvalConfig:
    """Everything `python -m train.evaluate` reads."""

    aligner: str = cfg.option("", "aligner file (.safetensors or official .pth), or 'untrained' for a fresh one")
    decoder: str = cfg.option("google/flan-t5-xxl", "T5 / Flan-T5 folder or Hub id (the proxy the aligner trained with)")
    data: str = cfg.option("", "held-out data: LVLM feature shards (folder, brace pattern or comma-separated list); "
                               "CLIP an image-caption source (tar shards, or a folder with captions.jsonl)")
    variant: str | None = cfg.option(None, "lvlm or clip; null: the aligner file's own (lvlm for 'untrained')")
    vision_encoder: str = cfg.option(BLIP2_HUB_ID, "CLIP: BLIP-2 folder, converted vision file or Hub id")
    vlm_tokenizer: str | None = cfg.option(None, "LVLM: tokenizer for the stored token ids; null: the copy beside "
                                                 "the features")
    decoder_dtype: str = cfg.option("auto", "auto (bf16 on CUDA, fp32 elsewhere), bf16, fp16, fp32; also the "
                                            "vision tower's")
    device: str | None = cfg.option(None, "cuda, cpu, ...; null: CUDA when available")
    batch_size: int = cfg.option(32, "samples per forward")
    samples: int = cfg.option(256, "held-out samples measured")
    max_split: int = cfg.option(128, "LVLM: largest split point (as in training)")
    masking: str = cfg.option("random", "LVLM: random or none (as in training)")
    features: str | None = cfg.option(None, "LVLM: generated, input or both (as in training); null: the features' "
                                            "recorded choice")
    max_prefix_tokens: int = cfg.option(32, "CLIP: T5 tokens of the caption start (as in training)")
    max_target_tokens: int | None = cfg.option(None, "T5 tokens of each target; null: the variant's reference "
                                                     "value (LVLM 128, CLIP 32)")
    seed: int = cfg.option(0, "seed of the held-out split points (and of an 'untrained' aligner)", minimum=0)
    show: int = cfg.option(8, "greedy decodes printed next to their targets", minimum=0)


def run(config: EvalConfig) -> tuple[ProxyMetrics, str]:
    """The held-out metrics of the configured aligner, and the variant it was measured as."""
    device = compute_device(config.device)
    loaded = None if config.aligner == "untrained" else load_aligner(config.aligner, dtype=torch.float32)
    variant = training_variant(config.variant or (loaded.info.variant if loaded else "lvlm"))
    if loaded and loaded.info.variant != variant.name:
        raise ValueError(f"{config.aligner} is a ThinkDiff-{loaded.info.variant.upper()} aligner but --variant is "
                         f"{variant.name}; leave --variant out to use the aligner's own.")
    decoder = variant.load_decoder(config.decoder, config.vision_encoder, dtype=config.decoder_dtype, device=device)
    batches = variant.batches(decoder, config.data, config.vlm_tokenizer, config.max_split, config.max_prefix_tokens,
                              config.max_target_tokens or variant.reference_target_tokens, config.features,
                              config.masking)
    eval_batches = held_out_batches(config.data, batches, config.batch_size, config.samples, config.seed)
    hidden = variant.input_size(decoder, eval_batches[0])
    aligner = loaded.module if loaded else new_aligner(hidden, decoder, config.seed)
    aligner.to(device)
    if aligner.input_size != hidden or aligner.output_size != decoder.hidden_size:
        raise ValueError(f"The aligner maps {aligner.input_size} -> {aligner.output_size} but the "
                         f"{variant.inputs} have {hidden} and the decoder reads "
                         f"{decoder.hidden_size}; evaluate it with the {variant.input_model} "
                         f"and the decoder it was trained for.")
    amp = device.type == "cuda" and decoder.dtype == torch.bfloat16
    metrics = evaluate(aligner, decoder, eval_batches, device, config.show,
                       autocast=lambda: torch.autocast(device.type, dtype=torch.bfloat16) if amp else nullcontext())
    return metrics, batches.SEEN


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m train.evaluate", description=__doc__.split("\n\n")[0],
                                     formatter_class=ShowsDefaults)
    cfg.add_arguments(parser, EvalConfig)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    def work() -> str:
        config = cfg.resolve(EvalConfig, args)
        if not config.aligner or not config.data:
            raise ValueError("give --aligner (a file or 'untrained') and --data (held-out feature shards, or for a "
                             "CLIP aligner held-out images with captions).")
        metrics, seen = run(config)
        return "\n".join(format_examples(metrics.examples, seen=seen) + metrics.rows())

    return cfg.run_tool(work)


if __name__ == "__main__":
    sys.exit(main())
