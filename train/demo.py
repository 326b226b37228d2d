"""`python -m train.demo`: the whole ThinkDiff-LVLM recipe on a CPU in a few minutes, offline.

    python -m train.demo                              # LVLM recipe, written under runs/demo-<time>/
    python -m train.demo --variant clip --output runs/my-demo
    python -m train.align --demo                      # the same, forwarded here

Real ThinkDiff starts from a pretrained VLM (Qwen2-VL) and a pretrained Flan-T5. Nothing can be
downloaded here, so the demo first makes small stand-ins that know something:
1. synthetic images (one coloured shape each) with captions ("a red star on a plain background");
2. a tiny random Qwen2-VL whose vision tower is first taught alone to name each picture's colour and
   shape (stand-in for a pretrained vision encoder), then, with the tower frozen, taught to answer the
   brief instructions with the caption (stand-in for Qwen2-VL's pretraining), with multi-token-prediction
   heads so that the state producing a word also holds the next ones, as a pretrained VLM's does;
3. a tiny Flan-T5-shaped model pre-trained to continue captions from an encoded prefix (stand-in
   for Flan-T5), whose frozen decoder is the proxy.
Then the real recipe, unchanged: `train.precompute` samples the VLM's answers (temperature 0.6,
top_p 0.9) and stores its generated-token features; `train.align` trains a fresh aligner with the
random split (features of tokens [:s] in, text of tokens [s:] out) against the frozen decoder;
`train.evaluate` measures both the untrained and the trained aligner on held-out images. The
targets are the VLM's own sampled answers, right or wrong, exactly as in the paper.

`--variant clip` (`train.align --demo --model.variant clip`) runs the ThinkDiff-CLIP recipe instead: no VLM and no precompute; a
tiny BLIP-2 vision tower with random weights (no stand-in can be pre-trained here) reads the images,
and the aligner learns to make the frozen decoder finish each caption from the image's tokens and
the T5-encoded caption start. A random tower keeps colours well and shapes poorly (the aligner maps
each token on its own; the tiny decoder would have to tell shapes from the patch layout).
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import random
import shlex
import sys
import tarfile
import time
from pathlib import Path

import torch

from thinkdiff_core.checkpoint import load_aligner
from thinkdiff_core.cli import ShowsDefaults, run_cli
from thinkdiff_core.prompts import Prompt
from thinkdiff_core.testing.synthetic import COLOURS, SHAPES, ShapeSample, all_captions, shape_samples, write_image_folder
from thinkdiff_core.testing.tiny import CORPUS, TINY_BLIP2_VISION_WIDTH, write_tiny_blip2, write_tiny_qwen_vl, write_tiny_t5
from thinkdiff_core.vlm import VisionLanguageModel

from . import config as cfg
from .align import train
from .config import TrainConfig
from .decoder import new_aligner
from .evaluate import ProxyMetrics, content_hits, evaluate, format_examples, held_out_batches
from .precompute import BRIEF_INSTRUCTIONS, PrecomputeConfig
from .precompute import run as precompute
from .variants import VARIANTS, ClipVariant, training_variant

TRAIN_IMAGES, HELD_OUT_IMAGES = 384, 96
IMAGE_SIZE = 56
"""LVLM pictures, pixels a side: the tiny VLM's smallest input (4 image tokens), about twice as fast to teach as
112 px (16 tokens). Taught end to end on captions alone (no tower teaching), the VLM's held-out shape answers stay
near chance at either size (greedy: 0.17 at 56 px, 0.26 at 112 px); its one-block vision tower taught alone with
a linear head names the held-out shapes (0.98 after 100 steps). The CLIP variant keeps 112 px (its tower reads
224 px)."""
VLM_STEPS, T5_STEPS = 250, 150  # VLM: sampled held-out shapes 0.57 at 200 steps, 0.93 at 250; T5: flat from ~100
VLM_LR = 6e-3  # with the tower taught first and frozen (200 steps: held-out greedy shapes 3e-3: 0.77, 6e-3: 0.82)
VISION_STEPS = 200  # the tiny vision tower taught alone first (see pretrain_vision_tower); ~5 s
LOOKAHEAD = 2  # extra heads of the VLM's teaching: tokens 2 and 3 ahead (see teach_vlm_to_caption)


CONTENT_WORDS = frozenset(COLOURS) | frozenset(SHAPES)
CHANCE = (1 / len(COLOURS) + 1 / len(SHAPES)) / 2  # a uniform guess of the colour and of the shape


def _progress(what: str, step: int, steps: int, loss: float) -> None:
    """A line every quarter of a stand-in's teaching, so the long stages are never silent."""
    if (step + 1) % max(steps // 4, 1) == 0 or step + 1 == steps:
        print(f"         {what}: step {step + 1}/{steps}, loss {loss:.3f}", flush=True)


def teach_vlm_to_caption(folder: Path, samples: list[ShapeSample], steps: int, seed: int = 0,
                         lookahead: int = LOOKAHEAD, lr: float = VLM_LR, vision_steps: int = VISION_STEPS) -> None:
    """Fine-tune the tiny VLM to answer any brief instruction with the image's caption.

    A pretrained VLM's state that produces a word already holds much of what follows (the paper relies on it:
    the aligner sees only the states of tokens [:s] yet the decoder must write tokens [s:]). A 2-layer model
    taught next-token prediction alone keeps only the next word there, so the state producing "a" would not
    know the colour and shape after it. Like multi-token prediction (Gloeckle et al., 2024), `lookahead`
    extra linear heads on the final-norm states also predict the tokens 1..lookahead further on; they push
    that knowledge into the states and are thrown away afterwards (the saved model is a plain Qwen2-VL).

    With `vision_steps`, the vision tower is first taught alone (`pretrain_vision_tower`) and then kept frozen.
    Taught only through the caption loss, the tower and the 2-layer model learn the colours but not the shapes
    (held-out greedy shape accuracy 0.17, chance); with the tower taught first and frozen, the demo's 250 steps at
    lr 6e-3 sample held-out shapes right 0.93 of the time at precompute's temperature 0.6 (200 steps: 0.57).
    """
    vlm = VisionLanguageModel.from_pretrained(folder, dtype="fp32", device="cpu")
    tokenizer, model = vlm.tokenizer, vlm.model
    end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    rng = random.Random(seed)
    rows = []
    for sample in samples:
        inputs = vlm.prepare([Prompt([sample.image, rng.choice(BRIEF_INSTRUCTIONS)], vision_ids=False)])
        answer = tokenizer(sample.caption, add_special_tokens=False)["input_ids"] + [end]
        rows.append((inputs, answer))
    torch.manual_seed(seed)
    if vision_steps:
        pretrain_vision_tower(vlm, rows, samples, vision_steps, rng, lr)
    heads = torch.nn.ModuleList(torch.nn.Linear(vlm.hidden_size, model.lm_head.out_features)
                                for _ in range(lookahead))
    states: list[torch.Tensor] = []
    handle = vlm.final_norm.register_forward_hook(lambda module, args, output: states.append(output))
    model.train().requires_grad_(True)
    if vision_steps:  # the caption teaching keeps the taught tower as it is (it unlearns the shapes otherwise)
        model.model.visual.requires_grad_(False)
    taught = [p for p in [*model.parameters(), *heads.parameters()] if p.requires_grad]
    optimizer = torch.optim.AdamW(taught, lr=lr, weight_decay=0.0)
    try:
        for step in range(steps):
            batch = _caption_batch([rows[i] for i in rng.sample(range(len(rows)), 32)], vlm.pad_token_id,
                                   vlm.image_token_id)
            states.clear()
            loss = model(**batch).loss
            loss = loss + sum(_ahead_loss(head, states[-1], batch["labels"], offset)
                              for offset, head in enumerate(heads, start=2)) / max(lookahead, 1)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            _progress("VLM", step, steps, loss.item())
            for group in optimizer.param_groups:
                group["lr"] = lr * 0.5 * (1 + math.cos(math.pi * (step + 1) / steps))
    finally:
        handle.remove()
    model.eval().requires_grad_(False)
    model.save_pretrained(folder)


def pretrain_vision_tower(vlm: VisionLanguageModel, rows: list, samples: list[ShapeSample], steps: int,
                          rng: random.Random, lr: float) -> None:
    """Stand-in for a pretrained VLM's pretrained vision encoder: teach the tiny tower alone to name each
    picture's colour and shape from the mean of its image tokens (a linear head, thrown away afterwards). The
    mean, not the tokens side by side: a head on the concatenated tokens learns the shapes too, but the language
    model, which reads the tokens through attention, then learns them less well (measured without the lookahead
    heads, 100 tower steps: held-out greedy shape accuracy 0.60 against 0.90 with the mean)."""
    visual = vlm.model.model.visual
    labels = torch.tensor([[COLOURS.index(s.colour), SHAPES.index(s.shape)] for s in samples])
    tokens = rows[0][0]["image_grid_thw"][0].prod().item() // visual.spatial_merge_size ** 2  # after the 2x2 merge
    head = torch.nn.Linear(vlm.hidden_size, len(COLOURS) + len(SHAPES))
    visual.train().requires_grad_(True)
    optimizer = torch.optim.AdamW([*visual.parameters(), *head.parameters()], lr=lr, weight_decay=0.0)
    for step in range(steps):
        pick = rng.sample(range(len(rows)), 32)
        out = visual(torch.cat([rows[i][0]["pixel_values"] for i in pick]),
                     grid_thw=torch.cat([rows[i][0]["image_grid_thw"] for i in pick]))
        merged = getattr(out, "pooler_output", out)  # transformers 5 returns an output object, 4.x the tensor
        logits = head(merged.reshape(len(pick), tokens, -1).mean(1))
        loss = (torch.nn.functional.cross_entropy(logits[:, :len(COLOURS)], labels[pick, 0])
                + torch.nn.functional.cross_entropy(logits[:, len(COLOURS):], labels[pick, 1]))
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        _progress("vision tower", step, steps, loss.item())


def _ahead_loss(head: torch.nn.Module, states: torch.Tensor, labels: torch.Tensor, offset: int) -> torch.Tensor:
    """Cross-entropy of the token `offset` places after each position (1 would be the ordinary next token)."""
    logits = head(states[:, :-offset])
    return torch.nn.functional.cross_entropy(logits.flatten(0, 1), labels[:, offset:].flatten(), ignore_index=-100)


def _caption_batch(rows: list, pad: int, image_token: int) -> dict:
    """Prompt + answer per row, right-padded; the loss sees only the answer."""
    ids = [r[0]["input_ids"][0].tolist() + r[1] for r in rows]
    labels = [[-100] * r[0]["input_ids"].shape[1] + r[1] for r in rows]
    width = max(map(len, ids))
    input_ids = torch.tensor([i + [pad] * (width - len(i)) for i in ids])
    batch = {
        "input_ids": input_ids,
        "attention_mask": torch.tensor([[1] * len(i) + [0] * (width - len(i)) for i in ids]),
        "labels": torch.tensor([l + [-100] * (width - len(l)) for l in labels]),
        "pixel_values": torch.cat([r[0]["pixel_values"] for r in rows]),
        "image_grid_thw": torch.cat([r[0]["image_grid_thw"] for r in rows]),
    }
    if "mm_token_type_ids" in rows[0][0]:
        batch["mm_token_type_ids"] = (input_ids == image_token).to(torch.int32)
    return batch


def pretrain_t5_on_captions(folder: Path, captions: list[str], steps: int, seed: int = 0) -> None:
    """Teach the tiny T5 to continue a caption: encoder reads the first words, decoder writes the rest."""
    from transformers import AutoTokenizer, T5ForConditionalGeneration

    model = T5ForConditionalGeneration.from_pretrained(folder)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
    rng = random.Random(seed)
    model.train()
    for step in range(steps):
        prefixes, rests = [], []
        for caption in rng.choices(captions, k=32):
            words = caption.split(" ")
            cut = rng.randint(0, len(words) - 1)
            prefixes.append(" ".join(words[:cut]))
            rests.append(" ".join(words[cut:]))
        inputs = tokenizer(prefixes, padding=True, return_tensors="pt")
        labels = tokenizer(rests, padding=True, return_tensors="pt")["input_ids"]
        loss = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"],
                     labels=labels.masked_fill(labels == tokenizer.pad_token_id, -100)).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        _progress("T5", step, steps, loss.item())
    model.save_pretrained(folder)


