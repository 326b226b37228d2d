"""`python -m train.precompute`: the VLM's generated-token features for every training image, in shards.

    python -m train.precompute --vlm Qwen/Qwen2-VL-7B-Instruct --images "cc_sbu/{00000..01255}.tar" --output features/
    torchrun --nproc-per-node 8 -m train.precompute --config precompute.yaml      # one slice per rank

For each image the VLM is asked one of the reference's 16 brief instructions (picked at random per
image) and samples an answer (temperature 0.6, top_p 0.9, up to 256 tokens). The final-norm state
of every generated token (the state that produced it) is stored in bf16 with the token ids and the
text: that is all `train.align` needs, so the VLM runs once per image, not once per epoch.
`--features input|both` (the paper's ablations) also stores the final-norm states of each image's
prompt tokens; the manifest records the choice and `train.align` gives the aligner what it names.

Work is cut into units: one per input tar shard, or one per `folder_chunk` images of a folder. Unit
i becomes `output/{i:06d}.tar` (plus `{i:06d}.stats.json`), written under a temporary name and
renamed when complete; rank r of n does the units i with i % n == r and skips those already done,
so a killed run resumes where it stopped. Unreadable images are skipped and counted.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import random
import shutil
import sys
import time
import zlib
from pathlib import Path

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch
import webdataset as wds
from tqdm.auto import tqdm

from thinkdiff_core.cli import ShowsDefaults
from thinkdiff_core.devices import DTYPES
from thinkdiff_core.files import write_atomic
from thinkdiff_core.prompts import Prompt
from thinkdiff_core.variants import FEATURE_SOURCES
from thinkdiff_core.tokens import LVLM_RECIPE
from thinkdiff_core.vlm import GenerationSettings, UnusableImage, VisionLanguageModel

from . import config as cfg
from .data import (FEATURE_FORMAT, MANIFEST, UNREADABLE, VLM_TOKENIZER_DIR, ImageUnit, encode_feature_sample,
                   image_units)

BRIEF_INSTRUCTIONS = [
    "Describe the image concisely.",
    "Provide a brief description of the given image.",
    "Offer a succinct explanation of the picture presented.",
    "Summarize the visual content of the image.",
    "Give a short and clear explanation of the subsequent image.",
    "Share a concise interpretation of the image provided.",
    "Present a compact description of the photo's key features.",
    "Relay a brief, clear account of the picture shown.",
    "Render a clear and concise summary of the photo.",
    "Write a terse but informative summary of the picture.",
    "Create a compact narrative representing the image presented.",
    "Generate a prompt that can recreate the image in a 2D diffusion model.",
    "Provide a descriptive prompt to reproduce the given image using a diffusion model.",
    "Create a prompt suitable for a 2D diffusion model to generate the same image.",
    "Summarize the visual details as a prompt for a 2D diffusion model.",
    "Write a clear prompt to guide a 2D diffusion model in recreating the image.",
]
"""The reference's brief instructions for the training-data answers (16, one drawn per image)."""

@dataclasses.dataclass
class PrecomputeConfig:
    """Everything `python -m train.precompute` reads."""

    vlm: str = cfg.option("Qwen/Qwen2-VL-7B-Instruct", "VLM folder or Hub id (Qwen2-VL, Qwen2.5-VL, Qwen3-VL)")
    images: str = cfg.option("", "image source: tar shards in the CC-SBU/LAION layout (folder, brace pattern or "
                                 "comma-separated list), or a folder of images with captions.jsonl")
    output: str = cfg.option("", "folder for the feature shards, their stats and manifest.json")
    dtype: str = cfg.option("auto", "VLM dtype: auto (bf16 on CUDA, fp32 on CPU), bf16, fp16, fp32")
    device: str | None = cfg.option(None, "device; null: cuda:LOCAL_RANK when CUDA is available, else cpu")
    trust_remote_code: bool = cfg.option(False, "allow the VLM folder's own Python code (off unless you trust it)")
    batch_size: int = cfg.option(8, "images per batched generate call")
    folder_chunk: int = cfg.option(1000, "images per output shard when the source is a folder")
    seed: int = cfg.option(42, "seed of the instruction choice and of the sampling (per batch)", minimum=0)
    temperature: float = cfg.option(0.6, "sampling temperature (the reference: 0.6; 0 = greedy)")
    top_p: float = cfg.option(0.9, "nucleus sampling top_p (the reference: 0.9)")
    max_new_tokens: int = cfg.option(256, "most tokens generated per image (the reference: 256)")
    min_new_tokens: int = cfg.option(1, "fewest tokens generated per image (the reference: 1)", minimum=0)
    feature_dtype: str = cfg.option("bf16", "stored feature dtype", choices=DTYPES)
    features: str = cfg.option("generated", "what the aligner will see: generated (the generated tokens' states, the "
                                            "paper), input (the prompt tokens' states: the paper's ablation, 0.016 on "
                                            "CoBSAT 2-shot) or both (prompt, then generated)", choices=FEATURE_SOURCES)
    instructions: list[str] = cfg.option(BRIEF_INSTRUCTIONS, "instructions, one drawn per image (default: the "
                                                             "reference's 16)")
    limit: int | None = cfg.option(None, "at most this many images per rank and run (smoke runs); the unit reaching "
                                         "it ends short")
    rank: int | None = cfg.option(None, "this process's slice; null: $RANK (set by torchrun / accelerate launch) or 0", minimum=0)
    world_size: int | None = cfg.option(None, "number of slices; null: $WORLD_SIZE or 1")


