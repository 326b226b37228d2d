"""`python -m train.evaluate`: held-out proxy metrics of an aligner.

The proxy is the training objective itself, measured on samples the aligner never trained on:
- loss: token-mean cross-entropy of the target text given the aligned features;
- token_accuracy: the decoder's teacher-forced next-token argmax equals the target token;
- exact_match: the greedy decode equals the whole target text;
plus a few greedy decodes printed next to their targets. Split points come from a fixed seed, so
two aligners (or two checkpoints of one run) are measured on exactly the same inputs.
"""

from __future__ import annotations

import argparse
import dataclasses
import random
import sys
from collections.abc import Callable
from contextlib import nullcontext

import torch
from transformers import AutoTokenizer

from thinkdiff_core.checkpoint import load_aligner

from . import config as cfg
from .data import VLM_TOKENIZER_DIR, FeatureSample, decode_feature_sample, expand_shards, read_manifest, tar_samples
from .decoder import ProxyDecoder, decoder_loss, greedy_decode, inference_mode, load_decoder, new_aligner
from .recipe import IGNORE_INDEX, LvlmBatches, feature_mask


@dataclasses.dataclass
class ProxyMetrics:
    loss: float
    token_accuracy: float
    exact_match: float
    samples: int
    examples: list[tuple[str, str, str]]  # (text the aligner saw, target, greedy decode)

    def rows(self, prefix: str = "") -> list[str]:
        return [f"{prefix}loss: {self.loss:.4f}", f"{prefix}token_accuracy: {self.token_accuracy:.4f}",
                f"{prefix}exact_match: {self.exact_match:.4f}", f"{prefix}samples: {self.samples}"]


def held_out_batches(spec: str, batches: LvlmBatches, batch_size: int, limit: int, seed: int = 0) -> list[dict]:
    """The first `limit` usable held-out samples, split with a fixed seed, in fixed batches."""
    batches = dataclasses.replace(batches, keep_prefix=True)
    samples: list[FeatureSample] = []
    for shard in expand_shards(spec, "held-out features"):
        for raw in tar_samples(shard):
            sample = decode_feature_sample(raw)
            if batches.usable(sample):
                samples.append(sample)
            if len(samples) >= limit:
                break
        if len(samples) >= limit:
            break
    if not samples:
        raise ValueError(f"No usable held-out samples in {spec} (each needs at least 2 generated tokens).")
    rng = random.Random(f"{seed}:held-out")
    return [batches(samples[i:i + batch_size], rng) for i in range(0, len(samples), batch_size)]


@torch.no_grad()
def evaluate(aligner: torch.nn.Module, decoder: ProxyDecoder, eval_batches: list[dict], device: torch.device,
             show: int = 4, autocast: Callable[[], object] = nullcontext) -> ProxyMetrics:
    """Proxy metrics of `aligner` over `eval_batches` (the decoder's dropout off while measuring)."""
    tokenizer = decoder.tokenizer
    total_loss = correct = tokens = exact = count = 0
    examples: list[tuple[str, str, str]] = []
    was_training = aligner.training
    aligner.eval()
    with inference_mode(decoder), autocast():
        for batch in eval_batches:
            features = batch["features"].to(device=device, dtype=next(aligner.parameters()).dtype)
            labels = batch["labels"].to(device)
            loss, logits = decoder_loss(decoder.model, aligner(features), feature_mask(batch, device), labels)
            real = labels != IGNORE_INDEX
            total_loss += loss.float().item() * real.sum().item()
            correct += ((logits.argmax(-1) == labels) & real).sum().item()
            tokens += real.sum().item()
            decoded = greedy_decode(aligner, decoder, batch, device, max_new_tokens=labels.shape[1])
            for row, text in enumerate(decoded):
                target = tokenizer.decode(labels[row][real[row]], skip_special_tokens=True)
                exact += text.strip() == target.strip()
                if len(examples) < show:
                    examples.append((batch["prefixes"][row] if "prefixes" in batch else "", target, text))
            count += len(decoded)
    aligner.train(was_training)
    return ProxyMetrics(total_loss / max(tokens, 1), correct / max(tokens, 1), exact / max(count, 1), count, examples)