def vlm_content_accuracy(features: Path) -> float | None:
    """The tiny VLM's own answers scored like the aligner's decodes: colour and shape words against the true
    caption (precompute stores both in each sample's metadata)."""
    right = total = 0
    for shard in sorted(features.glob("*.tar")):
        with tarfile.open(shard) as tar:
            for member in tar:
                if member.name.endswith(".json"):
                    meta = json.load(tar.extractfile(member))
                    hits = content_hits(meta["caption"], meta["text"], CONTENT_WORDS)
                    right, total = right + hits[0], total + hits[1]
    return right / total if total else None


def _table(before: ProxyMetrics, after: ProxyMetrics, vlm_accuracy: float | None) -> list[str]:
    def number(value: float | None) -> str:
        return f"{value:>12.3f}" if value is not None else f"{'-':>12}"

    rows = [f"{'held-out proxy metric':<26}{'untrained':>12}{'trained':>12}"]
    for name in ("loss", "token_accuracy", "exact_match", "content_accuracy"):
        rows.append(f"{name:<26}{number(getattr(before, name))}{number(getattr(after, name))}")
    rows.append(f"{'samples (content words)':<26}{f'{before.samples} ({before.content_words})':>12}"
                f"{f'{after.samples} ({after.content_words})':>12}")
    rows += ["", "content_accuracy: the colour and shape words of the targets the greedy decode gets right, "
                 "at their word position", f"  chance (a uniform guess): {CHANCE:.3f}"]
    if vlm_accuracy is not None:
        rows.append(f"  the tiny VLM's own answers against the true captions: {vlm_accuracy:.3f} "
                    "(the targets are its answers, so this bounds how often a right word is also the true one)")
    return rows


