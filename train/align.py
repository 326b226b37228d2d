"""`python -m train.align`: train a ThinkDiff aligner against a frozen T5 decoder (the proxy).

    python -m train.demo                                       # the whole recipe on a CPU, 1-2 minutes, offline
    python -m train.align --preset thinkdiff-lvlm --data.train FEATURES --data.eval HELD_OUT
    python -m train.align --preset thinkdiff-clip --data.train "laion/{00000..09999}.tar" --data.eval HELD_OUT_IMAGES
    accelerate launch --multi_gpu --num_processes 8 -m train.align --config my.yaml   # DDP, unchanged code

One process per device; `accelerate launch` (or torchrun) sets the ranks. Each rank reads its own
part of the shards (LVLM: precomputed features; CLIP: images with captions, whose BLIP-2 vision
tokens the frozen tower computes on the fly), the aligner's gradients are averaged (DDP), and rank 0
evaluates, writes checkpoints and exports `output_dir/aligner.safetensors` in the format the ComfyUI
nodes load.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import time
from contextlib import nullcontext
from pathlib import Path
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch
from accelerate import Accelerator
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from thinkdiff_core.devices import training_autocast
from thinkdiff_core.checkpoint import AlignerInfo, LoadedAligner, load_aligner, save_aligner
from thinkdiff_core.cli import ShowsDefaults

from . import checkpoints
from . import config as cfg
from .config import TrainConfig
from .data import TrainingStream
from .decoder import ProxyDecoder, new_aligner
from .evaluate import evaluate, format_examples, held_out_batches
from .optim import make_optimizer
from .recipe import IGNORE_INDEX
from .run_lock import RunLock
from .step import train_step, weights_crc32
from .variants import TrainingVariant, training_variant

EXPORT_NAME = "aligner.safetensors"

NO_CONFIG_HINT = (
    "Nothing to train yet. Try:\n"
    "  python -m train.demo                # the whole recipe on this CPU in 1-2 minutes, nothing downloaded\n"
    "  python -m train.align --preset thinkdiff-lvlm --data.train FEATURES --data.eval HELD_OUT\n"
    "  python -m train.align --preset thinkdiff-clip --data.train IMAGE_SHARDS --data.eval HELD_OUT_IMAGES\n"
    "  python -m train.align --config my.yaml\n"
    "LVLM features come from `python -m train.precompute`; CLIP reads images with captions directly. "
    "See --help for every option."
)


def make_accelerator(config: TrainConfig) -> Accelerator:
    """CPU runs use gloo across processes; on GPUs accelerate picks NCCL. Nothing else differs."""
    output = Path(config.run.output_dir)
    return Accelerator(cpu=not torch.cuda.is_available(), mixed_precision=training_autocast(config.run.mixed_precision),
                       log_with="tensorboard" if config.run.tensorboard else None, project_dir=str(output))


def _validate(config: TrainConfig) -> None:
    training_variant(config.model.variant)
    if not config.data.train:
        raise ValueError("data.train is empty: give the feature shards written by `python -m train.precompute` "
                         "(LVLM), or image-caption shards / a folder with captions.jsonl (CLIP).")


def standalone_copy(aligner: torch.nn.Module) -> torch.nn.Module:
    """A plain copy of the (unwrapped) aligner for saving and export: checkpoints outlive the DDP wrapper."""
    module = type(aligner)(aligner.input_size, aligner.output_size)
    module.load_state_dict(aligner.state_dict())
    return module


@dataclass
class Run:
    """What `prepare` sets up and `loop` / `finish` use: the run's parts, and where its step counter stands."""

    config: TrainConfig
    accelerator: Accelerator
    output: Path
    log: Callable[..., None]
    decoder: ProxyDecoder
    batches: Any
    """The variant's batch builder (`train.recipe`)."""
    variant: type[TrainingVariant]
    info: AlignerInfo
    aligner: torch.nn.Module
    """accelerate-prepared (DDP across processes)."""
    optimizer: torch.optim.Optimizer
    loader: Iterator[dict]
    eval_batches: list[dict]
    step: int
    consumed: int
    """Batches taken from this rank's stream: where a resumed stream restarts."""

    @property
    def main(self) -> bool:
        return self.accelerator.is_main_process

    def provenance(self) -> dict[str, Any]:
        config, world = self.config, self.accelerator.num_processes
        return {"recipe": f"thinkdiff-{self.variant.name}", "tool": "python -m train.align",
                self.variant.provenance_key: self.info.source_model_id, "decoder": self.decoder.model_id,
                "steps": self.step, "data": config.data.train,
                "samples_seen": self.step * config.data.batch_size * config.optim.grad_accum * world,
                "batch_size": config.data.batch_size * config.optim.grad_accum * world, "seed": config.run.seed,
                **self.batches.recorded, "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}

    def aligner_file(self) -> LoadedAligner:
        """The aligner as checkpoints and the export hold it, with this step's provenance."""
        return LoadedAligner(standalone_copy(self.accelerator.unwrap_model(self.aligner)),
                             AlignerInfo(self.info.source_model_id, self.info.token_recipe, self.provenance()))

    def run_eval(self) -> dict[str, float]:
        if not self.eval_batches:
            return {}
        metrics = evaluate(self.accelerator.unwrap_model(self.aligner), self.decoder, self.eval_batches,
                           self.accelerator.device, self.config.run.show_samples, autocast=self.accelerator.autocast)
        self.log(f"held-out @ {self.step}: loss {metrics.loss:.4f}  token accuracy {metrics.token_accuracy:.3f}  "
                 f"exact match {metrics.exact_match:.3f}  ({metrics.samples} samples)")
        for line in format_examples(metrics.examples, seen=self.batches.SEEN):
            self.log(line)
        return {"eval/loss": metrics.loss, "eval/token_accuracy": metrics.token_accuracy,
                "eval/exact_match": metrics.exact_match}

    def save(self) -> None:
        if self.main:
            trainer = {"step": self.step, "batches": self.consumed, "optimizer": self.optimizer.state_dict(),
                       "config": cfg.to_dict(self.config), "world_size": self.accelerator.num_processes}
            checkpoints.save(self.output, self.step, self.aligner_file(), trainer, self.config.run.keep_last)
        self.accelerator.wait_for_everyone()


def prepare(config: TrainConfig) -> Run:
    """Check the settings, load the frozen parts, build (or resume) the aligner, its optimizer and the data stream."""
    _validate(config)
    variant = training_variant(config.model.variant)
    accelerator = make_accelerator(config)
    rank, world, main = accelerator.process_index, accelerator.num_processes, accelerator.is_main_process
    device = accelerator.device
    output = Path(config.run.output_dir)
    log = tqdm.write if main else (lambda *a, **k: None)

    variant.check_data(config.data.train)
    shards = variant.batches_class.shards(config.data.train, "data.train")
    previous = checkpoints.latest(output)
    if config.run.resume and previous is None:
        raise FileNotFoundError(f"--resume: no checkpoint in {output / checkpoints.CHECKPOINTS}; start without --resume.")
    if not config.run.resume and previous is not None:
        raise FileExistsError(f"{output} already holds checkpoints of a run ({previous.name}); pass --resume to continue "
                              f"it, or choose another run.output_dir.")
    if not config.run.resume and (output / EXPORT_NAME).exists():
        raise FileExistsError(f"{output / EXPORT_NAME} exists (an earlier run's aligner); a new run would replace it. "
                              f"Move it away, or choose another run.output_dir.")

    decoder = variant.load_decoder(config.model.decoder, config.model.vision_encoder, dtype=config.model.decoder_dtype,
                                   device=device, dropout=config.model.decoder_dropout)
    batches = variant.batches(decoder, config.data.train, config.model.vlm_tokenizer, config.data.max_split,
                              config.data.max_prefix_tokens, config.data.max_target_tokens, config.data.features,
                              config.data.masking)
    info, input_size = variant.aligner_source(decoder, config.data.train)
    if config.model.init_aligner:
        start = load_aligner(config.model.init_aligner, dtype=torch.float32)
        if start.info.variant != config.model.variant or start.module.input_size != input_size:
            raise ValueError(f"model.init_aligner {config.model.init_aligner} is a {start.info.variant} aligner for "
                             f"{start.module.input_size}-wide inputs; this run trains a {config.model.variant} aligner "
                             f"for {input_size}-wide inputs ({info.source_model_id}). Start from a matching aligner.")
        aligner = start.module.requires_grad_(True)
    else:
        aligner = new_aligner(input_size, decoder, config.run.seed)
    aligner.to(device).train()
    optimizer = make_optimizer(aligner, config.optim)
    step, consumed = 0, 0
    if config.run.resume:
        previous, loaded, trainer = checkpoints.load_latest_intact(output, log)
        for change in checkpoints.check_resume(trainer, cfg.to_dict(config), world):
            log(f"note: changed since the checkpoint: {change}")
        aligner.load_state_dict(loaded.module.state_dict())
        optimizer.load_state_dict(trainer["optimizer"])
        step, consumed = int(trainer["step"]), int(trainer["batches"])
        log(f"resumed from {previous} (step {step})")
    if main:
        output.mkdir(parents=True, exist_ok=True)
        checkpoints.remove_partial(output)
        (output / "config.yaml").write_text(cfg.dump_yaml(config))
    aligner = accelerator.prepare(aligner)
    if config.run.tensorboard:
        accelerator.init_trackers("tensorboard", config={k: str(v) for k, v in cfg.flatten(cfg.to_dict(config)).items()})

    stream = TrainingStream(shards, batches.decode, batches.usable, batches, config.data.batch_size, config.run.seed,
                            rank, world, config.data.shuffle_buffer, skip_batches=consumed, read=batches.read)
    workers = config.data.num_workers
    loader = iter(DataLoader(stream, batch_size=None, num_workers=workers, pin_memory=device.type == "cuda",
                             prefetch_factor=4 if workers else None, persistent_workers=workers > 0))
    eval_batches = held_out_batches(config.data.eval, batches, config.data.batch_size, config.data.eval_samples) \
        if config.data.eval and main else []
    return Run(config, accelerator, output, log, decoder, batches, variant, info, aligner, optimizer, loader,
               eval_batches, step, consumed)


def loop(run: Run) -> dict[str, Any]:
    """Train until `optim.max_steps`, logging, evaluating and saving on schedule; returns the run's counters."""
    config, accelerator = run.config, run.accelerator
    world, max_steps = accelerator.num_processes, config.optim.max_steps
    progress = tqdm(total=max_steps, initial=run.step, disable=not run.main, desc="align", dynamic_ncols=True)
    keys: list[str] = []
    waited = elapsed = startup_wait = 0.0
    label_tokens = samples = 0
    start_step = run.step
    window_start, window_tokens = time.perf_counter(), 0
    loss = torch.zeros(())
    while run.step < max_steps:
        began = time.perf_counter()
        micro = [next(run.loader) for _ in range(config.optim.grad_accum)]
        fetched = time.perf_counter()
        loss, lr = train_step(accelerator, run.aligner, run.decoder, run.optimizer, micro, run.step, config.optim,
                              config.run.seed)
        run.step, run.consumed = run.step + 1, run.consumed + len(micro)
        waited, elapsed = waited + fetched - began, elapsed + time.perf_counter() - began
        if run.step == start_step + 1:
            startup_wait = fetched - began  # workers starting and filling their shuffle buffers
        tokens = sum(int((b["labels"] != IGNORE_INDEX).sum()) for b in micro)
        label_tokens, samples, window_tokens = label_tokens + tokens, samples + sum(len(b["keys"]) for b in micro), \
            window_tokens + tokens
        if config.data.log_sample_keys:
            keys += [k for b in micro for k in b["keys"]]
        progress.update(1)
        if run.step % config.run.log_every == 0 or run.step == max_steps:
            now = time.perf_counter()
            rate = window_tokens * world / max(now - window_start, 1e-9)
            value = loss.item()
            progress.set_postfix(loss=f"{value:.3f}", lr=f"{lr:.2e}")
            run.log(f"step {run.step}/{max_steps}  loss {value:.4f}  lr {lr:.3e}  target tokens/s {rate:,.0f}  "
                    f"data wait {waited / max(elapsed, 1e-9):.1%}")
            accelerator.log({"train/loss": value, "train/lr": lr, "train/tokens_per_s": rate}, step=run.step)
            window_start, window_tokens = now, 0
        if config.run.eval_every and run.step % config.run.eval_every == 0 and run.step != max_steps:
            if run.main:
                accelerator.log(run.run_eval(), step=run.step)
            accelerator.wait_for_everyone()
        if config.run.save_every and run.step % config.run.save_every == 0 and run.step != max_steps:
            run.save()
    progress.close()
    return {"steps_this_run": run.step - start_step, "seconds": elapsed, "samples": samples, "keys": keys,
            "label_tokens": label_tokens, "waited": waited, "startup_wait": startup_wait, "final_loss": float(loss.item())}


def finish(run: Run, counters: dict[str, Any]) -> dict[str, Any]:
    """Evaluate, save the last checkpoint, check the ranks agree, export the aligner; returns the summary."""
    accelerator, output = run.accelerator, run.output
    rank, world = accelerator.process_index, accelerator.num_processes
    last_metrics = {}
    if run.main:
        last_metrics = run.run_eval()
        accelerator.log(last_metrics, step=run.step)
    run.save()
    # Ranks compare weights through their files, not a collective: an object all-gather leaves gloo work
    # holding Python tensors, whose release at exit can deadlock with the DDP reducer's teardown.
    (output / "ranks").mkdir(parents=True, exist_ok=True)
    (output / "ranks" / f"rank-{rank}.json").write_text(json.dumps(
        {"rank": rank, "weights_crc32": weights_crc32(accelerator.unwrap_model(run.aligner)),
         "samples": counters["samples"], "keys": counters["keys"]}))
    accelerator.wait_for_everyone()
    checksums = [json.loads((output / "ranks" / f"rank-{r}.json").read_text())["weights_crc32"] for r in range(world)]
    elapsed, waited, startup_wait = counters["seconds"], counters["waited"], counters["startup_wait"]
    summary = {"steps": run.step, "steps_this_run": counters["steps_this_run"], "seconds": elapsed,
               "samples_per_s": counters["samples"] * world / max(elapsed, 1e-9),
               "target_tokens_per_s": counters["label_tokens"] * world / max(elapsed, 1e-9),
               "data_wait_fraction": waited / max(elapsed, 1e-9),
               "data_wait_fraction_after_first_batch": (waited - startup_wait) / max(elapsed - startup_wait, 1e-9),
               "final_loss": counters["final_loss"],
               "ranks_in_sync": len(set(checksums)) == 1, **last_metrics}
    if run.main:
        exported = save_aligner(output / EXPORT_NAME, run.aligner_file(), overwrite=True)
        summary["aligner"] = str(exported)
        (output / "summary.json").write_text(json.dumps(summary, indent=2))
        if not summary["ranks_in_sync"]:
            run.log(f"WARNING: the ranks ended with different aligner weights (checksums {checksums}); report this.")
        run.log(f"wrote {exported} (loadable by the ComfyUI nodes and thinkdiff_core.load_aligner)")
    accelerator.end_training()
    return summary


class TrainingInterrupted(Exception):
    """Ctrl-C during training: the message says where it stopped and the command that resumes."""


def train(config: TrainConfig) -> dict[str, Any]:
    """Train (or resume) one run; returns a summary (steps, speed, data-wait fraction, held-out metrics).

    Rank 0 holds the output folder's run lock throughout, so a second run into the same folder is refused
    instead of interleaving checkpoints with this one.
    """
    rank_zero = int(os.environ.get("RANK", "0")) == 0  # set by accelerate launch / torchrun; unset: one process
    with RunLock(config.run.output_dir, tqdm.write) if rank_zero else nullcontext():
        run = prepare(config)
        try:
            counters = loop(run)
        except KeyboardInterrupt:
            saved = checkpoints.latest(run.output)
            raise TrainingInterrupted(
                f"interrupted at step {run.step} of {config.optim.max_steps}; the last checkpoint is "
                f"{saved.name if saved else 'none yet (nothing to resume: start again)'}. Resume with: "
                f"python -m train.align --config {run.output / 'config.yaml'} --resume") from None
        return finish(run, counters)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m train.align", description=__doc__.split("\n\n")[0],
                                     epilog="Presets live in train/presets/ (each lists every option with a comment).",
                                     formatter_class=ShowsDefaults)
    parser.add_argument("--demo", action="store_true", help="run the whole recipe offline on this CPU (1-2 minutes): "
                        "tiny models, synthetic shapes, precompute, align, evaluate; with --model.variant clip the "
                        "CLIP recipe (~1 minute)")
    parser.add_argument("--resume", action="store_true", help="same as --run.resume true")
    cfg.add_arguments(parser, TrainConfig, with_presets=True)
    return parser