MANIFEST_KEYS = ("vlm", "images", "batch_size", "folder_chunk", "seed", "temperature", "top_p", "max_new_tokens",
                 "min_new_tokens", "feature_dtype", "features", "instructions", "limit")
"""Settings that decide the shard contents: a resumed run must use the same ones."""


def batch_seed(seed: int, unit: int, batch: int) -> int:
    return zlib.crc32(f"{seed}:{unit}:{batch}".encode())


def _manifest(config: PrecomputeConfig, vlm: VisionLanguageModel) -> dict:
    return {"format": FEATURE_FORMAT, "version": 1, "token_recipe": LVLM_RECIPE, "source_model_id": vlm.model_id,
            "hidden_size": vlm.hidden_size, "settings": {k: getattr(config, k) for k in MANIFEST_KEYS},
            "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "tool": "python -m train.precompute"}


def _claim_output(folder: Path, manifest: dict) -> None:
    """Write the manifest, or check that the existing one describes the same settings."""
    path = folder / MANIFEST
    if not path.is_file():
        try:
            write_atomic(path, lambda temporary: temporary.write_text(json.dumps(manifest, indent=2)))
            return
        except FileExistsError:
            pass  # another rank wrote it first: check it like any existing manifest
    existing = json.loads(path.read_text())
    before, now = existing.get("settings", {}), manifest["settings"]
    changed = [f"{k}: {before.get(k)!r} -> {now[k]!r}" for k in now if before.get(k) != now[k]]
    if existing.get("source_model_id") != manifest["source_model_id"]:
        changed.append(f"VLM: {existing.get('source_model_id')} -> {manifest['source_model_id']}")
    if changed:
        raise ValueError(f"{folder} holds features made with other settings ({'; '.join(changed)}). Resume with the "
                         f"same settings, or write to another --output folder.")


def _save_tokenizer(vlm: VisionLanguageModel, folder: Path) -> None:
    """A copy of the VLM tokenizer beside the features: training decodes token ids without the VLM."""
    target = folder / VLM_TOKENIZER_DIR
    if target.is_dir():
        return
    temporary = folder / f".{VLM_TOKENIZER_DIR}.tmp-{os.getpid()}"
    vlm.tokenizer.save_pretrained(temporary)
    try:
        os.replace(temporary, target)
    except OSError:  # another rank got there first
        shutil.rmtree(temporary, ignore_errors=True)


def _process_unit(vlm: VisionLanguageModel, unit: ImageUnit, config: PrecomputeConfig, folder: Path,
                  budget: int | None, progress: tqdm) -> dict:
    """Generate for every readable image of one unit and write its shard; returns the unit's stats."""
    settings = dict(temperature=config.temperature, top_p=config.top_p, max_new_tokens=config.max_new_tokens,
                    min_new_tokens=config.min_new_tokens)
    dtype = DTYPES[config.feature_dtype]
    written, skipped, tokens, pending, batch_index = 0, [], 0, [], 0

    def flush(writer: wds.TarWriter) -> None:
        nonlocal written, tokens, batch_index, pending
        rng = random.Random(f"{config.seed}:{unit.index}:{batch_index}")
        instructions = [rng.choice(config.instructions) for _ in pending]
        seed = batch_seed(config.seed, unit.index, batch_index)
        keep_prompt = config.features != "generated"
        try:
            prompts = [Prompt([image, text], vision_ids=False) for (_, image), text in zip(pending, instructions)]
            out = vlm.generate(prompts, GenerationSettings(seed=seed, **settings), prompt_features=keep_prompt)
        except UnusableImage:  # e.g. a 300:1 panorama: skipped and counted like unreadable images, the rest kept
            problems = [vlm.image_problem(image) for _, image in pending]
            skipped.extend(f"{record.key}: {problem}" for (record, _), problem in zip(pending, problems) if problem)
            kept = [i for i, problem in enumerate(problems) if not problem]
            pending, instructions = [pending[i] for i in kept], [instructions[i] for i in kept]
            if not pending:
                batch_index += 1
                return
            prompts = [Prompt([image, text], vision_ids=False) for (_, image), text in zip(pending, instructions)]
            out = vlm.generate(prompts, GenerationSettings(seed=seed, **settings), prompt_features=keep_prompt)
        for row, ((record, _), instruction) in enumerate(zip(pending, instructions)):
            length = out.lengths[row]
            meta = {"source": unit.name, "source_key": record.key, "instruction": instruction, "text": out.texts[row],
                    "seed": seed, "batch": batch_index, "row": row, "caption": record.caption}
            prompt = out.prompt_features[row].to(dtype) if out.prompt_features else None
            writer.write(encode_feature_sample(f"{unit.index:06d}-{written:06d}", out.features[row, :length].to(dtype),
                                               out.token_ids[row, :length], meta, prompt))
            written, tokens = written + 1, tokens + length
        progress.update(len(pending))
        pending, batch_index = [], batch_index + 1

    stats: dict = {}

    def write_shard(temporary: Path) -> None:
        """The shard under a temporary name; its stats are written before the rename marks it done."""
        nonlocal skipped
        with wds.TarWriter(str(temporary)) as writer:
            for record in unit.records():
                if budget is not None and written + len(pending) >= budget:
                    break
                try:
                    pending.append((record, record.read()))
                except UNREADABLE as error:
                    skipped.append(f"{record.key}: {error}")
                    continue
                if len(pending) == config.batch_size:
                    flush(writer)
            if pending:
                flush(writer)
        skipped += unit.errors
        stats.update(unit=unit.index, source=unit.name, samples=written, generated_tokens=tokens, skipped=len(skipped),
                     skipped_details=skipped[:100])
        write_atomic(folder / f"{unit.index:06d}.stats.json", lambda t: t.write_text(json.dumps(stats, indent=2)),
                     overwrite=True)

    write_atomic(folder / f"{unit.index:06d}.tar", write_shard, overwrite=True)
    return stats


def run(config: PrecomputeConfig) -> dict:
    """Precompute this rank's units; returns totals (done, skipped units, images/s, unreadable images)."""
    if not config.images or not config.output:
        raise ValueError("give --images (tar shards or an image folder) and --output (a folder for the features).")
    if config.batch_size < 1 or not config.instructions:
        raise ValueError("batch_size must be at least 1 and instructions must not be empty.")
    rank = config.rank if config.rank is not None else int(os.environ.get("RANK", 0))
    world = config.world_size if config.world_size is not None else int(os.environ.get("WORLD_SIZE", 1))
    if not 0 <= rank < world:
        raise ValueError(f"rank {rank} is outside 0..{world - 1}.")
    device = config.device or (f"cuda:{os.environ.get('LOCAL_RANK', 0)}" if torch.cuda.is_available() else "cpu")
    units = image_units(config.images, config.folder_chunk)
    mine = [u for u in units if u.index % world == rank]
    folder = Path(config.output).expanduser()
    todo = [u for u in mine if not (folder / f"{u.index:06d}.tar").is_file()]
    summary = {"rank": rank, "units": len(mine), "already_done": len(mine) - len(todo), "done": 0, "images": 0,
               "unreadable": 0, "seconds": 0.0}
    if not todo:
        print(f"rank {rank}: all {len(mine)} units already done in {folder}")
        return summary
    vlm = VisionLanguageModel.from_pretrained(config.vlm, dtype=config.dtype, device=device,
                                              trust_remote_code=config.trust_remote_code)
    folder.mkdir(parents=True, exist_ok=True)
    _claim_output(folder, _manifest(config, vlm))
    _save_tokenizer(vlm, folder)
    print(f"rank {rank}/{world}: {len(todo)} of {len(mine)} units to do ({summary['already_done']} already done)")
    started = time.perf_counter()
    with tqdm(desc=f"precompute rank {rank}", unit="img", position=rank, dynamic_ncols=True) as progress:
        for unit in todo:
            budget = None if config.limit is None else config.limit - summary["images"]
            if budget is not None and budget <= 0:
                break
            stats = _process_unit(vlm, unit, config, folder, budget, progress)
            summary["done"] += 1
            summary["images"] += stats["samples"]
            summary["unreadable"] += stats["skipped"]
    summary["seconds"] = time.perf_counter() - started
    summary["images_per_s"] = summary["images"] / max(summary["seconds"], 1e-9)
    return summary


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m train.precompute", description=__doc__.split("\n\n")[0],
                                     formatter_class=ShowsDefaults)
    cfg.add_arguments(parser, PrecomputeConfig)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return cfg.run_tool(lambda: json.dumps(run(cfg.resolve(PrecomputeConfig, args)), indent=2))


if __name__ == "__main__":
    sys.exit(main())