def run_demo(output: Path | None = None, train_images: int = TRAIN_IMAGES, held_out_images: int = HELD_OUT_IMAGES,
             vlm_steps: int = VLM_STEPS, t5_steps: int = T5_STEPS, overrides: dict | None = None,
             variant: str = "lvlm") -> dict:
    """Build the stand-ins, precompute (LVLM), align, evaluate; print the before/after table; return the numbers."""
    trained = training_variant(variant)
    clip = trained is ClipVariant  # the stand-ins to build: a VLM to precompute with, or a vision tower
    torch.set_num_threads(1)  # tiny models: one thread is fastest, and steady on a shared machine
    output = Path(output or f"runs/demo-{datetime.datetime.now():%Y%m%d-%H%M%S}")
    if output.exists() and any(output.iterdir()):
        raise FileExistsError(f"{output} is not empty; pick a new --output for the demo (or leave it out).")
    started = time.perf_counter()

    def stage(text: str) -> None:
        print(f"[{time.perf_counter() - started:6.1f}s] {text}", flush=True)

    stage(f"synthetic shapes: {train_images} training and {held_out_images} held-out images -> {output / 'images'}")
    size = {} if clip else {"size": IMAGE_SIZE}
    training, held_out = shape_samples(train_images, seed=1, **size), shape_samples(held_out_images, seed=2, **size)
    write_image_folder(output / "images" / "train", training)
    write_image_folder(output / "images" / "held_out", held_out)

    if not clip:
        stage(f"tiny Qwen2-VL stand-in, taught to caption the shapes ({vlm_steps} steps)")
        vlm_folder = write_tiny_qwen_vl(output / "models" / "tiny-qwen2-vl")
        teach_vlm_to_caption(vlm_folder, training, vlm_steps)

    stage(f"tiny Flan-T5 stand-in, pre-trained to continue captions ({t5_steps} steps)")
    t5_folder = write_tiny_t5(output / "models" / "tiny-flan-t5", corpus=all_captions() + CORPUS + BRIEF_INSTRUCTIONS)
    pretrain_t5_on_captions(t5_folder, all_captions(), t5_steps)

    data = {split: str(output / "images" / split) for split in ("train", "held_out")}  # CLIP reads the images
    model = {}
    if clip:
        stage("tiny BLIP-2 vision tower (random weights; 224px, 14px patches: 65 tokens per image)")
        vision = write_tiny_blip2(output / "models" / "tiny-blip2", vision_width=TINY_BLIP2_VISION_WIDTH)
        model = {"variant": "clip", "vision_encoder": str(vision)}
    else:
        for split in ("train", "held_out"):
            stage(f"python -m train.precompute: VLM answers and generated-token features ({split})")
            images, data[split] = data[split], str(output / "features" / split)
            summary = precompute(PrecomputeConfig(vlm=str(vlm_folder), images=images, output=data[split],
                                                  batch_size=16, folder_chunk=128, max_new_tokens=32, rank=0,
                                                  world_size=1))
            print(f"         {summary['images']} images, {summary['images_per_s']:.1f} images/s")

    config = cfg.merge(cfg.from_dict(TrainConfig, cfg.read_preset("demo")), {
        "model": {"decoder": str(t5_folder), **model}, "data": {"train": data["train"], "eval": data["held_out"]},
        "run": {"output_dir": str(output / "run")}})
    config = cfg.merge(config, overrides or {})
    decoder = trained.load_decoder(str(t5_folder), config.model.vision_encoder, dropout=config.model.decoder_dropout)
    batches = trained.batches(decoder, data["held_out"], None, config.data.max_split, config.data.max_prefix_tokens,
                              config.data.max_target_tokens, config.data.features, config.data.masking)
    eval_batches = held_out_batches(data["held_out"], batches, 32, config.data.eval_samples)
    input_size = trained.input_size(decoder, eval_batches[0])
    stage("held-out proxy metrics of an untrained aligner (T5-norm init, as training starts)")
    before = evaluate(new_aligner(input_size, decoder, config.run.seed), decoder, eval_batches, torch.device("cpu"),
                      show=8, content_words=CONTENT_WORDS)

    stage(f"python -m train.align: {config.optim.max_steps} steps of batch {config.data.batch_size}")
    summary = train(config)
    aligner = load_aligner(summary["aligner"], dtype=torch.float32)
    after = evaluate(aligner.module, decoder, eval_batches, torch.device("cpu"), show=8, content_words=CONTENT_WORDS)
    vlm_accuracy = None if clip else vlm_content_accuracy(Path(data["held_out"]))
    stage("done")
    module = aligner.module
    command = drawing_command(output, summary["aligner"], clip)
    marks = "(= the greedy decode equals the target; x it does not)"
    print("\n".join(["", *_table(before, after, vlm_accuracy), "", f"untrained aligner, greedy decodes {marks}:",
                     *format_examples(before.examples, seen=batches.SEEN), "", f"trained aligner, greedy decodes {marks}:",
                     *format_examples(after.examples, seen=batches.SEEN), "",
                     f"aligner: {summary['aligner']}  (source {aligner.info.source_model_id}, {module.input_size} -> "
                     f"{module.output_size}; load it with thinkdiff_core.load_aligner or the ComfyUI nodes)",
                     f"This aligner fits only the demo's tiny stand-ins ({output / 'models'}): its sizes match no real "
                     "VLM or FLUX; the official aligners are listed in the README (Model files).",
                     "Draw a picture with it (a tiny random FLUX, so the picture is noise; the VLM's answer is "
                     "printed):", f"  {command}",
                     f"total time: {time.perf_counter() - started:.0f} s"]))
    return {"before": before, "after": after, "aligner": summary["aligner"], "output": str(output), "command": command,
            "vlm_accuracy": vlm_accuracy}