def format_examples(examples: list[tuple[str, str, str]], width: int = 40) -> list[str]:
    """One line per example: what the aligner saw, the target continuation, the greedy decode (= if equal)."""
    lines = [f"  {'aligner saw (tokens [:s])':<{width}} | {'target (text of [s:])':<{width}} | greedy decode"]
    for seen, target, decoded in examples:
        mark = "=" if target.strip() == decoded.strip() else "x"
        lines.append(f"{mark} {seen[-width:]:<{width}} | {target[:width]:<{width}} | {decoded[:width]}")
    return lines


def vlm_tokenizer_for(spec: str, override: str | None):
    """The tokenizer that decodes stored token ids: `override`, else the copy saved beside the features."""
    if override:
        return AutoTokenizer.from_pretrained(override)
    return AutoTokenizer.from_pretrained(f"{read_manifest(spec)['folder']}/{VLM_TOKENIZER_DIR}")


@dataclasses.dataclass
class EvalConfig:
    """Everything `python -m train.evaluate` reads."""

    aligner: str = cfg.option("", "aligner file (.safetensors or official .pth), or 'untrained' for a fresh one")
    decoder: str = cfg.option("google/flan-t5-xxl", "T5 / Flan-T5 folder or Hub id (the proxy the aligner trained with)")
    data: str = cfg.option("", "held-out feature shards (folder, brace pattern or comma-separated list)")
    vlm_tokenizer: str | None = cfg.option(None, "tokenizer for the stored token ids; null: the copy beside the features")
    decoder_dtype: str = cfg.option("auto", "auto (bf16 on CUDA, fp32 elsewhere), bf16, fp16, fp32")
    device: str | None = cfg.option(None, "cuda, cpu, ...; null: CUDA when available")
    batch_size: int = cfg.option(32, "samples per forward")
    samples: int = cfg.option(256, "held-out samples measured")
    max_split: int = cfg.option(128, "largest split point (as in training)")
    max_target_tokens: int = cfg.option(128, "T5 tokens of each target (as in training)")
    seed: int = cfg.option(0, "seed of the held-out split points (and of an 'untrained' aligner)")
    show: int = cfg.option(8, "greedy decodes printed next to their targets")


def run(config: EvalConfig) -> ProxyMetrics:
    device = torch.device(config.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    decoder = load_decoder(config.decoder, dtype=config.decoder_dtype, device=device)
    batches = LvlmBatches(vlm_tokenizer_for(config.data, config.vlm_tokenizer), decoder.tokenizer, config.max_split,
                          config.max_target_tokens)
    eval_batches = held_out_batches(config.data, batches, config.batch_size, config.samples, config.seed)
    hidden = eval_batches[0]["features"].shape[-1]
    if config.aligner == "untrained":
        aligner = new_aligner(hidden, decoder, config.seed)
    else:
        aligner = load_aligner(config.aligner, dtype=torch.float32).module
    aligner.to(device)
    if aligner.input_size != hidden or aligner.output_size != decoder.hidden_size:
        raise ValueError(f"The aligner maps {aligner.input_size} -> {aligner.output_size} but the features have "
                         f"{hidden} and the decoder reads {decoder.hidden_size}; evaluate it with the VLM features and "
                         f"the decoder it was trained for.")
    amp = device.type == "cuda" and decoder.dtype == torch.bfloat16
    return evaluate(aligner, decoder, eval_batches, device, config.show,
                    autocast=lambda: torch.autocast(device.type, dtype=torch.bfloat16) if amp else nullcontext())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m train.evaluate", description=__doc__.split("\n\n")[0])
    cfg.add_arguments(parser, EvalConfig)
    args = parser.parse_args(argv)

    def work() -> str:
        config = cfg.resolve(EvalConfig, args)
        if not config.aligner or not config.data:
            raise ValueError("give --aligner (a file or 'untrained') and --data (held-out feature shards).")
        metrics = run(config)
        return "\n".join(format_examples(metrics.examples) + metrics.rows())

    return cfg.run_tool(work)


if __name__ == "__main__":
    sys.exit(main())