def forward_to_demo(args: argparse.Namespace) -> int:
    """`--demo` is `python -m train.demo`; its two options keep their training-config spelling here."""
    given = {key[4:]: value for key, value in vars(args).items() if key.startswith("set:")}
    others = sorted(set(given) - {"run.output_dir", "model.variant"}) + (["config"] if args.config else []) + (
        ["preset"] if args.preset else [])
    if others:
        print(f"error: --demo takes only --run.output_dir and --model.variant (it sets everything else itself); drop "
              f"{', '.join('--' + name for name in others)}, or run the real recipe without --demo.", file=sys.stderr)
        return 2
    from . import demo  # here, not at the top: demo imports this module (its train()), never the other way round

    spelled = {"run.output_dir": "--output", "model.variant": "--variant"}
    return demo.main([f"{spelled[name]}={value}" for name, value in given.items()])


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.demo and (args.resume or vars(args).get("set:run.resume")):
        print("error: --demo always starts afresh in a new folder (about 40 s), so there is nothing to resume: drop "
              "--resume. To resume a real run: python -m train.align --config RUN_FOLDER/config.yaml --resume",
              file=sys.stderr)
        return 2
    if args.demo:
        return forward_to_demo(args)
    if not (args.config or args.preset or any(k.startswith("set:") for k in vars(args))):
        print(NO_CONFIG_HINT, file=sys.stderr)
        return 2

    def work() -> str:
        config = cfg.resolve(TrainConfig, args)
        if args.resume:
            config = cfg.merge(config, {"run": {"resume": True}})
        summary = train(config)
        return json.dumps(summary, indent=2) if "aligner" in summary else ""  # rank 0 reports

    try:
        return cfg.run_tool(work)
    except TrainingInterrupted as stop:
        print(stop, file=sys.stderr)
        return 130  # the shell's code for a run stopped by Ctrl-C


if __name__ == "__main__":
    sys.exit(main())