def drawing_command(output: Path, aligner: str, clip: bool) -> str:
    """`thinkdiff_core.generate --tiny` with the demo's own stand-in and aligner, on its first held-out picture."""
    image = next(iter(sorted((output / "images" / "held_out").glob("*.png"))))
    models = (["--variant", "clip", "--vision-encoder", output / "models" / "tiny-blip2"] if clip else
              ["--vlm", output / "models" / "tiny-qwen2-vl", "--preset", "custom", "--instruction", BRIEF_INSTRUCTIONS[0]])
    words = ["python", "-m", "thinkdiff_core.generate", "--tiny", *models, "--aligner", aligner, "--image", image,
             "--out", output / "picture.png"]
    return shlex.join(map(str, words))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m train.demo", description=__doc__.split("\n\n")[0],
                                     formatter_class=ShowsDefaults)
    parser.add_argument("--output", type=Path, default=None,
                        help="new or empty folder for the images, stand-in models, features and run "
                             "(default: runs/demo-<time>)")
    parser.add_argument("--variant", choices=list(VARIANTS), default="lvlm",
                        help="lvlm: a tiny VLM's generated-token features (~1.5 min); clip: a tiny BLIP-2 vision tower "
                             "(~1 minute)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    def demo() -> None:
        run_demo(args.output, variant=args.variant)  # prints its own report

    return run_cli(demo)


if __name__ == "__main__":
    sys.exit(main())
